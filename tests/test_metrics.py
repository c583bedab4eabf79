import numpy as np
import pandas as pd
from sklearn import metrics as skm

from sci2cl import metrics


def test_nmi_ari_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    assert metrics.nmi(y, p) == skm.normalized_mutual_info_score(y, p)
    assert metrics.ari(y, p) == skm.adjusted_rand_score(y, p)


def test_accuracy_hungarian():
    y = np.array(["a", "a", "b", "b", "c", "c"])
    assert metrics.accuracy(y, [2, 2, 0, 0, 1, 1]) == 1.0  # relabelled perfectly
    assert metrics.accuracy(y, [0, 0, 0, 0, 1, 1]) == 4 / 6  # merged classes
    assert (
        metrics.accuracy(y, [0, 1, 2, 3, 4, 5]) == 3 / 6
    )  # over-split: unmatched clusters are wrong


def test_asw_and_rank_score():
    X = np.r_[np.zeros((20, 2)), np.ones((20, 2)) * 10] + np.random.default_rng(0).normal(
        0, 0.1, (40, 2)
    )
    y = np.r_[np.zeros(20), np.ones(20)]
    assert metrics.asw(X, y) > 0.9
    assert np.isclose(metrics.asw(X, y), skm.silhouette_score(X, y))
    assert np.isnan(metrics.asw(X, np.arange(40))) and np.isnan(metrics.asw(X, np.zeros(40)))
    t = pd.DataFrame(
        {
            "dataset": ["d1", "d1", "d2", "d2"],
            "method": ["A", "B", "A", "B"],
            "nmi": [0.9, 0.5, 0.4, 0.6],
            "ari": [0.8, 0.4, 0.3, 0.5],
        }
    )
    r = metrics.rank_score(t)
    assert r["A"] == r["B"] == 6.0  # each wins one dataset on both metrics
