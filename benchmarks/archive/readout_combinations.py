"""Read-outs of scI2CL's two trained encoders tried without retraining (issue 41).

Usage: python -m benchmarks.archive.readout_combinations DATASET FRACTION [DATASET FRACTION ...]

The question: MOFA+ reads about 15 standardised factors and leads scI2CL on the simulator; is
the gap the read-out's (the joint embedding keeps each encoder's 32 dimensions at their own
scale) rather than the encoders'? No model is trained: the encoder outputs of the depth
sweep's scI2CL units (``build/depth_sweep/<dataset>/rna<fraction>/scI2CL__<seed>.npz``,
written by ``python -m benchmarks depth --methods scI2CL``; seeds 0, 1, 2) are read back and
combined without labels:

- ``wcat<k>``: the first ``k`` principal components of each encoder, each standardised (SD 1),
  concatenated (the two modalities weigh the same, as MOFA+'s views do);
- ``wcat<k>_r<k>a<k/2>``: the same with half as many ATAC components;
- ``catpca<k>_white``: the two encoders, each scaled to unit mean row norm, concatenated, and
  the first ``k`` principal components of that, standardised;
- ``rna_white<k>``: the RNA encoder's first ``k`` components standardised (whitening alone);
- ``rna+<b>shared<k>`` and ``joint+<b>shared<k>``: the RNA encoder (or the joint embedding),
  scaled to unit mean row norm, beside ``b`` times the structure the two encoders share: the
  mean of their first ``k`` canonical variates (a canonical correlation analysis of the two
  encoders, ridge ``1e-3`` times the mean variance), each weighted by its canonical
  correlation, scaled to unit mean row norm. The question: MOFA+ gains from ATAC on the BMMC
  sets (``mofa_views.py``) by fitting factors both modalities support; the shared canonical
  directions are the part of RNA's embedding that ATAC confirms.
- ``joint`` and ``rna``: the sweep unit's own joint embedding and RNA encoder, for pairing.

Scored with KMeans at the true k and label-free Leiden (labels only score). Rows go to
``results/sci2cl_readout_combinations_log.csv`` (a re-run of a dataset and fraction replaces its rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "sci2cl_readout_combinations_log.csv"
SEEDS = (0, 1, 2)
KS = (8, 16)


def white_pcs(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The first ``k`` principal components of ``Z`` ``(n, d)``, each scaled to SD 1: ``(n, k)``."""
    from sklearn.decomposition import PCA

    P = PCA(k, random_state=seed).fit_transform(Z - Z.mean(0))
    return P / P.std(0)


def unit_norm(Z: np.ndarray) -> np.ndarray:
    """``Z`` centred and divided by its mean row norm (one scale per modality)."""
    Z = Z - Z.mean(0)
    return Z / np.linalg.norm(Z, axis=1).mean()


def shared_variates(R: np.ndarray, A: np.ndarray, k: int, ridge: float = 1e-3) -> np.ndarray:
    """The structure two embeddings share, ``(n, k)``.

    The mean of the first ``k`` canonical variates of ``R`` ``(n, d)`` and ``A`` ``(n, d')``,
    each weighted by its canonical correlation (ridge ``ridge`` times the mean variance).
    """

    def inv_sqrt(C):
        w, V = np.linalg.eigh(C + ridge * np.trace(C) / len(C) * np.eye(len(C)))
        return V @ np.diag(w**-0.5) @ V.T

    R, A = R - R.mean(0), A - A.mean(0)
    Wr, Wa = inv_sqrt(R.T @ R / len(R)), inv_sqrt(A.T @ A / len(A))
    U, rho, Vt = np.linalg.svd(Wr @ (R.T @ A / len(R)) @ Wa)
    k = min(k, len(rho))
    return ((R @ Wr @ U[:, :k]) + (A @ Wa @ Vt.T[:, :k])) / 2 * rho[:k]


def candidates(R: np.ndarray, A: np.ndarray, J: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every read-out of the RNA encoder ``R``, the ATAC encoder ``A`` and the joint ``J``."""
    out = {"joint": J, "rna": R}
    for k in (16, 32):
        shared = unit_norm(shared_variates(R, A, k))
        for b in (0.25, 0.5, 0.75):
            out[f"rna+{b}shared{k}"] = np.hstack([unit_norm(R), b * shared])
            out[f"joint+{b}shared{k}"] = np.hstack([unit_norm(J), b * shared])
    for k in KS:
        out[f"wcat{k}"] = np.hstack([white_pcs(R, k, seed), white_pcs(A, k, seed)])
        out[f"wcat{k}_r{k}a{k // 2}"] = np.hstack(
            [white_pcs(R, k, seed), white_pcs(A, k // 2, seed)]
        )
        out[f"catpca{k}_white"] = white_pcs(np.hstack([unit_norm(R), unit_norm(A)]), k, seed)
        out[f"rna_white{k}"] = white_pcs(R, k, seed)
    return out


def run(ds: str, fraction: float, make=None) -> list[dict]:
    """Rows for one dataset and RNA fraction, seeds :data:`SEEDS`.

    ``make(R, A, J, seed)`` gives the read-outs scored (default :func:`candidates`).
    """
    make = make or candidates
    from benchmarks.common import label_key, one_thread, prepare
    from benchmarks.depth import EMB, _tag
    from sci2cl import metrics

    one_thread()
    rows = []
    for seed in SEEDS:
        path = EMB / ds / _tag(fraction) / f"scI2CL__{seed}.npz"
        if not path.exists():
            raise FileNotFoundError(
                f"{path} is missing: run `python -m benchmarks depth --methods scI2CL "
                f"--datasets {ds} --fractions {fraction:g}` first"
            )
        m = prepare(ds, rna_fraction=fraction, thin_seed=seed) if fraction < 1 else prepare(ds)
        y = m.obs[label_key(ds)].astype(str).to_numpy()
        with np.load(path) as z:
            R, A, J = z["extra_rna"], z["extra_atac"], z["embedding"]
        if len(y) != len(R):
            raise ValueError(f"{path} holds {len(R)} cells, the prepared {ds} {len(y)}")
        for name, Z in make(R, A, J, seed).items():
            for r in metrics.cluster_embedding(np.ascontiguousarray(Z, np.float32), y, seed=seed):
                rows.append({"dataset": ds, "rna_fraction": fraction, "seed": seed,
                             "readout": name, **r})  # fmt: skip
    return rows


def step(ds: str, fraction: str, make=None, log: Path = LOG) -> None:
    """Score one dataset and RNA fraction and replace its rows in ``log``."""
    from benchmarks.common import append_log

    new = pd.DataFrame(run(ds, float(fraction), make))
    append_log(new.to_dict("records"), log, ["dataset", "rna_fraction"])
    print(ds, fraction, new.pivot_table(index="readout", columns="protocol", values="nmi").round(3),
          flush=True)  # fmt: skip


if __name__ == "__main__":
    import sys

    from benchmarks.archive import run_groups

    sys.exit(run_groups(None, 2, __doc__, step))
