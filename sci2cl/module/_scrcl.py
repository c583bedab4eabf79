"""The scRCL network: MLP and GCN encoders of two graph-filtered views, refinement, its loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MLP, SparseGCN
from ._losses import neighbourhood_contrastive, refinement_consistency, symmetric_kl

__all__ = ["SCRCLModule"]


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
    weights
        Loss weights ``{"align", "neighbour", "refine"}`` (all three keys).
    temperature
        Softmax temperature of the alignment and neighbourhood divergences.
    """

    def __init__(
        self,
        n_genes: int,
        n_gene_features: int,
        n_hidden: int = 512,
        n_latent: int = 64,
        n_gene_latent: int = 64,
        dropout: float = 0.2,
        weights: dict[str, float] | None = None,
        temperature: float = 0.1,
    ):
        super().__init__()
        self.weights = {"align": 1.0, "neighbour": 1.0, "refine": 1.0, **(weights or {})}
        self.temperature = float(temperature)
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

    def loss(
        self, batch: dict, stage: str = "train", generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """The three losses of one step and their weighted sum (``"loss"``).

        ``batch`` holds the views ``x1``, ``x2`` ``(n_cells, G)``, the
        normalised cell graph ``S`` and gene inputs ``gene_x``, ``gene_S``
        (the encoders run on every cell: the graph convolution needs them),
        the cells ``idx`` ``(B,)`` of the ``O(B^2)`` losses and their dense
        0/1 graph ``adj`` ``(B, B)``. ``stage`` and ``generator`` are unused
        (no random draws); they keep the signature of the training plan.
        """
        tau = self.temperature
        h1, h2 = self.encode(batch["x1"], batch["x2"], batch["S"])
        out = {
            "align": symmetric_kl(h1 / tau, h2 / tau, dim=1).mean()
            + symmetric_kl(h1 / tau, h2 / tau, dim=0).mean()
        }
        idx, A = batch["idx"].to(h1.device), batch["adj"].to(h1.device)
        b1, b2 = h1[idx], h2[idx]
        out["neighbour"] = 0.5 * (
            neighbourhood_contrastive(b1, b2, A, tau) + neighbourhood_contrastive(b2, b1, A, tau)
        )
        r1, r2 = self.refine(b1, b2, batch["gene_x"], batch["gene_S"])
        out["refine"] = refinement_consistency(r1, r2, A)
        out["loss"] = sum(self.weights[k] * out[k] for k in ("align", "neighbour", "refine"))
        return out
