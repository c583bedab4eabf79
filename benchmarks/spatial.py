"""Spatial benchmark: scRCL on labelled tissue against expression-only and spatial peers.

Usage: python -m benchmarks.spatial [--smoke] [--seeds 0 1 2] [--methods ...] [--datasets ...]
                                   [--out results]

Tasks (:data:`TASKS`): cell typing on osmFISH cortex (``cell_type``, 31 types) and spatial
domains on osmFISH (``region``, 11) and on the Visium DLPFC slice (``layer``, 7). Every
method gives one embedding per dataset and seed, which is clustered per task:

- ``kmeans``: KMeans at the task's true number of classes (scRCL: its own read-out,
  :meth:`sci2cl.SCRCL.predict`, at that number);
- ``leiden``: label-free Leiden (:func:`sci2cl.metrics.leiden_label_free`);
- ``kmeans + vote``: the ``kmeans`` labels after a majority vote over the 50 nearest spots
  (:func:`sci2cl.tl.spatial_vote`, the scRCL authors' last step on spatial data), for every
  method alike, so that a gain of the vote is not read as a gain of the representation.

Spots without a label (39 on DLPFC) are clustered with the others, left out of every score
and counted in the ``n_unlabelled`` column. Writes ``results/benchmark_spatial.csv`` and the
first seed's cluster labels of every method (``results/spatial_labels_<dataset>.csv.gz``).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from benchmarks import peers
from benchmarks.common import set_threads
from sci2cl import SCRCL, datasets, metrics, pp, tl

ROOT = Path(__file__).resolve().parents[1]

#: (dataset, label column, task); the datasets' label columns hold NaN where a spot is unlabelled
TASKS = [
    ("osmfish_sscortex", "cell_type", "cell typing"),
    ("osmfish_sscortex", "region", "domains"),
    ("dlpfc_151510", "layer", "domains"),
]
#: the same tasks on a simulated slice (:func:`sci2cl.datasets.simulate_spatial`), where the mirror is absent
SIM_TASKS = [
    ("simulated_spatial", "cell_type", "cell typing"),
    ("simulated_spatial", "domain", "domains"),
]
SEEDS = [0, 1, 2]
#: nearest spots of the majority vote (the scRCL authors' value)
VOTE_NEIGHBOURS = 50
SMOKE = {"max_cells": 600, "seeds": [0], "max_epochs": 5, "graphst_epochs": 5}


def load(name: str, max_cells: int | None = None) -> ad.AnnData:
    """A spatial dataset, optionally subsampled (seeded), with cells without counts dropped.

    ``"simulated_spatial"`` is :func:`sci2cl.datasets.simulate_spatial` (1,600 spots).
    """
    if name == "simulated_spatial":
        a = datasets.simulate_spatial(n_side=40, seed=0)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = datasets.load(name, download=False)
    if max_cells and a.n_obs > max_cells:
        keep = np.sort(np.random.default_rng(0).choice(a.n_obs, max_cells, replace=False))
        a = a[keep].copy()
    pp.qc_filter(a)
    return a


# --------------------------------------------------------------------------- methods
def _pca(adata: ad.AnnData, seed: int, **_) -> dict:
    """Scanpy with its defaults: median normalisation, log1p, HVG, scale, PCA.

    Counts normalised to the median count per cell, log1p, HVGs (seurat, at most 2,000),
    scaled, PCA (50 components, or genes - 1). The median, not 10,000: on a FISH panel of a few
    dozen genes and low counts, the log of counts scaled to 10,000 per cell is nearly a log of
    ratios, which loses cell types (``results/scrcl_spatial_dev.csv``). Written with scanpy here
    rather than :func:`sci2cl.pp.pca` (10,000), whose file is in every paired method's code version.
    """
    import scanpy as sc

    a = ad.AnnData(adata.layers["counts"].astype(np.float32), obs=adata.obs[[]])
    sc.pp.filter_genes(a, min_cells=1)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    if a.n_vars > 2000:
        sc.pp.highly_variable_genes(a, n_top_genes=2000, flavor="seurat", subset=True)
    a.X = np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X)
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=min(50, a.n_vars - 1), random_state=seed)
    return {"embedding": a.obsm["X_pca"]}


def _banksy(adata: ad.AnnData, seed: int, task: str = "domains", **_) -> dict:
    """BANKSY (pybanksy), as its tutorials run it.

    Normalise and log1p; 15 spatial neighbours with a scaled Gaussian decay,
    azimuthal Gabor filter order 1; lambda 0.2 for cell typing and 0.8 for
    domains (its authors' two recommended settings); 20 PCs of the BANKSY
    matrix are the embedding.
    """
    import scanpy as sc
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy
    from banksy_utils.umap_pca import pca_umap

    a = adata.copy()
    a.X = a.layers["counts"].astype(np.float64)
    sc.pp.normalize_total(a)
    sc.pp.log1p(a)
    a.X = np.asarray(a.X.toarray() if hasattr(a.X, "toarray") else a.X)
    xy = np.asarray(a.obsm["spatial"], float)
    a.obs["x"], a.obs["y"] = xy[:, 0], xy[:, 1]
    a.obsm["coord_xy"] = xy
    lam = 0.2 if task == "cell typing" else 0.8
    np.random.seed(seed)  # noqa: NPY002 (BANKSY draws from numpy's global state)
    with contextlib.redirect_stdout(io.StringIO()):
        d = initialize_banksy(
            a, ("x", "y", "coord_xy"), 15, nbr_weight_decay="scaled_gaussian", max_m=1,
            plt_edge_hist=False, plt_nbr_weights=False, plt_agf_angles=False, plt_theta=False,
        )  # fmt: skip
        d, _ = generate_banksy_matrix(a, d, [lam], max_m=1, verbose=False)
        pca_umap(d, pca_dims=[min(20, 3 * a.n_vars - 1)], add_umap=False, plt_remaining_var=False)
    out = d["scaled_gaussian"][lam]["adata"]
    return {"embedding": np.asarray(out.obsm[f"reduced_pc_{min(20, 3 * a.n_vars - 1)}"])}


def _graphst(adata: ad.AnnData, seed: int, max_epochs: int | None = None, **_) -> dict:
    """GraphST (its package, CPU), as its tutorial runs it on Visium.

    Its own preprocessing (seurat_v3 HVGs of the raw counts, at most 3,000),
    its spatial graph and 600 epochs (``max_epochs`` caps them for smoke runs);
    the embedding is its ``emb`` after the 20-PC reduction its ``clustering`` uses.
    """
    import torch
    from GraphST import GraphST
    from sklearn.decomposition import PCA

    a = adata.copy()
    a.X = a.layers["counts"].astype(np.float32)
    a.var_names_make_unique()
    kw = {} if max_epochs is None else {"epochs": max_epochs}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = GraphST.GraphST(a, device=torch.device("cpu"), random_seed=seed, **kw)
        out = model.train()
    emb = np.asarray(out.obsm["emb"])
    return {"embedding": PCA(n_components=20, random_state=42).fit_transform(emb)}


def _scrcl(adata: ad.AnnData, seed: int, spatial: bool, max_epochs: int | None = None, **kw):
    SCRCL.setup_anndata(adata, layer="counts")
    m = SCRCL(adata, spatial_key="spatial" if spatial else None, seed=seed, **kw)
    m.train(**({} if max_epochs is None else {"max_epochs": max_epochs}), progress_bar=False)
    return {"embedding": m.get_latent_representation(key_added=None), "model": m}


def _scrcl_for_task(adata: ad.AnnData, seed: int, task: str = "domains", **kw) -> dict:
    """The scRCL mode for the task the user names (as BANKSY's lambda).

    The spatial graph for domains, the expression graph for cell types (which mix within a domain).
    """
    return _scrcl(adata, seed, task == "domains", **kw)


METHODS = {
    "PCA": _pca,
    "BANKSY": _banksy,
    "GraphST": _graphst,
    "scRCL (expression graph)": lambda a, s, **kw: _scrcl(a, s, False, **kw),
    "scRCL (spatial graph)": lambda a, s, **kw: _scrcl(a, s, True, **kw),
    "scRCL (mode for the task)": _scrcl_for_task,
}
#: methods whose embedding depends on the task (BANKSY's lambda, scRCL's graph)
PER_TASK = {"BANKSY", "scRCL (mode for the task)"}


def score(y: pd.Series, labels: np.ndarray) -> dict:
    """NMI, ARI and accuracy on the labelled cells only; ``n_unlabelled`` counts the others."""
    known = y.notna().to_numpy()
    s = metrics.score_all(y[known].astype(str).to_numpy(), np.asarray(labels)[known])
    return {"nmi": s["nmi"], "ari": s["ari"], "acc": s["acc"], "n_clusters": s["n_clusters"],
            "n_unlabelled": int((~known).sum())}  # fmt: skip


def run_method(
    adata: ad.AnnData,
    method: str,
    seed: int,
    tasks: list[tuple[str, str]],
    *,
    max_epochs: int | None = None,
    graphst_epochs: int | None = None,
    scrcl_kw: dict | None = None,
    labels: dict | None = None,
) -> list[dict]:
    """Rows of one method at one seed on one dataset, for each (label column, task).

    With a dict ``labels``, the cluster labels of each (label column, protocol)
    are stored in it under ``f"{method}|{label column}|{protocol}"``.
    """
    rows, res = [], None
    for key, task in tasks:
        y = adata.obs[key]
        k = int(y.dropna().nunique())
        if res is None or method in PER_TASK:
            kw = {"task": task} if method in PER_TASK else {}
            if method.startswith("scRCL"):
                kw.update(max_epochs=max_epochs, **(scrcl_kw or {}))
            elif method == "GraphST":
                kw = {"max_epochs": graphst_epochs}
            with peers.PeakMemory() as mem:
                t = time.perf_counter()
                res = METHODS[method](adata, seed, **kw)
                sec = time.perf_counter() - t
        emb = res["embedding"]
        if "model" in res:
            lab_k = res["model"].predict(key_added=None, n_clusters=k)
        else:
            lab_k = metrics.kmeans_labels(emb, k, seed)
        lab_free = metrics.leiden_label_free(emb, seed=seed)[0]
        adata.obs["_kmeans"] = pd.Categorical(np.asarray(lab_k).astype(str))
        voted = tl.spatial_vote(adata, "_kmeans", n_neighbors=VOTE_NEIGHBOURS, key_added="_voted")
        base = {"dataset": adata.uns["sci2cl_dataset"]["name"], "label": key, "task": task,
                "method": method, "seed": seed, "seconds": sec, "peak_mb": mem.peak_mb}  # fmt: skip
        for proto, lab in (("kmeans", lab_k), ("leiden", lab_free), ("kmeans + vote", voted)):
            rows.append({**base, "protocol": proto, **score(y, lab)})
            if labels is not None:
                labels[f"{method}|{key}|{proto}"] = np.asarray(lab).astype(str)
    return rows


def run(
    seeds: list[int] = SEEDS,
    methods: list[str] | None = None,
    *,
    max_cells: int | None = None,
    max_epochs: int | None = None,
    graphst_epochs: int | None = None,
    tasks: list[tuple[str, str, str]] = TASKS,
    out: Path | None = ROOT / "results" / "benchmark_spatial.csv",
    log=print,
) -> pd.DataFrame:
    """Every method and seed on every task (:data:`TASKS`); the table is rewritten after each method.

    Rows already in ``out`` for other (dataset, method, seed) are kept, so that
    methods can be run apart and land in one table; the same holds for the
    label files.
    """
    rows = []
    all_tasks = tasks
    for ds in dict.fromkeys(t[0] for t in all_tasks):
        adata = load(ds, max_cells)
        tasks = [(k, t) for d, k, t in all_tasks if d == ds]
        maps = {}  # first seed's labels of every method, for the chapter's maps
        for method in methods or list(METHODS):
            for seed in seeds:
                new = run_method(
                    adata, method, seed, tasks, max_epochs=max_epochs,
                    graphst_epochs=graphst_epochs, labels=maps if seed == seeds[0] else None,
                )  # fmt: skip
                rows += new
                for r in new:
                    if r["protocol"] == "kmeans":
                        log(f"{ds:16s} {r['label']:9s} {method:24s} seed {seed}: "
                            f"NMI {r['nmi']:.3f} ARI {r['ari']:.3f} ({r['seconds']:.0f} s)")  # fmt: skip
            if out is not None:
                _write(pd.DataFrame(rows), out, pd.DataFrame(maps, index=adata.obs_names), ds)
    return pd.DataFrame(rows)


def _write(new: pd.DataFrame, out: Path, maps: pd.DataFrame, ds: str) -> None:
    """The table (rows of other runs kept) and the dataset's label file, each written atomically.

    The table on disk is read again here, so that runs of other methods side by
    side keep each other's rows (their writes must not overlap in time).
    """
    keys = ["dataset", "method", "seed"]
    old = pd.read_csv(out) if out.exists() else pd.DataFrame()
    if len(old):
        ran = old.set_index(keys).index.isin(new.set_index(keys).index)
        new = pd.concat([old[~ran], new], ignore_index=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    new.to_csv(tmp, index=False)
    tmp.replace(out)
    f = out.parent / f"spatial_labels_{ds}.csv.gz"
    if f.exists():
        prev = pd.read_csv(f, index_col=0, dtype=str)
        if prev.index.equals(maps.index):
            maps = pd.concat([prev.drop(columns=[c for c in maps if c in prev]), maps], axis=1)
    tmp = f.with_name(f.name + ".tmp")
    maps.to_csv(tmp, compression="gzip")
    tmp.replace(f)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    ap.add_argument("--methods", nargs="*", default=list(METHODS))
    ap.add_argument("--datasets", nargs="*", help="only the tasks of these datasets")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "results"))
    a = ap.parse_args()
    set_threads(a.threads)
    kw = {}
    seeds = a.seeds
    if a.smoke:
        kw = {k: SMOKE[k] for k in ("max_cells", "max_epochs", "graphst_epochs")}
        seeds = SMOKE["seeds"]
    t = time.perf_counter()
    tasks = [t for t in TASKS if not a.datasets or t[0] in a.datasets]
    df = run(seeds, a.methods, out=Path(a.out) / "benchmark_spatial.csv", tasks=tasks, **kw)
    print(
        df[df.protocol != "leiden"]
        .groupby(["dataset", "label", "protocol", "method"])["nmi"]
        .agg(["mean", "std"])
        .round(3)
        .to_string()
    )
    print(f"total wall time {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
