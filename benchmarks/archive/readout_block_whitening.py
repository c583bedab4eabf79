"""A read-out rule that lost (issue 41): each modality's encoder whitened apart, then concatenated.

Usage: python -m benchmarks.archive.readout_block_whitening DATASET FRACTION [DATASET FRACTION ...]

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
- ``joint`` and ``rna``: the sweep unit's own joint embedding and RNA encoder, for pairing.

Scored with KMeans at the true k and label-free Leiden (labels only score). Rows go to
``results/sci2cl_block_whitening_log.csv`` (a re-run of a dataset and fraction replaces its rows).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "sci2cl_block_whitening_log.csv"
SEEDS = (0, 1, 2)
KS = (8, 16)


def white_pcs(Z: np.ndarray, k: int, seed: int) -> np.ndarray:
    """The first ``k`` principal components of ``Z`` ``(n, d)``, each scaled to SD 1: ``(n, k)``."""
    from sklearn.decomposition import PCA

    P = PCA(k, random_state=seed).fit_transform(Z - Z.mean(0))
    return P / P.std(0)


def unit_norm(Z: np.ndarray) -> np.ndarray:
    """``Z`` divided by its mean centred row norm (one scale per modality)."""
    return Z / np.linalg.norm(Z - Z.mean(0), axis=1).mean()


def candidates(R: np.ndarray, A: np.ndarray, J: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every read-out of the RNA encoder ``R``, the ATAC encoder ``A`` and the joint ``J``."""
    out = {"joint": J, "rna": R}
    for k in KS:
        out[f"wcat{k}"] = np.hstack([white_pcs(R, k, seed), white_pcs(A, k, seed)])
        out[f"wcat{k}_r{k}a{k // 2}"] = np.hstack(
            [white_pcs(R, k, seed), white_pcs(A, k // 2, seed)]
        )
        out[f"catpca{k}_white"] = white_pcs(np.hstack([unit_norm(R), unit_norm(A)]), k, seed)
        out[f"rna_white{k}"] = white_pcs(R, k, seed)
    return out


def run(ds: str, fraction: float) -> list[dict]:
    """Rows for one dataset and RNA fraction, seeds :data:`SEEDS`."""
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
        for name, Z in candidates(R, A, J, seed).items():
            for r in metrics.cluster_embedding(np.ascontiguousarray(Z, np.float32), y, seed=seed):
                rows.append({"dataset": ds, "rna_fraction": fraction, "seed": seed,
                             "readout": name, **r})  # fmt: skip
    return rows


def step(ds: str, fraction: str) -> None:
    f = float(fraction)
    new = pd.DataFrame(run(ds, f))
    out = new
    if LOG.exists():
        old = pd.read_csv(LOG)
        out = pd.concat([old[~((old.dataset == ds) & np.isclose(old.rna_fraction, f))], new])
    out.to_csv(LOG.with_suffix(".tmp"), index=False)
    os.replace(LOG.with_suffix(".tmp"), LOG)
    print(new.pivot_table(index="readout", columns="protocol", values="nmi").round(3), flush=True)


if __name__ == "__main__":
    import sys

    from benchmarks.archive import run_groups

    sys.exit(run_groups(None, 2, __doc__, step))
