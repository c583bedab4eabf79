"""Analyses on embeddings: subpopulations, annotation audit, trajectories, gene activity and GSEA.

Functions take the data first and write their result to ``obs``/``obsm``/``uns``
under ``key_added``. Missing labels (NaN) are never a label: the cells that
carry none are left out of an analysis and counted in its result.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import metrics
from ._graph import knn_indices, modality_weights
from ._graph import leiden_labels as leiden
from ._utils import check_range, dense, get_matrix
from .pp import DataValidationError, log_normalize

__all__ = [
    "leiden",
    "modality_weights",
    "find_subpopulations",
    "audit_annotation",
    "PBMC_T_MARKERS",
    "pseudobulk_correlation",
    "trajectory",
    "gene_activity",
    "linked_gene_activity",
    "gsea_prerank",
    "spatial_vote",
]


def _labels(data, key: str, what: str = "labels") -> pd.Series:
    """``obs[key]`` as strings with missing values kept missing (never the label "nan")."""
    if key not in data.obs:
        raise KeyError(f"{what} column {key!r} not in obs; available: {list(data.obs.columns)}")
    col = data.obs[key]
    return col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else str(v))


def _obsm(data, key: str) -> np.ndarray:
    if key not in data.obsm:
        raise KeyError(
            f"obsm[{key!r}] missing (obsm has {list(data.obsm)}); compute the embedding first"
        )
    X = np.asarray(data.obsm[key])
    if not np.isfinite(X).all():
        raise DataValidationError(f"obsm[{key!r}] holds NaN or infinite values")
    return X


# --------------------------------------------------------------------------- subpopulations
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

    Writes ``obs[key_added]`` (subcluster of the group, ``NaN`` elsewhere).

    Returns
    -------
    dict with ``labels`` (Series), ``n_unlabelled`` (cells of ``mdata`` without a
    ``groupby`` label, never part of any group), ``resolution``, ``stability`` (list of
    ARIs), ``stable`` (mean stability ARI >= ``min_stability``), ``de``
    (tidy DataFrame) and ``n_subclusters``.
    """
    import scanpy as sc

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
    return {
        "labels": labels,
        "n_unlabelled": int(lab_all.isna().sum()),
        "resolution": res,
        "stability": stab,
        "stable": bool(np.mean(stab) >= min_stability),
        "de": de,
        "n_subclusters": int(labels.nunique()),
    }


# --------------------------------------------------------------------------- annotation audit
#: Default markers (PBMC, naive vs. memory CD4+ T), keyed by the label names of
#: Azimuth (PBMC-3K), the NeurIPS BMMC sets and the simulator. Only keys that
#: occur among the labels are used.
PBMC_T_MARKERS: dict[str, list[str]] = {
    **dict.fromkeys(["CD4 Naive", "CD4 naive T", "CD4+ T naive"], ["SELL", "CCR7", "LEF1", "TCF7"]),
    **dict.fromkeys(
        ["CD4 TCM", "CD4 TEM", "CD4 memory T", "CD4+ T activated"],
        ["ITGAL", "S100A4", "ANXA1", "AQP3", "KLRB1"],
    ),
}


def _neighbour_label_fractions(X: np.ndarray, codes: np.ndarray, n_cats: int, k: int):
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    rows = np.repeat(np.arange(len(codes)), k)

    def fractions(c: np.ndarray) -> np.ndarray:
        counts = np.zeros((len(c), n_cats))
        np.add.at(counts, (rows, c[idx].ravel()), 1)
        return counts / k

    return fractions


def _axis_evidence(
    X, sub: np.ndarray, rest: np.ndarray, other: np.ndarray, n_features: int = 200
) -> dict:
    """Where a subgroup sits between its own label (``rest``) and the proposed one.

    ``X`` (cells x features, log scale); boolean masks. The features that differ
    most between the two populations' means define an axis from the ``rest``
    centroid (0) to the ``other`` centroid (1); every cell is projected on it.
    Returns the subgroup's mean position, the per-cell positions, the
    separation of the two populations along the axis (d': 1 / pooled s.d.) and
    the Pearson correlations of the subgroup's pseudo-bulk with both.
    """
    mu_r = np.asarray(X[rest].mean(0)).ravel()
    mu_o = np.asarray(X[other].mean(0)).ravel()
    diff = mu_o - mu_r
    feat = np.argsort(-np.abs(diff))[: min(n_features, len(diff))]
    d = diff[feat]
    if not np.any(d):
        return {"position": np.nan, "weight": 0.0, "cell_position": np.zeros(sub.sum())}
    Xf = dense(X[:, feat])
    t = (Xf - mu_r[feat]) @ d / (d @ d)
    pooled = np.sqrt(0.5 * (t[rest].var() + t[other].var()))
    mu_s = Xf[sub].mean(0)
    return {
        "position": float(t[sub].mean()),
        "weight": float(1.0 / pooled) if pooled > 0 else 0.0,
        "cell_position": t[sub],
        "corr_label": float(np.corrcoef(mu_s, mu_r[feat])[0, 1]) if len(feat) > 2 else np.nan,
        "corr_proposed": float(np.corrcoef(mu_s, mu_o[feat])[0, 1]) if len(feat) > 2 else np.nan,
    }


def audit_annotation(
    mdata: md.MuData | ad.AnnData,
    label_key: str,
    use_rep: str = "X_sci2cl",
    markers: dict[str, Sequence[str]] | None = None,
    n_neighbors: int = 15,
    threshold: float | None = None,
    min_cells: int = 5,
    atac_activity: ad.AnnData | None = None,
    evidence: bool = True,
    per_cell: bool = True,
    alpha: float = 0.01,
    key_added: str = "audited_label",
) -> pd.DataFrame:
    """Find subgroups of a labelled population that belong to another label.

    1. **Neighbourhood** (the embedding): for each cell, the labels of its
       ``n_neighbors`` nearest neighbours in ``obsm[use_rep]``. A cell is a
       candidate when the most frequent neighbour label differs from its own
       and holds at least ``threshold`` of the neighbours. The default
       threshold is chosen without any truth: 0.5 (a strict majority), raised
       to the 95th percentile of the same statistic under a label permutation
       when that is higher (so that random labels are not flagged).
    2. **Subgroups**: the candidates of label ``L`` proposed as ``M`` form the
       subgroup ``L -> M`` (kept when it has ``min_cells`` cells).
    3. **Evidence outside the embedding**, per subgroup and modality (RNA from
       the ``rna`` modality or the AnnData itself; ATAC from ``atac_activity``
       (gene activity, :func:`gene_activity`) when given, else the ``atac``
       peaks): on the 200 features that differ most between the rest of
       ``L`` and ``M`` (log-normalised), the subgroup's position on the axis
       from ``L``'s centroid (0) to ``M``'s (1), and the pseudo-bulk
       correlation with both. With ``markers`` (label -> genes; the default
       :data:`PBMC_T_MARKERS` applies where the labels match, ``{}`` turns it
       off), scanpy's ``score_genes`` of ``M``'s minus ``L``'s markers gives
       one more axis. The positions are averaged with weights equal to each
       axis's separation of ``L`` and ``M`` (d'), so an uninformative
       modality counts little. ``evidence=False`` skips this step (and 4):
       every candidate of step 1 is relabelled, as a kNN-majority rule.
    4. **Decision**: a subgroup is accepted when its cells sit significantly
       closer to ``M`` than to ``L`` on the combined axis (one-sided t-test of
       the per-cell positions against 0.5 at level ``alpha``; cells along a
       continuum between two labels sit near 0.5 and are kept); with
       ``per_cell=True`` each of its cells must also sit above 0.5. Accepted
       cells get the proposed label.

    Writes ``obs[key_added]`` (the proposed labels; unchanged where not
    accepted) and ``obs[key_added + "_confidence"]`` (the fraction of the
    cell's neighbours that carry its proposed label). Cells without a label
    (NaN) take no part: they are nobody's neighbour, keep NaN in both columns,
    and their number is ``.attrs["n_unlabelled"]`` of the result.

    Returns
    -------
    pandas.DataFrame
        One row per relabelled cell (index: cell names), columns ``label``,
        ``proposed``, ``neighbour_fraction``, ``own_label_fraction`` and
        ``position``. ``.attrs["subgroups"]`` holds every candidate subgroup
        with its evidence (``n_cells``; per modality ``<m>_position``,
        ``<m>_weight``, ``<m>_corr_label``, ``<m>_corr_proposed``;
        ``combined_position``, ``p_value``, ``accepted``) and
        ``.attrs["threshold"]`` the neighbourhood threshold used.
    """
    import scanpy as sc
    from scipy.stats import ttest_1samp

    given = _labels(mdata, label_key)
    X_all = _obsm(mdata, use_rep)
    labelled = given.notna().to_numpy()
    if labelled.sum() < 3:
        raise ValueError(f"obs[{label_key!r}] labels {int(labelled.sum())} cells; need at least 3")
    names = mdata.obs_names[
        labelled
    ]  # unlabelled cells take no part: never a label, never relabelled
    y = given[labelled].to_numpy().astype(str)
    X = X_all[labelled]
    k = min(n_neighbors, X.shape[0] - 1)
    cats, codes = np.unique(y, return_inverse=True)
    fractions = _neighbour_label_fractions(X, codes, len(cats), k)
    frac = fractions(codes)
    top, top_frac = frac.argmax(1), frac.max(1)
    own_frac = frac[np.arange(len(y)), codes]
    if threshold is None:
        perm = fractions(codes[np.random.default_rng(0).permutation(len(codes))])
        threshold = max(0.5, float(np.quantile(perm.max(1), 0.95)))
    candidate = (top != codes) & (top_frac >= threshold)

    # per-modality matrices (log scale), computed once
    mods: dict[str, ad.AnnData] = {}
    if evidence:
        if isinstance(mdata, md.MuData):
            mods = {m: mdata[m] for m in ("rna", "atac") if m in mdata.mod}
        elif mdata.n_vars > 1:
            mods["rna"] = mdata
        if atac_activity is not None:
            mods["atac"] = atac_activity
    logx = {}
    for name, a in mods.items():
        a = a[names].copy()
        if "counts" not in a.layers:
            a.layers["counts"] = a.X.copy()
        log_normalize(a)
        logx[name] = a
    markers = {} if not evidence else (PBMC_T_MARKERS if markers is None else markers)
    rna = logx.get("rna")
    marker_scores: dict[str, np.ndarray | None] = {}

    def marker_score(label: str) -> np.ndarray | None:
        """Scanpy ``score_genes`` of a label's markers (``None``: none measured), once per label."""
        if label not in marker_scores:
            genes = [g for g in markers.get(label, []) if rna is not None and g in rna.var_names]
            if genes:
                sc.tl.score_genes(rna, genes, score_name="_s", random_state=0)
            marker_scores[label] = rna.obs["_s"].to_numpy() if genes else None
        return marker_scores[label]

    pos = np.zeros(len(y))
    accepted = np.zeros(len(y), bool)
    groups = []
    for li, mi in sorted(set(zip(codes[candidate], top[candidate]))):
        sub = candidate & (codes == li) & (top == mi)
        if sub.sum() < min_cells:
            continue
        rest = (codes == li) & ~candidate
        other = (codes == mi) & ~candidate
        row = {"label": cats[li], "proposed": cats[mi], "n_cells": int(sub.sum())}
        if rest.sum() < 2 or other.sum() < 2:
            row.update(combined_position=np.nan, accepted=False)
            groups.append(row)
            continue
        evid = {name: _axis_evidence(a.X, sub, rest, other) for name, a in logx.items()}
        s_l, s_m = marker_score(cats[li]), marker_score(cats[mi])
        if s_l is not None and s_m is not None:
            evid["markers"] = _axis_evidence((s_m - s_l)[:, None], sub, rest, other)
        w = np.array([e["weight"] for e in evid.values()])
        if not len(w) or w.sum() == 0:
            comb, cell_t = np.nan, np.full(sub.sum(), np.nan)
        else:
            comb = float(sum(e["weight"] * e["position"] for e in evid.values()) / w.sum())
            cell_t = sum(e["weight"] * e["cell_position"] for e in evid.values()) / w.sum()
        for name, e in evid.items():
            row.update(
                {
                    f"{name}_{c}": e.get(c, np.nan)
                    for c in ("position", "weight", "corr_label", "corr_proposed")
                }
            )
        pval = np.nan
        if evid and np.isfinite(comb) and len(cell_t) > 1 and np.ptp(cell_t) > 0:
            pval = float(ttest_1samp(cell_t, 0.5, alternative="greater").pvalue)
        ok = bool(pval < alpha) if evid else True
        row.update(combined_position=comb, p_value=pval, accepted=ok)
        groups.append(row)
        if ok:
            cells = np.flatnonzero(sub)
            keep = cells if (not per_cell or not evid) else cells[cell_t > 0.5]
            accepted[keep] = True
            if evid:
                pos[cells] = cell_t
    proposed = pd.Series(np.nan, index=mdata.obs_names, dtype=object)
    proposed[labelled] = np.where(accepted, cats[top], y)
    mdata.obs[key_added] = pd.Categorical(proposed, categories=sorted(cats))
    confidence = np.full(mdata.n_obs, np.nan)
    confidence[labelled] = np.where(accepted, top_frac, own_frac)
    mdata.obs[key_added + "_confidence"] = confidence
    table = pd.DataFrame(
        {
            "label": y[accepted],
            "proposed": cats[top][accepted],
            "neighbour_fraction": top_frac[accepted],
            "own_label_fraction": own_frac[accepted],
            "position": pos[accepted],
        },
        index=names[accepted],
    )
    table.attrs["threshold"] = threshold
    table.attrs["n_unlabelled"] = int((~labelled).sum())
    table.attrs["subgroups"] = pd.DataFrame(groups)
    return table


def pseudobulk_correlation(adata: ad.AnnData, groups: pd.Series) -> pd.DataFrame:
    """Pearson correlation of log-normalised pseudo-bulk profiles between groups."""
    a = adata.copy()
    log_normalize(a)
    X = dense(a.X)
    g = groups.reindex(a.obs_names)
    prof = pd.DataFrame({c: X[(g == c).to_numpy()].mean(0) for c in sorted(g.dropna().unique())})
    return prof.corr()


# --------------------------------------------------------------------------- trajectory
def trajectory(
    mdata: md.MuData | ad.AnnData,
    cluster_key: str,
    start: str,
    use_rep: str = "X_sci2cl",
    clusters: Sequence[str] | None = None,
    end: Sequence[str] | None = None,
    n_components: int = 2,
    num_epochs: int = 3,
    seed: int = 0,
    key_added: str = "pseudotime",
) -> dict:
    """Slingshot (pyslingshot) lineages and pseudotime on a low-dimensional view.

    The embedding ``obsm[use_rep]`` of the cells in ``clusters`` (default:
    all) is reduced to ``n_components`` by UMAP (seeded), then
    ``pyslingshot.Slingshot`` is fitted with cluster one-hots built from
    category codes (pyslingshot sorts string labels as text otherwise).

    Writes ``obs[key_added]`` (unified pseudotime, NaN outside ``clusters``),
    ``obsm[key_added + "_lineages"]`` (per-lineage pseudotime, ``(n_cells,
    n_lineages)``, NaN where a cell has no weight on the lineage),
    ``obsm["X_" + key_added + "_2d"]`` and ``uns[key_added]`` (lineages as
    cluster names). Returns the same plus the fitted ``Slingshot`` object and
    ``n_unlabelled`` (cells without a cluster label; they are left out).
    """
    import umap
    from pyslingshot import Slingshot

    lab = _labels(mdata, cluster_key, "cluster")
    present = sorted(lab.dropna().unique())
    if clusters is not None:
        clusters = [str(c) for c in clusters]
        unknown = [c for c in clusters if c not in present]
        if unknown:
            raise ValueError(
                f"clusters {unknown} are not labels of obs[{cluster_key!r}]; labels: {present}"
            )
    cats = clusters if clusters is not None else present
    for name, chosen in (("start", [start]), ("end", list(end or []))):
        bad = [str(c) for c in chosen if str(c) not in cats]
        if bad:
            raise ValueError(f"{name} cluster(s) {bad} not among the clusters used: {cats}")
    start, end = str(start), [str(e) for e in end] if end else None
    keep = lab.isin(cats) & lab.notna()  # unlabelled cells never form a cluster
    sizes = lab[keep].value_counts()
    small = sorted(c for c in cats if sizes.get(c, 0) < 3)
    if small:
        raise ValueError(
            f"clusters {small} have fewer than 3 cells; Slingshot needs more per cluster"
        )
    X = _obsm(mdata, use_rep)[keep.to_numpy()]
    if X.shape[1] > n_components:
        X2 = umap.UMAP(n_components=n_components, random_state=seed, n_neighbors=30).fit_transform(
            X
        )
    else:
        X2 = X
    codes = pd.Categorical(lab[keep], categories=cats).codes
    onehot = np.eye(len(cats))[codes]
    state = np.random.get_state()  # noqa: NPY002 - pyslingshot reads numpy's global generator only
    np.random.seed(seed)  # noqa: NPY002 - restored below
    try:
        # pyslingshot prints its lineages and draws a tqdm bar: both are dropped, its warnings kept
        with (
            warnings.catch_warnings(record=True) as caught,
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(io.StringIO()),
        ):
            sl = Slingshot(
                X2,
                onehot,
                start_node=cats.index(start),
                end_nodes=[cats.index(e) for e in end] if end else None,
            )
            sl.fit(num_epochs=num_epochs)
        for w in caught:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    except np.linalg.LinAlgError as e:
        raise ValueError(
            f"Slingshot failed on obsm[{use_rep!r}] ({e}): a cluster is degenerate in the "
            f"{n_components}-D view (too few or identical cells); merge or drop small clusters"
        ) from e
    finally:
        np.random.set_state(state)  # noqa: NPY002
    pt = np.full(mdata.n_obs, np.nan)
    pt[keep.to_numpy()] = np.asarray(sl.unified_pseudotime)
    mdata.obs[key_added] = pt
    coords = np.full((mdata.n_obs, n_components), np.nan)
    coords[keep.to_numpy()] = X2
    mdata.obsm[f"X_{key_added}_2d"] = coords
    lineages = [[cats[i] for i in lin] for lin in sl.lineages]
    per = np.full((mdata.n_obs, len(lineages)), np.nan)
    weights = np.asarray(sl.cell_weights)
    for j, curve in enumerate(sl.curves):
        t = np.where(weights[:, j] > 0, np.asarray(curve.pseudotimes_interp, float), np.nan)
        per[keep.to_numpy(), j] = t
    mdata.obsm[f"{key_added}_lineages"] = per
    mdata.uns[key_added] = {"lineages": lineages, "start": start, "use_rep": use_rep}
    return {
        "n_unlabelled": int(lab.isna().sum()),
        "pseudotime": pt,
        "lineage_pseudotime": per,
        "lineages": lineages,
        "slingshot": sl,
        "coords": X2,
        "keep": keep.to_numpy(),
    }


# --------------------------------------------------------------------------- gene activity, GSEA
def _parse_interval(name: str) -> tuple[str, int, int] | None:
    import re

    m = re.match(r"^(chr[\w]+|[\dXYM]+)[:\-_](\d+)[\-_](\d+)$", name)
    if not m:
        return None
    return m.group(1), int(m.group(2)), int(m.group(3))


def _chrom(c) -> str:
    """Chromosome name without a ``chr`` prefix (``"chr1"`` and ``"1"`` are the same)."""
    c = str(c)
    return c[3:] if c.lower().startswith("chr") else c


def gene_activity(
    atac: ad.AnnData,
    genes: pd.DataFrame,
    upstream: int = 2000,
    layer: str | None = "counts",
    min_fraction: float = 0.05,
) -> ad.AnnData:
    """Gene activity: ATAC counts summed over peaks overlapping promoter + gene body.

    ``genes`` has columns ``chrom, start, end, strand`` indexed by gene name
    (e.g. from the GTF the data were aligned to; GLUE's h5ad files carry
    them in ``var``). A peak counts for a gene when it overlaps
    ``[start - upstream, end]`` (``+`` strand) or ``[start, end + upstream]``
    (``-`` strand). Chromosome names match with or without a ``chr`` prefix;
    strand may be ``"+"``/``"-"`` or ``1``/``-1``.

    Returns
    -------
    anndata.AnnData
        Cells x genes counts (also in ``layers["counts"]``).

    Raises
    ------
    ValueError
        Peaks without parseable coordinates (``chr1-100-200`` or ``chr1:100-200``),
        genes with missing or inverted coordinates or an unknown strand, or no
        peak overlapping any gene (e.g. other chromosome names or genome build).

    Warns
    -----
    UserWarning
        Fewer than ``min_fraction`` of the genes have any peak; the warning gives the count.
    """
    need = {"chrom", "start", "end", "strand"}
    if not need <= set(genes.columns):
        raise ValueError(f"genes needs columns {sorted(need)}; it has {list(genes.columns)}")
    coords = [_parse_interval(str(p)) for p in atac.var_names]
    if not any(c is not None for c in coords):
        raise ValueError("peak names carry no genomic coordinates (expected 'chr1-100-200')")
    pk = pd.DataFrame(
        [c if c else (None, -1, -1) for c in coords], columns=["chrom", "start", "end"]
    )
    pk["chrom"] = pk["chrom"].map(lambda c: None if c is None else _chrom(c))
    g = genes.copy()
    bad = g[["chrom", "start", "end"]].isna().any(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} genes have missing coordinates (e.g. {g.index[bad][:3].tolist()}); "
            "drop them or fill them in before computing gene activity"
        )
    if (g["start"] > g["end"]).any():
        inv = g.index[g["start"] > g["end"]][:3].tolist()
        raise ValueError(f"genes with start > end, e.g. {inv}")
    strand = g["strand"].map({"+": "+", "-": "-", 1: "+", -1: "-", "1": "+", "-1": "-"})
    if strand.isna().any():
        odd = sorted(set(map(str, g["strand"][strand.isna()])))[:5]
        raise ValueError(f"strand must be '+'/'-' or 1/-1; found {odd}")
    g["chrom"] = g["chrom"].map(_chrom)
    g["lo"] = np.where(strand == "-", g["start"], g["start"] - upstream)
    g["hi"] = np.where(strand == "-", g["end"] + upstream, g["end"])
    rows, cols = [], []
    for chrom, gg in g.groupby("chrom"):
        p = pk[pk["chrom"] == chrom]
        if p.empty:
            continue
        order = np.argsort(p["start"].to_numpy())
        ps, pe, pidx = (
            p["start"].to_numpy()[order],
            p["end"].to_numpy()[order],
            p.index.to_numpy()[order],
        )
        for gi, (lo, hi) in zip(g.index.get_indexer(gg.index), gg[["lo", "hi"]].to_numpy()):
            j = np.searchsorted(ps, hi, side="right")
            hit = pidx[:j][pe[:j] >= lo]
            rows += hit.tolist()
            cols += [gi] * len(hit)
    if not rows:
        raise ValueError(
            "no peak overlaps any gene: check that peaks and genes use the same genome build "
            f"(peak chromosomes e.g. {sorted(pk['chrom'].dropna().unique())[:4]}, "
            f"gene chromosomes e.g. {sorted(g['chrom'].unique())[:4]})"
        )
    n_hit = len(set(cols))
    if n_hit < min_fraction * len(g):
        warnings.warn(
            f"only {n_hit} of {len(g)} genes overlap any peak; their gene activity is 0",
            UserWarning,
            stacklevel=2,
        )
    return _summed_activity(atac, np.asarray(rows), np.asarray(cols), g.index, layer)


def _summed_activity(atac: ad.AnnData, peaks, genes, names: pd.Index, layer) -> ad.AnnData:
    """Cells x genes sums of the counts of the peaks assigned to each gene (``peaks[i] -> genes[i]``)."""
    M = sp.csr_matrix((np.ones(len(peaks)), (peaks, genes)), shape=(atac.n_vars, len(names)))
    X = get_matrix(atac, layer)
    out = ad.AnnData(
        sp.csr_matrix(X @ M, dtype=np.float32),
        obs=atac.obs[[]].copy(),
        var=pd.DataFrame(index=names),
    )
    out.layers["counts"] = out.X.copy()
    return out


def linked_gene_activity(
    atac: ad.AnnData, gene_key: str = "gene", layer: str | None = "counts"
) -> ad.AnnData:
    """Gene activity from a peak-to-gene table: ATAC counts summed over each gene's peaks.

    For data that ship each peak's gene (e.g. SNARE-seq cortex,
    ``atac.var["gene"]`` from its peak-gene links) instead of a genome
    annotation; :func:`gene_activity` builds the same from coordinates.
    Peaks without a gene (NaN or empty) count for none.

    Returns
    -------
    anndata.AnnData
        Cells x linked genes (sorted), counts in ``X`` and ``layers["counts"]``.

    Raises
    ------
    KeyError
        ``atac.var`` has no column ``gene_key``.
    ValueError
        No peak has a gene.
    """
    if gene_key not in atac.var.columns:
        raise KeyError(
            f"atac.var has no column {gene_key!r} (columns: {list(atac.var.columns)}); pass the "
            "column that names each peak's gene, or use gene_activity() with gene coordinates"
        )
    gene = atac.var[gene_key].astype("string").fillna("").str.strip().to_numpy()
    linked = np.flatnonzero(gene != "")
    if len(linked) == 0:
        raise ValueError(f"no peak has a gene in atac.var[{gene_key!r}]")
    names = pd.Index(np.unique(gene[linked]))
    return _summed_activity(atac, linked, names.get_indexer(gene[linked]), names, layer)


def gsea_prerank(
    de: pd.DataFrame,
    group: str | None,
    gene_sets: str | os.PathLike | dict,
    seed: int = 0,
    permutation_num: int = 200,
    min_size: int = 10,
    max_size: int = 500,
    to_human: bool = False,
) -> pd.DataFrame:
    """``gseapy.prerank`` of one group's genes (ranked by Wilcoxon score) on local gene sets.

    Parameters
    ----------
    de
        Tidy DE table with ``names`` and ``scores`` (``sc.get.rank_genes_groups_df``);
        with several groups it also has a ``group`` column.
    group
        The group to rank; ``None`` uses the whole table, which must then hold
        one group only.
    gene_sets
        A local GMT file or a dict ``{set: genes}``. No network is used: a
        string that is not an existing file (e.g. an Enrichr library name) is
        refused.
    to_human
        Map mouse symbols to human by upper-casing (the usual approximation
        for 1:1 orthologs).

    Returns
    -------
    pandas.DataFrame
        gseapy's ``res2d`` with a ``group`` column.
    """
    from pathlib import Path

    import gseapy as gp

    missing = {"names", "scores"} - set(de.columns)
    if missing:
        raise ValueError(f"de lacks columns {sorted(missing)}; it has {list(de.columns)}")
    if isinstance(gene_sets, str | os.PathLike):
        if not Path(gene_sets).is_file():
            raise FileNotFoundError(
                f"gene_sets={str(gene_sets)!r} is not a local file; pass a GMT path or a dict "
                "(library names would need the network, which gsea_prerank never uses)"
            )
        gene_sets = str(gene_sets)
    elif not isinstance(gene_sets, dict):
        raise TypeError(f"gene_sets must be a GMT path or a dict, got {type(gene_sets).__name__}")
    if "group" in de.columns:
        groups = sorted(de["group"].astype(str).unique())
        if group is None:
            if len(groups) > 1:
                raise ValueError(f"de holds several groups {groups}; choose one with group=")
            d = de
        elif str(group) not in groups:
            raise ValueError(f"group {group!r} is not in the DE table; its groups: {groups}")
        else:
            d = de[de["group"].astype(str) == str(group)]
    elif group is not None:
        raise ValueError(
            f"de has no 'group' column, so it cannot be the table of group {group!r}; "
            "pass the table of that group with group=None, or a table with a 'group' column"
        )
    else:
        d = de
    rnk = d[["names", "scores"]].dropna().copy()
    if to_human:
        rnk["names"] = rnk["names"].str.upper()
    rnk = rnk.drop_duplicates("names").set_index("names")["scores"].sort_values(ascending=False)
    tied = float(rnk.duplicated(keep=False).mean())
    if tied > 0.1:  # said once, as a Python warning, instead of gseapy's log line per call
        warnings.warn(
            f"{tied:.0%} of the ranked genes share their score with another gene; their order "
            "is arbitrary, which weakens the test (typical of sparse data: rank on a finer "
            "statistic, or filter genes detected in few cells)",
            UserWarning,
            stacklevel=2,
        )
    with contextlib.redirect_stderr(io.StringIO()):  # gseapy's logger writes the same to stderr
        res = gp.prerank(
            rnk=rnk,
            gene_sets=gene_sets,
            permutation_num=permutation_num,
            min_size=min_size,
            max_size=max_size,
            seed=seed,
            threads=1,
            outdir=None,
            verbose=False,
        )
    out = res.res2d.copy()
    out["group"] = group
    out.attrs["tied_fraction"] = tied
    return out


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
    adata.obs[key_added or f"{key}_voted"] = res
    return res
