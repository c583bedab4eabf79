"""Slingshot lineages and pseudotime on an embedding."""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd

from .._utils import check_range
from ._common import _labels, _obsm, check_names, record

__all__ = ["trajectory"]


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

    check_range("n_components", n_components, 1, integer=True)
    check_range("num_epochs", num_epochs, 1, integer=True)
    check_names(mdata)
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
    if len(cats) < 2:
        raise ValueError(f"a trajectory needs at least two clusters; the clusters used are {cats}")
    if end and start in end:
        raise ValueError(f"the start cluster {start!r} cannot also be an end cluster ({end})")
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
    _warn_long_steps(X2, codes, cats, lineages)
    params = {
        "cluster_key": cluster_key, "start": start, "use_rep": use_rep, "clusters": cats,
        "end": end, "n_components": n_components, "num_epochs": num_epochs, "seed": seed,
    }  # fmt: skip
    record(mdata, key_added, params, lineages=lineages, start=start, use_rep=use_rep)
    return {
        "n_unlabelled": int(lab.isna().sum()),
        "pseudotime": pt,
        "lineage_pseudotime": per,
        "lineages": lineages,
        "slingshot": sl,
        "coords": X2,
        "keep": keep.to_numpy(),
    }


#: a lineage step this many times longer than the median step is reported
LONG_STEP = 5.0


def _warn_long_steps(X2: np.ndarray, codes: np.ndarray, cats: list, lineages: list) -> None:
    """Warn when a lineage crosses a gap far wider than its other steps (a cluster that is not on it).

    Steps are distances between consecutive clusters' centroids in the 2-D view.
    """
    centre = {c: X2[codes == i].mean(0) for i, c in enumerate(cats)}
    steps = [
        (a, b, float(np.linalg.norm(centre[a] - centre[b])))
        for lin in lineages
        for a, b in zip(lin[:-1], lin[1:])
    ]
    if len(steps) < 2:
        return
    median = float(np.median([d for *_, d in steps]))
    far = [(a, b, d) for a, b, d in steps if median > 0 and d > LONG_STEP * median]
    if far:
        a, b, d = max(far, key=lambda t: t[2])
        warnings.warn(
            f"the lineage step {a!r} -> {b!r} crosses a distance of {d:.3g} in the "
            f"{X2.shape[1]}-D view, {d / median:.0f} times the median step ({median:.3g}): "
            f"{b!r} may not be on this trajectory. Pass clusters= without it, or check the "
            "embedding",
            UserWarning,
            stacklevel=3,
        )
