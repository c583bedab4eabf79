"""Harmony's diversity penalty on scI2CL's embedding with a batch key (issue 39).

Usage: python -m benchmarks.archive.harmony_theta CASE SEED [CASE SEED ...]

scI2CL with its batch key corrects its embedding with Harmony at Harmony's default ``theta=2``.
Does a stronger penalty mix the batches better, and at what cost in conservation? One default
model per case of ``benchmarks.batches`` and seed is trained; its embedding before Harmony
(``correct_batches=False``) is corrected with ``theta`` 2 (checked equal to the model's own
correction), 4 and 8, and scored as the batch benchmark scores (scib's bio-conservation and
batch-correction metrics, KMeans NMI at the true k). Labels and batches only score. Rows go to
``results/batch_harmony_theta_log.csv`` (a re-run of a case and seed replaces its rows).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.archive import run_groups

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "batch_harmony_theta_log.csv"
THETAS = (2.0, 4.0, 8.0)


def step(case: str, seed: str) -> None:
    """Train, correct with each ``theta``, score, and replace the case-seed rows of :data:`LOG`."""
    import harmonypy

    import sci2cl
    from benchmarks import batches, peers
    from benchmarks.clustering import scib_scores
    from benchmarks.common import label_key, one_thread, write_text_atomic
    from sci2cl import metrics

    one_thread()
    seed = int(seed)
    m = batches.prepare_case(case, seed)
    y = m.obs[batches.LABELS.get(case) or label_key(case)].astype(str).to_numpy()
    batch = m.obs[batches.BATCH].astype(str).to_numpy()
    sci2cl.SCI2CL.setup_mudata(m, layer="counts", batch_key=batches.BATCH)
    model = sci2cl.SCI2CL(m, likelihood=peers.sci2cl_likelihood(m), seed=seed)
    model.train(progress_bar=False)
    z0 = model.get_latent_representation(key_added=None, correct_batches=False)
    own = model.get_latent_representation(key_added=None)
    meta = pd.DataFrame({"batch": pd.Categorical(batch)})
    rows = []
    for theta in THETAS:
        ho = harmonypy.run_harmony(z0.astype(np.float64), meta, ["batch"], theta=theta,
                                   random_state=seed, verbose=False)  # fmt: skip
        z = np.asarray(ho.Z_corr, dtype=np.float32)
        if theta == 2.0 and not np.allclose(z, own, atol=1e-4):
            raise RuntimeError("theta=2 does not reproduce the model's own correction")
        nmi = metrics.cluster_embedding(z, y, seed=seed)[0]["nmi"]
        rows.append({"case": case, "seed": seed, "harmony_theta": theta, "nmi": nmi,
                     **scib_scores(z, y, seed), **batches.batch_scores(z, y, batch, seed)})  # fmt: skip
    old = pd.read_csv(LOG) if LOG.exists() else pd.DataFrame(columns=["case", "seed"])
    old = old[~((old["case"] == case) & (old["seed"] == seed))]
    write_text_atomic(LOG, pd.concat([old, pd.DataFrame(rows)]).to_csv(index=False))
    print(f"{case} seed {seed}: iLISI " + ", ".join(f"{r['ilisi']:.3f}" for r in rows), flush=True)


if __name__ == "__main__":
    sys.exit(run_groups(None, 2, __doc__, step))
