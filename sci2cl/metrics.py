"""Clustering metrics: NMI, ARI, Hungarian accuracy, silhouette and the paper's rank score.

Pure functions of label vectors (and an embedding for ASW). NMI and ARI are
scikit-learn's; accuracy uses scipy's Hungarian solver.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

__all__ = ["nmi", "ari", "accuracy", "asw", "rank_score", "score_all"]


def _labels(y) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    return y


def nmi(y_true, y_pred) -> float:
    """Normalised mutual information (arithmetic normalisation, as sklearn)."""
    return float(skm.normalized_mutual_info_score(_labels(y_true), _labels(y_pred)))


def ari(y_true, y_pred) -> float:
    """Adjusted Rand index."""
    return float(skm.adjusted_rand_score(_labels(y_true), _labels(y_pred)))


def accuracy(y_true, y_pred) -> float:
    """Clustering accuracy: the fraction of cells correctly labelled under the
    best one-to-one matching of clusters to classes (Hungarian algorithm).

    Clusters left unmatched (more clusters than classes) count as wrong.
    """
    y_true, y_pred = _labels(y_true), _labels(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError("y_true and y_pred differ in length")
    _, t = np.unique(y_true, return_inverse=True)
    _, p = np.unique(y_pred, return_inverse=True)
    cont = np.zeros((p.max() + 1, t.max() + 1), dtype=np.int64)
    np.add.at(cont, (p, t), 1)
    r, c = linear_sum_assignment(-cont)
    return float(cont[r, c].sum() / y_true.size)


def asw(embedding: np.ndarray, labels, seed: int = 0, sample_size: int | None = 5000) -> float:
    """Average silhouette width of ``labels`` on ``embedding`` (Euclidean), in [-1, 1].

    Above ``sample_size`` cells a seeded subsample is used; NaN when there are
    fewer than 2 labels or as many labels as cells.
    """
    labels = _labels(labels)
    if not 2 <= len(np.unique(labels)) < len(labels):  # silhouette is undefined otherwise
        return float("nan")
    n = embedding.shape[0]
    kw = (
        {"sample_size": sample_size, "random_state": seed}
        if sample_size and n > sample_size
        else {}
    )
    return float(skm.silhouette_score(embedding, labels, **kw))


def rank_score(
    table: pd.DataFrame, metric_cols=("nmi", "ari"), method_col="method", dataset_col="dataset"
) -> pd.Series:
    """The paper's rank score: per dataset and metric, methods are ranked
    (best = number of methods, worst = 1); the score of a method is the sum
    of its ranks over datasets and metrics. Higher is better.

    ``table`` holds one row per dataset and method (average seeds first).
    """
    ranks = []
    for _, g in table.groupby(dataset_col):
        for m in metric_cols:
            ranks.append(g.set_index(method_col)[m].rank(method="average"))
    return pd.concat(ranks, axis=1).sum(axis=1).sort_values(ascending=False).rename("rank_score")


def score_all(
    y_true, y_pred, embedding: np.ndarray | None = None, seed: int = 0
) -> dict[str, float]:
    """NMI, ARI, accuracy, number of clusters and (with an embedding) ASW of the true labels."""
    out = {
        "nmi": nmi(y_true, y_pred),
        "ari": ari(y_true, y_pred),
        "acc": accuracy(y_true, y_pred),
        "n_clusters": int(len(np.unique(y_pred))),
    }
    out["asw"] = asw(embedding, y_true, seed=seed) if embedding is not None else float("nan")
    return out
