"""Audit of a cell annotation: subgroups whose neighbours and features belong to another label."""

from __future__ import annotations

from collections.abc import Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import check_flag, check_range, dense
from ..pp import log_normalize
from ._common import _labels, _obsm, check_names, record

__all__ = ["audit_annotation"]


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
    accepted), ``obs[key_added + "_confidence"]`` (the fraction of the
    cell's neighbours that carry its proposed label) and ``uns[key_added]``
    (``params``, ``threshold`` and ``subgroups``, the table of every
    candidate subgroup with its evidence). Cells without a label
    (NaN) take no part: they are nobody's neighbour, keep NaN in both columns,
    and their number is ``.attrs["n_unlabelled"]`` of the result.

    Returns
    -------
    pandas.DataFrame
        One row per relabelled cell (index: cell names), columns ``label``,
        ``proposed``, ``neighbour_fraction``, ``own_label_fraction`` and
        ``position``. ``.attrs`` holds numbers only (``threshold``, the
        neighbourhood threshold used; ``n_unlabelled``), so the table prints
        and concatenates as any other. The candidate subgroups with their
        evidence (``n_cells``; per modality ``<m>_position``, ``<m>_weight``,
        ``<m>_corr_label``, ``<m>_corr_proposed``; ``combined_position``,
        ``p_value``, ``accepted``) are in ``uns[key_added]["subgroups"]``.
    """
    import scanpy as sc
    from scipy.stats import ttest_1samp

    check_range("n_neighbors", n_neighbors, 1, integer=True)
    check_range("min_cells", min_cells, 1, integer=True)
    check_range("alpha", alpha, 0, 1, lo_open=True, hi_open=True)
    if threshold is not None:
        check_range("threshold", threshold, 0, 1)
    check_flag("evidence", evidence)
    check_flag("per_cell", per_cell)
    check_names(mdata)
    params = {
        "label_key": label_key, "use_rep": use_rep, "n_neighbors": n_neighbors,
        "threshold": threshold, "min_cells": min_cells, "evidence": evidence,
        "per_cell": per_cell, "alpha": alpha, "markers": {k: list(v) for k, v in (markers or {}).items()},
    }  # fmt: skip
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
        if "counts" in a.layers or _integers(a.X):
            if "counts" not in a.layers:
                a.layers["counts"] = a.X.copy()
            log_normalize(a)
        # else: X holds normalised values already (no counts layer): used as they are
        logx[name] = a
    markers = {} if not evidence or markers is None else dict(markers)
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
    table.attrs["threshold"] = float(threshold)
    table.attrs["n_unlabelled"] = int((~labelled).sum())
    record(mdata, key_added, params, threshold=float(threshold), subgroups=pd.DataFrame(groups))
    return table


def _integers(X) -> bool:
    """Whether every stored value of ``X`` is a non-negative integer (raw counts)."""
    vals = X.data if sp.issparse(X) else np.asarray(X)
    return bool((vals >= 0).all() and np.allclose(vals, np.round(vals)))
