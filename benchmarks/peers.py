"""Peer methods of the benchmarks, each run through its own package, and their plumbing.

Every peer maps ``(mdata, seed, **kwargs)`` to an embedding ``(n_cells, d)``, or to
``(coordinates, cell graph)`` for graph methods (WNN). :func:`run_peer` times a
peer and records its peak memory.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import threading
import time
from collections.abc import Callable

import anndata as ad
import mudata as md
import numpy as np
import scipy.sparse as sp

import sci2cl
from sci2cl import pp

__all__ = [
    "PEERS",
    "PeakMemory",
    "run_peer",
    "check_graph",
    "scvi_embedding",
    "atac_is_counts",
    "setup_sci2cl",
]


def _rna_pca(mdata: md.MuData, seed: int, n_comps: int = 30) -> np.ndarray:
    """scanpy: log-normalise, scale, PCA of the (already selected) genes."""
    return pp.pca(mdata["rna"].copy(), n_comps, seed=seed)


def atac_is_counts(mdata: md.MuData) -> bool:
    """Whether the dataset registry entry (when present) lists ATAC as counts."""
    return "atac" in mdata.uns.get("sci2cl_dataset", {}).get("count_modalities", ["atac"])


def _atac_lsi(mdata: md.MuData, seed: int, n_comps: int = 30) -> np.ndarray:
    """Muon TF-IDF + LSI of ATAC counts; PCA of the values for normalised (non-count) ATAC."""
    import scanpy as sc

    a = mdata["atac"].copy()
    if not atac_is_counts(mdata):
        a.X = a.layers["counts"].copy()
        sc.tl.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=seed)
        return a.obsm["X_pca"]
    pp.tfidf_lsi(a, n_comps, seed=seed)
    return a.obsm["X_lsi"]


def _concat(mdata: md.MuData, seed: int) -> np.ndarray:
    z = [_rna_pca(mdata, seed), _atac_lsi(mdata, seed)]
    return np.hstack([x / np.linalg.norm(x, axis=1, keepdims=True).mean() for x in z])


def _wnn(mdata: md.MuData, seed: int) -> tuple[np.ndarray, sp.spmatrix]:
    """Muon WNN graph on RNA PCA + ATAC LSI; returns (UMAP of the graph, connectivities)."""
    import muon as mu
    import scanpy as sc

    m = md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"].copy()})
    m["rna"].obsm["X_pca"] = _rna_pca(mdata, seed)
    m["atac"].obsm["X_lsi"] = _atac_lsi(mdata, seed)
    sc.pp.neighbors(m["rna"], use_rep="X_pca", random_state=seed)
    sc.pp.neighbors(m["atac"], use_rep="X_lsi", random_state=seed)
    mu.pp.neighbors(m, key_added="wnn", random_state=seed)
    check_graph(m.obsp["wnn_connectivities"], "muon's WNN graph")
    mu.tl.umap(m, neighbors_key="wnn", random_state=seed)
    return m.obsm["X_umap"], m.obsp["wnn_connectivities"]


def check_graph(graph: sp.spmatrix, name: str = "graph") -> None:
    """Raise ``ValueError`` when a cell graph ``(n_cells, n_cells)`` has non-finite weights.

    muon's WNN divides by per-cell kernel widths; cells without counts in a
    modality's selected features share one all-zero profile and get NaN
    weights, which UMAP and Leiden would then use without complaint.
    """
    g = sp.csr_matrix(graph)
    bad = ~np.isfinite(g.data)
    if bad.any():
        rows = np.unique(g.tocoo().row[bad])
        raise ValueError(
            f"{name} has {int(bad.sum())} non-finite weights in the rows of {len(rows)} cells; "
            "cells with no counts in a modality's selected features cause this: "
            "run sci2cl.data.qc_filter(mdata) after select_features"
        )


def _mofa(mdata: md.MuData, seed: int, n_factors: int = 15) -> np.ndarray:
    import muon as mu

    m = md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"].copy()})
    pp.log_normalize(m["rna"])
    pp.tfidf_lsi(m["atac"], seed=seed)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        mu.tl.mofa(
            m,
            n_factors=n_factors,
            seed=seed,
            quiet=True,
            verbose=False,
            use_obs="union",
            gpu_mode=False,
            outfile=f"{tmp}/mofa.hdf5",
        )
    return m.obsm["X_mofa"]


def _require_scvi():
    try:
        import scvi
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this peer needs scvi-tools: pip install 'sci2cl[bench]' (or scvi-tools)"
        ) from e

    # lightning's per-fit banners ("GPU available: False", "Seed set to 0", tips)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    return scvi


def _train_latent(model, max_epochs: int | None) -> np.ndarray:
    """Train an scvi-tools model on the CPU (``None``: its default epochs) and return its latent space."""
    kw = {} if max_epochs is None else {"max_epochs": max_epochs}
    model.train(accelerator="cpu", enable_progress_bar=False, **kw)
    return model.get_latent_representation()


def _multivi(
    mdata: md.MuData, seed: int, max_epochs: int | None = None, layer: str = "counts"
) -> np.ndarray:
    """scvi-tools MultiVI (CPU) on the raw counts of both modalities; its own early stopping.

    ``max_epochs=None`` keeps scvi-tools' default (500, stopped early on its
    held-out ELBO).
    """
    scvi = _require_scvi()
    if not atac_is_counts(mdata):
        raise ValueError("MultiVI models ATAC counts; this dataset's ATAC is not counts")
    scvi.settings.seed = seed
    m = md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"].copy()})
    for k in ("rna", "atac"):
        if layer not in m[k].layers:
            m[k].layers[layer] = m[k].X.copy()
    scvi.model.MULTIVI.setup_mudata(
        m, rna_layer=layer, atac_layer=layer, modalities={"rna_layer": "rna", "atac_layer": "atac"}
    )
    model = scvi.model.MULTIVI(m, n_genes=m["rna"].n_vars, n_regions=m["atac"].n_vars)
    return _train_latent(model, max_epochs)


def scvi_embedding(
    adata: ad.AnnData, seed: int, max_epochs: int | None = None, layer: str = "counts"
) -> np.ndarray:
    """scvi-tools scVI latent space (CPU) of an scRNA-seq AnnData's raw counts, ``(n_cells, 10)``.

    ``max_epochs=None`` keeps scvi-tools' default (it depends on the number of cells).
    """
    scvi = _require_scvi()
    scvi.settings.seed = seed
    a = adata.copy()
    if layer not in a.layers:
        a.layers[layer] = a.X.copy()
    scvi.model.SCVI.setup_anndata(a, layer=layer)
    return _train_latent(scvi.model.SCVI(a), max_epochs)


def setup_sci2cl(mdata: md.MuData) -> md.MuData:
    """``SCI2CL.setup_mudata`` on the raw counts; ATAC is Gaussian where it is not counts."""
    lik = {"rna": "zinb", "atac": "zinb" if atac_is_counts(mdata) else "gaussian"}
    sci2cl.SCI2CL.setup_mudata(mdata, layer="counts", likelihood=lik)
    return mdata


def _sci2cl(mdata: md.MuData, seed: int, max_epochs: int = 40, **kwargs) -> np.ndarray:
    """scI2CL with its defaults."""
    m = sci2cl.SCI2CL(setup_sci2cl(mdata), seed=seed, **kwargs)
    m.train(max_epochs=max_epochs, progress_bar=False)
    return m.get_latent_representation(key_added=None)


PEERS: dict[str, Callable] = {
    "RNA PCA": _rna_pca,
    "ATAC LSI": _atac_lsi,
    "PCA+LSI": _concat,
    "WNN (muon)": _wnn,
    "MOFA+": _mofa,
    "MultiVI": _multivi,
    "scI2CL": _sci2cl,
}


class PeakMemory:
    """Context manager sampling the process RSS (psutil) every ``interval`` s.

    ``.peak_mb`` is the peak RSS during the block minus the RSS at entry,
    i.e. the extra memory the block needed (torch and numpy buffers included).
    """

    def __init__(self, interval: float = 0.05):
        self.interval = interval

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(self.interval):
                self._peak = max(self._peak, self._proc.memory_info().rss)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        self.peak_mb = (self._peak - self._base) / 2**20
        return False


def run_peer(name: str, mdata: md.MuData, seed: int = 0, **kwargs) -> dict:
    """Run a peer method; returns ``{"embedding", "adjacency", "seconds", "peak_mb"}``.

    ``peak_mb`` is the extra resident memory the method needed (see :class:`PeakMemory`).
    """
    fn = PEERS[name]
    with PeakMemory() as mem:
        t = time.perf_counter()
        out = fn(mdata, seed, **kwargs)
        seconds = time.perf_counter() - t
    peak = mem.peak_mb
    emb, adj = out if isinstance(out, tuple) else (out, None)
    return {
        "embedding": np.asarray(emb, dtype=np.float32),
        "adjacency": adj,
        "seconds": seconds,
        "peak_mb": peak,
    }
