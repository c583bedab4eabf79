"""The shared-variates read-out with a label-free gate: its weight follows the canonical correlations (issue 41).

Usage: python -m benchmarks.archive.readout_gate DATASET FRACTION [DATASET FRACTION ...]

``readout_combinations.py`` found ``joint + 0.5 shared16`` (the joint embedding beside the
mean of the first 16 canonical variates of the RNA and ATAC encoders) ahead of the joint
embedding on 7 and behind on 2 of 16 real set-fractions per protocol, the losses on SNARE-seq
and on kidney, whose encoders share little (first canonical correlation 0.27, 0.64-0.82
elsewhere). There the shared block was scaled to unit mean row norm whatever its
correlations. Here it keeps the scale the correlations give it: the rho-weighted mean of the
(unit-variance) canonical variates divided by ``sqrt(k)``, so two encoders that share nothing
add nothing and a perfectly shared structure weighs ``b`` against the joint embedding's unit
norm (``joint+<b>rshared16``). No labels and nothing chosen per dataset: ``b`` is one number
for every set. No model is trained: the encoder outputs of the depth sweep's scI2CL units are
read back (``build/depth_sweep/<dataset>/rna<fraction>/scI2CL__<seed>.npz``; seeds 0, 1, 2).
Rows go to ``results/sci2cl_readout_gate_log.csv`` (a re-run of a dataset and fraction
replaces its rows). The log was made from the units of the default before the shared block;
today's units hold the joint embedding with the block, so a re-run on them would add it twice
(train the units with ``shared_variates=0`` first).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.archive import readout_combinations
from benchmarks.archive.readout_combinations import shared_variates, unit_norm

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "sci2cl_readout_gate_log.csv"
K = 16
BS = (0.75, 1.0, 1.25, 1.5)


def candidates(R: np.ndarray, A: np.ndarray, J: np.ndarray) -> dict[str, np.ndarray]:
    """The joint embedding ``J`` alone, beside the unit-norm shared block, and beside the gated one."""
    S = shared_variates(R, A, K)
    out = {"joint": J, f"joint+0.5shared{K}": np.hstack([unit_norm(J), 0.5 * unit_norm(S)])}
    for b in BS:
        out[f"joint+{b}rshared{K}"] = np.hstack([unit_norm(J), b * (S - S.mean(0)) / np.sqrt(K)])
    return out


def step(ds: str, fraction: str) -> None:
    """Score one dataset and RNA fraction (the combinations study's loop) into :data:`LOG`."""
    readout_combinations.step(ds, fraction, lambda R, A, J, seed: candidates(R, A, J), LOG)


if __name__ == "__main__":
    import sys

    from benchmarks.archive import run_groups

    sys.exit(run_groups(None, 2, __doc__, step))
