"""Scores and the protocols that produce them.

Metrics are pure functions of label vectors (and an embedding for ASW): NMI
and ARI are scikit-learn's, accuracy uses scipy's Hungarian solver. The
clustering protocols of the benchmark turn an embedding into labels and
scores: KMeans at the true number of types, label-free Leiden, and the
paper's 2-D UMAP + KMeans; :func:`stage_order_score` scores a pseudotime.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from sklearn import metrics as skm

from ._graph import knn_adjacency, leiden_labels

__all__ = [
    "nmi",
    "ari",
    "accuracy",
    "asw",
    "score_all",
    "kmeans_labels",
    "leiden_label_free",
    "cluster_embedding",
    "stage_order_score",
]


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
    """Clustering accuracy under the best one-to-one matching of clusters to classes.

    The fraction of cells correctly labelled when clusters are matched to
    classes by the Hungarian algorithm.

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


# --------------------------------------------------------------------------- protocols
def kmeans_labels(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """KMeans (scikit-learn, ``n_init=10``) labels of ``X`` ``(n, d)`` into ``k`` clusters."""
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(X)


def leiden_label_free(
    X: np.ndarray,
    resolutions: Sequence[float] | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    adjacency: sp.spmatrix | None = None,
    embedding_for_score: np.ndarray | None = None,
) -> tuple[np.ndarray, float, pd.DataFrame]:
    """Leiden clustering whose resolution is chosen without labels.

    Two documented rules:

    * ``resolutions=None`` (the benchmark's rule): scanpy's default
      resolution 1.0 on the 15-NN graph, the choice most users make; the
      number of clusters found is reported, not tuned.
    * a list of resolutions: keep the one whose clusters have the highest
      silhouette width on the embedding (``X``, or ``embedding_for_score``
      when clustering a given graph); ties go to the lower resolution. This
      favours well-separated clusters and is used to decide whether a
      population splits at all (:func:`find_subpopulations`).

    Returns
    -------
    labels, resolution, table of (resolution, n_clusters, silhouette)
    """
    emb = X if embedding_for_score is None else embedding_for_score
    A = knn_adjacency(X, n_neighbors) if adjacency is None else adjacency
    rows, best = [], (-np.inf, None, None)
    for r in resolutions if resolutions is not None else [1.0]:
        lab = leiden_labels(resolution=r, seed=seed, adjacency=A)
        k = len(np.unique(lab))
        s = asw(emb, lab, seed=seed) if k > 1 else -1.0
        rows.append({"resolution": r, "n_clusters": k, "silhouette": s})
        if s > best[0] + 1e-9 or best[2] is None:
            best = (s, r, lab)
    return best[2], best[1], pd.DataFrame(rows)


def cluster_embedding(
    X: np.ndarray,
    y_true,
    seed: int = 0,
    adjacency: sp.spmatrix | None = None,
) -> list[dict]:
    """Score an embedding (or a graph) under the two protocols of the benchmark.

    ``kmeans``: KMeans with the true number of types on the embedding;
    ``leiden``: label-free Leiden at resolution 1 (:func:`leiden_label_free`). With an
    ``adjacency`` (graph methods such as WNN) KMeans runs on ``X``, which is
    then the graph's spectral/UMAP coordinates.
    """
    y_true = np.asarray(y_true)
    k = len(np.unique(y_true))
    out = []
    lab = kmeans_labels(X, k, seed)
    out.append({"protocol": "kmeans", **score_all(y_true, lab, X, seed)})
    lab, res, _ = leiden_label_free(X, seed=seed, adjacency=adjacency)
    out.append({"protocol": "leiden", "resolution": res, **score_all(y_true, lab, X, seed)})
    return out


def stage_order_score(pseudotime, labels, expected_order: Sequence[str]) -> dict:
    """How well the median pseudotime of named clusters follows an expected order.

    Returns Kendall's tau between the expected rank and the rank of the
    median pseudotime (1: perfect order), whether the order is exactly right,
    and the medians.
    """
    from scipy.stats import kendalltau

    pt = pd.Series(np.asarray(pseudotime, float), index=np.arange(len(labels)))
    lab = pd.Series(np.asarray(labels).astype(str), index=pt.index)
    med = [float(pt[lab == c].median()) for c in expected_order]
    tau = kendalltau(np.arange(len(expected_order)), med).statistic
    return {
        "kendall_tau": float(tau),
        "order_correct": bool(np.all(np.diff(med) > 0)),
        "medians": dict(zip(expected_order, med)),
    }
