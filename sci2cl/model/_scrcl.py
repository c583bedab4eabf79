"""scRCL: unsupervised cell typing by refinement contrastive learning of cell-gene associations."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from .._graph import knn_adjacency, leiden_labels, normalised_adjacency
from .._rows import is_backed_matrix
from .._utils import as_int, check_choice, check_flag, check_range, check_weights, get_matrix
from ..module import SCRCLModule
from ..pp import DataValidationError, validate
from ._base import BaseModel, resolve_device
from ._training import SmoothedLossStopping, TrainSettings, train_module

__all__ = ["SCRCL"]

SETUP_KEY = "_scrcl_setup"
LOSS_WEIGHTS = ("align", "neighbour", "refine")


#: how the spatial graph enters scRCL (see :class:`SCRCL`)
SPATIAL_MODES = ("graph", "smooth", "union", "augment")


def _augment(space_A: sp.csr_matrix, X: np.ndarray, lam: float) -> np.ndarray:
    """``[sqrt(1 - lam) X, sqrt(lam) M X]`` with ``M`` the mean over each cell's spatial neighbours."""
    deg = np.maximum(np.asarray(space_A.sum(1)).ravel(), 1.0)
    M = sp.diags(1.0 / deg) @ space_A
    return np.hstack([np.sqrt(1 - lam) * X, np.sqrt(lam) * (M @ X)]).astype(np.float32)


def _to_torch_sparse(A: sp.csr_matrix, device) -> torch.Tensor:
    A = A.tocoo()
    idx = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    values = torch.from_numpy(A.data.astype(np.float32))
    return (
        torch.sparse_coo_tensor(idx, values, A.shape, check_invariants=False).coalesce().to(device)
    )


def _refuse_backed(adata: ad.AnnData) -> None:
    """ScRCL builds dense graph-filtered views of every cell: it needs the data in memory."""
    if adata.isbacked or is_backed_matrix(adata.X):
        raise DataValidationError(
            "scRCL builds dense views of every cell and needs the data in memory; this AnnData "
            "is backed (on disk): load it with adata = adata.to_memory() (or read_h5ad without "
            "backed=)"
        )


def _coordinates(adata: ad.AnnData, key: str) -> np.ndarray:
    """``obsm[key]`` as finite numbers ``(n_cells, d)`` that place the cells apart."""
    raw = adata.obsm[key]
    try:
        xy = np.asarray(raw.to_numpy() if hasattr(raw, "to_numpy") else raw, dtype=float)
    except (TypeError, ValueError):
        raise DataValidationError(
            f"obsm[{key!r}] must hold numeric coordinates (n_cells, d); it holds values that are "
            "not numbers (a text column?)"
        ) from None
    if xy.ndim != 2 or xy.shape[0] != adata.n_obs:
        raise DataValidationError(f"obsm[{key!r}] must be (n_cells, d), got shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise DataValidationError(f"obsm[{key!r}] holds NaN or infinite values")
    if len(np.unique(xy, axis=0)) < 2:
        raise DataValidationError(
            f"obsm[{key!r}] places every cell at the same point: a spatial graph would be "
            "arbitrary. Pass the real coordinates, or no spatial_key"
        )
    return xy


class _CellDraws(torch.utils.data.Dataset):
    """One batch per epoch: the inputs and the ``size`` cells that epoch's losses use.

    The cells are drawn from ``(seed, epoch)``; the batch is ``inputs`` (views
    and graphs, every cell) plus ``idx`` and ``adj``, the cells' dense 0/1
    block of ``graph`` (see :meth:`sci2cl.module.SCRCLModule.loss`).
    """

    def __init__(self, inputs: dict, graph: sp.csr_matrix, size: int, seed: int):
        self.inputs, self.graph = inputs, graph
        self.n, self.size, self.seed, self.epoch = graph.shape[0], size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, i: int) -> dict:
        state = np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0]
        gen = torch.Generator().manual_seed(int(state))
        idx = torch.randperm(self.n, generator=gen)[: self.size]
        sel = idx.numpy()
        adj = torch.from_numpy(self.graph[sel][:, sel].toarray())
        return {**self.inputs, "idx": idx, "adj": adj}


class SCRCL(BaseModel):
    """scRCL: refinement contrastive learning of cell-gene associations.

    Call :meth:`setup_anndata` on the data first (it records the layer of raw counts).

    Parameters
    ----------
    adata
        scRNA-seq AnnData set up with :meth:`setup_anndata`.
    n_clusters
        Number of cell types (``2 <= n_clusters < n_cells``); ``None`` estimates
        it by Leiden (resolution 1) on a kNN graph of the learned embedding.
    n_top_genes
        Highly variable genes (scanpy ``seurat`` flavour on log-normalised data).
    n_neighbors
        ``k`` of the cosine cell kNN graph (on 50 PCs of the log-normalised HVGs).
    n_gene_neighbors
        ``k`` of the gene kNN graph (cosine on gene loadings of the 50 PCs).
    smoothing
        Number of low-pass filtering steps ``(t1, t2)`` of the two views (>= 0
        each). ``None``: ``(3, 0)`` on the expression graph and ``(5, 0)`` with
        a spatial graph (both chosen on the development sets, scRNA-seq and
        tissue; the book's Methods chapter gives the runs).
    scale
        Z-score each gene (clipped at 10, ``sc.pp.scale``) before filtering;
        otherwise use the log-normalised values.
    spatial_key
        Coordinates ``(n_cells, d)`` in ``adata.obsm[spatial_key]`` for a
        spatial kNN graph (``n_spatial_neighbors`` neighbours), used as
        ``spatial_mode`` says. For spatial domains (layers, regions); cell
        types, which mix within a domain, are better found without it.
    spatial_mode
        How the spatial graph enters (with ``spatial_key``): ``"graph"``
        replaces the expression graph everywhere (smoothing, graph
        convolution, neighbourhood contrast, refinement target); ``"smooth"``
        smooths the views' features over space and keeps the expression graph
        for the rest; ``"union"`` uses the union of the two graphs everywhere;
        ``"augment"`` gives each cell, beside its own scaled expression, the
        mean expression of its spatial neighbours, weighted ``sqrt(1 - l)`` and
        ``sqrt(l)`` with ``l = spatial_lambda``, and builds the expression graph
        and the views from these features (BANKSY's neighbourhood augmentation,
        Singhal et al. 2024, without its azimuthal term).
    target_sum
        Counts per cell after normalisation, before ``log1p``
        (``sc.pp.normalize_total``); ``None`` (the default, scanpy's): the
        median count per cell. Chosen on the development sets over 10,000,
        which on low counts (FISH panels, shallow cells) makes the log nearly a
        log of ratios and loses cell types.
    spatial_lambda
        ``l`` of ``spatial_mode="augment"`` in ``[0, 1]``: the neighbourhood's
        share (BANKSY suggests 0.2 for cell types and 0.8 for domains).
    n_spatial_neighbors
        ``k`` of the spatial kNN graph (the default, like ``smoothing``'s
        spatial default, was chosen on the tissue development sets).
    n_hidden, n_latent
        Hidden and output sizes of the cell encoders (>= 2).
    weights
        Loss weights ``{"align": w0, "neighbour": w1, "refine": w2}`` of the
        distribution-alignment, neighbourhood-contrastive and refinement losses
        (>= 0, not all 0; the paper's ``lambda1`` and ``lambda2`` are ``w1`` and
        ``w2`` with ``w0 = 1``); missing keys keep their default of 1.
    temperature
        Softmax temperature of the distribution-alignment and neighbourhood
        divergences (> 0; 0.1 is the authors' default).
    batch_cells
        Cells per step in the ``O(B^2)`` neighbourhood and refinement losses
        (memory ``~ 4 B^2`` bytes per matrix: 4096 cells -> 64 MB).
    seed, device
        Seed and device (``"auto"``).
    """

    def __init__(
        self,
        adata: ad.AnnData,
        n_clusters: int | None = None,
        n_top_genes: int = 2000,
        n_neighbors: int = 15,
        n_gene_neighbors: int = 5,
        smoothing: tuple[int, int] | None = None,
        scale: bool = True,
        spatial_key: str | None = None,
        spatial_mode: str = "graph",
        n_spatial_neighbors: int = 25,
        spatial_lambda: float = 0.2,
        target_sum: float | None = None,
        n_hidden: int = 256,
        n_latent: int = 64,
        weights: dict | None = None,
        temperature: float = 0.1,
        batch_cells: int = 2048,
        seed: int = 0,
        device: str = "auto",
    ):
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"SCRCL needs an AnnData, got {type(adata).__name__}")
        _refuse_backed(adata)
        if smoothing is None:
            smoothing = (5, 0) if spatial_key is not None else (3, 0)
        smoothing = tuple(smoothing) if isinstance(smoothing, list | tuple) else smoothing
        self._init_common(locals(), "adata", seed, device)
        self.init_params["smoothing"] = list(smoothing)
        setup = adata.uns.get(SETUP_KEY)
        if setup is None:
            raise DataValidationError(
                "the AnnData is not set up: call sci2cl.SCRCL.setup_anndata(adata, layer='counts') "
                "first (it records the layer of raw counts)"
            )
        self.setup = {"layer": setup["layer"]}
        validate(adata, count_modalities=("rna",), layer=self.setup["layer"])
        if n_clusters is not None:
            check_range("n_clusters", n_clusters, 2, adata.n_obs, hi_open=True, integer=True)
        check_range("n_top_genes", n_top_genes, 2, integer=True)
        check_range("n_neighbors", n_neighbors, 1, integer=True)
        check_range("n_gene_neighbors", n_gene_neighbors, 1, integer=True)
        if not isinstance(smoothing, tuple) or len(smoothing) != 2:
            raise ValueError(
                f"smoothing must be a pair (t1, t2) of integers >= 0, got {smoothing!r}"
            )
        for i, t in enumerate(smoothing):
            check_range(f"smoothing[{i}]", t, 0, integer=True)
        check_range("n_hidden", n_hidden, 2, integer=True)
        check_range("n_latent", n_latent, 2, integer=True)
        w = check_weights(weights, LOSS_WEIGHTS)
        check_range("temperature", temperature, 0, lo_open=True)
        check_range("batch_cells", batch_cells, 2, integer=True)
        check_choice("spatial_mode", spatial_mode, SPATIAL_MODES)
        check_range("n_spatial_neighbors", n_spatial_neighbors, 1, integer=True)
        check_range("spatial_lambda", spatial_lambda, 0, 1)
        if target_sum is not None:
            check_range("target_sum", target_sum, 0, lo_open=True)
        if spatial_key is not None and spatial_key not in adata.obsm:
            raise DataValidationError(
                f"obsm[{spatial_key!r}] not found for the spatial graph; obsm has {list(adata.obsm)}"
            )
        if adata.n_obs < max(n_neighbors + 1, 10):
            raise DataValidationError(f"too few cells ({adata.n_obs}) for a {n_neighbors}-NN graph")
        self.adata, self.n_clusters = adata, n_clusters
        self._build_inputs(adata)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.module = SCRCLModule(
                self._x1.shape[1],  # the genes, twice with spatial_mode="augment"
                self._gene_x.shape[1],
                n_hidden=n_hidden,
                n_latent=n_latent,
                weights=w,
                temperature=temperature,
            ).to(self.device)

    @classmethod
    def setup_anndata(cls, adata: ad.AnnData, layer: str | None = "counts") -> None:
        """Record the layer of raw counts (``None``: ``.X``) in ``adata.uns["_scrcl_setup"]``.

        Raises
        ------
        DataValidationError
            The layer is missing or does not hold counts.
        """
        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"setup_anndata needs an AnnData, got {type(adata).__name__}")
        _refuse_backed(adata)
        validate(adata, count_modalities=("rna",), layer=layer)
        adata.uns[SETUP_KEY] = {"layer": layer}

    def _build_inputs(self, adata: ad.AnnData) -> None:
        """Features, cell graph and gene graph of the two views (label-free)."""
        import scanpy as sc

        p = self.init_params
        X = sp.csr_matrix(get_matrix(adata, self.setup["layer"]), dtype=np.float32)
        if (np.asarray(X.sum(1)).ravel() == 0).any():
            raise DataValidationError(
                "some cells have no counts; filter them (sci2cl.pp.qc_filter)"
            )
        a = ad.AnnData(X, obs=adata.obs[[]], var=adata.var[[]])
        sc.pp.filter_genes(a, min_cells=1)
        sc.pp.normalize_total(a, target_sum=p["target_sum"])
        sc.pp.log1p(a)
        if p["n_top_genes"] < a.n_vars:
            sc.pp.highly_variable_genes(
                a, n_top_genes=p["n_top_genes"], flavor="seurat", subset=True
            )
        self.genes = a.var_names.tolist()
        Xl = a.X.toarray()
        a.X = Xl.copy()
        sc.pp.scale(a, max_value=10)
        Xs = np.asarray(a.X)
        if not (np.ptp(Xs, axis=0) > 0).any():
            raise DataValidationError(
                "every selected gene has the same value in every cell: the counts carry no "
                "variation for scRCL to learn from (check the layer, or that the cells differ)"
            )
        space_A = None
        if p["spatial_key"] is not None:
            xy = _coordinates(adata, p["spatial_key"])
            space_A = knn_adjacency(xy, p["n_spatial_neighbors"])
        if space_A is not None and p["spatial_mode"] == "augment":
            Xs, Xl = (
                _augment(space_A, Xs, p["spatial_lambda"]),
                _augment(space_A, Xl, p["spatial_lambda"]),
            )
            a = ad.AnnData(Xs, obs=a.obs[[]])
        sc.tl.pca(a, n_comps=min(50, min(a.shape) - 1), random_state=self.seed)
        pcs = a.obsm["X_pca"]
        cell_A = knn_adjacency(pcs, p["n_neighbors"], "cosine")
        smooth_A = cell_A
        if space_A is not None:
            mode = p["spatial_mode"]
            if mode == "graph":
                cell_A = smooth_A = space_A
            elif mode == "smooth":
                smooth_A = space_A
            elif mode == "union":
                cell_A = smooth_A = ((cell_A + space_A) > 0).astype(np.float32).tocsr()
        singular = np.sqrt(a.uns["pca"]["variance"] * (a.n_obs - 1))
        gene_feat = (a.varm["PCs"] * singular).astype(np.float32)  # (G, n_pcs)
        gene_A = knn_adjacency(gene_feat, p["n_gene_neighbors"], "cosine")
        S = normalised_adjacency(cell_A)
        S_smooth = S if smooth_A is cell_A else normalised_adjacency(smooth_A)
        views = []
        for t in p["smoothing"]:
            v = (Xs if p["scale"] else Xl).copy()
            for _ in range(t):
                v = S_smooth @ v
            views.append(v.astype(np.float32))
        self.cell_graph = cell_A
        dev = self.device
        self._x1, self._x2 = (torch.from_numpy(v).to(dev) for v in views)
        self._S = _to_torch_sparse(S, dev)
        self._gene_x = torch.from_numpy(gene_feat).to(dev)
        self._gene_S = _to_torch_sparse(normalised_adjacency(gene_A), dev)

    def train(
        self,
        max_epochs: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 30,
        tol: float = 1e-3,
        min_epochs: int = 20,
        progress_bar: bool = True,
    ) -> SCRCL:
        """Full-batch training with a label-free stopping rule (a transaction, as :meth:`SCI2CL.train`).

        Each epoch draws ``batch_cells`` cells for the ``O(B^2)`` losses.
        Training runs ``max_epochs`` epochs; a longer run stops when the best
        smoothed loss (mean of the last 10 epochs) has not improved by a
        relative ``tol`` for ``patience`` epochs, once ``min_epochs`` epochs
        have run. No labels are read.

        Parameters
        ----------
        max_epochs
            Upper bound on the number of epochs (>= 1). The default was chosen
            on the development sets, scRNA-seq and tissue
            (``results/scrcl_dev_log.csv``, ``results/scrcl_spatial_dev.csv``;
            the rule is in the methods chapter): the clusters do not improve
            with the loss, so training is kept short. Below ``min_epochs`` the
            stopping rule does not act.
        lr, weight_decay
            AdamW settings (``lr > 0``, ``weight_decay >= 0``).
        patience, tol
            Epochs (>= 1) without a relative improvement of ``tol`` (>= 0) of
            the smoothed loss before stopping.
        min_epochs
            Epochs always trained before the rule may stop training (>= 0).
        progress_bar
            Show a tqdm bar.

        Returns
        -------
        SCRCL
            ``self``.
        """
        max_epochs = as_int("max_epochs", max_epochs, 1)
        check_range("lr", lr, 0, lo_open=True)
        check_range("weight_decay", weight_decay, 0)
        patience = as_int("patience", patience, 1)
        check_range("tol", tol, 0)
        min_epochs = as_int("min_epochs", min_epochs, 0)
        check_flag("progress_bar", progress_bar)
        settings = TrainSettings(
            max_epochs=max_epochs,
            lr=lr,
            weight_decay=weight_decay,
            main_stage="train",
            patience=patience,
            progress_bar=progress_bar,
        )
        with self._transaction(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self._train(settings, tol, min_epochs)
        return self

    def _train(self, settings: TrainSettings, tol: float, min_epochs: int) -> None:
        inputs = {"x1": self._x1, "x2": self._x2, "S": self._S}
        inputs.update(gene_x=self._gene_x, gene_S=self._gene_S)
        n = self.adata.n_obs
        data = _CellDraws(
            inputs, self.cell_graph, min(self.init_params["batch_cells"], n), self.seed
        )
        stopping = lambda history: SmoothedLossStopping(  # noqa: E731
            history, settings.patience, tol, min_epochs
        )
        records, _ = train_module(self.module, settings, self.device, data, callbacks=(stopping,))
        self.history = pd.DataFrame(records)
        self.is_trained = True

    @torch.no_grad()
    def _embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        self.module.eval()
        h1, h2 = self.module.encode(self._x1, self._x2, self._S)
        r1, r2 = self.module.refine(h1, h2, self._gene_x, self._gene_S)
        cell = torch.cat([h1, h2], 1).cpu().numpy()
        refined = torch.cat([F.normalize(r1, dim=1), F.normalize(r2, dim=1)], 1)
        return cell, refined.cpu().numpy()

    def get_latent_representation(self, key_added: str | None = "X_scrcl") -> np.ndarray:
        """Cell embedding ``(n_cells, 2 * n_latent)``: both views' L2-normalised embeddings."""
        if not self.is_trained:
            raise RuntimeError("the model is not trained; call .train() first")
        z = self._embeddings()[0]
        if key_added:
            self.adata.obsm[key_added] = z
        return z

    def predict(
        self, key_added: str | None = "scrcl", use: str = "refined", n_clusters: int | None = None
    ) -> np.ndarray:
        """Cluster labels ``(n_cells,)``: k-means on the concatenated refined embeddings.

        ``n_clusters`` (default: the model's) sets the number of clusters; when
        both are ``None`` the number is Leiden's (resolution 1) on a 15-NN
        graph of the cell embedding (label-free). It is stored in
        ``self.n_clusters_``. ``use`` picks what k-means reads: ``"refined"``
        (the paper's read-out, ``(n_cells, 2 * n_genes)``), ``"cell"`` (the
        views' embeddings, ``(n_cells, 2 * n_latent)``) or ``"both"``
        (the two concatenated, each L2-normalised per cell).
        """
        from sklearn.cluster import KMeans
        from sklearn.preprocessing import normalize

        check_choice("use", use, ("refined", "cell", "both"))
        if not self.is_trained:
            raise RuntimeError("the model is not trained; call .train() first")
        if n_clusters is not None:
            check_range("n_clusters", n_clusters, 2, self.adata.n_obs, hi_open=True, integer=True)
        cell, refined = self._embeddings()
        k = self.n_clusters if n_clusters is None else n_clusters
        if k is None:
            k = max(2, len(np.unique(leiden_labels(cell, resolution=1.0, seed=self.seed))))
        self.n_clusters_ = k
        X = {
            "refined": refined,
            "cell": cell,
            "both": np.hstack([normalize(cell), normalize(refined)]),
        }[use]
        labels = KMeans(k, n_init=10, random_state=self.seed).fit_predict(X)
        if key_added:
            self.adata.obs[key_added] = pd.Categorical(labels.astype(str))
        return labels

    def _checkpoint_extra(self) -> dict:
        return {
            "genes": self.genes,
            "obs_names": self.adata.obs_names.tolist(),
            "setup": self.setup,
        }

    @classmethod
    def load(cls, path: str | os.PathLike, adata: ad.AnnData, device: str = "auto") -> SCRCL:
        """Load a saved model for the same cells (scRCL is transductive: the graphs are rebuilt)."""
        meta, state = cls._read_checkpoint(path, resolve_device(device))
        path = Path(path)
        if adata.obs_names.tolist() != meta["obs_names"]:
            raise DataValidationError(
                "scRCL is transductive: load it with the cells it was trained on"
            )
        cls.setup_anndata(adata, meta.get("setup", {}).get("layer", "counts"))
        init = cls._checkpoint_init(path / "model.json", meta)
        init["device"] = device
        init["smoothing"] = tuple(init.get("smoothing") or (3, 0))
        model = cls(adata, **init)
        if model.genes != meta["genes"]:
            raise DataValidationError("the rebuilt gene selection differs from the saved model's")
        model._load_weights(state, path)
        model.history = cls._read_history(path)
        model.is_trained = True
        return model
