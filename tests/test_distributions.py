import numpy as np
import pytest
import torch
from scipy import stats

from sci2cl.distributions import log_bernoulli, log_gaussian, log_nb_positive, log_zinb_positive


def _nb_scipy(x, mu, theta):
    p = theta / (theta + mu)
    return stats.nbinom.logpmf(x, theta, p)


@pytest.mark.parametrize("mu,theta", [(0.1, 0.5), (3.0, 2.0), (50.0, 10.0), (1e3, 1e3)])
def test_nb_matches_scipy(mu, theta):
    x = np.arange(0, 60, dtype=np.float64)
    ours = log_nb_positive(torch.tensor(x), torch.tensor(mu), torch.tensor(theta), eps=0).numpy()
    np.testing.assert_allclose(ours, _nb_scipy(x, mu, theta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("pi", [0.0, 0.3, 0.9])
def test_zinb_matches_scipy_mixture(pi):
    x = np.arange(0, 40, dtype=np.float64)
    mu, theta = 4.0, 1.5
    logit = np.log(pi / (1 - pi)) if pi > 0 else -50.0
    ours = log_zinb_positive(
        torch.tensor(x), torch.tensor(mu), torch.tensor(theta), torch.tensor(logit), eps=0
    ).numpy()
    nb = np.exp(_nb_scipy(x, mu, theta))
    ref = np.log(np.where(x == 0, pi + (1 - pi) * nb, (1 - pi) * nb))
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-8)


def test_zinb_is_finite_at_extremes():
    x = torch.tensor([0.0, 0.0, 1.0, 1e4])
    mu = torch.tensor([0.0, 1e-12, 1e6, 1e-8])
    out = log_zinb_positive(x, mu, torch.tensor(1e-4), torch.tensor([80.0, -80.0, 0.0, 0.0]))
    assert torch.isfinite(out).all()
    # likelihood sums to ~1 over the support
    xs = torch.arange(0, 500, dtype=torch.float64)
    p = (
        log_zinb_positive(
            xs,
            torch.tensor(5.0, dtype=torch.float64),
            torch.tensor(0.7, dtype=torch.float64),
            torch.tensor(0.2, dtype=torch.float64),
        )
        .exp()
        .sum()
    )
    assert abs(float(p) - 1) < 1e-6


def test_gaussian_and_bernoulli():
    x = torch.tensor([0.5, -1.0])
    np.testing.assert_allclose(
        log_gaussian(x, torch.zeros(2), torch.log(torch.tensor(4.0))).numpy(),
        stats.norm.logpdf(x.numpy(), 0, 2),
        rtol=1e-6,
    )
    lb = log_bernoulli(torch.tensor([0.0, 3.0]), torch.tensor([0.0, 2.0]))
    np.testing.assert_allclose(lb.numpy(), [np.log(0.5), np.log(1 / (1 + np.exp(-2)))], rtol=1e-6)
