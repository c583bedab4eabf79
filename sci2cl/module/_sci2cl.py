"""The scI2CL network: per-modality autoencoders with intra-omics views, inter-omics heads, its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MLP, CountDecoder, TokenCrossAttention, ViewFusion
from ._losses import info_nce, matching_loss, reconstruction_nll

__all__ = [
    "COUNT_LIKELIHOODS",
    "EMBEDDING_KINDS",
    "LIKELIHOODS",
    "SMOOTHING_NEIGHBORS",
    "ModalityAE",
    "SCI2CLModule",
    "knn_mean",
]

COUNT_LIKELIHOODS = ("zinb", "nb")
#: what :meth:`SCI2CLModule.embedding` can read out
EMBEDDING_KINDS = ("joint", "fused", "rna", "atac", "concat")
LIKELIHOODS = ("zinb", "nb", "gaussian", "bernoulli")
#: reference cells averaged by the cross-modal smoothing of the joint read-out
SMOOTHING_NEIGHBORS = 15


def knn_mean(
    query: torch.Tensor, ref: torch.Tensor, values: torch.Tensor, k: int, chunk: int = 1024
) -> torch.Tensor:
    """Mean of ``values`` ``(n_ref, d)`` over each query's ``k`` nearest ``ref`` rows.

    ``query`` ``(n, E)`` and ``ref`` ``(n_ref, E)``: exact Euclidean
    neighbours, in chunks of ``chunk`` queries; a query equal to a reference
    row finds it. Returns ``(n, d)``.
    """
    k = min(k, ref.shape[0])
    out = []
    for s in range(0, query.shape[0], chunk):
        d = torch.cdist(query[s : s + chunk], ref)
        idx = d.topk(k, dim=1, largest=False).indices
        out.append(values[idx].mean(1))
    return torch.cat(out) if out else values.new_zeros(0, values.shape[1])


class ModalityAE(nn.Module):
    """Autoencoder of one modality with the intra-omics view fusion.

    Parameters
    ----------
    n_features
        Number of input features ``D``.
    n_hidden
        Hidden layer size.
    n_latent
        Embedding size ``E``.
    likelihood
        Reconstruction likelihood (see :data:`LIKELIHOODS`).
    n_heads
        Heads of the view self-attention.
    dropout
        Dropout in the encoder.
    n_input_pcs
        Encode the projection of the standardised input on ``n_input_pcs``
        fixed principal axes (buffers ``input_axes``, set from the data by the
        model) instead of all ``D`` features; the decoder still reconstructs
        all ``D`` features.
    n_batch
        Number of batches the model corrects (0: none). With batches, each
        cell's input is standardised with its batch's row of
        ``input_mean``/``input_std`` (shape ``(n_batch, D)``; set by the model,
        the batch's own moments or those of all cells) and the decoder reads
        the batch (one-hot) beside the embedding.
    input_skip
        Add a linear path from the encoder input to the embedding,
        ``z = MLP(u) + u W`` (``W`` of shape ``(K, E)``), that the model
        initialises to keep the first ``E`` input principal components; the
        network then starts from the PCA embedding and learns corrections to
        it. Needs ``n_input_pcs``.
    """

    def __init__(
        self,
        n_features: int,
        n_hidden: int,
        n_latent: int,
        likelihood: str,
        n_heads: int,
        dropout: float = 0.1,
        n_input_pcs: int | None = None,
        input_skip: bool = False,
        n_batch: int = 0,
    ):
        super().__init__()
        self.likelihood = likelihood
        self.n_input_pcs = n_input_pcs
        self.n_batch = int(n_batch)
        n_in = n_features if n_input_pcs is None else n_input_pcs
        self.encoder = MLP(n_in, [n_hidden, n_hidden // 2, n_latent], dropout=dropout)
        if input_skip and n_input_pcs is None:
            raise ValueError(
                "input_skip=True needs n_input_pcs (the linear path starts from the input PCs); "
                "set n_input_pcs, e.g. 50"
            )
        self.skip = nn.Linear(n_in, n_latent, bias=False) if input_skip else None
        self.decoder = CountDecoder(n_latent + self.n_batch, n_hidden, n_features, likelihood)
        self.fusion = ViewFusion(n_latent, n_heads)
        # per-feature (and per-batch) standardisation of the network input, set by the model
        shape = (self.n_batch, n_features) if self.n_batch else (n_features,)
        self.register_buffer("input_mean", torch.zeros(shape))
        self.register_buffer("input_std", torch.ones(shape))
        if n_input_pcs is not None:
            # fixed principal axes of the standardised input, set from the data by the model
            self.register_buffer("input_axes", torch.zeros(n_features, n_input_pcs))
            self.register_buffer("input_axes_mean", torch.zeros(n_input_pcs))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``log1p`` of depth-normalised counts (1e4 per cell); identity for non-count data."""
        if self.likelihood in COUNT_LIKELIHOODS or self.likelihood == "bernoulli":
            lib = x.sum(-1, keepdim=True).clamp(min=1.0)
            return torch.log1p(x / lib * 1e4)
        return x

    def standardise(self, h: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Per-feature z-score of normalised values (clipped at +-10), ``(..., n, D)``.

        With batches, each cell ``(n,)`` of ``batch`` is scored against its own
        batch's means and SDs.
        """
        if not self.n_batch:
            return ((h - self.input_mean) / self.input_std).clamp(-10, 10)
        if batch is None:
            raise ValueError(
                "this model corrects batches: its inputs need each cell's batch (x['batch'])"
            )
        return ((h - self.input_mean[batch]) / self.input_std[batch]).clamp(-10, 10)

    def project(self, s: torch.Tensor) -> torch.Tensor:
        """Encoder input from standardised values, ``(n, D) -> (n, K)``.

        The projection on the fixed principal axes when ``n_input_pcs`` is set;
        otherwise the values unchanged (``K = D``).
        """
        if self.n_input_pcs is None:
            return s
        return s @ self.input_axes - self.input_axes_mean

    def transform_input(self, x: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Network input: :meth:`normalise`, :meth:`standardise`, :meth:`project`."""
        return self.project(self.standardise(self.normalise(x), batch))

    def embed(self, u: torch.Tensor) -> torch.Tensor:
        """Embedding of network inputs ``(n, K) -> (n, E)``: the MLP, plus the linear path if any."""
        z = self.encoder(u)
        return z if self.skip is None else z + self.skip(u)

    def encode(self, x: torch.Tensor, batch: torch.Tensor | None = None) -> torch.Tensor:
        """Embedding of raw inputs ``(n_cells, D) -> (n_cells, E)`` (``batch``: ``(n_cells,)``)."""
        return self.embed(self.transform_input(x, batch))

    def views(
        self,
        x: torch.Tensor,
        n_views: int,
        mask_rate: float,
        generator: torch.Generator | None = None,
        batch: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fused embedding of ``n_views`` randomly column-masked copies of each cell.

        Each view keeps every feature with probability ``1 - mask_rate``
        (masked entries set to 0, a fresh mask per cell and view), is encoded
        by the shared encoder, and the ``T`` view embeddings are fused by
        :class:`~sci2cl.nn.ViewFusion`. Returns ``(n_cells, E)``. The mask acts
        on the features, before any projection on principal axes. The masks
        are drawn from ``generator`` (default: torch's global generator).
        """
        h = self.normalise(x)
        keep = torch.rand((n_views, *h.shape), device=h.device, generator=generator) >= mask_rate
        # mask on the normalised scale (masked = not detected), then standardise
        hv = self.project(self.standardise(h.unsqueeze(0) * keep, batch))
        z = self.embed(hv.reshape(n_views * h.shape[0], -1))
        z = z.view(n_views, h.shape[0], -1).transpose(0, 1)  # (n, T, E)
        return self.fusion(z)

    def rec_loss(
        self, z: torch.Tensor, x: torch.Tensor, batch: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Reconstruction NLL of ``x`` from ``z`` (and the batch), per cell ``(n_cells,)``."""
        library = x.sum(-1, keepdim=True).clamp(min=1.0)
        if self.n_batch:
            if batch is None:
                raise ValueError("this model corrects batches: its decoder needs x['batch']")
            z = torch.cat([z, F.one_hot(batch, self.n_batch).to(z.dtype)], -1)
        return reconstruction_nll(x, self.decoder(z, library), self.likelihood)


class SCI2CLModule(nn.Module):
    """The scI2CL network: two modality autoencoders plus inter-omics heads.

    Parameters
    ----------
    n_features
        ``{"rna": D_rna, "atac": D_atac}``.
    likelihoods
        Likelihood per modality.
    n_hidden, n_latent
        Hidden and embedding sizes.
    n_heads
        Heads of the view self-attention (must divide ``n_latent``).
    n_input_pcs
        Encoders read ``n_input_pcs`` principal components of each modality
        (at most its number of features) instead of all features; see
        :class:`ModalityAE`.
    input_skip
        A linear path from the input PCs to each embedding; see :class:`ModalityAE`.
    readout_scaling
        How :meth:`weighted_concat` puts the modalities on one scale:
        ``"global"``, each embedding divided by one number (``readout_scales``,
        its training cells' mean row norm), so each keeps its own geometry;
        ``"cell"``, every row L2-normalised (cosine geometry).
    n_views, mask_rate
        Masked views per cell in the intra-omics loss and the probability that
        a feature is masked in one (``n_views=0``: no intra-omics term).
    temperature
        Temperature of ``L_MOC`` (:func:`info_nce`).
    n_negatives, hard_negatives
        Unpaired combinations per cell in ``L_MOM`` and how they are drawn.
    weights
        Loss weights ``{"rec", "mse", "moc", "mom"}`` (all four keys).
    joint_rec
        Reconstruct both modalities from the joint embedding in the joint stage.
    use_rna_only
        Ablation: every ATAC input is replaced by zeros (:meth:`inputs`).
    n_shared
        Columns of the shared block that :meth:`joint_embedding` appends
        (``readout_shared``; 0: none).
    n_batch
        Batches the model corrects (0: none); the inputs then carry each
        cell's batch number as ``x["batch"]`` ``(n_cells,)`` (see
        :class:`ModalityAE`).

    Notes
    -----
    The cross-attention splits each embedding into 8 tokens; the encoders use
    dropout 0.1.
    """

    n_tokens = 8
    dropout = 0.1

    def __init__(
        self,
        n_features: dict[str, int],
        likelihoods: dict[str, str],
        n_hidden: int = 256,
        n_latent: int = 32,
        n_heads: int = 4,
        n_input_pcs: int | None = None,
        input_skip: bool = False,
        readout_scaling: str = "global",
        n_views: int = 3,
        mask_rate: float = 0.4,
        temperature: float = 0.2,
        n_negatives: int = 3,
        hard_negatives: bool = False,
        weights: dict[str, float] | None = None,
        joint_rec: bool = True,
        use_rna_only: bool = False,
        n_shared: int = 0,
        n_batch: int = 0,
    ):
        super().__init__()
        self.modalities = tuple(n_features)
        self.readout_scaling = readout_scaling
        self.n_views, self.mask_rate = int(n_views), float(mask_rate)
        self.temperature = float(temperature)
        self.n_negatives, self.hard_negatives = int(n_negatives), bool(hard_negatives)
        self.weights = {"rec": 1.0, "mse": 1.0, "moc": 0.0, "mom": 0.0, **(weights or {})}
        self.joint_rec, self.use_rna_only = bool(joint_rec), bool(use_rna_only)
        self.ae = nn.ModuleDict(
            {
                m: ModalityAE(
                    n_features[m],
                    n_hidden,
                    n_latent,
                    likelihoods[m],
                    n_heads,
                    self.dropout,
                    None if n_input_pcs is None else min(n_input_pcs, n_features[m]),
                    input_skip,
                    n_batch,
                )
                for m in self.modalities
            }
        )
        token_dim = max(8, n_latent // 2)
        self.cross = nn.ModuleDict(
            {
                # RNA queries ATAC, ATAC queries RNA
                m: TokenCrossAttention(n_latent, self.n_tokens, token_dim)
                for m in ("rna", "atac")
            }
        )
        self.proj = nn.ModuleDict({m: nn.Linear(n_latent, n_latent) for m in self.modalities})
        self.joint = MLP(2 * n_latent, [n_hidden, n_latent])
        self.match_head = MLP(n_latent, [n_latent, 1])
        # read-out, set from the training cells by the model after training
        self.register_buffer("readout_weights", torch.full((len(self.modalities),), 0.5))
        self.register_buffer("readout_scales", torch.ones(len(self.modalities)))
        self.register_buffer("readout_mean", torch.zeros(2 * n_latent))
        self.register_buffer("readout_components", torch.eye(2 * n_latent, n_latent))
        # the structure the two encoders share (canonical variates), beside the weighted read-out:
        # the weighted read-out's mean row norm, the encoders' mean and their projection
        self.register_buffer("readout_joint_norm", torch.ones(()))
        self.register_buffer("readout_shared_mean", torch.zeros(2 * n_latent))
        self.register_buffer("readout_shared", torch.zeros(2 * n_latent, int(n_shared)))
        # cross-modal smoothing of the RNA embedding: its share and the reference cells'
        # embeddings (sized by the model after training)
        self.register_buffer("readout_smoothing", torch.zeros(()))
        self.register_buffer("readout_ref_rna", torch.zeros(0, n_latent))
        self.register_buffer("readout_ref_atac", torch.zeros(0, n_latent))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # the reference cells' embeddings are as many rows as the saved model's reference
        for name in ("readout_ref_rna", "readout_ref_atac"):
            saved = state_dict.get(prefix + name)
            if saved is not None:
                setattr(self, name, torch.zeros_like(saved, device=getattr(self, name).device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ----------------------------------------------------------------- pieces
    def inputs(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The batch the network sees: ATAC replaced by zeros under ``use_rna_only``."""
        if self.use_rna_only:
            x = {**x, "atac": torch.zeros_like(x["atac"])}
        return x

    def encode(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality embeddings ``{m: (n_cells, E)}`` of raw inputs (after :meth:`inputs`)."""
        x = self.inputs(x)
        return {m: self.ae[m].encode(x[m], x.get("batch")) for m in self.modalities}

    def fuse(self, z_rna: torch.Tensor, z_atac: torch.Tensor) -> torch.Tensor:
        """Joint embedding from the two cross-attended (aligned) embeddings."""
        a_rna = self.cross["rna"](z_rna, z_atac)
        a_atac = self.cross["atac"](z_atac, z_rna)
        return self.joint(torch.cat([a_rna, a_atac], dim=-1))

    def fused_embedding(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Fused embedding ``(n_cells, E)`` (the paper's read-out).

        The cross-attended embeddings, concatenated and projected; per cell and
        independent of the batch.
        """
        z = self.encode(x)
        return self.fuse(z["rna"], z["atac"])

    def scaled(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each modality's embedding on the read-out's common scale (see ``readout_scaling``)."""
        if self.readout_scaling == "cell":
            return {m: F.normalize(z[m], dim=-1) for m in self.modalities}
        return {m: z[m] / self.readout_scales[i] for i, m in enumerate(self.modalities)}

    def weighted_concat(self, z: dict[str, torch.Tensor]) -> torch.Tensor:
        """``[sqrt(w_rna) * s(z_rna), sqrt(w_atac) * s(z_atac)]``, ``(n, 2E)``.

        ``s`` is :meth:`scaled`; squared distances in the result are the
        ``readout_weights``-weighted sum of the modalities' scaled squared
        distances, so with a weight of 1 the result is that modality's
        embedding up to one scale factor.
        """
        w = self.readout_weights.sqrt()
        s = self.scaled(z)
        return torch.cat([w[i] * s[m] for i, m in enumerate(self.modalities)], 1)

    def cross_smoothed(self, z: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Embeddings with RNA smoothed over ATAC neighbours, ``{m: (n_cells, E)}``.

        ``z_rna <- (1 - a) z_rna + a * mean(ref_rna[N])``, ``N`` the
        :data:`SMOOTHING_NEIGHBORS` reference cells nearest to the cell's ATAC
        embedding among ``readout_ref_atac`` (a reference cell finds itself),
        ``a = readout_smoothing``. The RNA noise of different cells is
        independent, so averaging it over cells that ATAC calls alike lowers it
        without reinforcing RNA's own noise. Unchanged when ``a = 0``. Per cell
        and independent of the batch: the reference is fixed after training.
        """
        a = float(self.readout_smoothing)
        if a == 0 or self.readout_ref_rna.shape[0] == 0:
            return z
        nbr = knn_mean(z["atac"], self.readout_ref_atac, self.readout_ref_rna, SMOOTHING_NEIGHBORS)
        return {**z, "rna": (1 - a) * z["rna"] + a * nbr}

    def joint_embedding(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Joint embedding ``(n_cells, E + n_shared)`` of raw inputs; per-cell, batch-independent.

        :meth:`weighted_concat` of the :meth:`cross_smoothed` per-modality
        embeddings projected on its principal axes (``readout_mean``,
        ``readout_components``) and divided by its training cells' mean row
        norm (``readout_joint_norm``); beside it, with ``n_shared > 0``, the
        shared block: the two encoders' embeddings side by side, centred
        (``readout_shared_mean``) and projected on ``readout_shared``
        (``(2E, n_shared)``, the weighted canonical variates of
        :func:`~sci2cl.model._readout.shared_projection`). All fixed from the
        training cells after training.
        """
        z = self.encode(x)
        j = (
            self.weighted_concat(self.cross_smoothed(z)) - self.readout_mean
        ) @ self.readout_components
        if self.readout_shared.shape[1] == 0:
            return j
        both = torch.cat([z[m] for m in ("rna", "atac")], 1) - self.readout_shared_mean
        return torch.cat([j / self.readout_joint_norm, both @ self.readout_shared], 1)

    def embedding(self, x: dict[str, torch.Tensor], kind: str = "joint") -> torch.Tensor:
        """One of the read-outs of :data:`EMBEDDING_KINDS`, per cell.

        ``"joint"`` (:meth:`joint_embedding`), ``"fused"``
        (:meth:`fused_embedding`, the paper's), ``"rna"``/``"atac"`` (one
        encoder), ``"concat"`` (both encoders, each row L2-normalised, side by
        side: ``(n, 2E)``).
        """
        if kind == "joint":
            return self.joint_embedding(x)
        if kind == "fused":
            return self.fused_embedding(x)
        z = self.encode(x)
        if kind in self.modalities:
            return z[kind]
        if kind == "concat":
            return torch.cat([F.normalize(v, dim=1) for v in z.values()], 1)
        raise ValueError(f"kind must be one of {list(EMBEDDING_KINDS)}, got {kind!r}")

    # ----------------------------------------------------------------- losses
    def loss(
        self,
        x: dict[str, torch.Tensor],
        stage: str,
        generator: torch.Generator | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss of a mini-batch of raw inputs ``{m: (n_cells, D_m)}`` in a training stage.

        ``stage`` is ``"pretrain"`` (:meth:`pretrain_loss`) or ``"joint"``
        (:meth:`joint_loss`); masks and negatives are drawn from ``generator``
        (default: torch's global generator). Returns the terms and their
        weighted sum under ``"loss"``.
        """
        x = self.inputs(x)
        if stage == "pretrain":
            return self.pretrain_loss(x, generator)
        if stage == "joint":
            return self.joint_loss(x, generator)
        raise ValueError(f"stage must be 'pretrain' or 'joint', got {stage!r}")

    def pretrain_loss(
        self, x: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Stage 1: per-modality reconstruction and intra-omics MSE."""
        weights, n_views, b = self.weights, self.n_views, x.get("batch")
        out = {"rec": 0.0, "mse": 0.0}
        for m in self.modalities:
            z = self.ae[m].encode(x[m], b)
            out["rec"] = out["rec"] + self.ae[m].rec_loss(z, x[m], b).mean()
            if weights["mse"] > 0 and n_views > 0:
                v = self.ae[m].views(x[m], n_views, self.mask_rate, generator, b)
                out["mse"] = out["mse"] + F.mse_loss(v, z)
        out["loss"] = weights["rec"] * out["rec"] + weights["mse"] * out["mse"]
        return out

    def joint_loss(
        self, x: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Stage 2: ``l1*L_rec + l2*L_MSE + l3*L_MOC + l4*L_MOM``.

        ``L_rec`` reconstructs both modalities from the joint embedding when
        ``joint_rec`` (so the joint embedding carries what each modality
        knows), else each modality from its own embedding; ``L_MSE`` is the
        intra-omics loss of each modality; ``L_MOC`` is :func:`info_nce` on the
        projected per-modality embeddings; ``L_MOM`` is :func:`matching_loss`
        on the joint embedding of true pairs and of ``n_negatives`` unpaired
        combinations per cell, drawn without labels (uniformly among the other
        cells of the batch, or in proportion to their embedding similarity
        when ``hard_negatives``).
        """
        weights, n_views, n_negatives = self.weights, self.n_views, self.n_negatives
        z = self.encode(x)
        joint = self.fuse(z["rna"], z["atac"])
        out = {}
        src = {m: joint for m in self.modalities} if self.joint_rec else z
        b = x.get("batch")
        out["rec"] = sum(self.ae[m].rec_loss(src[m], x[m], b).mean() for m in self.modalities)
        out["mse"] = torch.zeros((), device=joint.device)
        if weights["mse"] > 0 and n_views > 0:
            for m in self.modalities:
                out["mse"] = out["mse"] + F.mse_loss(
                    self.ae[m].views(x[m], n_views, self.mask_rate, generator, b), z[m]
                )
        p_rna, p_atac = self.proj["rna"](z["rna"]), self.proj["atac"](z["atac"])
        out["moc"] = (
            info_nce(p_rna, p_atac, self.temperature) if weights["moc"] > 0 else 0.0 * joint.sum()
        )
        if weights["mom"] > 0 and n_negatives > 0 and joint.shape[0] > 1:
            partner = self._negatives(p_rna, p_atac, n_negatives, self.hard_negatives, generator)
            n = joint.shape[0]
            rows = torch.arange(n, device=joint.device).repeat(n_negatives)
            neg = self.fuse(z["rna"][rows], z["atac"][partner.T.reshape(-1)])
            logits = self.match_head(torch.cat([joint, neg])).squeeze(-1)
            label = torch.cat([torch.ones(n), torch.zeros(neg.shape[0])]).to(joint.device)
            out["mom"] = matching_loss(logits, label)
        else:
            out["mom"] = 0.0 * joint.sum()
        out["loss"] = sum(weights[k] * out[k] for k in ("rec", "mse", "moc", "mom"))
        return out

    @staticmethod
    def _negatives(p_rna, p_atac, k: int, hard: bool, generator=None) -> torch.Tensor:
        """Indices ``(n_cells, k)`` of ATAC partners that are not the cell itself."""
        n = p_rna.shape[0]
        with torch.no_grad():
            if hard:
                sim = F.normalize(p_rna, dim=-1) @ F.normalize(p_atac, dim=-1).T
                w = torch.softmax(sim / 0.1, dim=-1)
            else:
                w = torch.ones(n, n, device=p_rna.device)
            w.fill_diagonal_(0)
            return torch.multinomial(
                w + 1e-12 * (w.sum(-1, keepdim=True) == 0), k, replacement=True, generator=generator
            )
