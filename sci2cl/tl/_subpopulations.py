"""Subclusters of one labelled population, with stability and differential expression."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from .. import metrics
from .._graph import leiden_labels as leiden
from .._utils import check_range
from ..pp import log_normalize
from ._common import _labels, _obsm, check_names, record

__all__ = ["find_subpopulations"]


def find_subpopulations(
    mdata: md.MuData | ad.AnnData,
    groupby: str,
    group: str,
    use_rep: str = "X_sci2cl",
    n_neighbors: int = 15,
    n_repeats: int = 5,
    subsample: float = 0.8,
    seed: int = 0,
    key_added: str = "subpopulation",
    de_modality: str = "rna",
    min_stability: float = 0.6,
) -> dict:
    """Subcluster one labelled population on the kNN graph of an embedding.

    The resolution is chosen label-free (:func:`leiden_label_free`).
    Evidence that the split is real:

    * stability: the population is re-clustered on ``n_repeats`` seeded
      subsamples of ``subsample`` of its cells; the mean ARI against the full
      clustering on the shared cells is reported (near 1: stable);
    * differential expression between subclusters (scanpy
      ``rank_genes_groups``, Wilcoxon, Benjamini-Hochberg).

    Writes ``obs[key_added]`` (subcluster of the group, ``NaN`` elsewhere) and
    ``uns[key_added]`` (``params``, ``resolution``, ``stability``, ``n_subclusters``).

    Returns
    -------
    dict with ``labels`` (Series), ``n_unlabelled`` (cells of ``mdata`` without a
    ``groupby`` label, never part of any group), ``resolution``, ``stability`` (list of
    ARIs), ``stable`` (mean stability ARI >= ``min_stability``), ``de``
    (tidy DataFrame) and ``n_subclusters``.
    """
    import scanpy as sc

    check_range("n_neighbors", n_neighbors, 1, integer=True)
    check_range("n_repeats", n_repeats, 1, integer=True)
    check_range("subsample", subsample, 0, 1, lo_open=True)
    check_range("min_stability", min_stability, 0, 1)
    check_names(mdata)
    if isinstance(mdata, md.MuData) and de_modality not in mdata.mod:
        raise ValueError(
            f"de_modality={de_modality!r} is not a modality of the MuData; it has {list(mdata.mod)}"
        )
    params = {
        "groupby": groupby, "group": str(group), "use_rep": use_rep, "n_neighbors": n_neighbors,
        "n_repeats": n_repeats, "subsample": subsample, "seed": seed, "de_modality": de_modality,
        "min_stability": min_stability,
    }  # fmt: skip
    obs = mdata.obs
    lab_all = _labels(mdata, groupby, "group")
    present = sorted(lab_all.dropna().unique())
    if str(group) not in present:
        raise ValueError(f"group {group!r} is not a label of obs[{groupby!r}]; labels: {present}")
    cells = obs.index[(lab_all == str(group)).to_numpy()]
    if len(cells) < 20:
        raise ValueError(f"group {group!r} has {len(cells)} cells; need at least 20")
    pos = obs.index.get_indexer(cells)
    X = _obsm(mdata, use_rep)[pos]
    lab, res, _ = metrics.leiden_label_free(
        X, resolutions=(0.1, 0.2, 0.3, 0.5, 0.8), n_neighbors=n_neighbors, seed=seed
    )
    rng = np.random.default_rng(seed)
    stab = []
    for r in range(n_repeats):
        sub = np.sort(rng.choice(len(cells), int(subsample * len(cells)), replace=False))
        lab_r = leiden(X[sub], resolution=res, n_neighbors=n_neighbors, seed=seed + r + 1)
        stab.append(metrics.ari(lab[sub], lab_r))
    labels = pd.Series(pd.Categorical([f"{group}-{i}" for i in lab]), index=cells)
    mdata.obs[key_added] = pd.Categorical(labels.reindex(obs.index).astype(object))
    de = pd.DataFrame()
    if labels.nunique() > 1:
        a = (mdata[de_modality] if isinstance(mdata, md.MuData) else mdata)[cells].copy()
        log_normalize(a)
        a.obs["sub"] = labels.values
        sc.tl.rank_genes_groups(a, "sub", method="wilcoxon", corr_method="benjamini-hochberg")
        de = sc.get.rank_genes_groups_df(a, group=None)
    record(
        mdata, key_added, params, resolution=float(res), stability=[float(x) for x in stab],
        n_subclusters=int(labels.nunique()),
    )  # fmt: skip
    return {
        "labels": labels,
        "n_unlabelled": int(lab_all.isna().sum()),
        "resolution": res,
        "stability": stab,
        "stable": bool(np.mean(stab) >= min_stability),
        "de": de,
        "n_subclusters": int(labels.nunique()),
    }
