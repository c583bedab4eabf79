"""Pure loss functions of scI2CL and scRCL (tensors in, tensors out), testable on constructed cases."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..distributions import log_bernoulli, log_gaussian, log_nb_positive, log_zinb_positive

__all__ = [
    "info_nce",
    "matching_loss",
    "reconstruction_nll",
    "symmetric_kl",
    "pairwise_symmetric_kl",
    "neighbourhood_contrastive",
    "refinement_consistency",
]


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
    development sets, see the book's Methods chapter). Memory is ``O(B^2)``.

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
