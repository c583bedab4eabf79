"""Spatial smoothing of labels: a majority vote among neighbouring spots."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from .._graph import knn_indices
from .._utils import check_range
from ..pp import DataValidationError
from ._common import _labels, _obsm, record

__all__ = ["spatial_vote"]


def spatial_vote(
    adata: ad.AnnData,
    key: str,
    *,
    spatial_key: str = "spatial",
    n_neighbors: int = 50,
    key_added: str | None = None,
) -> pd.Series:
    """Relabel each spot by a majority vote over itself and its nearest spots in space.

    The last step of the scRCL authors' spatial pipeline: it smooths cluster
    labels into contiguous domains. Suited to spatial domains; for cell types,
    whose neighbours in tissue are often of other types, it erases small types.

    Parameters
    ----------
    adata
        Data with labels in ``obs[key]`` and coordinates ``(n_obs, d)`` in
        ``obsm[spatial_key]``.
    key
        Labels to smooth (e.g. cluster labels). Spots without a label (NaN)
        neither vote nor receive a label: they stay NaN.
    spatial_key
        Coordinates used for the neighbours (Euclidean).
    n_neighbors
        Spots that vote besides the spot itself (>= 1). A tie keeps the spot's
        own label when it is among the most frequent, else the first of them in
        the categories' order.
    key_added
        ``obs`` column for the result (default: ``f"{key}_voted"``).

    Returns
    -------
    pandas.Series
        Voted labels ``(n_obs,)``, categorical, indexed by ``obs_names``.
    """
    check_range("n_neighbors", n_neighbors, 1, integer=True)
    labels = _labels(adata, key)
    xy = _obsm(adata, spatial_key)
    lab = pd.Categorical(labels)
    codes = np.asarray(lab.codes)
    known = codes >= 0
    if known.sum() < 2:
        raise DataValidationError(f"obs[{key!r}] has fewer than 2 labelled spots to vote")
    sub = np.flatnonzero(known)
    idx = knn_indices(xy[sub], n_neighbors)  # neighbours among labelled spots
    votes = np.zeros((len(sub), len(lab.categories)), np.int64)
    rows = np.repeat(np.arange(len(sub)), idx.shape[1])
    np.add.at(votes, (rows, codes[sub][idx].ravel()), 1)
    np.add.at(votes, (np.arange(len(sub)), codes[sub]), 1)
    best = votes.max(1, keepdims=True)
    own = votes[np.arange(len(sub)), codes[sub]] == best[:, 0]
    new = np.where(own, codes[sub], np.argmax(votes == best, axis=1))
    out = np.full(len(codes), -1)
    out[sub] = new
    res = pd.Series(
        pd.Categorical.from_codes(out, categories=lab.categories), index=adata.obs_names
    )
    key_added = key_added or f"{key}_voted"
    adata.obs[key_added] = res
    record(adata, key_added, {"key": key, "spatial_key": spatial_key, "n_neighbors": n_neighbors})
    return res
