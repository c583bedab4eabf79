"""Torch modules of scI2CL and scRCL, with their losses.

Every loss is a pure function of tensors so that it can be tested on
constructed cases; the modules only wire them together.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import log_bernoulli, log_gaussian, log_nb_positive, log_zinb_positive
from .nn import MLP, CountDecoder, SparseGCN, TokenCrossAttention, ViewFusion

__all__ = [
    "info_nce",
    "matching_loss",
    "reconstruction_nll",
    "ModalityAE",
    "SCI2CLModule",
    "symmetric_kl",
    "neighbourhood_contrastive",
    "refinement_consistency",
    "SCRCLModule",
    "pairwise_symmetric_kl",
]

COUNT_LIKELIHOODS = ("zinb", "nb")
LIKELIHOODS = ("zinb", "nb", "gaussian", "bernoulli")


# --------------------------------------------------------------------------- losses
def info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) loss over paired rows: ``L_MOC``.

    Parameters
    ----------
    z1, z2
        Paired embeddings, shape ``(n_cells, E)``; row ``i`` of both is one cell.
    temperature
        Softmax temperature ``tau``.

    Returns
    -------
    torch.Tensor
        Scalar: mean of the RNA->ATAC and ATAC->RNA cross-entropies of picking
        the true partner among the ``n_cells`` candidates.
    """
    z1 = F.normalize(z1, dim=-1)
    z2 = F.normalize(z2, dim=-1)
    logits = z1 @ z2.T / temperature
    target = torch.arange(z1.shape[0], device=z1.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def matching_loss(logits: torch.Tensor, is_pair: torch.Tensor) -> torch.Tensor:
    """Binary matching loss ``L_MOM``: true pairs vs. unpaired combinations.

    Parameters
    ----------
    logits
        Classifier scores, shape ``(n_pairs,)``; positive means "paired".
    is_pair
        1 for true pairs, 0 for unpaired combinations, shape ``(n_pairs,)``.
    """
    # Balance positives and negatives so the loss does not reward "always no".
    pos = is_pair > 0.5
    w = torch.where(pos, 0.5 / pos.sum().clamp(min=1), 0.5 / (~pos).sum().clamp(min=1))
    return (w * F.binary_cross_entropy_with_logits(logits, is_pair, reduction="none")).sum()


def reconstruction_nll(x: torch.Tensor, params: dict, likelihood: str) -> torch.Tensor:
    """Negative log-likelihood per cell (summed over features): ``L_rec``.

    Parameters
    ----------
    x
        Targets, shape ``(n_cells, D)``: raw counts for count likelihoods.
    params
        Output of :class:`~sci2cl.nn.CountDecoder`.
    likelihood
        One of ``"zinb"``, ``"nb"``, ``"gaussian"``, ``"bernoulli"``.

    Returns
    -------
    torch.Tensor
        Shape ``(n_cells,)``.
    """
    if likelihood == "zinb":
        ll = log_zinb_positive(x, params["mu"], params["theta"], params["pi_logits"])
    elif likelihood == "nb":
        ll = log_nb_positive(x, params["mu"], params["theta"])
    elif likelihood == "gaussian":
        ll = log_gaussian(x, params["mean"], params["log_var"])
    elif likelihood == "bernoulli":
        ll = log_bernoulli(x, params["logits"])
    else:  # pragma: no cover - guarded by the model
        raise ValueError(f"unknown likelihood {likelihood!r}")
    return -ll.sum(-1)


# --------------------------------------------------------------------------- scI2CL
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
    ):
        super().__init__()
        self.likelihood = likelihood
        self.n_input_pcs = n_input_pcs
        n_in = n_features if n_input_pcs is None else n_input_pcs
        self.encoder = MLP(n_in, [n_hidden, n_hidden // 2, n_latent], dropout=dropout)
        if input_skip and n_input_pcs is None:
            raise ValueError(
                "input_skip=True needs n_input_pcs (the linear path starts from the input PCs); "
                "set n_input_pcs, e.g. 50"
            )
        self.skip = nn.Linear(n_in, n_latent, bias=False) if input_skip else None
        self.decoder = CountDecoder(n_latent, n_hidden, n_features, likelihood)
        self.fusion = ViewFusion(n_latent, n_heads)
        # per-feature standardisation of the network input, set from the data by the model
        self.register_buffer("input_mean", torch.zeros(n_features))
        self.register_buffer("input_std", torch.ones(n_features))
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

    def standardise(self, h: torch.Tensor) -> torch.Tensor:
        """Per-feature z-score of normalised values (clipped at +-10), ``(n, D) -> (n, D)``."""
        return ((h - self.input_mean) / self.input_std).clamp(-10, 10)

    def project(self, s: torch.Tensor) -> torch.Tensor:
        """Encoder input from standardised values, ``(n, D) -> (n, K)``.

        The projection on the fixed principal axes when ``n_input_pcs`` is set;
        otherwise the values unchanged (``K = D``).
        """
        if self.n_input_pcs is None:
            return s
        return s @ self.input_axes - self.input_axes_mean

    def transform_input(self, x: torch.Tensor) -> torch.Tensor:
        """Network input: :meth:`normalise`, :meth:`standardise`, :meth:`project`."""
        return self.project(self.standardise(self.normalise(x)))

    def embed(self, u: torch.Tensor) -> torch.Tensor:
        """Embedding of network inputs ``(n, K) -> (n, E)``: the MLP, plus the linear path if any."""
        z = self.encoder(u)
        return z if self.skip is None else z + self.skip(u)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Embedding of raw inputs ``(n_cells, D) -> (n_cells, E)``."""
        return self.embed(self.transform_input(x))

    def views(self, x: torch.Tensor, n_views: int, mask_rate: float) -> torch.Tensor:
        """Fused embedding of ``n_views`` randomly column-masked copies of each cell.

        Each view keeps every feature with probability ``1 - mask_rate``
        (masked entries set to 0, a fresh mask per cell and view), is encoded
        by the shared encoder, and the ``T`` view embeddings are fused by
        :class:`~sci2cl.nn.ViewFusion`. Returns ``(n_cells, E)``. The mask acts
        on the features, before any projection on principal axes.
        """
        h = self.normalise(x)
        keep = torch.rand((n_views, *h.shape), device=h.device) >= mask_rate
        # mask on the normalised scale (masked = not detected), then standardise
        hv = self.project(self.standardise(h.unsqueeze(0) * keep))
        z = self.embed(hv.reshape(n_views * h.shape[0], -1))
        z = z.view(n_views, h.shape[0], -1).transpose(0, 1)  # (n, T, E)
        return self.fusion(z)

    def rec_loss(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction NLL of ``x`` from ``z``, per cell ``(n_cells,)``."""
        library = x.sum(-1, keepdim=True).clamp(min=1.0)
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
    ):
        super().__init__()
        self.modalities = tuple(n_features)
        self.readout_scaling = readout_scaling
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

    # ----------------------------------------------------------------- pieces
    def encode(self, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-modality embeddings ``{m: (n_cells, E)}``."""
        return {m: self.ae[m].encode(x[m]) for m in self.modalities}

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

    def joint_embedding(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        """Joint embedding ``(n_cells, E)`` of raw inputs; per-cell, batch-independent.

        :meth:`weighted_concat` of the per-modality embeddings projected on its
        principal axes (``readout_mean``, ``readout_components``), both fixed
        from the training cells after training.
        """
        return (self.weighted_concat(self.encode(x)) - self.readout_mean) @ self.readout_components

    # ----------------------------------------------------------------- losses
    def pretrain_loss(
        self, x: dict[str, torch.Tensor], n_views: int, mask_rate: float, weights: dict
    ) -> dict[str, torch.Tensor]:
        """Stage 1: per-modality reconstruction and intra-omics MSE."""
        out = {"rec": 0.0, "mse": 0.0}
        for m in self.modalities:
            z = self.ae[m].encode(x[m])
            out["rec"] = out["rec"] + self.ae[m].rec_loss(z, x[m]).mean()
            if weights["mse"] > 0 and n_views > 0:
                out["mse"] = out["mse"] + F.mse_loss(self.ae[m].views(x[m], n_views, mask_rate), z)
        out["loss"] = weights["rec"] * out["rec"] + weights["mse"] * out["mse"]
        return out

    def joint_loss(
        self,
        x: dict[str, torch.Tensor],
        n_views: int,
        mask_rate: float,
        weights: dict,
        temperature: float,
        n_negatives: int,
        hard_negatives: bool,
        joint_rec: bool = True,
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
        z = self.encode(x)
        joint = self.fuse(z["rna"], z["atac"])
        out = {}
        src = {m: joint for m in self.modalities} if joint_rec else z
        out["rec"] = sum(self.ae[m].rec_loss(src[m], x[m]).mean() for m in self.modalities)
        out["mse"] = torch.zeros((), device=joint.device)
        if weights["mse"] > 0 and n_views > 0:
            for m in self.modalities:
                out["mse"] = out["mse"] + F.mse_loss(
                    self.ae[m].views(x[m], n_views, mask_rate), z[m]
                )
        p_rna, p_atac = self.proj["rna"](z["rna"]), self.proj["atac"](z["atac"])
        out["moc"] = (
            info_nce(p_rna, p_atac, temperature) if weights["moc"] > 0 else 0.0 * joint.sum()
        )
        if weights["mom"] > 0 and n_negatives > 0 and joint.shape[0] > 1:
            partner = self._negatives(p_rna, p_atac, n_negatives, hard_negatives)
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
    def _negatives(p_rna, p_atac, k: int, hard: bool) -> torch.Tensor:
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
                w + 1e-12 * (w.sum(-1, keepdim=True) == 0), k, replacement=True
            )


# --------------------------------------------------------------------------- scRCL
def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Symmetric KL divergence ``KL(p||q) + KL(q||p)`` of softmax distributions along ``dim``.

    Returns the divergence with ``dim`` reduced (zero iff the distributions agree).
    """
    lp = F.log_softmax(p_logits, dim=dim)
    lq = F.log_softmax(q_logits, dim=dim)
    return ((lp.exp() - lq.exp()) * (lp - lq)).sum(dim)


def pairwise_symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Symmetric KL divergence between every row of ``p`` and every row of ``q``.

    ``p_logits`` ``(B, K)`` and ``q_logits`` ``(C, K)`` are turned into softmax
    distributions over ``K``; returns ``D`` ``(B, C)`` with
    ``D[i, j] = KL(p_i || q_j) + KL(q_j || p_i)`` (:func:`symmetric_kl` of the pair).
    """
    lp = F.log_softmax(p_logits, dim=-1)
    lq = F.log_softmax(q_logits, dim=-1)
    p, q = lp.exp(), lq.exp()
    d = (p * lp).sum(-1)[:, None] + (q * lq).sum(-1)[None, :] - p @ lq.T - lp @ q.T
    return d.clamp(min=0.0)


def neighbourhood_contrastive(
    h1: torch.Tensor, h2: torch.Tensor, adj: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Neighbourhood contrastive alignment on a batch of cells.

    The divergence between cell ``i`` of view 1 and cell ``j`` of view 2 is the
    symmetric KL of their softmax distributions at ``temperature``
    (:func:`pairwise_symmetric_kl`). For each cell, the mean divergence to its
    graph neighbours (itself included) is divided by the mean divergence to all
    other cells of the batch; the loss is the mean of that ratio, in ``[0, inf)``
    and low when neighbours are close relative to the rest. As in the authors'
    code the ratio itself is averaged, not its logarithm: its gradient fades as
    neighbourhoods tighten, whereas the logarithm rewards collapsing them without
    end and, on a noisy graph, erases the cell types (measured on the
    development sets, see ``benchmarks/scrcl_dev.py``). Memory is ``O(B^2)``.

    Parameters
    ----------
    h1, h2
        Embeddings of the two views, ``(B, K)``.
    adj
        Dense 0/1 neighbourhood among the batch cells, ``(B, B)``; the
        diagonal counts as a neighbour.
    temperature
        Softmax temperature of the distributions.
    """
    d = pairwise_symmetric_kl(h1 / temperature, h2 / temperature)
    eye = torch.eye(d.shape[0], device=d.device, dtype=d.dtype)
    nb = ((adj + eye) > 0).to(d.dtype)
    other = 1.0 - eye
    pos = (d * nb).sum(-1) / nb.sum(-1)
    allm = (d * other).sum(-1) / other.sum(-1).clamp(min=1)
    return (pos / (allm + 1e-8)).mean()


def refinement_consistency(r1: torch.Tensor, r2: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
    """MSE between the cross-view cosine similarity of refined embeddings and ``adj + I``.

    ``r1, r2``: ``(B, G)``; ``adj``: dense ``(B, B)`` 0/1 cell graph.
    """
    s = F.normalize(r1, dim=-1) @ F.normalize(r2, dim=-1).T
    target = ((adj + torch.eye(adj.shape[0], device=adj.device)) > 0).to(s.dtype)
    return F.mse_loss(s, target)


class SCRCLModule(nn.Module):
    """scRCL network: MLP and GCN encoders of two graph-filtered views plus refinement.

    Parameters
    ----------
    n_genes
        Number of genes ``G``.
    n_gene_features
        Input size of the gene-graph convolution (gene profiles are summarised
        to this many PCA components, so the module is not tied to the
        training cells).
    n_hidden, n_latent
        Hidden and output sizes of the cell encoders.
    dropout
        Dropout on inputs.
    """

    def __init__(
        self,
        n_genes: int,
        n_gene_features: int,
        n_hidden: int = 512,
        n_latent: int = 64,
        n_gene_latent: int = 64,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.mlp = MLP(n_genes, [n_hidden, n_latent], last_activation=False)
        self.gcn1 = SparseGCN(n_genes, n_hidden)
        self.gcn2 = SparseGCN(n_hidden, n_hidden)
        self.gcn_out = nn.Linear(n_hidden, n_latent)
        self.gene_gcn = SparseGCN(n_gene_features, n_gene_latent, activation=False)
        self.to_gene = nn.ModuleList([nn.Linear(n_latent, n_gene_latent) for _ in range(2)])

    def encode(self, x1, x2, cell_adj) -> tuple[torch.Tensor, torch.Tensor]:
        """Cell embeddings of view 1 (MLP) and view 2 (GCN over ``cell_adj``)."""
        h1 = self.mlp(self.drop(x1))
        h2 = self.gcn_out(self.gcn2(self.gcn1(self.drop(x2), cell_adj), cell_adj))
        return F.normalize(h1, dim=-1), F.normalize(h2, dim=-1)

    def refine(self, h1, h2, gene_x, gene_adj) -> tuple[torch.Tensor, torch.Tensor]:
        """Refined cell embeddings ``(n_cells, G)``: cell->gene-space projection times gene embeddings."""
        g = F.normalize(self.gene_gcn(gene_x, gene_adj), dim=-1)  # (G, d)
        r1 = self.to_gene[0](h1) @ g.T
        r2 = self.to_gene[1](h2) @ g.T
        return r1, r2
