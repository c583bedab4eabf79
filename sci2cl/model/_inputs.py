"""The fixed input transform of scI2CL's encoders, fitted on the training cells before training.

Per-feature mean and SD of the normalised values over all cells, then (with
``n_input_pcs``) the principal axes of the standardised values of up to
``max_pca_cells`` cells. No labels are used.
"""

from __future__ import annotations

import numpy as np
import torch

from .._rows import RowReader

__all__ = ["BATCH_CENTRINGS", "MIXING_MARGIN", "batch_mixing", "fit_input_scaling"]

#: how each batch's per-feature mean and SD are taken (``fit_input_scaling(batch_centring=...)``)
BATCH_CENTRINGS = ("auto", "cells", "none")
#: with ``batch_centring="auto"``: how much better (:func:`batch_mixing`) the batches must mix
#: when centred on their own cells than when scaled over all cells for a modality to be centred
#: (chosen on the batch cases of ``benchmarks.batches``, between the BMMC donors' RNA, where
#: centring costs mixing after training, and the cases with a depth or shift effect)
MIXING_MARGIN = 0.15
#: cells (of the PCA cells) on which the batch mixing is measured
MIXING_CELLS = 10000


@torch.no_grad()
def fit_input_scaling(
    ae,
    X: RowReader,
    seed: int,
    chunk: int = 2048,
    max_pca_cells: int = 20000,
    drop_first_pc: bool = False,
    batch=None,
    batch_centring: str = "auto",
) -> dict | None:
    """Set the input buffers of one :class:`~sci2cl.module.ModalityAE` from the raw rows ``X``.

    ``input_mean``/``input_std`` are the per-feature mean and SD of
    ``ae.normalise`` over every cell (read ``chunk`` cells at a time), or, for
    a module that corrects batches, over each batch's cells (``batch``: a
    :class:`~sci2cl.model._data.CodeReader` of the same cells). With
    ``n_input_pcs``: the principal axes of the standardised values of up to
    ``max_pca_cells`` cells (seeded subsample), scaled so that the encoder's
    inputs have unit variance on average; with a linear skip path, its weight
    starts as the identity on the first ``n_latent`` input PCs. With
    ``drop_first_pc``, the axes are the principal axes 2 to ``n_input_pcs + 1``:
    the first is left out, as LSI leaves out its first component, which in
    ATAC data tracks each cell's depth rather than its type.

    ``batch_centring`` says how a module that corrects batches takes each
    batch's mean and SD: ``"cells"``, over the batch's cells; ``"none"``, over
    all cells (the batches are then corrected only in the decoders);
    ``"auto"``, over the batch's cells if the batches then mix better
    (:func:`batch_mixing` of the standardised values of up to
    :data:`MIXING_CELLS` of the PCA cells) than
    over all cells, by more than :data:`MIXING_MARGIN`; otherwise over all
    cells. Centring each batch on its own cells removes a batch effect but
    also the differences in cell-type composition between batches, which
    moves cells of one type apart; where batches differ little that makes
    them mix worse, not better.

    Returns
    -------
    dict or None
        With ``batch_centring="auto"`` and batches: the batch mixing of the
        values standardised ``"over all cells"`` and ``"per batch"``, and
        whether the batches were ``"centred"``; otherwise ``None``.
    """
    from sklearn.decomposition import PCA

    n, n_features = X.shape
    if ae.n_batch and batch is None:
        raise ValueError("the module corrects batches: fit_input_scaling needs the cells' batch")
    codes = batch.rows(np.arange(n)) if ae.n_batch else None
    if codes is None:
        s1 = torch.zeros(n_features, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for s in range(0, n, chunk):
            h = ae.normalise(torch.from_numpy(X.rows(np.arange(s, min(s + chunk, n))))).double()
            s1 += h.sum(0)
            s2 += (h**2).sum(0)
        size = n
    else:  # per batch: sums by batch number
        s1 = torch.zeros(ae.n_batch, n_features, dtype=torch.float64)
        s2 = torch.zeros_like(s1)
        for s in range(0, n, chunk):
            h = ae.normalise(torch.from_numpy(X.rows(np.arange(s, min(s + chunk, n))))).double()
            c = torch.from_numpy(codes[s : s + chunk])
            s1.index_add_(0, c, h)
            s2.index_add_(0, c, h**2)
        size = torch.bincount(torch.from_numpy(codes), minlength=ae.n_batch).clamp(min=1)
        size = size.double()[:, None]
    mean = s1 / size
    std = (s2 / size - mean**2).clamp(min=0).sqrt()
    rng = np.random.default_rng(seed)
    sub = (
        np.sort(rng.choice(n, max_pca_cells, replace=False)) if n > max_pca_cells else np.arange(n)
    )
    mixing = None
    if codes is not None and batch_centring != "cells":  # the moments over all cells
        m_all = s1.sum(0) / n
        sd_all = (s2.sum(0) / n - m_all**2).clamp(min=0).sqrt()
        if batch_centring == "auto":  # on up to MIXING_CELLS of the PCA cells
            idx = sub if len(sub) <= MIXING_CELLS else rng.choice(sub, MIXING_CELLS, replace=False)
            idx = np.sort(idx)
            H = torch.cat([ae.normalise(torch.from_numpy(X.rows(idx[s : s + chunk])))
                           for s in range(0, len(idx), chunk)])  # fmt: skip
            b = codes[idx]

            def mix(m: torch.Tensor, sd: torch.Tensor) -> float:
                S = ((H - m.float()) / sd.float().clamp(min=1e-2)).clamp(-10, 10)
                return batch_mixing(S.numpy(), b, seed)

            mixing = {"over all cells": mix(m_all, sd_all), "per batch": mix(mean[b], std[b])}
            mixing["centred"] = mixing["per batch"] > mixing["over all cells"] + MIXING_MARGIN
        if mixing is None or not mixing["centred"]:
            mean, std = m_all.expand_as(mean), sd_all.expand_as(std)
    ae.input_mean.copy_(mean.float())
    ae.input_std.copy_(std.float().clamp(min=1e-2))
    if ae.n_input_pcs is None:
        return mixing

    def standardised(idx):
        b = None if codes is None else torch.from_numpy(codes[idx])
        return ae.standardise(ae.normalise(torch.from_numpy(X.rows(idx))), b)

    S = torch.cat([standardised(sub[s : s + chunk]) for s in range(0, len(sub), chunk)]).numpy()
    skip = int(bool(drop_first_pc))
    n_fit = min(ae.n_input_pcs + skip, *S.shape)
    pca = PCA(n_components=n_fit, svd_solver="randomized", random_state=seed).fit(S)
    comps, var = pca.components_[skip:], pca.explained_variance_[skip:]
    k = len(comps)
    scale = float(np.sqrt(var.mean()))
    axes = np.zeros((n_features, ae.n_input_pcs), np.float32)
    axes[:, :k] = comps.T / scale
    ae.input_axes.copy_(torch.from_numpy(axes))
    ae.input_axes_mean.copy_(torch.from_numpy(pca.mean_.astype(np.float32) @ axes))
    if ae.skip is not None:  # start from the first n_latent input PCs
        w = torch.zeros_like(ae.skip.weight)
        d = min(w.shape[0], k)
        w[:d, :d] = torch.eye(d)
        ae.skip.weight.copy_(w)
    return mixing


def batch_mixing(S: np.ndarray, batch: np.ndarray, seed: int, n_neighbors: int = 15) -> float:
    """How well batches mix among each cell's nearest neighbours: 1 as if shuffled, 0 apart.

    The share of each cell's ``n_neighbors`` nearest neighbours (Euclidean, in
    the first 50 principal components of ``S``) from another batch, over the
    share expected if batches were assigned to cells at random (each cell's
    other-batch share of the remaining cells); no labels.

    ``nan`` with one batch (nothing to mix).

    Parameters
    ----------
    S
        Standardised values, ``(n, D)``.
    batch
        Each cell's batch number, ``(n,)``.
    seed
        Seed of the randomised PCA.
    n_neighbors
        Neighbours per cell.
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    n = len(S)
    k = min(n_neighbors, n - 1)
    pcs = PCA(min(50, *S.shape), svd_solver="randomized", random_state=seed).fit_transform(S)
    idx = NearestNeighbors(n_neighbors=k + 1).fit(pcs).kneighbors(pcs, return_distance=False)
    other = (batch[idx[:, 1:]] != batch[:, None]).mean()
    expected = (1 - (np.bincount(batch)[batch] - 1) / (n - 1)).mean()
    return float(other / expected) if expected > 0 else float("nan")
