"""The fixed input transform of scI2CL's encoders, fitted on the training cells before training.

Per-feature mean and SD of the normalised values over all cells, then (with
``n_input_pcs``) the principal axes of the standardised values of up to
``max_pca_cells`` cells. No labels are used.
"""

from __future__ import annotations

import numpy as np
import torch

from .._rows import RowReader

__all__ = ["fit_input_scaling"]


@torch.no_grad()
def fit_input_scaling(
    ae,
    X: RowReader,
    seed: int,
    chunk: int = 2048,
    max_pca_cells: int = 20000,
    drop_first_pc: bool = False,
    batch=None,
) -> None:
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
    ae.input_mean.copy_(mean.float())
    ae.input_std.copy_(std.float().clamp(min=1e-2))
    if ae.n_input_pcs is None:
        return
    rng = np.random.default_rng(seed)
    sub = (
        np.sort(rng.choice(n, max_pca_cells, replace=False)) if n > max_pca_cells else np.arange(n)
    )

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
