"""The scI2CL paper's benchmark protocols: its rank score and UMAP + KMeans clustering."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sci2cl.metrics import kmeans_labels, score_all

__all__ = ["rank_score", "paper_protocol"]


def rank_score(
    table: pd.DataFrame, metric_cols=("nmi", "ari"), method_col="method", dataset_col="dataset"
) -> pd.Series:
    """The paper's rank score (higher is better).

    Per dataset and metric, methods are ranked (best = number of methods,
    worst = 1); the score of a method is the sum of its ranks over datasets
    and metrics.

    ``table`` holds one row per dataset and method (average seeds first).
    """
    ranks = []
    for _, g in table.groupby(dataset_col):
        for m in metric_cols:
            ranks.append(g.set_index(method_col)[m].rank(method="average"))
    return pd.concat(ranks, axis=1).sum(axis=1).sort_values(ascending=False).rename("rank_score")


def paper_protocol(X: np.ndarray, y_true, n_repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """The paper's protocol: 2-D UMAP (100 neighbours) then KMeans with the true k.

    Repeated ``n_repeats`` times with seeds ``seed, seed+1, ...`` (UMAP is
    random); returns one row per repeat (use ``.agg(["mean", "min", "max"])``).
    """
    import umap

    y_true = np.asarray(y_true)
    k = len(np.unique(y_true))
    rows = []
    for r in range(n_repeats):
        u = umap.UMAP(
            n_components=2, n_neighbors=min(100, X.shape[0] - 1), random_state=seed + r
        ).fit_transform(X)
        lab = kmeans_labels(u, k, seed + r)
        rows.append({"repeat": r, **score_all(y_true, lab, u, seed)})
    return pd.DataFrame(rows)
