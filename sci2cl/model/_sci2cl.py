"""scI2CL: integration of paired RNA + ATAC by intra- and inter-omics contrastive learning."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd
import torch

from .._rows import RowReader
from .._utils import as_int, check_choice, check_flag, check_range, check_weights, get_matrix
from ..module._sci2cl import EMBEDDING_KINDS, SCI2CLModule
from ..pp import DataValidationError
from ._base import BaseModel, TrainingError, resolve_device
from ._data import CellBatches, CodeReader
from ._harmony import BATCH_CORRECTIONS, harmony, require_harmony
from ._inputs import BATCH_CENTRINGS, fit_input_scaling
from ._readout import MODALITY_WEIGHTINGS, check_smoothing, encode_and_fit
from ._setup import (
    ROLES,
    SETUP_KEY,
    batch_codes,
    check_data,
    check_key_added,
    check_likelihoods,
    likelihoods,
    read_setup,
    setup_record,
    warn_empty_cells,
)
from ._training import TrainSettings, joint_settings, train_module

__all__ = ["SCI2CL"]

MIN_CELLS = 10
LOSS_WEIGHTS = ("rec", "mse", "moc", "mom")
#: default loss weights: L_MOC and L_MOM are off (no measured gain on the real development sets,
#: see the methods chapter); ``weights={"moc": 1, "mom": 1}`` turns the paper's inter-omics terms on
DEFAULT_WEIGHTS = {"rec": 1.0, "mse": 1.0, "moc": 0.0, "mom": 0.0}
READOUT_SCALINGS = ("global", "cell")
#: cells read together from a backed file when mini-batches are drawn (``block_size=None``)
BACKED_BLOCK_SIZE = 32


class SCI2CL(BaseModel):
    """scI2CL: intra- and inter-omics contrastive learning of paired RNA + ATAC.

    Call :meth:`setup_mudata` on the data first; it records which layer holds
    the raw counts, which modalities are RNA and ATAC, and each modality's
    likelihood.

    Parameters
    ----------
    mdata
        MuData set up with :meth:`setup_mudata`; every feature of both
        modalities is used (select them first, e.g. with
        :func:`sci2cl.pp.select_features`).
    likelihood
        One likelihood for both modalities, or ``{"rna": ..., "atac": ...}``
        (a missing key is ``"zinb"``): ``"zinb"`` (default), ``"nb"``,
        ``"bernoulli"`` (binarised accessibility) or ``"gaussian"``
        (normalised, non-count data such as the A549 ATAC). Count
        likelihoods need raw counts.
    n_latent
        Embedding size ``E`` (>= 2).
    n_hidden
        Hidden layer size of encoders and decoders (>= 4).
    n_views
        Number ``T`` of masked views in the intra-omics module (0 disables it).
    n_heads
        Heads of the view self-attention (must divide ``n_latent``).
    mask_rate
        Probability that a feature is masked in a view, in ``[0, 1)``.
    temperature
        Temperature of the contrastive loss ``L_MOC`` (> 0).
    n_negatives
        Unpaired combinations per cell in ``L_MOM`` (0 disables it).
    hard_negatives
        Draw matching negatives in proportion to embedding similarity
        instead of uniformly (no labels are used either way).
    weights
        Loss weights ``{"rec": l1, "mse": l2, "moc": l3, "mom": l4}`` (>= 0,
        not all 0); missing keys keep their defaults, :data:`DEFAULT_WEIGHTS`:
        1 for ``rec`` and ``mse``, 0 for the inter-omics terms ``moc`` and
        ``mom``, which showed no gain on the real development sets (methods
        chapter); ``{"moc": 1, "mom": 1}`` gives the paper's full loss.
    use_rna_only
        Ablation: ignore ATAC (its input is replaced by zeros).
    joint_rec
        In the joint stage, reconstruct both modalities from the joint
        embedding (default) instead of each from its own encoder.
    n_input_pcs
        Each encoder reads the first ``n_input_pcs`` principal components of
        its modality's standardised log-normalised input (axes fixed from the
        training cells before training, no labels; for RNA this is scanpy's
        normalise-log-scale-PCA) instead of all features; the masked views mask
        features before the projection and the decoders still reconstruct every
        feature (default 50, as in GLUE's encoders). ``None``: all features.
    input_skip
        With ``n_input_pcs``: each embedding is the encoder MLP plus a linear
        map of the input PCs, initialised to keep the first ``n_latent`` of
        them, so training starts from the PCA embedding and learns corrections
        (default ``True``; ``False`` with ``n_input_pcs=None`` is the former
        all-feature encoder).
    drop_first_pc
        With ``n_input_pcs``: the modalities (``"rna"``, ``"atac"``) whose
        encoder reads input principal components 2 to ``n_input_pcs + 1``,
        the first left out as LSI leaves out its first component, which in
        ATAC data tracks each cell's depth (Stuart et al. 2021). Default: none.
    batch_centring
        With ``setup_mudata(batch_key=...)``: how each modality's inputs are
        centred and scaled per feature before its principal axes. ``"auto"``
        (default): on each batch's own mean and SD if the batches then mix
        better than when scaled over all cells, by more than
        :data:`~sci2cl.model._inputs.MIXING_MARGIN` (label-free, per modality,
        :attr:`input_batch_mixing_`), otherwise over all cells; ``"cells"``:
        always on each batch's own; ``"none"``: over all cells (batches then
        corrected in the decoders only). Centring each batch on
        its own cells also removes differences in cell-type composition
        between batches, which moves cells of one type apart where batches
        differ little.
    batch_correction
        With ``setup_mudata(batch_key=...)``: ``"harmony"`` (default) corrects
        every embedding :meth:`get_latent_representation` returns with Harmony
        (Korsunsky et al. 2019), fitted on the cells embedded together, so
        embed all the cells of a study in one call; it moves each batch's
        cells within soft clusters, so batches may hold different types
        (needs harmonypy: ``pip install "sci2cl[batch]"``). ``"none"``: the
        batches are corrected in the inputs (``batch_centring``) and decoders
        only. Without a batch key there is nothing to correct.
    modality_weighting
        How the joint read-out (``kind="joint"``) weights the two modalities,
        fixed after training without labels. ``"modularity"`` (default): the
        RNA weight ``w`` on the grid ``0, 0.1, ..., 1`` (ATAC ``1 - w``) whose
        joint embedding has the most modular neighbourhood graph (Leiden
        modularity of the 15-NN graph of up to 5,000 training cells,
        :attr:`readout_scores_`); a mixture is kept only if it beats the
        better single modality by more than :data:`MIXTURE_MARGIN`, otherwise
        that modality alone is read out, so the joint embedding is never a
        modality diluted by one that adds no neighbourhood structure.
        ``"wnn"``: the mean per-cell WNN weights (Hao et al. 2021) of the two
        encoders' embeddings. ``"agreement"``: the ``w`` whose joint
        neighbours best predict both modalities' inputs, each cell left out.
        Any weighting keeps RNA alone, with a warning, when the two embeddings
        share no more kNN neighbours than chance (``readout_scores_``).
    readout_scaling
        How the joint read-out puts the two embeddings on one scale before
        weighting: ``"global"`` (default), each divided by its training cells'
        mean row norm, so each keeps its geometry and a weight of 1 returns
        that modality's embedding unchanged up to a rotation and scale;
        ``"cell"``, every cell's row L2-normalised (cosine geometry).
    cross_smoothing
        Share ``a`` with which the joint read-out replaces each cell's RNA
        embedding by the mean RNA embedding of the 15 training cells nearest
        to it in the ATAC embedding (``(1 - a) z_rna + a * mean``), before
        weighting: the RNA noise of different cells is independent, so ATAC's
        neighbours average it out where RNA is shallow. ``"auto"`` (default):
        the share on :data:`~sci2cl.model._readout.SMOOTHING_GRID` whose
        smoothed neighbourhoods best predict held-out RNA counts, by count
        splitting (no labels; :attr:`smoothing_scores_`), which is 0 where
        smoothing does not help; for data that are not counts, 0. A number in
        ``[0, 1)`` fixes it. No smoothing when the two embeddings share no
        more kNN neighbours than chance. The training cells' embeddings are
        kept with the model as the reference (up to 50,000 cells).
    shared_variates
        Columns of the shared block that the joint read-out appends to the
        weighted embedding (so ``kind="joint"`` has ``n_latent +
        shared_variates`` columns; 0: none). The block is what the two
        encoders share: their first ``shared_variates`` canonical variates (a
        canonical correlation analysis of the two embeddings of the training
        cells, fixed after training, no labels), each pair averaged and
        weighted by its canonical correlation, so encoders that share little
        add little (:func:`~sci2cl.model._readout.shared_projection`). The
        idea is MOFA+'s factors that several views support (Argelaguet et al.
        2020). Its columns are zeros when the two embeddings share no more kNN
        neighbours than chance. Default 16.
    shared_weight
        Weight of the shared block against the weighted embedding, which the
        read-out scales to unit mean row norm (>= 0; default 1.25, chosen on
        the development sets, see the methods chapter).
    seed
        Seed of initialisation, masking, negatives and batch order.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ...
    """

    _train_state = (
        "history",
        "is_trained",
        "validation_indices_",
        "readout_scores_",
        "smoothing_scores_",
        "modality_weighting_",
    )

    def __init__(
        self,
        mdata: md.MuData,
        likelihood: str | dict[str, str] = "zinb",
        n_latent: int = 32,
        n_hidden: int = 128,
        n_views: int = 3,
        n_heads: int = 4,
        mask_rate: float = 0.4,
        temperature: float = 0.2,
        n_negatives: int = 3,
        hard_negatives: bool = False,
        weights: dict | None = None,
        use_rna_only: bool = False,
        joint_rec: bool = True,
        n_input_pcs: int | None = 50,
        input_skip: bool = True,
        drop_first_pc: tuple[str, ...] | list[str] = (),
        batch_centring: str = "auto",
        batch_correction: str = "harmony",
        modality_weighting: str = "modularity",
        readout_scaling: str = "global",
        cross_smoothing: str | float = "auto",
        shared_variates: int = 16,
        shared_weight: float = 1.25,
        seed: int = 0,
        device: str = "auto",
    ):
        if not isinstance(mdata, md.MuData):
            raise TypeError(
                f"SCI2CL needs a MuData with RNA and ATAC modalities, got {type(mdata).__name__}"
            )
        self._init_common(locals(), "mdata", seed, device)
        check_range("n_latent", n_latent, 2, integer=True)
        check_range("n_hidden", n_hidden, 4, integer=True)
        check_range("n_views", n_views, 0, integer=True)
        check_range("n_heads", n_heads, 1, integer=True)
        if n_latent % n_heads:
            raise ValueError(f"n_heads={n_heads} must divide n_latent={n_latent}")
        check_range("mask_rate", mask_rate, 0, 1, hi_open=True)
        check_range("temperature", temperature, 0, lo_open=True)
        check_range("n_negatives", n_negatives, 0, integer=True)
        check_range("shared_variates", shared_variates, 0, integer=True)
        check_range("shared_weight", shared_weight, 0)
        if n_input_pcs is not None:
            check_range("n_input_pcs", n_input_pcs, 2, integer=True)
        if not isinstance(drop_first_pc, list | tuple) or not all(
            r in ROLES for r in drop_first_pc
        ):
            raise ValueError(
                f"drop_first_pc must be a list of modalities among {list(ROLES)}, e.g. ['atac'], "
                f"got {drop_first_pc!r}"
            )
        if drop_first_pc and n_input_pcs is None:
            raise ValueError(
                "drop_first_pc needs n_input_pcs (it drops an input principal component); "
                "set n_input_pcs, e.g. 50, or drop_first_pc=()"
            )
        check_choice("batch_centring", batch_centring, BATCH_CENTRINGS)
        check_choice("batch_correction", batch_correction, BATCH_CORRECTIONS)
        check_choice("modality_weighting", modality_weighting, MODALITY_WEIGHTINGS)
        check_choice("readout_scaling", readout_scaling, READOUT_SCALINGS)
        check_smoothing(cross_smoothing)
        for name in ("hard_negatives", "use_rna_only", "joint_rec", "input_skip"):
            check_flag(name, locals()[name])
        w = check_weights(weights, LOSS_WEIGHTS, DEFAULT_WEIGHTS)
        if w["rec"] == 0 and (w["mse"] == 0 or n_views == 0):
            raise ValueError(
                "with weights['rec'] = 0 and no intra-omics term (weights['mse'] = 0 or n_views = 0) "
                "the pretraining stage has nothing to learn; give 'rec' or 'mse' a weight > 0"
            )
        self.likelihoods = likelihoods(likelihood)
        self.init_params["likelihood"] = dict(self.likelihoods)
        self.init_params["drop_first_pc"] = list(drop_first_pc)
        self.setup = read_setup(mdata)
        #: the batches the model corrects (``setup_mudata(batch_key=...)``; empty: none)
        self.batches_ = list(self.setup["batches"])
        if self.batches_ and batch_correction == "harmony":
            require_harmony()
        check_likelihoods(self.likelihoods, self.setup["facts"], self.setup["modalities"])
        warn_empty_cells(self.setup["facts"], self.setup["modalities"], mdata.obs_names)
        self._known: set[str] = set()  # fingerprints of data this model has checked
        self._check_data(mdata)
        if mdata.n_obs < MIN_CELLS:
            raise DataValidationError(
                f"SCI2CL needs at least {MIN_CELLS} cells, the data have {mdata.n_obs}"
            )
        self.mdata = mdata
        mods = {r: mdata[self.setup["modalities"][r]] for r in ROLES}
        self.n_features = {r: a.n_vars for r, a in mods.items()}
        self.feature_names = {r: a.var_names.tolist() for r, a in mods.items()}
        self.validation_indices_ = np.array([], dtype=np.int64)
        self.readout_scores_ = pd.DataFrame()
        #: scores of the cross-modal smoothing shares (``cross_smoothing="auto"``)
        self.smoothing_scores_ = pd.DataFrame()
        #: the weighting of the fitted read-out (``modality_weighting``, or another given to
        #: :meth:`refit_readout`); ``None`` before training
        self.modality_weighting_: str | None = None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.module = SCI2CLModule(
                self.n_features,
                self.likelihoods,
                n_hidden=n_hidden,
                n_latent=n_latent,
                n_heads=n_heads,
                n_input_pcs=n_input_pcs,
                input_skip=input_skip,
                readout_scaling=readout_scaling,
                n_views=n_views,
                mask_rate=mask_rate,
                temperature=temperature,
                n_negatives=n_negatives,
                hard_negatives=hard_negatives,
                weights=w,
                joint_rec=joint_rec,
                use_rna_only=use_rna_only,
                n_shared=shared_variates,
                n_batch=len(self.batches_),
            ).to(self.device)
        X = self._matrices(mdata)
        mixing = {
            r: fit_input_scaling(
                self.module.ae[r],
                X[r],
                self.seed,
                drop_first_pc=r in drop_first_pc,
                batch=X.get("batch"),
                batch_centring=batch_centring,
            )  # fmt: skip
            for r in ROLES
        }
        #: with a batch key and ``batch_centring="auto"``: per modality (rows), how well the
        #: batches mix in its inputs scaled "over all cells" and "per batch" (1: as if shuffled;
        #: ``_inputs.batch_mixing``), and whether they were "centred" per batch
        self.input_batch_mixing_ = pd.DataFrame({r: v for r, v in mixing.items() if v}).T

    # ------------------------------------------------------------------ set-up
    @classmethod
    def setup_mudata(
        cls,
        mdata: md.MuData,
        layer: str | None = "counts",
        modalities: dict[str, str] | None = None,
        batch_key: str | None = None,
        **kwargs,
    ) -> None:
        """Check ``mdata`` and record how :class:`SCI2CL` reads it (``mdata.uns["_sci2cl_setup"]``).

        The values are checked here, once (chunk by chunk for data on disk);
        the record keeps a fingerprint of each modality so that later calls
        check them again only when they change.

        Parameters
        ----------
        mdata
            Paired data: the same cells in the same order in both modalities
            and in ``mdata`` (:func:`sci2cl.pp.align_modalities` makes it so).
        layer
            Layer of every modality that holds the raw data; ``None`` uses
            ``.X`` (as in a backed atlas). A layer that is not there is an
            error, never a silent fall-back to ``.X``.
        modalities
            ``{"rna": name, "atac": name}``: which modalities of ``mdata`` are
            RNA and ATAC (default: the modalities named ``rna`` and ``atac``).
        batch_key
            Column of ``mdata.obs`` that names each cell's sample, donor or
            run (``None``: one batch). The model then standardises each
            feature within each batch before its encoders' principal axes
            where that mixes the batches (as Seurat's ``ScaleData(split.by=)``
            does; ``batch_centring``), gives its decoders the batch (as scVI's
            do) and corrects its embeddings with Harmony
            (``batch_correction``), so that the embedding follows cell state
            rather than batch. Cells of a batch the model was not trained on
            cannot be embedded (an error says so).

        Raises
        ------
        DataValidationError
            A modality or the layer is missing, the cells differ between the
            modalities, or values are NaN, infinite or all zero.
        """
        if "likelihood" in kwargs:
            raise TypeError(
                "setup_mudata no longer takes likelihood (a model choice, not a fact about the "
                "data): pass it to the model, SCI2CL(mdata, likelihood=...)"
            )
        if kwargs:
            raise TypeError(f"setup_mudata got unexpected arguments {sorted(kwargs)}")
        mdata.uns[SETUP_KEY] = setup_record(mdata, layer, modalities, batch_key)

    def _check_data(self, mdata: md.MuData, layer: str | None | type = ...) -> str | None:
        """Structure on every call, values when new (:func:`~sci2cl.model._setup.check_data`)."""
        return check_data(
            mdata,
            self.setup,
            self.likelihoods,
            getattr(self, "feature_names", None),
            layer,
            self._known,
        )

    def _matrices(self, mdata: md.MuData, layer: str | None | type = ...) -> dict[str, RowReader]:
        """Each modality's raw data as a :class:`RowReader` (in memory, or on disk if backed)."""
        layer = self.setup["layer"] if layer is ... else layer
        X = {r: RowReader(get_matrix(mdata[self.setup["modalities"][r]], layer)) for r in ROLES}
        if self.setup["batch_key"] is not None:  # each cell's batch, as the model numbers them
            X["batch"] = CodeReader(
                batch_codes(mdata, self.setup["batch_key"], self.setup["batches"])
            )
        return X

    def _batch(self, X: dict, idx: np.ndarray) -> dict[str, torch.Tensor]:
        return {m: torch.from_numpy(X[m].rows(idx)).to(self.device) for m in X}

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
        devices: int | list[int] | str | None = None,
        strategy: str = "auto",
        block_size: int | None = None,
    ) -> SCI2CL:
        """Train in two stages: per-modality pretraining, then joint training.

        Training is a transaction: if it diverges, is interrupted or fails in
        any way, the model returns to its state before the call (weights,
        read-out, history, ``is_trained``) and the error says so.

        Parameters
        ----------
        max_epochs
            Epochs of the joint stage (>= 1).
        pretrain_epochs
            Epochs of the per-modality stage (>= 0; default ``max(1, max_epochs // 4)``).
        batch_size
            Mini-batch size in cells (>= 2).
        lr, weight_decay
            AdamW settings (``lr > 0``, ``weight_decay >= 0``).
        early_stopping
            Stop the joint stage when the held-out loss (on
            ``validation_fraction`` of the cells, never labels) has not
            improved for ``patience`` epochs, and restore the weights of the
            best held-out epoch.
        patience
            Epochs without improvement before stopping (>= 1).
        min_epochs
            Joint epochs always run before early stopping may act (default
            ``max_epochs // 2``). The held-out loss first drops while the
            contrastive terms settle and then drifts up as the count decoders
            start to overfit, which on a few hundred cells would stop training
            before the joint embedding has formed; the best epoch is therefore
            picked only among epochs ``>= min_epochs``.
        validation_fraction
            Fraction of cells held out for early stopping, in ``[0, 1)``; at
            least 2 cells must remain for training.
        progress_bar
            Show Lightning's progress bar with the current losses.
        devices, strategy
            Passed to :class:`lightning.pytorch.Trainer` (the accelerator is the
            model's ``device``). ``devices=None``: the model's one device.
            ``strategy="ddp"`` with ``devices=n`` trains on ``n`` GPUs, or on
            ``n`` CPU processes (gloo), each drawing its share of the same
            mini-batches; run it from a script (Lightning launches the other
            processes by running the script again), not from a notebook.
        block_size
            Cells read together when mini-batches are drawn: the training
            cells are cut into blocks of ``block_size`` consecutive cells and
            the blocks are shuffled. ``None``: 1 (every cell shuffled) for data
            in memory, :data:`BACKED_BLOCK_SIZE` for data on disk (backed
            MuData), where each block is one contiguous read. Blocks mix cells
            less when the file is sorted by cell type.

        Returns
        -------
        SCI2CL
            ``self``, for chaining.

        Raises
        ------
        TrainingError
            The loss became non-finite, or no optimisation step was taken.
        DataValidationError
            The data changed since the model was built (e.g. ``select_features``
            after the model).
        """
        self._check_data(self.mdata)
        settings, n_val = joint_settings(
            self.mdata.n_obs, self.seed, max_epochs=max_epochs, pretrain_epochs=pretrain_epochs,
            lr=lr, weight_decay=weight_decay, early_stopping=early_stopping, patience=patience,
            min_epochs=min_epochs, validation_fraction=validation_fraction,
            progress_bar=progress_bar, devices=devices, strategy=strategy,
        )  # fmt: skip
        batch_size = as_int("batch_size", batch_size, 2)
        block_size = as_int("block_size", block_size, 1, optional=True)
        cuda = [self.device] if self.device.type == "cuda" else []
        with self._transaction(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            self._train(settings, batch_size, n_val, block_size)
        return self

    def _train(self, settings: TrainSettings, batch_size: int, n_val: int, block_size) -> None:
        rng = np.random.default_rng(self.seed)
        X = self._matrices(self.mdata)
        n = self.mdata.n_obs
        perm = rng.permutation(n)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        batch_size = min(batch_size, len(train_idx))
        if block_size is None:
            block_size = BACKED_BLOCK_SIZE if any(r.backed for r in X.values()) else 1
        train_data = CellBatches(X, train_idx, batch_size, self.seed, True, block_size)
        val_data = CellBatches(X, val_idx, batch_size, shuffle=False) if n_val else None
        records, n_steps = train_module(self.module, settings, self.device, train_data, val_data)
        if n_steps == 0:
            raise TrainingError(
                "training took no optimisation step (no mini-batch of at least 2 cells, or no "
                "loss term with a gradient); the model was not changed"
            )
        self._fit_readout(
            X, self.init_params["modality_weighting"], self.init_params["cross_smoothing"]
        )
        self.history = pd.DataFrame(records)
        self.validation_indices_ = np.sort(val_idx)
        self.is_trained = True

    @torch.no_grad()
    def _fit_readout(self, X: dict, weighting: str, smoothing: str | float) -> None:
        """Fix the joint read-out from the training data (no labels); see :func:`fit_readout`."""
        batch, n = functools.partial(self._batch, X), self.mdata.n_obs
        self.readout_scores_, self.smoothing_scores_ = encode_and_fit(
            self.module, batch, n, weighting, self.seed, smoothing,
            shared_weight=float(self.init_params["shared_weight"]),
        )  # fmt: skip
        self.modality_weighting_ = weighting

    @torch.no_grad()
    def refit_readout(
        self,
        modality_weighting: str | None = None,
        cross_smoothing: str | float | None = None,
    ) -> SCI2CL:
        """Fix the joint read-out of a trained model again, optionally with other settings.

        The encoders are not changed; ``get_latent_representation(kind="joint")``
        changes. Uses the training data, never labels.

        Parameters
        ----------
        modality_weighting
            One of ``MODALITY_WEIGHTINGS`` (see the class); ``None``: the model's own.
            The weighting used is :attr:`modality_weighting_`; init parameters stay.
        cross_smoothing
            ``"auto"`` or a share in ``[0, 1)`` (see the class); ``None``: the
            model's own. The share used is :attr:`cross_smoothing_`.

        Returns
        -------
        SCI2CL
            ``self``, for chaining.
        """
        if not self.is_trained:
            raise RuntimeError("the model is not trained; call .train() first")
        if modality_weighting is not None:
            check_choice("modality_weighting", modality_weighting, MODALITY_WEIGHTINGS)
        if cross_smoothing is not None:
            check_smoothing(cross_smoothing)
        self._check_data(self.mdata)
        weighting = modality_weighting or self.init_params["modality_weighting"]
        smoothing = (
            self.init_params["cross_smoothing"] if cross_smoothing is None else cross_smoothing
        )
        with self._transaction("refit_readout()"):
            self._fit_readout(self._matrices(self.mdata), weighting, smoothing)
        return self

    @torch.no_grad()
    def _map_batches(self, X: dict, n: int, fn, batch_size: int) -> list:
        """``fn`` (in eval mode) on the mini-batches of the first ``n`` cells of ``X``, in order."""
        self.module.eval()
        return [
            fn(self._batch(X, np.arange(s, min(s + batch_size, n))))
            for s in range(0, n, batch_size)
        ]

    @property
    def cross_smoothing_(self) -> float:
        """Share of cross-modal smoothing of RNA in the joint read-out (set by :meth:`train`)."""
        if not self.is_trained:
            raise RuntimeError("the model is not trained: its read-out is set by .train()")
        return round(float(self.module.readout_smoothing), 6)  # a grid value, stored as float32

    @property
    def modality_weights_(self) -> dict[str, float]:
        """Weights of the modalities in the joint embedding (set by :meth:`train`)."""
        if not self.is_trained:
            raise RuntimeError("the model is not trained: its modality weights are set by .train()")
        w = self.module.readout_weights.cpu().numpy()
        return {m: float(w[i]) for i, m in enumerate(self.module.modalities)}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def get_latent_representation(
        self,
        mdata: md.MuData | None = None,
        batch_size: int = 1024,
        key_added: str | None = "X_sci2cl",
        kind: str = "joint",
        layer: str | None | type = ...,
        correct_batches: bool = True,
    ) -> np.ndarray:
        """Cell embeddings ``(n_cells, n_latent)``; ``n_latent + shared_variates`` columns for ``"joint"``, ``2 * n_latent`` for ``"concat"``.

        Parameters
        ----------
        mdata
            Data to embed (default: the training data); new data are checked
            like training data: the same layer, modalities and features in the
            same order, counts where the likelihood needs counts, finite values.
        batch_size
            Cells per forward pass (the result does not depend on it).
        key_added
            Also write the embedding to ``mdata.obsm[key_added]`` (``None``: do
            not); the names of ``mdata``'s modalities are refused (mudata keeps
            its own cell masks there). Rows follow ``mdata.obs_names``.
        layer
            Where ``mdata`` holds the raw data (``None``: ``.X``, as in a backed
            atlas); default: the layer the model was set up with.
        kind
            ``"joint"`` (default): the RNA and ATAC embeddings on one scale
            side by side, each scaled by the square root of its modality weight
            (:attr:`modality_weights_`, label-free weights fixed after
            training, see ``modality_weighting``), projected on the principal
            axes of the training cells, and beside them the shared block (see
            ``shared_variates``);
            ``"fused"``: the cross-attended embeddings concatenated and projected
            by the fusion network (the paper's read-out); ``"rna"`` or
            ``"atac"`` (per-modality encoders); ``"concat"`` (both
            L2-normalised encoder outputs side by side, equal weights).
        correct_batches
            For a model set up with a batch key and ``batch_correction=
            "harmony"``: correct the embedding with Harmony, fitted on the
            cells of ``mdata`` (default), or return it uncorrected
            (``False``). Any kind is corrected. Cells of one batch only are
            returned as they are (nothing to correct).

        Raises
        ------
        RuntimeError
            The model is not trained, or the embedding is not finite.
        DataValidationError
            ``mdata`` does not match the model or holds values its likelihood cannot take.
        """
        if not self.is_trained:
            raise RuntimeError("the model is not trained; call .train() first")
        check_choice("kind", kind, EMBEDDING_KINDS)
        check_range("batch_size", batch_size, 1, integer=True)
        check_flag("correct_batches", correct_batches)
        mdata = self.mdata if mdata is None else mdata
        if not isinstance(mdata, md.MuData):
            raise TypeError(f"mdata must be a MuData, got {type(mdata).__name__}")
        check_key_added(mdata, key_added)
        layer = self._check_data(mdata, layer)
        fn = functools.partial(self.module.embedding, kind=kind)
        out = self._map_batches(self._matrices(mdata, layer), mdata.n_obs, fn, int(batch_size))
        z = torch.cat(out).cpu().numpy().astype(np.float32)
        if not np.isfinite(z).all():
            raise RuntimeError(
                f"the embedding has {int((~np.isfinite(z)).any(1).sum())} cells with non-finite "
                "values; nothing was written. Check the input values (raw counts?)."
            )
        if correct_batches and self.batches_ and self.init_params["batch_correction"] == "harmony":
            codes = batch_codes(mdata, self.setup["batch_key"], self.batches_)
            z = harmony(z, codes, self.seed)
        if key_added:
            mdata.obsm[key_added] = z
        return z

    # ------------------------------------------------------------------ persistence
    def _checkpoint_extra(self) -> dict:
        return {
            "feature_names": self.feature_names,
            "setup": {
                "layer": self.setup["layer"],
                "modalities": self.setup["modalities"],
                **(
                    {"batch_key": self.setup["batch_key"], "batches": self.batches_}
                    if self.batches_
                    else {}
                ),
            },  # fmt: skip
            "readout_scores": self.readout_scores_.to_dict(orient="list"),
            "smoothing_scores": self.smoothing_scores_.to_dict(orient="list"),
            "modality_weighting_": self.modality_weighting_,
            "input_batch_mixing": self.input_batch_mixing_.to_dict(orient="index"),
        }

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        mdata: md.MuData,
        device: str = "auto",
        layer: str | None | type = ...,
    ) -> SCI2CL:
        """Load a model saved with :meth:`save` and attach it to ``mdata``.

        ``mdata`` is set up with the saved modality names (:meth:`setup_mudata`)
        and must hold the model's features in the same order.

        Parameters
        ----------
        path
            The checkpoint folder.
        mdata
            The data to attach the model to (e.g. the training data, or an
            atlas opened from disk).
        device
            ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        layer
            Where ``mdata`` holds the raw data (``None``: ``.X``, as in a
            backed atlas); default: the training data's layer.
        """
        meta, state = cls._read_checkpoint(path, resolve_device(device))
        path = Path(path)
        f = path / "model.json"
        setup = meta.get("setup")
        if not isinstance(setup, dict) or "modalities" not in setup or "layer" not in setup:
            cls._checkpoint_error(f, meta, "it has no set-up record")
        names = meta.get("feature_names")
        if not isinstance(names, dict) or set(names) != set(ROLES):
            cls._checkpoint_error(f, meta, "it has no feature names for 'rna' and 'atac'")
        if not isinstance(mdata, md.MuData):
            raise TypeError(f"mdata must be a MuData, got {type(mdata).__name__}")
        own = mdata.uns.get(SETUP_KEY, {}).get("modalities")  # names the user set up, if any
        mods = dict(own) if own else dict(setup["modalities"])
        if not all(m in mdata.mod for m in mods.values()):
            raise DataValidationError(
                f"the model was trained on modalities {setup['modalities']} and this MuData has "
                f"{list(mdata.mod)}: name its RNA and ATAC modalities with "
                "SCI2CL.setup_mudata(mdata, modalities={'rna': ..., 'atac': ...}), then load"
            )
        key, saved = setup.get("batch_key"), [str(b) for b in setup.get("batches", [])]
        cls.setup_mudata(mdata, setup["layer"] if layer is ... else layer, mods, batch_key=key)
        if key is not None:  # the model's numbering of the batches, which this data may not span
            batch_codes(mdata, key, saved)  # an unseen batch is an error here
            mdata.uns[SETUP_KEY]["batches"] = saved
        for r, feats in names.items():
            if mdata[mods[r]].var_names.tolist() != feats:
                raise DataValidationError(
                    f"modality {mods[r]!r} ({r}) features differ from the saved "
                    f"model's {len(feats)} features (in {f})"
                )
        init = cls._checkpoint_init(f, meta)
        init["device"] = device
        init.setdefault("batch_correction", "none")  # saved before the option: as it was
        model = cls(mdata, **init)
        model._load_weights(state, path)
        model.history = cls._read_history(path)
        model.readout_scores_ = pd.DataFrame(meta.get("readout_scores", {}))
        model.smoothing_scores_ = pd.DataFrame(meta.get("smoothing_scores", {}))
        model.modality_weighting_ = meta.get("modality_weighting_", init["modality_weighting"])
        model.input_batch_mixing_ = pd.DataFrame(meta.get("input_batch_mixing", {})).T
        model.is_trained = True
        return model
