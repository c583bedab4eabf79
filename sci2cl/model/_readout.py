"""The joint read-out of scI2CL: label-free modality weights and principal axes, fixed after training.

:func:`fit_readout` turns the per-modality embeddings of the training cells
into the buffers of :class:`~sci2cl.module.SCI2CLModule` that
``joint_embedding`` reads (``readout_scales``, ``readout_weights``,
``readout_mean``, ``readout_components``, ``readout_joint_norm``,
``readout_shared_mean``, ``readout_shared``) and the table of scores behind
the weights. No labels are used.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch

from .._graph import (
    agreement_weight_scores,
    choose_modality_weight,
    modality_weights,
    modularity_weight_scores,
    neighbour_agreement,
)
from ..module._sci2cl import SMOOTHING_NEIGHBORS, knn_mean
from ._base import TrainingError

__all__ = [
    "MODALITY_WEIGHTINGS",
    "SMOOTHING_GRID",
    "check_smoothing",
    "smoothing_scores",
    "MIXTURE_MARGIN",
    "WEIGHT_GRID",
    "MAX_PCA_CELLS",
    "SHARED_STRUCTURE_Z",
    "SHARED_RIDGE",
    "shared_projection",
    "fit_readout",
    "encode_and_fit",
]

MODALITY_WEIGHTINGS = ("modularity", "wnn", "agreement")
#: modularity a mixture of the modalities must gain over the better one alone (label-free rule)
MIXTURE_MARGIN = 0.01
#: RNA weights tried by ``modality_weighting="modularity"`` (ATAC gets ``1 - w``)
WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 11), 2)
#: the modalities are mixed only when their kNN graphs share more neighbours than a random
#: correspondence of the cells gives, by this many SDs (:func:`~sci2cl._graph.neighbour_agreement`)
SHARED_STRUCTURE_Z = 3.0
#: shares of cross-modal smoothing of RNA tried by ``cross_smoothing="auto"``
SMOOTHING_GRID = np.round(np.linspace(0.0, 0.8, 9), 2)
#: cells on which the joint read-out's principal axes are fitted (all cells below this)
MAX_PCA_CELLS = 50_000
#: ridge of the canonical correlation analysis behind the shared block, times the mean variance
SHARED_RIDGE = 1e-3


def shared_projection(
    z_rna: np.ndarray, z_atac: np.ndarray, n_shared: int, weight: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The structure two embeddings share, as a linear map of the two side by side.

    A canonical correlation analysis of ``z_rna`` ``(n, E)`` and ``z_atac``
    ``(n, E')`` (each covariance plus :data:`SHARED_RIDGE` times its mean
    variance; Hotelling 1936) gives pairs of unit-variance canonical variates
    ``u_i``, ``v_i`` with correlations ``rho_i``. The shared block is
    ``weight * rho_i * (u_i + v_i) / 2 / sqrt(n_shared)`` for the first
    ``n_shared`` pairs: the part of each embedding that the other confirms,
    weighted by how strongly, so two embeddings that share nothing add
    nothing, and perfectly shared structure has about ``weight`` times unit
    mean row norm. Returns ``(mean (E + E',), projection (E + E', n_shared),
    rho (n_shared,))``; the block of cells ``Z`` is ``(Z - mean) @ projection``
    with ``Z = [z_rna, z_atac]``. Columns beyond the number of canonical pairs,
    or of an embedding without variance, are zeros.
    """
    Z = np.hstack([z_rna, z_atac]).astype(np.float64)
    mean = Z.mean(0)
    e = z_rna.shape[1]
    R, A = Z[:, :e] - mean[:e], Z[:, e:] - mean[e:]
    proj = np.zeros((Z.shape[1], n_shared))
    rho_out = np.zeros(n_shared)
    if n_shared == 0 or not (R.any() and A.any()):
        return mean, proj, rho_out

    def inv_sqrt(C: np.ndarray) -> np.ndarray:
        w, V = np.linalg.eigh(C + SHARED_RIDGE * np.trace(C) / len(C) * np.eye(len(C)))
        return V @ np.diag(np.clip(w, 1e-12 * w.max(), None) ** -0.5) @ V.T

    Wr, Wa = inv_sqrt(R.T @ R / len(R)), inv_sqrt(A.T @ A / len(A))
    U, rho, Vt = np.linalg.svd(Wr @ (R.T @ A / len(R)) @ Wa)
    k = min(n_shared, len(rho))
    scale = weight * rho[:k] / 2 / np.sqrt(n_shared)
    proj[:e, :k] = Wr @ U[:, :k] * scale
    proj[e:, :k] = Wa @ Vt.T[:, :k] * scale
    rho_out[:k] = rho[:k]
    return mean, proj, rho_out


def readout_cells(n: int, seed: int, max_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """``(fit_cells, sub)``: the cells embedded to fit the read-out, and the weighting cells among them.

    Up to ``max_cells`` seeded cells choose the weights (positions ``sub`` in
    ``fit_cells``); the principal axes are fitted on every cell, or on a
    seeded sample of :data:`MAX_PCA_CELLS` (plus the weighting cells) above that.
    """
    rng = np.random.default_rng(seed)  # the same cells whenever the read-out is fitted
    sub = np.sort(rng.choice(n, max_cells, replace=False)) if n > max_cells else np.arange(n)
    if n > MAX_PCA_CELLS:
        fit_cells = np.union1d(
            sub, np.random.default_rng([seed, 1]).choice(n, MAX_PCA_CELLS, False)
        )
        sub = np.searchsorted(fit_cells, sub)  # positions of the weighting cells in fit_cells
    else:
        fit_cells = np.arange(n)
    return fit_cells, sub


def check_smoothing(value) -> None:
    """Raise ``ValueError`` unless ``value`` is ``"auto"`` or a share in ``[0, 1)``."""
    if isinstance(value, str) and value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(
            f"cross_smoothing must be 'auto' or a number in [0, 1) (0: no smoothing), got {value!r}"
        )


def smoothing_scores(
    za_rna: np.ndarray, za_atac: np.ndarray, xb_rna: np.ndarray, grid
) -> pd.DataFrame:
    """How well each cross-modal smoothing of RNA predicts held-out RNA (count splitting).

    ``za_rna``, ``za_atac`` ``(n, E)``: the embeddings of one binomial half of
    each cell's counts; ``xb_rna`` ``(n, K)``: the RNA network inputs of the
    other half. For each share ``a`` of ``grid`` the half-A RNA embedding is
    smoothed as :meth:`~sci2cl.module.SCI2CLModule.cross_smoothed` does (the
    half-A ATAC embedding gives the neighbours, the half-A cells are the
    reference), and ``score`` is the fraction of ``xb_rna``'s variance that the
    mean of each cell's 15 nearest other cells in it predicts
    (:func:`~sci2cl._graph.agreement_weight_scores`). The halves carry
    independent noise, so only shared structure scores (count splitting,
    Neufeld et al. 2023; the idea of molecular cross-validation, Batson et al.
    2019): a shallow RNA gains from ATAC's neighbours, a deep one does not.
    Returns one row per share: ``smoothing``, ``score``.
    """
    r, a = torch.as_tensor(za_rna), torch.as_tensor(za_atac)
    nbr = knn_mean(a, a, r, SMOOTHING_NEIGHBORS).numpy()
    rows = []
    for share in grid:
        zr = (1 - share) * za_rna + share * nbr
        sc = agreement_weight_scores(zr, za_atac, {"rna": xb_rna}, [1.0])
        rows.append({"smoothing": float(share), "score": float(sc["score"].iloc[0])})
    return pd.DataFrame(rows)


def choose_smoothing(
    smoothing: str | float, split: tuple[dict, dict] | None, shared_z: float
) -> tuple[float, pd.DataFrame]:
    """The share of cross-modal smoothing and its scores (see :func:`fit_readout`)."""
    if shared_z < SHARED_STRUCTURE_Z:
        return 0.0, pd.DataFrame()
    if smoothing != "auto":
        return float(smoothing), pd.DataFrame()
    if split is None:  # not counts: no binomial halves to score on
        return 0.0, pd.DataFrame()
    scores = smoothing_scores(split[0]["rna"], split[0]["atac"], split[1]["rna"], SMOOTHING_GRID)
    return float(scores.loc[scores["score"].idxmax(), "smoothing"]), scores


@torch.no_grad()
def fit_readout(
    module,
    z: dict[str, torch.Tensor],
    sub: np.ndarray,
    weighting: str,
    seed: int,
    split: tuple[dict, dict] | None = None,
    smoothing: str | float = "auto",
    shared_weight: float = 0.0,
):
    """Set ``module``'s read-out buffers from embeddings ``z`` ``{m: (n_cells, E)}``; return the scores.

    First the cross-modal smoothing of RNA
    (:meth:`~sci2cl.module.SCI2CLModule.cross_smoothed`, every cell of ``z``
    the reference): its share ``smoothing``, or with ``"auto"`` the share on
    :data:`SMOOTHING_GRID` whose smoothed neighbours best predict held-out
    RNA (:func:`smoothing_scores` on ``split``; 0 without ``split``, i.e.
    for data that are not counts). Then, on the smoothed embeddings, the
    scales: each modality's mean row norm. Weights by ``weighting``:
    ``"modularity"``, the RNA weight on :data:`WEIGHT_GRID` whose joint
    embedding (cells ``sub``) has the most modular kNN graph, a mixture kept
    only when it beats the better modality alone by :data:`MIXTURE_MARGIN`;
    ``"wnn"``, the mean per-cell WNN weights; ``"agreement"``, the RNA
    weight whose joint neighbours best predict both modalities, by count
    splitting: ``split = (z_a, x_b)`` holds the embeddings of one binomial
    half of each cell's counts and the network inputs of the other half
    (cells ``sub``; :func:`~sci2cl._graph.agreement_weight_scores`). Then the principal axes of the
    weighted concatenation of all cells of ``z``, and its mean row norm. Then,
    when the module has a shared block (``readout_shared``), its projection
    from the unsmoothed ``z`` (:func:`shared_projection` with weight
    ``shared_weight``). Whatever the weighting, the
    modalities are mixed (and RNA smoothed, and the shared block kept) only
    when their kNN graphs share neighbours beyond chance (``z`` of
    :func:`~sci2cl._graph.neighbour_agreement` at least
    :data:`SHARED_STRUCTURE_Z`); otherwise RNA alone is kept, with a warning.
    Returns the weighting's table of scores (one row for ``"wnn"``) with the
    columns ``shared_neighbours_z`` and ``smoothing`` (the share chosen), and
    the smoothing's scores (:func:`smoothing_scores`; empty unless ``"auto"``
    chose the share).
    """
    from sklearn.decomposition import PCA

    mods = module.modalities
    z_raw = z
    shared = neighbour_agreement(*(z[m][sub].cpu().numpy() for m in ("rna", "atac")), seed=seed)
    share, smooth_scores = choose_smoothing(smoothing, split, shared["z"])
    module.readout_smoothing.fill_(share)
    module.readout_ref_rna = z["rna"].detach().clone() if share > 0 else z["rna"][:0].clone()
    module.readout_ref_atac = z["atac"].detach().clone() if share > 0 else z["atac"][:0].clone()
    z = module.cross_smoothed(z)
    scales = [float(z[m].norm(dim=1).mean().clamp(min=1e-12)) for m in mods]
    module.readout_scales.copy_(torch.as_tensor(scales, dtype=torch.float32))
    zs = {m: v.cpu().numpy() for m, v in module.scaled({m: v[sub] for m, v in z.items()}).items()}
    if weighting == "wnn":
        w = modality_weights(zs).mean().to_numpy()
        scores = pd.DataFrame()
    elif weighting == "agreement":
        za = {
            m: v.cpu().numpy()
            for m, v in module.scaled({m: torch.as_tensor(split[0][m]) for m in mods}).items()
        }
        scores = agreement_weight_scores(za["rna"], za["atac"], split[1], WEIGHT_GRID)
        best = float(scores.loc[scores["score"].idxmax(), "w_rna"])
        w = np.array([best if m == "rna" else 1 - best for m in mods])
    else:
        n_comp = module.readout_components.shape[1]
        scores = modularity_weight_scores(zs["rna"], zs["atac"], WEIGHT_GRID, n_comp, seed)
        best = choose_modality_weight(scores, MIXTURE_MARGIN)
        w = np.array([best if m == "rna" else 1 - best for m in mods])
    if shared["z"] < SHARED_STRUCTURE_Z:
        # no neighbourhood in common: the modalities' structures are unrelated, and a graph score
        # cannot tell which one holds the cells' types; keep RNA, the annotated modality
        if float(w[mods.index("rna")]) < 1.0:
            warnings.warn(
                f"the RNA and ATAC embeddings share no more kNN neighbours than chance "
                f"(z = {shared['z']:.1f} < {SHARED_STRUCTURE_Z}); the joint embedding keeps RNA "
                "alone (modality_weights_); check the ATAC data (peaks, cell matching)",
                UserWarning, stacklevel=3,
            )  # fmt: skip
        w = np.array([1.0 if m == "rna" else 0.0 for m in mods])
    module.readout_weights.copy_(torch.as_tensor(w, dtype=torch.float32))
    Y = module.weighted_concat(z).cpu().numpy().astype(np.float64)
    k = module.readout_components.shape[1]
    pca = PCA(n_components=min(k, *Y.shape), svd_solver="full").fit(Y)
    comps = np.zeros(tuple(module.readout_components.shape))
    comps[:, : pca.n_components_] = pca.components_.T
    module.readout_mean.copy_(torch.as_tensor(pca.mean_, dtype=torch.float32))
    module.readout_components.copy_(torch.as_tensor(comps, dtype=torch.float32))
    n_shared = module.readout_shared.shape[1]
    rho1 = 0.0
    if n_shared:
        J = pca.transform(Y)
        module.readout_joint_norm.fill_(float(max(np.linalg.norm(J, axis=1).mean(), 1e-12)))
        weight = shared_weight if shared["z"] >= SHARED_STRUCTURE_Z else 0.0
        r, a = (z_raw[m].cpu().numpy().astype(np.float64) for m in ("rna", "atac"))
        mean, proj, rho = shared_projection(r, a, n_shared, weight)
        module.readout_shared_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        module.readout_shared.copy_(torch.as_tensor(proj, dtype=torch.float32))
        rho1 = float(rho[0])
    scores = (scores if len(scores) else pd.DataFrame(index=[0])).assign(
        shared_neighbours_z=shared["z"], smoothing=share, shared_rho1=rho1
    )
    return scores, smooth_scores


@torch.no_grad()
def encode_and_fit(
    module,
    batch,
    n_cells: int,
    weighting: str,
    seed: int,
    smoothing: str | float = "auto",
    max_cells: int = 5000,
    shared_weight: float = 0.0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Embed the read-out cells (:func:`readout_cells`) per modality and :func:`fit_readout`.

    ``batch(idx)`` gives the module's inputs of cells ``idx``. The binomial
    halves of count splitting are drawn (seeded) when ``weighting="agreement"``
    (which raises for data that are not counts) or ``smoothing="auto"`` (for
    which data that are not counts get no smoothing). Returns
    :func:`fit_readout`'s two tables. Raises :class:`TrainingError` when the
    encoders give non-finite embeddings.
    """
    fit_cells, sub = readout_cells(n_cells, seed, max_cells)
    module.eval()
    out, halves = [], []
    want_split = weighting == "agreement" or smoothing == "auto"
    gen = torch.Generator().manual_seed(seed)  # the same split whenever the read-out is fitted
    for s in range(0, len(fit_cells), 2048):
        x = module.inputs(batch(fit_cells[s : s + 2048]))
        out.append({m: module.ae[m].encode(x[m], x.get("batch")) for m in module.modalities})
        counts = {m: x[m] for m in module.modalities}
        if want_split and any(
            bool((v < 0).any() or (v != v.round()).any()) for v in counts.values()
        ):
            if weighting == "agreement":
                raise ValueError(
                    "modality_weighting='agreement' splits each cell's counts in two halves and "
                    "needs raw counts in both modalities; use 'modularity' for other data"
                )
            want_split, halves = False, []  # not counts: smoothing="auto" has no halves to score
        if want_split:  # count splitting: embed one half, predict the other
            a = {m: torch.binomial(v.cpu(), torch.full_like(v.cpu(), 0.5), generator=gen).to(v)
                 for m, v in counts.items()}  # fmt: skip
            halves.append((
                {m: module.ae[m].encode(a[m], x.get("batch")) for m in module.modalities},
                {m: module.ae[m].transform_input(x[m] - a[m], x.get("batch"))
                 for m in module.modalities},  # fmt: skip
            ))  # fmt: skip
    z = {m: torch.cat([o[m] for o in out]) for m in module.modalities}
    if not all(torch.isfinite(v).all() for v in z.values()):
        raise TrainingError(
            "the trained encoders give non-finite embeddings; lower the learning rate"
        )
    split = None
    if halves:
        split = tuple(
            {m: torch.cat([h[i][m] for h in halves])[sub].cpu().numpy() for m in module.modalities}
            for i in (0, 1)
        )
    return fit_readout(module, z, sub, weighting, seed, split, smoothing, shared_weight)
