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
import pandas as pd
import scipy.sparse as sp

import sci2cl
from sci2cl import pp

__all__ = [
    "PEERS",
    "PeerUnavailable",
    "PeakMemory",
    "run_peer",
    "check_graph",
    "guidance_graph",
    "scvi_embedding",
    "atac_is_counts",
    "setup_sci2cl",
    "sci2cl_likelihood",
]


class PeerUnavailable(ValueError):
    """A peer cannot run on this dataset (its inputs are missing); the message says why."""


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
    # MOFA+ factors differ in variance by orders of magnitude and KMeans on the raw factors
    # is led by the first few, so every protocol reads them standardised (mean 0, SD 1)
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(m.obsm["X_mofa"])


def guidance_graph(mdata: md.MuData):
    """GLUE's guidance graph (``networkx.MultiDiGraph``) for a paired MuData.

    From the dataset's peak-to-gene table (``atac.var["gene"]``) when it ships
    one, else from genomic coordinates (``chrom``, ``chromStart``,
    ``chromEnd`` in both modalities' ``var``) with
    :func:`scglue.genomics.rna_anchored_guidance_graph`, GLUE's own
    construction. Either way the graph holds gene-peak edges in both
    directions (weight 1, sign +1) and a self-loop on every feature, as GLUE
    builds it.

    Raises
    ------
    PeerUnavailable
        When the dataset has neither a table nor coordinates (no genome
        annotation can be fetched offline), naming what is missing.
    """
    import networkx as nx
    import scglue

    rna, atac = mdata["rna"], mdata["atac"]
    if "gene" in atac.var:
        genes = set(rna.var_names)
        fwd = nx.MultiDiGraph()
        fwd.add_edges_from(
            (g, p, {"weight": 1.0, "sign": 1})
            for p, g in zip(atac.var_names, atac.var["gene"])
            if g in genes
        )
        if fwd.number_of_edges() == 0:
            raise ValueError("atac.var['gene'] links no peak to a gene of rna.var_names")
        rev = fwd.reverse()
        nx.set_edge_attributes(fwd, "fwd", name="type")
        nx.set_edge_attributes(rev, "rev", name="type")
        graph = scglue.graph.compose_multigraph(fwd, rev)
        for f in (*rna.var_names, *atac.var_names):
            graph.add_edge(f, f, weight=1.0, sign=1, type="loop")
        return graph
    need = ["chrom", "chromStart", "chromEnd"]
    missing = [f"{k}.var[{c!r}]" for k in ("rna", "atac") for c in need if c not in mdata[k].var]
    if missing:
        raise PeerUnavailable(
            "GLUE needs a guidance graph: this dataset has no peak-to-gene table "
            f"(atac.var['gene']) and lacks {', '.join(missing)}; a genome annotation "
            "(scglue.data.get_gene_annotation with a GTF) gives the gene coordinates"
        )
    return scglue.genomics.rna_anchored_guidance_graph(rna.copy(), atac.copy())


def _glue(mdata: md.MuData, seed: int, max_epochs: int | None = None) -> np.ndarray:
    """GLUE (the scglue package) for paired cells, as its tutorials configure it.

    RNA: normalise, log1p, scale, 100 PCs as the encoder input, negative-binomial
    decoder on the counts; ATAC: 100 LSI components (``scglue.data.lsi``),
    negative-binomial decoder; ``PairedSCGLUEModel`` ties the two cells of a
    pair by obs name; training length is GLUE's own (early stopping on its
    validation loss). The joint embedding is the mean of the two modalities'
    cell embeddings (``encode_data``), which GLUE aligns. ``max_epochs`` caps
    each of GLUE's two training stages (smoke runs and tests only). One
    deviation, forced by the stack: the cell graph of GLUE's balancing weights
    uses exact cosine neighbours (scanpy's ``"sklearn"`` transformer), because
    scanpy's approximate path fails on more than 4,096 cells here.
    """
    import scanpy as sc
    import scglue

    if not atac_is_counts(mdata):
        raise PeerUnavailable(
            "GLUE's ATAC decoder models counts; this dataset's ATAC is not counts"
        )
    graph = guidance_graph(mdata)
    scglue.log.console_log_level = logging.WARNING  # per-epoch losses stay out of the logs
    logging.getLogger("ignite").setLevel(logging.ERROR)  # a NaN stop is raised below, not logged
    scglue.config.CPU_ONLY = True
    rna, atac = mdata["rna"].copy(), mdata["atac"].copy()
    for a in (rna, atac):
        a.X = a.layers["counts"].copy()
        a.var["highly_variable"] = True
    sc.pp.normalize_total(rna)
    sc.pp.log1p(rna)
    sc.pp.scale(rna, max_value=10)
    sc.tl.pca(rna, n_comps=min(100, min(rna.shape) - 1), svd_solver="auto", random_state=seed)
    rna.X = rna.layers["counts"].copy()
    scglue.data.lsi(atac, n_components=min(100, min(atac.shape) - 1), n_iter=15, random_state=seed)
    scglue.models.configure_dataset(
        rna, "NB", use_highly_variable=True, use_layer="counts", use_rep="X_pca", use_obs_names=True
    )
    scglue.models.configure_dataset(
        atac, "NB", use_highly_variable=True, use_rep="X_lsi", use_obs_names=True
    )
    # GLUE's balancing weights call sc.pp.neighbors(metric="cosine"); on more than 4,096 cells scanpy
    # then takes pynndescent's transformer, whose csr_array output scanpy 1.11 reads with the removed
    # getnnz (AttributeError with scipy 1.17). Exact kNN (scanpy's "sklearn" transformer) stands in.
    scanpy_neighbors = sc.pp.neighbors

    def neighbors_exact(adata, *args, **kw):
        kw.setdefault("transformer", "sklearn")
        return scanpy_neighbors(adata, *args, **kw)

    sc.pp.neighbors = neighbors_exact
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
            glue = scglue.models.fit_SCGLUE(
                {"rna": rna, "atac": atac},
                graph,
                model=scglue.models.PairedSCGLUEModel,
                init_kws={"random_seed": seed},
                fit_kws={
                    "directory": tmp,
                    **({} if max_epochs is None else {"max_epochs": max_epochs}),
                },
            )
            z = (glue.encode_data("rna", rna) + glue.encode_data("atac", atac)) / 2
    finally:
        sc.pp.neighbors = scanpy_neighbors
    return z


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


#: per-epoch training curves of scvi-tools models kept by the benchmark (collapse evidence)
CURVES = ["kl_local_validation", "reconstruction_loss_validation", "elbo_validation", "kl_weight"]


def _history_last(model, key: str) -> float:
    h = model.history.get(key)
    return float(h.iloc[-1, 0]) if h is not None and len(h) else float("nan")


def _multivi(
    mdata: md.MuData, seed: int, max_epochs: int | None = None, layer: str = "counts"
) -> dict:
    """scvi-tools MultiVI (CPU) as scvi-tools' MultiVI tutorial runs it.

    Raw counts of both modalities (MultiVI binarises accessibility itself),
    features detected in fewer than 1% of cells dropped (the tutorial's
    filter), the model's default sizes, and ``train()`` with its defaults:
    learning rate 1e-4, up to 500 epochs stopped early on the held-out ELBO,
    KL warm-up over 50 epochs. ``max_epochs`` caps the epochs (smoke runs).

    Returns the latent means and the diagnostics the collapse check reads:
    the per-cell KL of the latent on the held-out cells at the end and the
    epochs trained.
    """
    scvi = _require_scvi()
    if not atac_is_counts(mdata):
        raise PeerUnavailable("MultiVI models ATAC counts; this dataset's ATAC is not counts")
    scvi.settings.seed = seed
    mods = {}
    for k in ("rna", "atac"):
        a = mdata[k].copy()
        if layer not in a.layers:
            a.layers[layer] = a.X.copy()
        detected = np.asarray((a.layers[layer] > 0).sum(0)).ravel()
        mods[k] = a[:, detected >= 0.01 * a.n_obs].copy()
    m = md.MuData(mods)
    scvi.model.MULTIVI.setup_mudata(
        m, rna_layer=layer, atac_layer=layer, modalities={"rna_layer": "rna", "atac_layer": "atac"}
    )
    model = scvi.model.MULTIVI(m)
    z = _train_latent(model, max_epochs)
    curves = pd.concat(  # scvi-tools indexes each history by epoch; the series differ in length
        [model.history[k].iloc[:, 0].astype(float).rename(k) for k in CURVES if k in model.history],
        axis=1,
    )
    return {
        "embedding": z,
        "diagnostics": {
            "kl_local": _history_last(model, "kl_local_validation"),
            "epochs": len(model.history["elbo_train"]),
        },
        "curves": curves.rename_axis("epoch").reset_index(),
    }


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
    """``SCI2CL.setup_mudata`` on the raw counts (layer ``counts``); returns ``mdata``."""
    sci2cl.SCI2CL.setup_mudata(mdata, layer="counts")
    return mdata


def sci2cl_likelihood(mdata: md.MuData) -> dict[str, str]:
    """scI2CL's likelihoods for a dataset: ZINB, and Gaussian for ATAC that is not counts."""
    return {"rna": "zinb", "atac": "zinb" if atac_is_counts(mdata) else "gaussian"}


def _sci2cl(mdata: md.MuData, seed: int, max_epochs: int | None = None, **kwargs) -> dict:
    """scI2CL with its defaults (``max_epochs=None``: its default training length)."""
    kwargs.setdefault("likelihood", sci2cl_likelihood(mdata))
    m = sci2cl.SCI2CL(setup_sci2cl(mdata), seed=seed, **kwargs)
    m.train(**({} if max_epochs is None else {"max_epochs": max_epochs}), progress_bar=False)
    return {
        "embedding": m.get_latent_representation(key_added=None),
        # the read-out's label-free RNA weight (how much of the joint embedding is RNA) and share
        # of cross-modal smoothing (how much of each cell's RNA comes from its ATAC neighbours)
        "diagnostics": {
            "epochs": len(m.history),
            "w_rna": m.modality_weights_["rna"],
            "smoothing": m.cross_smoothing_,
        },
        # the encoders' own embeddings, so that another read-out is scored without re-training
        # (a callable: run_peer computes them after its clock stops)
        "extra": lambda: {
            k: m.get_latent_representation(key_added=None, kind=k) for k in ("rna", "atac", "fused")
        },
    }


PEERS: dict[str, Callable] = {
    "RNA PCA": _rna_pca,
    "ATAC LSI": _atac_lsi,
    "PCA+LSI": _concat,
    "WNN (muon)": _wnn,
    "MOFA+": _mofa,
    "MultiVI": _multivi,
    "GLUE": _glue,
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
    """Run a peer method; returns ``{"embedding", "adjacency", "seconds", "peak_mb", "diagnostics", "curves", "extra"}``.

    A peer returns an embedding, an ``(embedding, graph)`` pair, or a dict with
    ``embedding`` and optionally ``adjacency``, ``diagnostics`` (e.g. a VAE's
    latent KL, read by the collapse check), ``curves`` (per-epoch training
    curves, a DataFrame) and ``extra`` (named further embeddings of the same cells, or a
    callable giving them, called outside the timed block).

    ``peak_mb`` is the extra resident memory the method needed (see :class:`PeakMemory`).
    """
    fn = PEERS[name]
    with PeakMemory() as mem:
        t = time.perf_counter()
        out = fn(mdata, seed, **kwargs)
        seconds = time.perf_counter() - t
    if not isinstance(out, dict):
        emb, adj = out if isinstance(out, tuple) else (out, None)
        out = {"embedding": emb, "adjacency": adj}
    return {
        "embedding": np.asarray(out["embedding"], dtype=np.float32),
        "adjacency": out.get("adjacency"),
        "seconds": seconds,
        "peak_mb": mem.peak_mb,
        "diagnostics": out.get("diagnostics", {}),
        "curves": out.get("curves"),
        "extra": extra() if callable(extra := out.get("extra", {})) else extra,
    }
