"""User-facing models: :class:`SCI2CL` (paired RNA + ATAC) and :class:`SCRCL` (scRNA-seq)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .data import DataValidationError, validate
from .module import LIKELIHOODS, SCI2CLModule

__all__ = ["SCI2CL", "SCRCL", "resolve_device", "seed_everything"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else Apple MPS, else CPU."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed numpy/torch global generators and return a torch CPU generator."""
    np.random.seed(seed)  # noqa: NPY002 - third-party code (scanpy, umap) reads the global RNG
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def _dense_rows(X, idx: np.ndarray) -> np.ndarray:
    rows = X[idx]
    return rows.toarray() if sp.issparse(rows) else np.asarray(rows)


class _BaseModel:
    """Shared save/load and history plumbing."""

    _init_keys: tuple[str, ...] = ()
    obsm_key = ""

    def plot_history(self, ax=None):
        """Plot the training losses per epoch (one line per component, log scale)."""
        from .pl import history

        return history(self.history, ax=ax, title=f"{type(self).__name__} training")

    def _save_common(self, path: str | os.PathLike, overwrite: bool, extra: dict) -> Path:
        path = Path(path)
        if path.exists() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(f"{path} exists and is not empty; pass overwrite=True")
        path.mkdir(parents=True, exist_ok=True)
        torch.save(self.module.state_dict(), path / "model.pt")
        meta = {"class": type(self).__name__, "init": self.init_params, **extra}
        (path / "model.json").write_text(json.dumps(meta, indent=2, default=str))
        self.history.to_csv(path / "history.csv", index=False)
        return path

    @staticmethod
    def _read_meta(path: str | os.PathLike, cls_name: str) -> tuple[Path, dict]:
        path = Path(path)
        if not (path / "model.json").exists():
            raise FileNotFoundError(f"{path} holds no saved {cls_name} (model.json missing)")
        meta = json.loads((path / "model.json").read_text())
        if meta.get("class") != cls_name:
            raise ValueError(f"{path} holds a {meta.get('class')}, not a {cls_name}")
        return path, meta


# =============================================================================== scI2CL
class SCI2CL(_BaseModel):
    """scI2CL: intra- and inter-omics contrastive learning of paired RNA + ATAC.

    Parameters
    ----------
    mdata
        MuData with modalities ``rna`` and ``atac`` holding the same cells
        in the same order; the features used are all features of each
        modality (select them first, e.g. with
        :func:`sci2cl.data.select_features`).
    layer
        Layer with raw counts (``.X`` when absent).
    n_latent
        Embedding size ``E``.
    n_hidden
        Hidden layer size of encoders and decoders.
    n_views
        Number ``T`` of masked views in the intra-omics module (0 disables it).
    n_heads
        Heads of the view self-attention (must divide ``n_latent``).
    mask_rate
        Probability that a feature is masked in a view.
    temperature
        Temperature of the contrastive loss ``L_MOC``.
    n_negatives
        Unpaired combinations per cell in ``L_MOM``.
    hard_negatives
        Draw matching negatives in proportion to embedding similarity
        instead of uniformly (no labels are used either way).
    weights
        Loss weights ``{"rec": l1, "mse": l2, "moc": l3, "mom": l4}``.
    likelihood
        Per-modality likelihood, ``"zinb"`` (default for counts), ``"nb"``,
        ``"gaussian"`` (for normalised, non-count data such as A549 ATAC) or
        ``"bernoulli"`` (binarised accessibility). ``"auto"`` picks ``"zinb"``
        for count modalities and ``"gaussian"`` otherwise, reading the
        dataset registry entry in ``mdata.uns`` when present.
    joint_rec
        In the joint stage, reconstruct both modalities from the joint
        embedding (default) instead of each from its own encoder.
    use_rna_only
        Ablation: ignore ATAC (its encoder output is replaced by the RNA one).
    seed
        Seed of initialisation, masking, negatives and batch order.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    """

    obsm_key = "X_sci2cl"

    def __init__(
        self,
        mdata: md.MuData,
        layer: str | None = "counts",
        n_latent: int = 32,
        n_hidden: int = 128,
        n_views: int = 3,
        n_heads: int = 4,
        mask_rate: float = 0.4,
        temperature: float = 0.2,
        n_negatives: int = 3,
        hard_negatives: bool = False,
        weights: dict | None = None,
        likelihood: str | dict = "auto",
        use_rna_only: bool = False,
        joint_rec: bool = True,
        seed: int = 0,
        device: str = "auto",
    ):
        if not isinstance(mdata, md.MuData):
            raise TypeError(
                f"SCI2CL needs a MuData with 'rna' and 'atac', got {type(mdata).__name__}"
            )
        if n_latent % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide n_latent={n_latent}")
        if not 0 <= mask_rate < 1:
            raise ValueError(f"mask_rate must be in [0, 1), got {mask_rate}")
        self.likelihoods = self._resolve_likelihoods(mdata, likelihood)
        counts = tuple(m for m, lik in self.likelihoods.items() if lik in ("zinb", "nb"))
        validate(
            mdata,
            modalities=("rna", "atac"),
            count_modalities=counts,
            layer=layer,
            allow_empty=True,
        )
        self._check_nonempty(mdata, layer)
        w = {"rec": 1.0, "mse": 1.0, "moc": 1.0, "mom": 1.0}
        if weights:
            unknown = set(weights) - set(w)
            if unknown:
                raise ValueError(f"unknown loss weights {sorted(unknown)}; use {sorted(w)}")
            w.update(weights)
        self.mdata, self.layer = mdata, layer
        self.init_params = dict(
            layer=layer,
            n_latent=n_latent,
            n_hidden=n_hidden,
            n_views=n_views,
            n_heads=n_heads,
            mask_rate=mask_rate,
            temperature=temperature,
            n_negatives=n_negatives,
            hard_negatives=hard_negatives,
            weights=w,
            likelihood=self.likelihoods,
            use_rna_only=use_rna_only,
            joint_rec=joint_rec,
            seed=seed,
            device=device,
        )
        self.weights, self.seed = w, seed
        self.device = resolve_device(device)
        seed_everything(seed)
        self.n_features = {m: mdata[m].n_vars for m in ("rna", "atac")}
        self.feature_names = {m: mdata[m].var_names.tolist() for m in ("rna", "atac")}
        self.module = SCI2CLModule(
            self.n_features, self.likelihoods, n_hidden=n_hidden, n_latent=n_latent, n_heads=n_heads
        ).to(self.device)
        self._set_input_scaling(mdata)
        self.history = pd.DataFrame()
        self.is_trained = False

    # ------------------------------------------------------------------ setup helpers
    @torch.no_grad()
    def _set_input_scaling(self, mdata: md.MuData, chunk: int = 2048) -> None:
        """Per-feature mean/std of the normalised input over all cells (no labels)."""
        X = self._matrices(mdata)
        for m in ("rna", "atac"):
            ae = self.module.ae[m]
            s1 = torch.zeros(self.n_features[m], dtype=torch.float64)
            s2 = torch.zeros_like(s1)
            for s in range(0, mdata.n_obs, chunk):
                h = ae.normalise(
                    torch.from_numpy(_dense_rows(X[m], np.arange(s, min(s + chunk, mdata.n_obs))))
                ).double()
                s1 += h.sum(0)
                s2 += (h**2).sum(0)
            mean = s1 / mdata.n_obs
            std = (s2 / mdata.n_obs - mean**2).clamp(min=0).sqrt()
            ae.input_mean.copy_(mean.float())
            ae.input_std.copy_(std.float().clamp(min=1e-2))

    @staticmethod
    def _resolve_likelihoods(mdata: md.MuData, likelihood) -> dict[str, str]:
        if isinstance(likelihood, str):
            likelihood = {"rna": likelihood, "atac": likelihood}
        reg = mdata.uns.get("sci2cl_dataset", {})
        counts = list(reg.get("count_modalities", ["rna", "atac"]))
        out = {}
        for m in ("rna", "atac"):
            lik = likelihood.get(m, "auto")
            if lik == "auto":
                lik = "zinb" if m in counts else "gaussian"
            if lik not in LIKELIHOODS:
                raise ValueError(
                    f"likelihood for {m!r} must be one of {LIKELIHOODS} or 'auto', got {lik!r}"
                )
            out[m] = lik
        return out

    @staticmethod
    def _check_nonempty(mdata, layer):
        for m in ("rna", "atac"):
            a = mdata[m]
            X = a.layers[layer] if layer in a.layers else a.X
            empty = int((np.asarray((X != 0).sum(1)).ravel() == 0).sum())
            if empty == a.n_obs:
                raise DataValidationError(f"every cell of modality {m!r} is empty")
            if np.asarray((X != 0).sum(0)).ravel().max() == 0:
                raise DataValidationError(f"every feature of modality {m!r} is empty")

    def _matrices(self, mdata: md.MuData) -> dict:
        out = {}
        for m in ("rna", "atac"):
            a = mdata[m]
            X = a.layers[self.layer] if self.layer in a.layers else a.X
            out[m] = (
                sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.asarray(X, np.float32)
            )
        return out

    def _batch(self, X: dict, idx: np.ndarray) -> dict[str, torch.Tensor]:
        b = {m: torch.from_numpy(_dense_rows(X[m], idx)).to(self.device) for m in X}
        if self.init_params["use_rna_only"]:
            b["atac"] = torch.zeros_like(b["atac"])
        return b

    # ------------------------------------------------------------------ training
    def train(
        self,
        max_epochs: int = 60,
        pretrain_epochs: int | None = None,
        batch_size: int = 256,
        lr: float = 2e-3,
        weight_decay: float = 1e-5,
        early_stopping: bool = True,
        patience: int = 8,
        min_epochs: int | None = None,
        validation_fraction: float = 0.1,
        progress_bar: bool = True,
    ) -> SCI2CL:
        """Train in two stages: per-modality pretraining, then joint training.

        Parameters
        ----------
        max_epochs
            Epochs of the joint stage.
        pretrain_epochs
            Epochs of the per-modality stage (default ``max(1, max_epochs // 4)``).
        batch_size
            Mini-batch size (cells).
        lr, weight_decay
            AdamW settings.
        early_stopping
            Stop the joint stage when the held-out loss (on
            ``validation_fraction`` of the cells, never labels) has not
            improved for ``patience`` epochs, and restore the weights of the
            best held-out epoch.
        min_epochs
            Joint epochs always run before early stopping may act (default
            ``max_epochs // 2``). The held-out loss first drops while the
            contrastive terms settle and then drifts up as the count decoders
            start to overfit, which on a few hundred cells stops training
            after a handful of epochs, before the joint embedding has formed;
            the best epoch is therefore picked only among epochs
            ``>= min_epochs``.
        progress_bar
            Show a tqdm bar with the current losses.

        Returns
        -------
        SCI2CL
            ``self``, for chaining.
        """
        if max_epochs < 1:
            raise ValueError("max_epochs must be >= 1")
        if pretrain_epochs is None:
            pretrain_epochs = max(1, max_epochs // 4)
        if min_epochs is None:
            min_epochs = max_epochs // 2
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        X = self._matrices(self.mdata)
        n = self.mdata.n_obs
        perm = rng.permutation(n)
        n_val = int(round(validation_fraction * n)) if early_stopping and n >= 50 else 0
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        batch_size = min(batch_size, len(train_idx))
        opt = torch.optim.AdamW(self.module.parameters(), lr=lr, weight_decay=weight_decay)
        records = []
        total = pretrain_epochs + max_epochs
        bar = tqdm(total=total, desc="scI2CL", disable=not progress_bar, unit="epoch")
        best, best_state, bad = np.inf, None, 0
        t0 = time.perf_counter()
        for epoch in range(total):
            stage = "pretrain" if epoch < pretrain_epochs else "joint"
            self.module.train()
            order = rng.permutation(train_idx)
            sums: dict[str, float] = {}
            nb = 0
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                if len(idx) < 2:
                    continue
                out = self._loss(self._batch(X, idx), stage)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                torch.nn.utils.clip_grad_norm_(self.module.parameters(), 10.0)
                opt.step()
                for k, v in out.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
                nb += 1
            rec = {"epoch": epoch, "stage": stage, **{k: v / max(nb, 1) for k, v in sums.items()}}
            if n_val and stage == "joint":
                rec["val_loss"] = self._eval_loss(X, val_idx, batch_size)
            rec["seconds"] = time.perf_counter() - t0
            records.append(rec)
            bar.set_postfix({k: f"{rec[k]:.3g}" for k in ("loss", "val_loss") if k in rec})
            bar.update()
            if not np.isfinite(rec.get("loss", 0.0)):
                bar.close()
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} (loss {rec['loss']}); lower lr (now {lr})"
                )
            if (
                early_stopping
                and n_val
                and stage == "joint"
                and epoch - pretrain_epochs + 1 >= min_epochs
            ):
                if not np.isfinite(best) or rec["val_loss"] < best - 1e-4 * abs(best):
                    best, bad = rec["val_loss"], 0
                    best_state = {
                        k: v.detach().clone() for k, v in self.module.state_dict().items()
                    }
                else:
                    bad += 1
                    if bad >= patience:
                        break
        bar.close()
        if best_state is not None:
            self.module.load_state_dict(best_state)
        self._fit_readout(X, rng)
        self.history = pd.DataFrame(records)
        self.is_trained = True
        return self

    @torch.no_grad()
    def _fit_readout(self, X: dict, rng: np.random.Generator, max_cells: int = 5000) -> None:
        """Fix the joint read-out from the training data (no labels).

        Modality weights: mean WNN weights (:func:`sci2cl.tl.modality_weights`)
        of the per-modality embeddings of up to ``max_cells`` cells; then the
        principal axes of the weighted concatenation of all cells.
        """
        from sklearn.decomposition import PCA

        from .tl import modality_weights

        n = self.mdata.n_obs
        out = self._map_batches(X, n, self.module.encode, 2048)
        z = {m: torch.cat([o[m] for o in out]) for m in self.module.modalities}
        sub = np.sort(rng.choice(n, max_cells, replace=False)) if n > max_cells else np.arange(n)
        w = modality_weights({m: F.normalize(v[sub], dim=1).cpu().numpy() for m, v in z.items()})
        mod = self.module
        mod.readout_weights.copy_(torch.as_tensor(w.mean().to_numpy(), dtype=torch.float32))
        Y = mod.weighted_concat(z).cpu().numpy().astype(np.float64)
        pca = PCA(n_components=min(mod.readout_components.shape[1], *Y.shape), svd_solver="full")
        pca.fit(Y)
        comps = np.zeros(tuple(mod.readout_components.shape))
        comps[:, : pca.n_components_] = pca.components_.T
        mod.readout_mean.copy_(torch.as_tensor(pca.mean_, dtype=torch.float32))
        mod.readout_components.copy_(torch.as_tensor(comps, dtype=torch.float32))

    @torch.no_grad()
    def _map_batches(self, X: dict, n: int, fn, batch_size: int) -> list:
        """``fn`` (in eval mode) on the mini-batches of the first ``n`` cells of ``X``, in order."""
        self.module.eval()
        return [
            fn(self._batch(X, np.arange(s, min(s + batch_size, n))))
            for s in range(0, n, batch_size)
        ]

    @property
    def modality_weights_(self) -> dict[str, float]:
        """Weights of the modalities in the joint embedding (set by :meth:`train`)."""
        w = self.module.readout_weights.cpu().numpy()
        return {m: float(w[i]) for i, m in enumerate(self.module.modalities)}

    def _loss(self, x: dict[str, torch.Tensor], stage: str) -> dict:
        p = self.init_params
        if stage == "pretrain":
            return self.module.pretrain_loss(x, p["n_views"], p["mask_rate"], self.weights)
        return self.module.joint_loss(
            x,
            p["n_views"],
            p["mask_rate"],
            self.weights,
            p["temperature"],
            p["n_negatives"],
            p["hard_negatives"],
            p["joint_rec"],
        )

    @torch.no_grad()
    def _eval_loss(self, X, idx, batch_size) -> float:
        self.module.eval()
        g = torch.get_rng_state()
        torch.manual_seed(self.seed + 1)  # same masks/negatives every epoch
        tot, nb = 0.0, 0
        for s in range(0, len(idx), batch_size):
            b = idx[s : s + batch_size]
            if len(b) < 2:
                continue
            tot += float(self._loss(self._batch(X, b), "joint")["loss"])
            nb += 1
        torch.set_rng_state(g)
        return tot / max(nb, 1)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def get_latent_representation(
        self,
        mdata: md.MuData | None = None,
        batch_size: int = 1024,
        key_added: str | None = "X_sci2cl",
        kind: str = "joint",
    ) -> np.ndarray:
        """Cell embeddings, shape ``(n_cells, n_latent)``.

        Parameters
        ----------
        mdata
            Data with the same features as at set-up (default: the training data).
        key_added
            Also write the embedding to ``mdata.obsm[key_added]`` (``None``: do not).
        kind
            ``"joint"`` (default): the L2-normalised RNA and ATAC embeddings
            side by side, each scaled by the square root of its modality weight
            (:attr:`modality_weights_`, label-free WNN weights fixed after
            training), projected on the principal axes of the training cells;
            ``"fused"``: the cross-attended embeddings concatenated and projected
            by the fusion network (the paper's read-out; it lost to ``"joint"``
            on every development set, see the methods chapter); ``"rna"`` or
            ``"atac"`` (per-modality encoders); ``"concat"`` (both
            L2-normalised encoder outputs side by side, equal weights,
            ``2 * n_latent`` columns).
        """
        if not self.is_trained:
            raise RuntimeError("the model is not trained; call .train() first")
        mdata = self.mdata if mdata is None else mdata
        for m in ("rna", "atac"):
            if m not in mdata.mod or mdata[m].var_names.tolist() != self.feature_names[m]:
                raise DataValidationError(
                    f"modality {m!r} must have the {self.n_features[m]} features the model was "
                    "trained on, in the same order"
                )
        validate(mdata, modalities=("rna", "atac"), count_modalities=None, layer=self.layer)
        mod = self.module
        embed = {
            "joint": mod.joint_embedding,
            "fused": mod.fused_embedding,
            "rna": lambda b: mod.ae["rna"].encode(b["rna"]),
            "atac": lambda b: mod.ae["atac"].encode(b["atac"]),
            "concat": lambda b: torch.cat(
                [F.normalize(v, dim=1) for v in mod.encode(b).values()], 1
            ),
        }
        if kind not in embed:
            raise ValueError(f"kind must be one of {sorted(embed)}, got {kind!r}")
        out = self._map_batches(self._matrices(mdata), mdata.n_obs, embed[kind], batch_size)
        z = torch.cat(out).cpu().numpy().astype(np.float32)
        if key_added:
            mdata.obsm[key_added] = z
        return z

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save weights, settings, feature names and history to folder ``path``."""
        return self._save_common(path, overwrite, {"feature_names": self.feature_names})

    @classmethod
    def load(cls, path: str | os.PathLike, mdata: md.MuData, device: str = "auto") -> SCI2CL:
        """Load a model saved with :meth:`save` and attach it to ``mdata``."""
        path, meta = cls._read_meta(path, cls.__name__)
        init = dict(meta["init"])
        init["device"] = device
        for m, names in meta["feature_names"].items():
            if mdata[m].var_names.tolist() != names:
                raise DataValidationError(f"modality {m!r} features differ from the saved model's")
        model = cls(mdata, **init)
        state = torch.load(path / "model.pt", map_location=model.device, weights_only=True)
        missing, unexpected = model.module.load_state_dict(state, strict=False)
        if unexpected or any(not k.startswith("readout_") for k in missing):
            raise ValueError(
                f"{path} does not match this version of SCI2CL (missing {missing}, "
                f"unexpected {unexpected})"
            )
        if missing:  # saved before the joint read-out existed: fix it from mdata
            model._fit_readout(model._matrices(mdata), np.random.default_rng(model.seed))
        model.history = (
            pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else pd.DataFrame()
        )
        model.is_trained = True
        return model


# =============================================================================== scRCL
def _normalised_adjacency(A: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 (A + I) D^-1/2`` of a symmetric 0/1 graph."""
    A = A + sp.eye(A.shape[0], format="csr")
    d = np.asarray(A.sum(1)).ravel()
    dinv = sp.diags(1.0 / np.sqrt(d))
    return (dinv @ A @ dinv).tocsr().astype(np.float32)


def _knn_graph(X: np.ndarray, k: int, metric: str = "cosine") -> sp.csr_matrix:
    """Symmetric binary kNN graph (no self loops), shape ``(n, n)``."""
    from sklearn.neighbors import NearestNeighbors

    k = min(k, X.shape[0] - 1)
    nn_ = NearestNeighbors(n_neighbors=k + 1, metric=metric).fit(X)
    idx = nn_.kneighbors(X, return_distance=False)
    rows = np.repeat(np.arange(X.shape[0]), idx.shape[1])
    A = sp.csr_matrix(
        (np.ones(rows.size, np.float32), (rows, idx.ravel())), shape=(X.shape[0],) * 2
    )
    A.setdiag(0)
    A.eliminate_zeros()
    A = ((A + A.T) > 0).astype(np.float32)
    return A.tocsr()


def _to_torch_sparse(A: sp.csr_matrix, device) -> torch.Tensor:
    A = A.tocoo()
    idx = torch.from_numpy(np.vstack([A.row, A.col]).astype(np.int64))
    return (
        torch.sparse_coo_tensor(
            idx, torch.from_numpy(A.data.astype(np.float32)), A.shape, check_invariants=False
        )
        .coalesce()
        .to(device)
    )


class SCRCL(_BaseModel):
    """scRCL: refinement contrastive learning of cell-gene associations.

    Parameters
    ----------
    adata
        scRNA-seq AnnData with raw counts in ``.layers[layer]`` (or ``.X``).
    n_clusters
        Number of cell types; ``None`` estimates it by Leiden (resolution 1)
        on a kNN graph of the learned embedding.
    layer
        Layer with raw counts.
    n_top_genes
        Highly variable genes (scanpy ``seurat`` flavour on log-normalised data).
    n_neighbors
        ``k`` of the cosine cell kNN graph (on 50 PCs of the log-normalised HVGs).
    n_gene_neighbors
        ``k`` of the gene kNN graph (cosine on gene loadings of the 50 PCs).
    smoothing
        Number of low-pass filtering steps ``(t1, t2)`` of the two views.
    scale
        Z-score each gene (clipped at +-10) before filtering, as in the usual
        scanpy PCA pipeline; otherwise use the log-normalised values.
    spatial_key
        Use a spatial kNN on ``adata.obsm[spatial_key]`` as the cell graph.
    lambda1, lambda2
        Weights of the neighbourhood and refinement losses.
    temperature
        Softmax temperature of the distribution-alignment and neighbourhood
        divergences (0.1, the authors' default).
    batch_cells
        Cells per step in the ``O(B^2)`` neighbourhood and refinement losses
        (memory ``~ 4 B^2`` bytes per matrix: 4096 cells -> 64 MB).
    seed, device
        Seed and device (``"auto"``).
    """

    obsm_key = "X_scrcl"

    def __init__(
        self,
        adata: ad.AnnData,
        n_clusters: int | None = None,
        layer: str | None = "counts",
        n_top_genes: int = 2000,
        n_neighbors: int = 15,
        n_gene_neighbors: int = 5,
        smoothing: tuple[int, int] = (3, 0),
        scale: bool = True,
        spatial_key: str | None = None,
        n_hidden: int = 256,
        n_latent: int = 64,
        lambda1: float = 1.0,
        lambda2: float = 1.0,
        temperature: float = 0.1,
        batch_cells: int = 2048,
        seed: int = 0,
        device: str = "auto",
    ):
        import scanpy as sc

        from .module import SCRCLModule

        if not isinstance(adata, ad.AnnData):
            raise TypeError(f"SCRCL needs an AnnData, got {type(adata).__name__}")
        validate(adata, count_modalities=("rna",), layer=layer)
        if n_clusters is not None and not 2 <= n_clusters < adata.n_obs:
            raise ValueError(f"n_clusters must be in [2, n_cells), got {n_clusters}")
        if spatial_key is not None and spatial_key not in adata.obsm:
            raise DataValidationError(f"obsm[{spatial_key!r}] not found for the spatial graph")
        if adata.n_obs < max(n_neighbors + 1, 10):
            raise DataValidationError(f"too few cells ({adata.n_obs}) for a {n_neighbors}-NN graph")
        self.adata, self.n_clusters = adata, n_clusters
        self.init_params = dict(
            n_clusters=n_clusters,
            layer=layer,
            n_top_genes=n_top_genes,
            n_neighbors=n_neighbors,
            n_gene_neighbors=n_gene_neighbors,
            smoothing=list(smoothing),
            scale=scale,
            spatial_key=spatial_key,
            n_hidden=n_hidden,
            n_latent=n_latent,
            lambda1=lambda1,
            lambda2=lambda2,
            temperature=temperature,
            batch_cells=batch_cells,
            seed=seed,
            device=device,
        )
        self.seed, self.device = seed, resolve_device(device)
        seed_everything(seed)
        # ---- features and graphs (label-free)
        a = ad.AnnData(
            sp.csr_matrix(
                adata.layers[layer] if layer in adata.layers else adata.X, dtype=np.float32
            )
        )
        a.obs_names, a.var_names = adata.obs_names, adata.var_names
        det = np.asarray((a.X > 0).sum(0)).ravel()
        if (np.asarray(a.X.sum(1)).ravel() == 0).any():
            raise DataValidationError(
                "some cells have no counts; filter them (sci2cl.data.qc_filter)"
            )
        a = a[:, det > 0].copy()
        sc.pp.normalize_total(a, target_sum=1e4)
        sc.pp.log1p(a)
        if n_top_genes < a.n_vars:
            sc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, flavor="seurat")
            a = a[:, a.var["highly_variable"].values].copy()
        self.genes = a.var_names.tolist()
        Xl = a.X.toarray()
        Xs = np.clip((Xl - Xl.mean(0)) / (Xl.std(0) + 1e-6), -10, 10)
        n_pcs = min(50, min(Xs.shape) - 1)
        from sklearn.decomposition import PCA

        pca = PCA(n_pcs, random_state=seed).fit(Xs)
        pcs = pca.transform(Xs)
        if spatial_key is not None:
            cell_A = _knn_graph(
                np.asarray(adata.obsm[spatial_key], float), n_neighbors, "euclidean"
            )
        else:
            cell_A = _knn_graph(pcs, n_neighbors, "cosine")
        gene_feat = (pca.components_.T * pca.singular_values_).astype(np.float32)  # (G, n_pcs)
        gene_A = _knn_graph(gene_feat, n_gene_neighbors, "cosine")
        S = _normalised_adjacency(cell_A)
        views = []
        for t in smoothing:
            v = (Xs if scale else Xl).copy()
            for _ in range(t):
                v = S @ v
            views.append(v.astype(np.float32))
        self.cell_graph = cell_A
        dev = self.device
        self._x1, self._x2 = (torch.from_numpy(v).to(dev) for v in views)
        self._S = _to_torch_sparse(S, dev)
        self._gene_x = torch.from_numpy(gene_feat).to(dev)
        self._gene_S = _to_torch_sparse(_normalised_adjacency(gene_A), dev)
        self.module = SCRCLModule(
            len(self.genes), gene_feat.shape[1], n_hidden=n_hidden, n_latent=n_latent
        ).to(dev)
        self.history = pd.DataFrame()
        self.is_trained = False

    def _losses(self, idx: torch.Tensor) -> dict:
        from .module import neighbourhood_contrastive, refinement_consistency, symmetric_kl

        p = self.init_params
        h1, h2 = self.module.encode(self._x1, self._x2, self._S)
        out = {
            "align": symmetric_kl(h1 / p["temperature"], h2 / p["temperature"], dim=1).mean()
            + symmetric_kl(h1 / p["temperature"], h2 / p["temperature"], dim=0).mean()
        }
        A = torch.from_numpy(self.cell_graph[idx.numpy()][:, idx.numpy()].toarray()).to(self.device)
        b1, b2 = h1[idx.to(self.device)], h2[idx.to(self.device)]
        out["neighbour"] = 0.5 * (
            neighbourhood_contrastive(b1, b2, A, p["temperature"])
            + neighbourhood_contrastive(b2, b1, A, p["temperature"])
        )
        r1, r2 = self.module.refine(b1, b2, self._gene_x, self._gene_S)
        out["refine"] = refinement_consistency(r1, r2, A)
        out["loss"] = out["align"] + p["lambda1"] * out["neighbour"] + p["lambda2"] * out["refine"]
        return out

    def train(
        self,
        max_epochs: int = 50,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        patience: int = 30,
        tol: float = 1e-3,
        min_epochs: int = 20,
        progress_bar: bool = True,
    ) -> SCRCL:
        """Full-batch training with a label-free stopping rule.

        Each epoch draws ``batch_cells`` cells for the ``O(B^2)`` losses.
        Training stops when the best smoothed loss (mean of the last 10
        epochs) has not improved by a relative ``tol`` for ``patience``
        epochs, once ``min_epochs`` epochs have run. No labels are read.

        Parameters
        ----------
        max_epochs
            Upper bound on the number of epochs. On the development sets
            (``benchmarks/scrcl_dev.py``) the loss still falls slowly at 300
            epochs while NMI does not rise (BMMC-a, 3 seeds: 0.486 after 300
            epochs, 0.488 after 50), so the default keeps training short.
        lr, weight_decay
            AdamW settings.
        patience, tol
            Epochs without a relative improvement of ``tol`` of the smoothed
            loss before stopping.
        min_epochs
            Epochs always trained before the rule may stop training.
        progress_bar
            Show a tqdm bar.
        """
        gen = torch.Generator().manual_seed(self.seed)
        torch.manual_seed(self.seed)
        opt = torch.optim.AdamW(self.module.parameters(), lr=lr, weight_decay=weight_decay)
        n = self.adata.n_obs
        B = min(self.init_params["batch_cells"], n)
        records, best, bad = [], np.inf, 0
        t0 = time.perf_counter()
        bar = tqdm(total=max_epochs, desc="scRCL", disable=not progress_bar, unit="epoch")
        for epoch in range(max_epochs):
            self.module.train()
            idx = torch.randperm(n, generator=gen)[:B]
            out = self._losses(idx)
            opt.zero_grad(set_to_none=True)
            out["loss"].backward()
            opt.step()
            rec = {
                "epoch": epoch,
                **{k: float(v.detach()) for k, v in out.items()},
                "seconds": time.perf_counter() - t0,
            }
            records.append(rec)
            bar.set_postfix(loss=f"{rec['loss']:.4g}")
            bar.update()
            if not np.isfinite(rec["loss"]):
                bar.close()
                raise FloatingPointError(f"scRCL diverged at epoch {epoch}; lower lr (now {lr})")
            smooth = np.mean([r["loss"] for r in records[-10:]])
            if not np.isfinite(best) or smooth < best - tol * abs(best):
                best, bad = smooth, 0
            else:
                bad += 1
                if bad >= patience and epoch + 1 >= min_epochs:
                    break
        bar.close()
        self.history = pd.DataFrame(records)
        self.is_trained = True
        return self

    @torch.no_grad()
    def _embeddings(self) -> tuple[np.ndarray, np.ndarray]:
        self.module.eval()
        h1, h2 = self.module.encode(self._x1, self._x2, self._S)
        r1, r2 = self.module.refine(h1, h2, self._gene_x, self._gene_S)
        cell = torch.cat([h1, h2], 1).cpu().numpy()
        refined = torch.cat(
            [torch.nn.functional.normalize(r1, dim=1), torch.nn.functional.normalize(r2, dim=1)], 1
        )
        return cell, refined.cpu().numpy()

    def get_latent_representation(self, key_added: str | None = "X_scrcl") -> np.ndarray:
        """Cell embedding ``(n_cells, 2 * n_latent)``: both views' L2-normalised embeddings."""
        if not self.is_trained:
            raise RuntimeError("the model is not trained; call .train() first")
        z = self._embeddings()[0]
        if key_added:
            self.adata.obsm[key_added] = z
        return z

    def predict(self, key_added: str | None = "scrcl", use: str = "refined") -> np.ndarray:
        """Cluster labels ``(n_cells,)``: k-means on the concatenated refined embeddings.

        With ``n_clusters=None`` the number is Leiden's (resolution 1) on a
        15-NN graph of the cell embedding (label-free); it is stored in
        ``self.n_clusters_``. ``use`` picks what k-means reads: ``"refined"``
        (the paper's read-out, ``(n_cells, 2 * n_genes)``), ``"cell"`` (the
        views' embeddings, ``(n_cells, 2 * n_latent)``) or ``"both"``
        (the two concatenated, each L2-normalised per cell).
        """
        from sklearn.cluster import KMeans

        if use not in ("refined", "cell", "both"):
            raise ValueError(f"use must be 'refined', 'cell' or 'both', got {use!r}")
        if not self.is_trained:
            raise RuntimeError("the model is not trained; call .train() first")
        cell, refined = self._embeddings()
        k = self.n_clusters
        if k is None:
            from .tl import leiden_labels

            k = max(2, len(np.unique(leiden_labels(cell, resolution=1.0, seed=self.seed))))
        self.n_clusters_ = k
        from sklearn.preprocessing import normalize

        X = {
            "refined": refined,
            "cell": cell,
            "both": np.hstack([normalize(cell), normalize(refined)]),
        }[use]
        labels = KMeans(k, n_init=10, random_state=self.seed).fit_predict(X)
        if key_added:
            self.adata.obs[key_added] = pd.Categorical(labels.astype(str))
        return labels

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save weights, settings, genes and history to folder ``path``."""
        return self._save_common(
            path, overwrite, {"genes": self.genes, "obs_names": self.adata.obs_names.tolist()}
        )

    @classmethod
    def load(cls, path: str | os.PathLike, adata: ad.AnnData, device: str = "auto") -> SCRCL:
        """Load a saved model for the same cells (scRCL is transductive: the graphs are rebuilt)."""
        path, meta = cls._read_meta(path, cls.__name__)
        if adata.obs_names.tolist() != meta["obs_names"]:
            raise DataValidationError(
                "scRCL is transductive: load it with the cells it was trained on"
            )
        init = dict(meta["init"])
        init["device"] = device
        init["smoothing"] = tuple(init["smoothing"])
        model = cls(adata, **init)
        model.module.load_state_dict(
            torch.load(path / "model.pt", map_location=model.device, weights_only=True)
        )
        model.history = (
            pd.read_csv(path / "history.csv") if (path / "history.csv").exists() else pd.DataFrame()
        )
        model.is_trained = True
        return model
