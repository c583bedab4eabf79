"""Count likelihoods as numerically stable pure functions.

All functions work elementwise on broadcastable tensors and return the
log-likelihood of each entry (no reduction). They are written in log-space
with ``softplus``/``lgamma`` so that no ``log(0)`` is ever evaluated.

Parametrisation (as in scvi-tools): ``mu`` is the mean, ``theta`` the inverse
dispersion (variance ``mu + mu**2 / theta``), ``pi_logits`` the logit of the
zero-inflation (dropout) probability.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["log_nb_positive", "log_zinb_positive", "log_gaussian", "log_bernoulli"]


def log_nb_positive(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, eps: float = 1e-8
) -> torch.Tensor:
    """Negative binomial log-likelihood.

    Parameters
    ----------
    x
        Observed counts, shape ``(n_cells, n_features)``.
    mu
        Mean, positive, broadcastable to ``x``.
    theta
        Inverse dispersion, positive, broadcastable to ``x``.
    eps
        Guard added inside logarithms.

    Returns
    -------
    torch.Tensor
        ``log NB(x | mu, theta)``, same shape as ``x``.
    """
    log_theta_mu = torch.log(theta + mu + eps)
    return (
        theta * (torch.log(theta + eps) - log_theta_mu)
        + x * (torch.log(mu + eps) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def log_zinb_positive(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    pi_logits: torch.Tensor,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Zero-inflated negative binomial log-likelihood.

    ``P(x) = pi * 1[x == 0] + (1 - pi) * NB(x | mu, theta)`` with
    ``pi = sigmoid(pi_logits)``.

    Parameters
    ----------
    x
        Observed counts, shape ``(n_cells, n_features)``.
    mu
        Mean of the NB component, positive.
    theta
        Inverse dispersion, positive.
    pi_logits
        Logit of the dropout probability (any real number).
    eps
        Guard added inside logarithms.

    Returns
    -------
    torch.Tensor
        ``log ZINB(x | mu, theta, pi)``, same shape as ``x``.
    """
    softplus_pi = F.softplus(-pi_logits)  # -log(1 - pi)
    log_theta_eps = torch.log(theta + eps)
    log_theta_mu_eps = torch.log(theta + mu + eps)
    pi_theta_log = -pi_logits + theta * (log_theta_eps - log_theta_mu_eps)

    # x == 0: log(pi + (1 - pi) * NB(0))
    case_zero = F.softplus(pi_theta_log) - softplus_pi
    # x > 0: log(1 - pi) + log NB(x)
    case_non_zero = (
        -softplus_pi
        + pi_theta_log
        + x * (torch.log(mu + eps) - log_theta_mu_eps)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )
    is_zero = x == 0
    return torch.where(is_zero, case_zero, case_non_zero)


def log_gaussian(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Gaussian log-density, for non-count modalities (e.g. normalised ATAC).

    Parameters
    ----------
    x, mean
        Observations and means, shape ``(n_cells, n_features)``.
    log_var
        Log-variance, broadcastable to ``x``.
    """
    return -0.5 * (
        torch.log(torch.tensor(2 * torch.pi, dtype=x.dtype, device=x.device))
        + log_var
        + (x - mean) ** 2 * torch.exp(-log_var)
    )


def log_bernoulli(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Bernoulli log-likelihood of binarised data (``x > 0``) given logits."""
    return -F.binary_cross_entropy_with_logits(logits, (x > 0).to(logits.dtype), reduction="none")
