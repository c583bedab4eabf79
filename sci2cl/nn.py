"""Neural-network layers shared by the models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLP", "CountDecoder", "ViewFusion", "TokenCrossAttention", "SparseGCN"]


class MLP(nn.Sequential):
    """Stack of ``Linear -> LayerNorm -> ReLU -> Dropout`` blocks.

    Parameters
    ----------
    n_in
        Input size.
    sizes
        Output size of every layer; the last layer has no activation when
        ``last_activation`` is False.
    dropout
        Dropout rate after hidden activations.
    last_activation
        Whether the last layer is followed by norm and activation.
    """

    def __init__(
        self,
        n_in: int,
        sizes: Sequence[int],
        dropout: float = 0.0,
        last_activation: bool = False,
    ):
        layers: list[nn.Module] = []
        dims = [n_in, *sizes]
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 1 or last_activation:
                layers += [nn.LayerNorm(b), nn.ReLU()]
                if dropout > 0:
                    layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class CountDecoder(nn.Module):
    """Decoder from a latent code to the parameters of a feature likelihood.

    Output heads are sized ``n_hidden -> n_features`` (not ``D x D`` as in the
    authors' code), so the parameter count grows linearly with the features.

    Parameters
    ----------
    n_latent
        Latent size ``E``.
    n_hidden
        Hidden size of the decoder.
    n_features
        Number of features ``D``.
    likelihood
        ``"zinb"``, ``"nb"``, ``"gaussian"`` or ``"bernoulli"``.

    Notes
    -----
    For count likelihoods the mean is ``library * softmax(h W)``, i.e. the
    library size acts as the scale factor; the inverse dispersion is one free
    parameter per feature (``exp(log_theta)``, clamped to [1e-4, 1e4]).
    """

    def __init__(self, n_latent: int, n_hidden: int, n_features: int, likelihood: str):
        super().__init__()
        self.likelihood = likelihood
        self.body = MLP(n_latent, [n_hidden], last_activation=True)
        self.head = nn.Linear(n_hidden, n_features)
        if likelihood in ("zinb", "nb"):
            self.log_theta = nn.Parameter(torch.zeros(n_features))
        if likelihood == "zinb":
            self.pi_head = nn.Linear(n_hidden, n_features)
        if likelihood == "gaussian":
            self.log_var = nn.Parameter(torch.zeros(n_features))

    def forward(self, z: torch.Tensor, library: torch.Tensor | None = None) -> dict:
        """Return the likelihood parameters, each of shape ``(n_cells, n_features)``."""
        h = self.body(z)
        out = self.head(h)
        if self.likelihood in ("zinb", "nb"):
            mu = library * torch.softmax(out, dim=-1)
            theta = torch.exp(self.log_theta.clamp(-9.2, 9.2))
            params = {"mu": mu, "theta": theta}
            if self.likelihood == "zinb":
                params["pi_logits"] = self.pi_head(h)
            return params
        if self.likelihood == "gaussian":
            return {"mean": out, "log_var": self.log_var}
        return {"logits": out}


class ViewFusion(nn.Module):
    """Fuse ``T`` view embeddings of each cell: self-attention, max-pool, FFN.

    Parameters
    ----------
    n_latent
        Embedding size ``E``; must be divisible by ``n_heads``.
    n_heads
        Attention heads.

    Notes
    -----
    Input ``(n_cells, T, E)``; output ``(n_cells, E)``. Attention runs over the
    views of one cell only, so a cell's output does not depend on other cells.
    """

    def __init__(self, n_latent: int, n_heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(n_latent, n_heads, batch_first=True)
        self.norm = nn.LayerNorm(n_latent)
        self.ffn = nn.Sequential(
            nn.Linear(n_latent, 4 * n_latent), nn.ReLU(), nn.Linear(4 * n_latent, n_latent)
        )

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        """Fuse ``(n_cells, T, E)`` views into ``(n_cells, E)``."""
        a, _ = self.attn(views, views, views, need_weights=False)
        h = self.norm(views + a)
        return self.ffn(h.max(dim=1).values)


class TokenCrossAttention(nn.Module):
    """Cross-attention between two modalities over per-cell tokens.

    Each cell's embedding of the query modality is split into ``n_tokens``
    tokens; they attend to the tokens of the same cell's other-modality
    embedding. Unlike the authors' version, which attends across the cells of
    a mini-batch, the output of a cell depends on that cell only.

    Parameters
    ----------
    n_latent
        Embedding size ``E`` of both modalities.
    n_tokens
        Tokens per cell ``G``.
    n_token_dim
        Size of a token ``d``.
    n_heads
        Attention heads; must divide ``n_token_dim``.

    Notes
    -----
    Inputs ``(n_cells, E)`` each; output ``(n_cells, E)`` (aligned query).
    """

    def __init__(self, n_latent: int, n_tokens: int = 8, n_token_dim: int = 16, n_heads: int = 2):
        super().__init__()
        self.n_tokens, self.d = n_tokens, n_token_dim
        self.to_q = nn.Linear(n_latent, n_tokens * n_token_dim)
        self.to_kv = nn.Linear(n_latent, n_tokens * n_token_dim)
        self.attn = nn.MultiheadAttention(n_token_dim, n_heads, batch_first=True)
        self.norm = nn.LayerNorm(n_token_dim)
        self.out = nn.Linear(n_tokens * n_token_dim, n_latent)

    def forward(self, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Align ``query`` to ``context`` (both ``(n_cells, E)``); returns ``(n_cells, E)``."""
        n = query.shape[0]
        q = self.to_q(query).view(n, self.n_tokens, self.d)
        kv = self.to_kv(context).view(n, self.n_tokens, self.d)
        a, _ = self.attn(q, kv, kv, need_weights=False)
        h = self.norm(q + a)
        return query + self.out(h.reshape(n, -1))


class SparseGCN(nn.Module):
    """One graph convolution ``A_hat @ X @ W`` with a sparse normalised adjacency.

    Parameters
    ----------
    n_in, n_out
        Feature sizes.
    activation
        Apply ReLU after the convolution.
    """

    def __init__(self, n_in: int, n_out: int, activation: bool = True):
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)
        self.activation = activation

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        """Propagate ``x`` ``(n, n_in)`` over the sparse ``adj``; returns ``(n, n_out)``."""
        h = torch.sparse.mm(adj, self.lin(x))
        return torch.relu(h) if self.activation else h
