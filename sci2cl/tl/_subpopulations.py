"""Subclusters of one labelled population, with stability and differential expression."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from .. import metrics
from .._graph import knn_adjacency
from .._graph import leiden_labels as leiden
from .._utils import check_choice, check_range
from ..pp import log_normalize
from ._common import _labels, _obsm, check_names, record

__all__ = ["find_subpopulations", "marker_counts", "SUBCLUSTER_SPACES", "RESOLUTION_RULES"]

#: the spaces a population is subclustered in (see :func:`find_subpopulations`)
SUBCLUSTER_SPACES = ("raw", "zscore", "pca", "cosine")
#: how the Leiden resolution of the subclusters is chosen
RESOLUTION_RULES = ("silhouette", "plateau", "stability")
#: resolutions tried
RESOLUTIONS = (0.1, 0.2, 0.3, 0.5, 0.8)


def population_space(X: np.ndarray, space: str, variance: float = 0.9) -> np.ndarray:
    """The rows ``X`` ``(n, d)`` of one population in the space where it is subclustered.

    ``"raw"``: unchanged; ``"cosine"``: rows scaled to unit length; ``"zscore"``:
    each dimension standardised within the population (constant ones dropped);
    ``"pca"``: the population's own principal components of the standardised rows,
    as many as explain ``variance`` of its variance (at least 2).
    """
    X = np.asarray(X, dtype=np.float64)
    if space == "raw":
        return X
    if space == "cosine":
        return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    sd = X.std(0)
    keep = sd > 1e-12 * max(1.0, float(np.abs(X).max()))
    Z = (X[:, keep] - X[:, keep].mean(0)) / sd[keep]
    if space == "zscore":
        return Z
    U, S, _ = np.linalg.svd(Z, full_matrices=False)
    ratio = np.cumsum(S**2) / max(float(np.sum(S**2)), 1e-300)
    k = max(2, int(np.searchsorted(ratio, variance) + 1))
    return U[:, :k] * S[:k]


def _plateau_centre(X, lab, res, n_neighbors, seed) -> float:
    """The middle of the resolutions of :data:`RESOLUTIONS` that give partition ``lab``.

    The silhouette rule keeps the lowest resolution of a tie, the edge where the
    partition first appears; a subsample re-clustered there can fall back to
    fewer clusters. The partition is unchanged; only the resolution its
    stability is measured at moves inside the plateau.
    """
    same = [r for r in RESOLUTIONS if r == res or metrics.ari(
        lab, leiden(X, resolution=r, n_neighbors=n_neighbors, seed=seed)) > 0.999]  # fmt: skip
    return float(same[(len(same) - 1) // 2])  # ``res`` itself is always in ``same``


def _modality(mdata, de_modality: str) -> ad.AnnData:
    """The modality the markers are tested on (the AnnData itself when ``mdata`` is one)."""
    return mdata[de_modality] if isinstance(mdata, md.MuData) else mdata


def _de_table(mdata, de_modality: str, cells: pd.Index, labels) -> pd.DataFrame:
    """Wilcoxon test of every subcluster against the rest of the population (scanpy, BH)."""
    import scanpy as sc

    a = _modality(mdata, de_modality)[cells].copy()
    log_normalize(a)
    a.obs["sub"] = pd.Categorical(np.asarray(labels).astype(str))
    sc.tl.rank_genes_groups(a, "sub", method="wilcoxon", corr_method="benjamini-hochberg")
    return sc.get.rank_genes_groups_df(a, group=None)


def marker_counts(table: pd.DataFrame, alpha: float = 0.05, min_log2fc: float = 1.0) -> pd.Series:
    """Markers per subcluster of a :func:`_de_table`: up at BH ``alpha`` by ``min_log2fc`` or more."""
    up = table[(table["pvals_adj"] < alpha) & (table["logfoldchanges"] >= min_log2fc)]
    return (
        up.groupby("group", observed=False)["names"]
        .count()
        .reindex(table["group"].unique(), fill_value=0)
    )


def _log_means(a: ad.AnnData, groups: np.ndarray) -> pd.DataFrame:
    """Mean log-normalised expression ``(n_groups, n_genes)`` of the cells of each group."""
    a = a.copy()
    log_normalize(a)
    out = {}
    for g in np.unique(groups):
        out[g] = np.asarray(a.X[groups == g].mean(0)).ravel()
    return pd.DataFrame(out, index=a.var_names).T


def _foreign_means(mdata, de_modality: str, lab_all: pd.Series, group: str) -> pd.Series:
    """Per gene, the highest mean log-normalised expression among the other labelled populations."""
    others = lab_all[lab_all.notna() & (lab_all != str(group))]
    return _log_means(_modality(mdata, de_modality)[others.index], others.to_numpy(dtype=str)).max(
        0
    )


def _own(table: pd.DataFrame, sub_means: pd.DataFrame, foreign: pd.Series) -> pd.DataFrame:
    """Rows of a :func:`_de_table` whose subcluster expresses the gene above every other population."""
    rows = sub_means.index.get_indexer(table["group"].astype(str).to_numpy())
    cols = sub_means.columns.get_indexer(table["names"].to_numpy())
    mine = sub_means.to_numpy()[rows, cols]
    return table[mine > foreign.reindex(table["names"]).to_numpy()]


def _supported_resolution(
    X, mdata, de_modality, cells, n_neighbors, seed, min_markers, min_log2fc=1.0, foreign=None
):
    """The silhouette-best resolution whose every subcluster has ``min_markers`` markers.

    Markers: :func:`marker_counts` with ``min_log2fc``; with ``foreign`` (per gene, the
    highest mean expression of the other populations, :func:`_foreign_means`), only the
    genes a subcluster expresses above that count.

    Returns ``(labels, resolution)``; all zeros and 0.0 (the population whole)
    when no resolution of :data:`RESOLUTIONS` splits it into supported subclusters.
    """
    A = knn_adjacency(X, n_neighbors)
    best = (-np.inf, np.zeros(len(X), int), 0.0)
    for r in RESOLUTIONS:
        lab = leiden(resolution=r, seed=seed, adjacency=A)
        if len(np.unique(lab)) < 2:
            continue
        s = metrics.asw(X, lab, seed=seed)
        if s <= best[0] + 1e-9:
            continue
        table = _de_table(mdata, de_modality, cells, lab)
        groups = np.unique(np.asarray(lab).astype(str))
        if foreign is not None:  # only the genes each subcluster expresses above the others
            sub_means = _log_means(
                _modality(mdata, de_modality)[cells], np.asarray(lab).astype(str)
            )
            table = _own(table, sub_means, foreign)
        counts = marker_counts(table, min_log2fc=min_log2fc).reindex(groups, fill_value=0)
        if counts.min() >= min_markers:
            best = (s, lab, r)
    return best[1], best[2]


def _stability(X, lab, res, n_neighbors, n_repeats, subsample, seed) -> list[float]:
    """ARI of ``lab`` with Leiden at ``res`` on seeded subsamples (shared cells)."""
    rng = np.random.default_rng(seed)
    out = []
    for r in range(n_repeats):
        sub = np.sort(rng.choice(len(X), int(subsample * len(X)), replace=False))
        lab_r = leiden(X[sub], resolution=res, n_neighbors=n_neighbors, seed=seed + r + 1)
        out.append(metrics.ari(lab[sub], lab_r))
    return out


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
    space: str = "cosine",
    resolution_rule: str = "plateau",
    de: bool = True,
    min_markers: int | None = None,
    min_log2fc: float = 1.0,
    own_markers: bool = False,
) -> dict:
    """Subcluster one labelled population on the kNN graph of an embedding.

    The population's rows of ``obsm[use_rep]`` are put in ``space``
    (:func:`population_space`: ``"cosine"``, rows scaled to unit length, so that
    the rule does not depend on the embedding's scale; ``"raw"``, ``"zscore"``
    within the population, or ``"pca"``, the population's own principal
    components), then clustered by Leiden on their ``n_neighbors``-NN graph at a
    resolution chosen label-free by ``resolution_rule``: ``"silhouette"``, the
    resolution of :data:`RESOLUTIONS` whose clusters have the highest silhouette
    (:func:`~sci2cl.metrics.leiden_label_free`; a tie goes to the lowest) among
    those whose every subcluster has at least ``min_markers`` marker genes
    (:func:`marker_counts`: up against the rest of the population at BH 0.05 by a
    log2 fold change of ``min_log2fc`` or more; ``None``: 1; ``0``: no marker gate; with
    ``own_markers``, a marker counts only when the subcluster expresses it, on average, above
    every other population of ``groupby``, so that genes brought in by ambient RNA or doublets
    of another population do not support a split), the
    population kept whole when no resolution qualifies;
    ``"plateau"`` (the default), the same clusters, their stability measured at
    the middle of the resolutions that give them (not at the edge where they
    first appear, where subsamples fall back to fewer); ``"stability"``, the finest
    resolution whose split is stable (mean subsample ARI at least
    ``min_stability``), the population kept whole when none is.
    Evidence that the split is real:

    * stability: the population is re-clustered on ``n_repeats`` seeded
      subsamples of ``subsample`` of its cells; the mean ARI against the full
      clustering on the shared cells is reported (near 1: stable);
    * differential expression between subclusters (scanpy
      ``rank_genes_groups``, Wilcoxon, Benjamini-Hochberg; ``de=False``: skipped).

    Writes ``obs[key_added]`` (subcluster of the group, ``NaN`` elsewhere) and
    ``uns[key_added]`` (``params``, ``resolution``, ``stability``, ``n_subclusters``).

    Returns
    -------
    dict with ``labels`` (Series), ``n_unlabelled`` (cells of ``mdata`` without a
    ``groupby`` label, never part of any group), ``resolution``, ``stability`` (list of
    ARIs), ``stable`` (a split, at least 2 subclusters, with mean stability ARI
    >= ``min_stability``), ``de``
    (tidy DataFrame) and ``n_subclusters``.
    """
    check_range("n_neighbors", n_neighbors, 1, integer=True)
    check_range("n_repeats", n_repeats, 1, integer=True)
    check_range("subsample", subsample, 0, 1, lo_open=True)
    check_range("min_stability", min_stability, 0, 1)
    check_choice("space", space, SUBCLUSTER_SPACES)
    check_choice("resolution_rule", resolution_rule, RESOLUTION_RULES)
    if min_markers is None:
        min_markers = 0 if resolution_rule == "stability" else 1
    check_range("min_markers", min_markers, 0, integer=True)
    check_range("min_log2fc", min_log2fc, 0)
    if min_markers and resolution_rule == "stability":
        raise ValueError(
            f"min_markers={min_markers} gates the silhouette and plateau rules' resolutions; "
            f"use one of those or min_markers=0 (got resolution_rule={resolution_rule!r})"
        )
    check_names(mdata)
    if isinstance(mdata, md.MuData) and de_modality not in mdata.mod:
        raise ValueError(
            f"de_modality={de_modality!r} is not a modality of the MuData; it has {list(mdata.mod)}"
        )
    params = {
        "groupby": groupby, "group": str(group), "use_rep": use_rep, "n_neighbors": n_neighbors,
        "n_repeats": n_repeats, "subsample": subsample, "seed": seed, "de_modality": de_modality,
        "min_stability": min_stability, "space": space, "resolution_rule": resolution_rule,
        "min_markers": min_markers, "min_log2fc": min_log2fc, "own_markers": own_markers,
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
    X = population_space(_obsm(mdata, use_rep)[pos], space)
    if min_markers:
        foreign = _foreign_means(mdata, de_modality, lab_all, group) if own_markers else None
        lab, res = _supported_resolution(
            X, mdata, de_modality, cells, n_neighbors, seed, min_markers, min_log2fc, foreign
        )
        if res and resolution_rule == "plateau":
            res = _plateau_centre(X, lab, res, n_neighbors, seed)
        stab = (
            _stability(X, lab, res, n_neighbors, n_repeats, subsample, seed)
            if res
            else [1.0] * n_repeats
        )
    elif resolution_rule in ("silhouette", "plateau"):
        lab, res, _ = metrics.leiden_label_free(
            X, resolutions=RESOLUTIONS, n_neighbors=n_neighbors, seed=seed
        )
        if resolution_rule == "plateau":
            res = _plateau_centre(X, lab, res, n_neighbors, seed)
        stab = _stability(X, lab, res, n_neighbors, n_repeats, subsample, seed)
    else:  # the finest resolution whose split is stable; none: the population stays whole
        lab, res, stab = np.zeros(len(cells), int), 0.0, [1.0] * n_repeats
        for r in RESOLUTIONS:
            lab_r = leiden(X, resolution=r, n_neighbors=n_neighbors, seed=seed)
            if len(np.unique(lab_r)) < 2:
                continue
            st = _stability(X, lab_r, r, n_neighbors, n_repeats, subsample, seed)
            if np.mean(st) >= min_stability:
                lab, res, stab = lab_r, r, st
    labels = pd.Series(pd.Categorical([f"{group}-{i}" for i in lab]), index=cells)
    mdata.obs[key_added] = pd.Categorical(labels.reindex(obs.index).astype(object))
    table = pd.DataFrame()
    if de and labels.nunique() > 1:
        table = _de_table(mdata, de_modality, cells, labels.values)
    record(
        mdata, key_added, params, resolution=float(res), stability=[float(x) for x in stab],
        n_subclusters=int(labels.nunique()),
    )  # fmt: skip
    return {
        "labels": labels,
        "n_unlabelled": int(lab_all.isna().sum()),
        "resolution": res,
        "stability": stab,
        "stable": bool(labels.nunique() > 1 and np.mean(stab) >= min_stability),
        "de": table,
        "n_subclusters": int(labels.nunique()),
    }
