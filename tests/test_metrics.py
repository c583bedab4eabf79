import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sci2cl import metrics


def test_nmi_ari_known_values():
    y = np.array([0, 0, 0, 1, 1, 1])
    # a perfect clustering under other names scores 1; an independent one scores 0
    assert metrics.nmi(y, ["b", "b", "b", "a", "a", "a"]) == pytest.approx(1.0)
    assert metrics.ari(y, [5, 5, 5, 2, 2, 2]) == pytest.approx(1.0)
    # each class split evenly over both clusters: no mutual information
    assert metrics.nmi([0, 0, 0, 0, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0, 1, 1]) == pytest.approx(0.0)
    # one cell moved: ARI from the pair counts by hand (Hubert & Arabie)
    # contingency [[3, 0], [1, 2]]: sum C(n_ij, 2) = 3 + 1 = 4; rows 3, 3 -> 6; cols 4, 2 -> 7
    expected = (4 - 6 * 7 / 15) / (0.5 * (6 + 7) - 6 * 7 / 15)
    assert metrics.ari(y, [0, 0, 0, 0, 1, 1]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="1-D"):
        metrics.nmi(np.zeros((3, 2)), np.zeros(3))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 4), min_size=4, max_size=60), st.randoms(use_true_random=False))
def test_scores_ignore_label_names(y, rnd):
    """NMI and ARI depend on the partition, not on what the clusters are called."""
    y = np.array(y)
    perm = list(range(5))
    rnd.shuffle(perm)
    renamed = np.array([f"c{perm[v]}" for v in y])
    other = np.roll(y, 1)
    assert metrics.nmi(y, other) == pytest.approx(metrics.nmi(renamed, other), abs=1e-12)
    assert metrics.ari(y, other) == pytest.approx(metrics.ari(renamed, other), abs=1e-12)
    assert metrics.accuracy(y, renamed) == 1.0


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
    # by hand on 1-D points 0, 1 | 10, 11: s = 1 - a / b per point
    pts, lab = np.array([[0.0], [1.0], [10.0], [11.0]]), np.array([0, 0, 1, 1])
    s = [1 - 1 / 10.5, 1 - 1 / 9.5, 1 - 1 / 9.5, 1 - 1 / 10.5]
    assert metrics.asw(pts, lab) == pytest.approx(np.mean(s))
    assert np.isnan(metrics.asw(X, np.arange(40))) and np.isnan(metrics.asw(X, np.zeros(40)))
    t = pd.DataFrame(
        {
            "dataset": ["d1", "d1", "d2", "d2"],
            "method": ["A", "B", "A", "B"],
            "nmi": [0.9, 0.5, 0.4, 0.6],
            "ari": [0.8, 0.4, 0.3, 0.5],
        }
    )
    from benchmarks.protocols import rank_score

    r = rank_score(t)
    assert r["A"] == r["B"] == 6.0  # each wins one dataset on both metrics
