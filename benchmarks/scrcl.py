"""scRCL benchmark on the labelled scRNA-seq sets: scRCL vs. PCA + KMeans, Leiden, scVI and DESC.

Usage: python -m benchmarks.scrcl [--smoke] [--seeds 5 15 25 35 45] [--datasets ...]
                                  [--scvi-epochs 100 | --no-scvi] [--methods scRCL ...]
Writes results/benchmark_scrcl.csv (dataset, method, seed, acc, nmi, ari, n_clusters, seconds, peak_mb).
scVI (scvi-tools, CPU) runs on the 2,000 seurat_v3 HVGs of the raw counts for ``--scvi-epochs`` epochs
(100 by default to fit the CPU budget; scvi-tools' own default would be up to 400 here).
DESC (a deep clustering peer of the scRCL paper) runs in its own environment (tensorflow 2.15,
``make desc-env``; :data:`DESC_PYTHON`), through :mod:`benchmarks.desc_worker`: its own clusters
(``"DESC"``, label-free) and KMeans at the true k on its embedding (``"DESC + KMeans"``).
Without that environment the DESC rows are skipped with a message.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import peers
from benchmarks.common import set_threads
from benchmarks.config import SCRCL_SEEDS as SEEDS
from benchmarks.config import SCRNA
from sci2cl import SCRCL, datasets, metrics, pp

ROOT = Path(__file__).resolve().parents[1]
METHODS = (
    "scRCL",
    "scRCL + Leiden",
    "PCA + KMeans",
    "PCA + Leiden",
    "scVI + KMeans",
    "DESC",
    "DESC + KMeans",
)
#: DESC's own environment: desc 2.1.1 needs tensorflow and pandas < 2, which do not install beside
#: our stack (``make desc-env`` builds it; ``SCI2CL_DESC_PYTHON`` points elsewhere)
DESC_PYTHON = Path(
    os.environ.get("SCI2CL_DESC_PYTHON", ROOT / "build" / "venv-desc" / "bin" / "python")
)


def desc_clusters(adata, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """DESC's embedding ``(n_cells, d)`` and its own clusters ``(n_cells,)`` of ``adata``'s raw counts.

    Runs :mod:`benchmarks.desc_worker` in DESC's environment (one thread). Raises
    :class:`~benchmarks.peers.PeerUnavailable` when that environment is missing and
    ``RuntimeError`` with DESC's last output when it fails.
    """
    import anndata as ad

    if not DESC_PYTHON.exists():
        raise peers.PeerUnavailable(
            f"DESC's environment is missing ({DESC_PYTHON}); build it with `make desc-env`"
        )
    counts = adata.layers["counts"]
    with tempfile.TemporaryDirectory() as tmp:
        a = ad.AnnData(
            X=counts.astype(np.float32),
            obs=pd.DataFrame(index=adata.obs_names.astype(str)),
            var=pd.DataFrame(index=adata.var_names.astype(str)),
        )
        a.write_h5ad(f"{tmp}/in.h5ad")
        worker = Path(__file__).with_name("desc_worker.py")
        # one thread; and a backend DESC's matplotlib knows (a notebook's inline one is not)
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "TF_NUM_INTRAOP_THREADS": "1",
            "MPLBACKEND": "Agg",
        }
        r = subprocess.run(
            [str(DESC_PYTHON), str(worker), f"{tmp}/in.h5ad", f"{tmp}/out.npz", str(seed)],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"DESC failed (exit {r.returncode}): {r.stderr[-1500:]}")
        with np.load(f"{tmp}/out.npz", allow_pickle=False) as z:
            return z["embedding"], z["labels"]


def pca_embedding(adata, seed: int, n_top_genes: int = 2000):
    """Scanpy (:func:`sci2cl.pp.pca`): normalise, log1p, HVG (seurat), scale, 50 PCs."""
    import scanpy as sc

    a = adata.copy()
    sc.pp.filter_genes(a, min_cells=1)
    return pp.pca(a, 50, n_top_genes=n_top_genes, flavor="seurat", seed=seed)


def scvi_input(adata, n_top_genes: int = 2000):
    """The raw counts of the seurat_v3 highly variable genes (scvi-tools' usual input)."""
    import scanpy as sc

    a = adata.copy()
    a.X = a.layers["counts"].copy()
    sc.pp.filter_genes(a, min_cells=1)
    if a.n_vars > n_top_genes:
        try:
            sc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, flavor="seurat_v3", subset=True)
        except ValueError:  # loess near-singular on some sets (e.g. cellmix_rna): a wider span
            sc.pp.highly_variable_genes(
                a, n_top_genes=n_top_genes, flavor="seurat_v3", span=1.0, subset=True
            )
    return a


def run_dataset(
    name: str,
    seeds: list[int],
    *,
    max_cells: int | None = None,
    max_epochs: int | None = None,
    scvi_epochs: int | None = 100,
    methods: tuple[str, ...] = METHODS,
    log=print,
    checkpoint=None,
) -> list[dict]:
    """The ``methods`` on one dataset for each seed; ``checkpoint(rows)`` is called after each seed.

    ``"scVI + KMeans"`` runs only with ``scvi_epochs``; ``max_epochs=None`` is
    :meth:`SCRCL.train`'s default.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        adata = datasets.load(name)
    if max_cells and adata.n_obs > max_cells:
        adata = adata[
            np.sort(np.random.default_rng(0).choice(adata.n_obs, max_cells, replace=False))
        ].copy()
    pp.qc_filter(adata)
    y = adata.obs["cell_type"].astype(str).to_numpy()
    k = len(np.unique(y))
    rows = []
    for seed in seeds:
        runs, peak, epochs = {}, {}, np.nan
        if {"scRCL", "scRCL + Leiden"} & set(methods):
            with peers.PeakMemory() as mem:
                t = time.perf_counter()
                SCRCL.setup_anndata(adata, layer="counts")
                m = SCRCL(adata, n_clusters=k, seed=seed)
                m.train(
                    **({} if max_epochs is None else {"max_epochs": max_epochs}),
                    progress_bar=False,
                )
                trained = time.perf_counter() - t
                runs["scRCL"] = (m.predict(key_added=None), time.perf_counter() - t)
            peak["scRCL"], epochs = mem.peak_mb, len(m.history)
            # the same model, label-free: Leiden at the benchmark's resolution on its cell embedding
            with peers.PeakMemory() as mem:
                t = time.perf_counter()
                z = m.get_latent_representation(key_added=None)
                lab = metrics.leiden_label_free(z, seed=seed)[0]
                runs["scRCL + Leiden"] = (lab, trained + time.perf_counter() - t)
            peak["scRCL + Leiden"] = max(peak["scRCL"], mem.peak_mb)
        if {"PCA + KMeans", "PCA + Leiden"} & set(methods):
            with peers.PeakMemory() as mem:
                t = time.perf_counter()
                pcs = pca_embedding(adata, seed)
                runs["PCA + KMeans"] = (
                    metrics.kmeans_labels(pcs, k, seed),
                    time.perf_counter() - t,
                )
            peak["PCA + KMeans"] = mem.peak_mb
            with peers.PeakMemory() as mem:
                t = time.perf_counter()
                runs["PCA + Leiden"] = (
                    metrics.leiden_label_free(pcs, seed=seed)[0],
                    time.perf_counter() - t,
                )
            peak["PCA + Leiden"] = mem.peak_mb
        if scvi_epochs and "scVI + KMeans" in methods:
            with peers.PeakMemory() as mem:
                t = time.perf_counter()
                zs = peers.scvi_embedding(scvi_input(adata), seed, max_epochs=scvi_epochs)
                runs["scVI + KMeans"] = (
                    metrics.kmeans_labels(zs, k, seed),
                    time.perf_counter() - t,
                )
            peak["scVI + KMeans"] = mem.peak_mb
        if {"DESC", "DESC + KMeans"} & set(methods):
            try:
                t = time.perf_counter()
                emb, own = desc_clusters(adata, seed)
                sec = time.perf_counter() - t
                runs["DESC"] = (own, sec)
                runs["DESC + KMeans"] = (metrics.kmeans_labels(emb, k, seed), sec)
                # it runs in a child process, whose memory this process cannot sample
                peak["DESC"] = peak["DESC + KMeans"] = np.nan
            except peers.PeerUnavailable as e:
                log(f"{name}: DESC skipped ({e})")
        for meth, (lab, sec) in runs.items():
            if meth not in methods:
                continue
            s = metrics.score_all(y, lab)
            rows.append(
                {
                    "dataset": name,
                    "method": meth,
                    "seed": seed,
                    "acc": s["acc"],
                    "nmi": s["nmi"],
                    "ari": s["ari"],
                    "n_clusters": s["n_clusters"],
                    "seconds": sec,
                    "peak_mb": peak[meth],
                    "epochs": epochs if meth.startswith("scRCL") else np.nan,
                }
            )
            log(
                f"{name:14s} {meth:13s} seed {seed}: ACC {s['acc']:.3f} NMI {s['nmi']:.3f} ARI {s['ari']:.3f} ({sec:.0f} s)"
            )
        if checkpoint is not None:
            checkpoint(rows)
    return rows


def run(names, seeds, out_dir: Path = ROOT / "results", **kw) -> pd.DataFrame:
    """Run the datasets ``names`` x ``seeds`` and write ``out_dir/benchmark_scrcl.csv``.

    Rows of an existing table that this run does not redo (other datasets, or
    other methods when ``methods=`` names a subset) are kept, so re-running one
    method after a change to it leaves the peers' rows in place.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    csv = out_dir / "benchmark_scrcl.csv"
    redo_methods = set(kw.get("methods", METHODS))
    if csv.exists():
        old = pd.read_csv(csv)
        kept = old[~(old["dataset"].isin(names) & old["method"].isin(redo_methods))]
    else:
        kept = pd.DataFrame()

    def write(new: list[dict]) -> pd.DataFrame:  # after every seed: a long run leaves results
        d = pd.concat([kept, pd.DataFrame(rows + new)], ignore_index=True)
        if len(d):
            d = d.sort_values(["dataset", "method", "seed"], kind="stable")
        d.to_csv(csv, index=False)
        return d

    for ds in names:
        try:
            rows += run_dataset(ds, seeds, checkpoint=write, **kw)
        except datasets.DatasetUnavailableError as e:
            print(f"{ds}: skipped ({e})")
    return write([])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--datasets", nargs="*", default=SCRNA)
    ap.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--scvi-epochs", type=int, default=100)
    ap.add_argument("--no-scvi", action="store_true", help="skip the scVI peer")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    set_threads(a.threads)
    t = time.perf_counter()
    scvi_epochs = None if a.no_scvi else a.scvi_epochs
    if a.smoke:
        df = run(["camp2015"], [5], out_dir=Path(a.out), max_epochs=5, scvi_epochs=None)
    else:
        df = run(
            a.datasets, a.seeds, out_dir=Path(a.out), scvi_epochs=scvi_epochs, methods=a.methods
        )
    print(
        df.groupby(["dataset", "method"])[["acc", "nmi", "ari", "seconds"]]
        .mean()
        .round(3)
        .to_string()
    )
    print(f"total wall time {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
