"""Analyses on embeddings: clustering protocols, peer embeddings, subpopulations,
annotation audit, trajectories, gene activity and GSEA.

Functions take the data first and write their result to ``obs``/``obsm``/``uns``
under ``key_added``; graph clustering uses scanpy's Leiden on a kNN adjacency.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import metrics

__all__ = [
    "knn_adjacency",
    "kmeans_labels",
    "leiden_labels",
    "leiden_label_free",
    "cluster_embedding",
    "paper_protocol",
    "PEERS",
    "PeakMemory",
    "run_peer",
    "scvi_embedding",
    "find_subpopulations",
    "audit_annotation",
    "pseudobulk_correlation",
    "trajectory",
    "stage_order_score",
    "gene_activity",
    "gsea_prerank",
]


# --------------------------------------------------------------------------- clustering
def knn_adjacency(X: np.ndarray, n_neighbors: int = 15) -> sp.csr_matrix:
    """Symmetric binary Euclidean kNN adjacency of an embedding ``(n, d)`` (no self loops)."""
    from sklearn.neighbors import NearestNeighbors

    k = min(n_neighbors, X.shape[0] - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)
    rows = np.repeat(np.arange(X.shape[0]), k + 1)
    A = sp.csr_matrix((np.ones(rows.size), (rows, idx.ravel())), shape=(X.shape[0],) * 2)
    A.setdiag(0)
    A.eliminate_zeros()
    return ((A + A.T) > 0).astype(np.float64).tocsr()


def kmeans_labels(X: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """KMeans (scikit-learn, ``n_init=10``) labels of ``X`` ``(n, d)`` into ``k`` clusters."""
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=10, random_state=seed).fit_predict(X)


def leiden_labels(
    X: np.ndarray | None = None,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    seed: int = 0,
    adjacency: sp.spmatrix | None = None,
) -> np.ndarray:
    """Leiden clusters (scanpy/leidenalg) on the kNN graph of ``X`` or a given adjacency."""
    import scanpy as sc

    A = knn_adjacency(X, n_neighbors) if adjacency is None else adjacency
    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(A.shape[0])]))
    sc.tl.leiden(
        tmp,
        resolution=resolution,
        adjacency=A,
        random_state=seed,
        key_added="c",
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return tmp.obs["c"].astype(int).to_numpy()


def leiden_label_free(
    X: np.ndarray,
    resolutions: Sequence[float] | None = None,
    n_neighbors: int = 15,
    seed: int = 0,
    adjacency: sp.spmatrix | None = None,
    embedding_for_score: np.ndarray | None = None,
) -> tuple[np.ndarray, float, pd.DataFrame]:
    """Leiden clustering whose resolution is chosen without labels.

    Two documented rules:

    * ``resolutions=None`` (the benchmark's rule): scanpy's default
      resolution 1.0 on the 15-NN graph, the choice most users make; the
      number of clusters found is reported, not tuned.
    * a list of resolutions: keep the one whose clusters have the highest
      silhouette width on the embedding (``X``, or ``embedding_for_score``
      when clustering a given graph); ties go to the lower resolution. This
      favours well-separated clusters and is used to decide whether a
      population splits at all (:func:`find_subpopulations`).

    Returns
    -------
    labels, resolution, table of (resolution, n_clusters, silhouette)
    """
    emb = X if embedding_for_score is None else embedding_for_score
    A = knn_adjacency(X, n_neighbors) if adjacency is None else adjacency
    rows, best = [], (-np.inf, None, None)
    for r in resolutions if resolutions is not None else [1.0]:
        lab = leiden_labels(resolution=r, seed=seed, adjacency=A)
        k = len(np.unique(lab))
        s = metrics.asw(emb, lab, seed=seed) if k > 1 else -1.0
        rows.append({"resolution": r, "n_clusters": k, "silhouette": s})
        if s > best[0] + 1e-9 or best[2] is None:
            best = (s, r, lab)
    return best[2], best[1], pd.DataFrame(rows)


def cluster_embedding(
    X: np.ndarray,
    y_true,
    seed: int = 0,
    adjacency: sp.spmatrix | None = None,
) -> list[dict]:
    """Score an embedding (or a graph) under the two protocols of the benchmark.

    ``kmeans``: KMeans with the true number of types on the embedding;
    ``leiden``: label-free Leiden at resolution 1 (:func:`leiden_label_free`). With an
    ``adjacency`` (graph methods such as WNN) KMeans runs on ``X``, which is
    then the graph's spectral/UMAP coordinates.
    """
    y_true = np.asarray(y_true)
    k = len(np.unique(y_true))
    out = []
    lab = kmeans_labels(X, k, seed)
    out.append({"protocol": "kmeans", **metrics.score_all(y_true, lab, X, seed)})
    lab, res, _ = leiden_label_free(X, seed=seed, adjacency=adjacency)
    out.append({"protocol": "leiden", "resolution": res, **metrics.score_all(y_true, lab, X, seed)})
    return out


def paper_protocol(X: np.ndarray, y_true, n_repeats: int = 5, seed: int = 0) -> pd.DataFrame:
    """The paper's protocol: 2-D UMAP (100 neighbours) then KMeans with the true k.

    Repeated ``n_repeats`` times with seeds ``seed, seed+1, ...`` (UMAP is
    random); returns one row per repeat (use ``.agg(["mean", "min", "max"])``).
    """
    import umap

    y_true = np.asarray(y_true)
    k = len(np.unique(y_true))
    rows = []
    for r in range(n_repeats):
        u = umap.UMAP(
            n_components=2, n_neighbors=min(100, X.shape[0] - 1), random_state=seed + r
        ).fit_transform(X)
        lab = kmeans_labels(u, k, seed + r)
        rows.append({"repeat": r, **metrics.score_all(y_true, lab, u, seed)})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- peer methods
def _rna_pca(mdata: md.MuData, seed: int, n_comps: int = 30) -> np.ndarray:
    import scanpy as sc

    from .data import log_normalize

    a = mdata["rna"].copy()
    log_normalize(a)
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=seed)
    return a.obsm["X_pca"]


def _atac_is_counts(mdata: md.MuData) -> bool:
    """Whether the dataset registry entry (when present) lists ATAC as counts."""
    return "atac" in mdata.uns.get("sci2cl_dataset", {}).get("count_modalities", ["atac"])


def _atac_lsi(mdata: md.MuData, seed: int, n_comps: int = 30) -> np.ndarray:
    from .data import tfidf_lsi

    a = mdata["atac"].copy()
    if not _atac_is_counts(mdata):
        import scanpy as sc  # normalised (non-count) ATAC: PCA of its values

        a.X = a.layers.get("counts", a.X)
        sc.tl.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=seed)
        return a.obsm["X_pca"]
    np.random.seed(seed)  # noqa: NPY002 - muon LSI and pyslingshot draw from the global numpy RNG
    tfidf_lsi(a, n_comps)
    return a.obsm["X_lsi"]


def _concat(mdata: md.MuData, seed: int) -> np.ndarray:
    z = [_rna_pca(mdata, seed), _atac_lsi(mdata, seed)]
    return np.hstack([x / np.linalg.norm(x, axis=1, keepdims=True).mean() for x in z])


def _wnn(mdata: md.MuData, seed: int) -> tuple[np.ndarray, sp.spmatrix]:
    """muon WNN graph on RNA PCA + ATAC LSI; returns (UMAP of the graph, connectivities)."""
    import muon as mu

    m = md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"].copy()})
    m["rna"].obsm["X_pca"] = _rna_pca(mdata, seed)
    m["atac"].obsm["X_lsi"] = _atac_lsi(mdata, seed)
    import scanpy as sc

    sc.pp.neighbors(m["rna"], use_rep="X_pca", random_state=seed)
    sc.pp.neighbors(m["atac"], use_rep="X_lsi", random_state=seed)
    mu.pp.neighbors(m, key_added="wnn", random_state=seed)
    mu.tl.umap(m, neighbors_key="wnn", random_state=seed)
    return m.obsm["X_umap"], m.obsp["wnn_connectivities"]


def _mofa(mdata: md.MuData, seed: int, n_factors: int = 15) -> np.ndarray:
    import muon as mu

    m = md.MuData({"rna": mdata["rna"].copy(), "atac": mdata["atac"].copy()})
    from .data import log_normalize, tfidf_lsi

    log_normalize(m["rna"])
    tfidf_lsi(m["atac"])
    import contextlib
    import io
    import tempfile

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
    import logging

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
    if not _atac_is_counts(mdata):
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


def _sci2cl(mdata: md.MuData, seed: int, max_epochs: int = 40, **kwargs) -> np.ndarray:
    from .model import SCI2CL

    m = SCI2CL(mdata, seed=seed, **kwargs)
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
        import threading

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
    dict with ``labels`` (Series), ``resolution``, ``stability`` (list of
    ARIs), ``stable`` (mean stability ARI >= ``min_stability``), ``de``
    (tidy DataFrame) and ``n_subclusters``.
    """
    import scanpy as sc

    from .data import log_normalize

    obs = mdata.obs
    if groupby not in obs:
        raise KeyError(f"{groupby!r} not in obs")
    cells = obs.index[obs[groupby].astype(str) == str(group)]
    if len(cells) < 20:
        raise ValueError(f"group {group!r} has {len(cells)} cells; need at least 20")
    if use_rep not in mdata.obsm:
        raise KeyError(f"obsm[{use_rep!r}] missing; compute the embedding first")
    pos = obs.index.get_indexer(cells)
    X = np.asarray(mdata.obsm[use_rep])[pos]
    lab, res, _ = leiden_label_free(
        X, resolutions=(0.1, 0.2, 0.3, 0.5, 0.8), n_neighbors=n_neighbors, seed=seed
    )
    rng = np.random.default_rng(seed)
    stab = []
    for r in range(n_repeats):
        sub = np.sort(rng.choice(len(cells), int(subsample * len(cells)), replace=False))
        lab_r = leiden_labels(X[sub], resolution=res, n_neighbors=n_neighbors, seed=seed + r + 1)
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
        "resolution": res,
        "stability": stab,
        "stable": bool(np.mean(stab) >= min_stability),
        "de": de,
        "n_subclusters": int(labels.nunique()),
    }


# --------------------------------------------------------------------------- annotation audit
def audit_annotation(
    mdata: md.MuData | ad.AnnData,
    label_key: str,
    use_rep: str = "X_sci2cl",
    n_neighbors: int = 15,
    threshold: float | None = None,
    key_added: str = "audited_label",
) -> pd.DataFrame:
    """Flag cells whose embedding neighbourhood mostly carries another label.

    For each cell, the labels of its ``n_neighbors`` nearest neighbours in
    the embedding are counted. A cell is flagged when the most frequent
    neighbour label differs from its own and holds at least ``threshold`` of
    its neighbours. The default threshold is chosen without any truth: 0.5
    (a strict majority), raised to the 95th percentile of the same statistic
    under label permutation when that is higher (so that random labels are
    not flagged).

    Writes ``obs[key_added]`` (proposed label) and
    ``obs[key_added + "_confidence"]`` (neighbour fraction of the proposed
    label), and returns the flagged cells with their evidence.
    """
    from sklearn.neighbors import NearestNeighbors

    y = mdata.obs[label_key].astype(str).to_numpy()
    X = np.asarray(mdata.obsm[use_rep])
    k = min(n_neighbors, X.shape[0] - 1)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X, return_distance=False)[:, 1:]
    cats, codes = np.unique(y, return_inverse=True)
    counts = np.zeros((len(y), len(cats)))
    np.add.at(counts, (np.repeat(np.arange(len(y)), k), codes[idx].ravel()), 1)
    frac = counts / k
    top = frac.argmax(1)
    top_frac = frac.max(1)
    if threshold is None:
        rng = np.random.default_rng(0)
        perm = codes[rng.permutation(len(codes))]
        cp = np.zeros_like(counts)
        np.add.at(cp, (np.repeat(np.arange(len(y)), k), perm[idx].ravel()), 1)
        threshold = max(0.5, float(np.quantile(cp.max(1) / k, 0.95)))
    flagged = (top != codes) & (top_frac >= threshold)
    proposed = np.where(flagged, cats[top], y)
    mdata.obs[key_added] = pd.Categorical(proposed)
    mdata.obs[key_added + "_confidence"] = np.where(
        flagged, top_frac, frac[np.arange(len(y)), codes]
    )
    table = pd.DataFrame(
        {
            "label": y[flagged],
            "proposed": cats[top][flagged],
            "neighbour_fraction": top_frac[flagged],
            "own_label_fraction": frac[np.arange(len(y)), codes][flagged],
        },
        index=mdata.obs_names[flagged],
    )
    table.attrs["threshold"] = threshold
    return table


def pseudobulk_correlation(adata: ad.AnnData, groups: pd.Series) -> pd.DataFrame:
    """Pearson correlation of log-normalised pseudo-bulk profiles between groups."""
    from .data import log_normalize

    a = adata.copy()
    log_normalize(a)
    X = a.X.toarray() if sp.issparse(a.X) else np.asarray(a.X)
    g = groups.reindex(a.obs_names).astype(str).to_numpy()
    prof = pd.DataFrame({c: X[g == c].mean(0) for c in np.unique(g) if c != "nan"})
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
    cluster names). Returns the same plus the fitted ``Slingshot`` object.
    """
    import umap
    from pyslingshot import Slingshot

    obs = mdata.obs
    lab = obs[cluster_key].astype(str)
    keep = lab.isin(list(clusters)) if clusters is not None else pd.Series(True, index=obs.index)
    cats = list(clusters) if clusters is not None else sorted(lab[keep].unique())
    if start not in cats:
        raise ValueError(f"start cluster {start!r} not among {cats}")
    X = np.asarray(mdata.obsm[use_rep])[keep.to_numpy()]
    if X.shape[1] > n_components:
        X2 = umap.UMAP(n_components=n_components, random_state=seed, n_neighbors=30).fit_transform(
            X
        )
    else:
        X2 = X
    codes = pd.Categorical(lab[keep], categories=cats).codes
    onehot = np.eye(len(cats))[codes]
    import contextlib
    import io

    np.random.seed(seed)  # noqa: NPY002 - muon LSI and pyslingshot draw from the global numpy RNG
    with contextlib.redirect_stdout(io.StringIO()):
        sl = Slingshot(
            X2,
            onehot,
            start_node=cats.index(start),
            end_nodes=[cats.index(e) for e in end] if end else None,
        )
        sl.fit(num_epochs=num_epochs)
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
        "pseudotime": pt,
        "lineage_pseudotime": per,
        "lineages": lineages,
        "slingshot": sl,
        "coords": X2,
        "keep": keep.to_numpy(),
    }


def stage_order_score(pseudotime, labels, expected_order: Sequence[str]) -> dict:
    """How well the median pseudotime of named clusters follows an expected order.

    Returns Kendall's tau between the expected rank and the rank of the
    median pseudotime (1: perfect order), whether the order is exactly right,
    and the medians.
    """
    from scipy.stats import kendalltau

    pt = pd.Series(np.asarray(pseudotime, float), index=np.arange(len(labels)))
    lab = pd.Series(np.asarray(labels).astype(str), index=pt.index)
    med = [float(pt[lab == c].median()) for c in expected_order]
    tau = kendalltau(np.arange(len(expected_order)), med).statistic
    return {
        "kendall_tau": float(tau),
        "order_correct": bool(np.all(np.diff(med) > 0)),
        "medians": dict(zip(expected_order, med)),
    }


# --------------------------------------------------------------------------- gene activity, GSEA
def _parse_interval(name: str) -> tuple[str, int, int] | None:
    import re

    m = re.match(r"^(chr[\w]+|[\dXYM]+)[:\-_](\d+)[\-_](\d+)$", name)
    if not m:
        return None
    return m.group(1), int(m.group(2)), int(m.group(3))


def gene_activity(
    atac: ad.AnnData,
    genes: pd.DataFrame,
    upstream: int = 2000,
    layer: str | None = "counts",
) -> ad.AnnData:
    """Gene activity: ATAC counts summed over peaks overlapping promoter + gene body.

    ``genes`` has columns ``chrom, start, end, strand`` indexed by gene name
    (e.g. from the GTF the data were aligned to; GLUE's h5ad files carry
    them in ``var``). A peak counts for a gene when it overlaps
    ``[start - upstream, end]`` (``+`` strand) or ``[start, end + upstream]``
    (``-`` strand). Returns cells x genes counts; raises when peaks have no
    parseable coordinates (``chr1-100-200`` or ``chr1:100-200``).
    """
    coords = [_parse_interval(str(p)) for p in atac.var_names]
    if not any(c is not None for c in coords):
        raise ValueError("peak names carry no genomic coordinates (expected 'chr1-100-200')")
    pk = pd.DataFrame(
        [c if c else (None, -1, -1) for c in coords], columns=["chrom", "start", "end"]
    )
    g = genes.copy()
    g["lo"] = np.where(g["strand"] == "-", g["start"], g["start"] - upstream)
    g["hi"] = np.where(g["strand"] == "-", g["end"] + upstream, g["end"])
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
    M = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(atac.n_vars, len(g)))
    X = atac.layers[layer] if layer in atac.layers else atac.X
    out = ad.AnnData(
        sp.csr_matrix(X @ M, dtype=np.float32),
        obs=atac.obs[[]].copy(),
        var=pd.DataFrame(index=g.index),
    )
    out.layers["counts"] = out.X.copy()
    return out


def gsea_prerank(
    de: pd.DataFrame,
    group: str,
    gene_sets: str | dict,
    seed: int = 0,
    permutation_num: int = 200,
    min_size: int = 10,
    max_size: int = 500,
    to_human: bool = False,
) -> pd.DataFrame:
    """``gseapy.prerank`` of one group's genes (ranked by Wilcoxon score) on local gene sets.

    ``gene_sets`` is a GMT path or a dict; no network is used. With
    ``to_human`` mouse symbols are mapped to human by upper-casing (the
    usual 1:1 ortholog approximation for most symbols).
    """
    import gseapy as gp

    d = de[de["group"] == group] if "group" in de else de
    rnk = d[["names", "scores"]].dropna().copy()
    if to_human:
        rnk["names"] = rnk["names"].str.upper()
    rnk = rnk.drop_duplicates("names").set_index("names")["scores"].sort_values(ascending=False)
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
    return out
