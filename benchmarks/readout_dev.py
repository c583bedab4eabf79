"""Development log of scI2CL's joint read-out across RNA depth: every modality weighting on one training.

Usage: python -m benchmarks readout-dev [--datasets ...] [--fractions 0.1 0.3 1.0] [--seeds 0 1 2]

For each development set, RNA fraction (binomial thinning, as in :mod:`benchmarks.depth`) and
seed, the default model is trained once; then the read-out is refitted with each weighting of
``sci2cl.model._readout.MODALITY_WEIGHTINGS`` (no retraining: only the label-free weights of the
two encoders change) and scored (KMeans at the true k, label-free Leiden). Every row is appended
to ``results/sci2cl_readout_log.csv`` with the chosen RNA weight; a finished
(dataset, fraction, seed) is skipped. Labels only score.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import depth_dev_args, label_key, one_thread
from benchmarks.depth import DATASETS, prepare_thinned

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "results" / "sci2cl_readout_log.csv"


def train_default(mdata, seed: int):
    """The default scI2CL trained on ``mdata``'s counts at one thread; returns ``(model, seconds)``."""
    import sci2cl
    from benchmarks import peers

    one_thread()
    t = time.perf_counter()
    model = sci2cl.SCI2CL(
        peers.setup_sci2cl(mdata), likelihood=peers.sci2cl_likelihood(mdata), seed=seed
    )
    model.train(progress_bar=False)
    return model, time.perf_counter() - t


def run(ds: str, fraction: float, seed: int) -> list[dict]:
    """Train the default model once; one row per (weighting, protocol)."""
    from sci2cl import metrics
    from sci2cl.model._readout import MODALITY_WEIGHTINGS

    mdata = prepare_thinned(ds, fraction, seed)
    y = mdata.obs[label_key(ds)].astype(str).to_numpy()
    model, seconds = train_default(mdata, seed)
    rows = []
    for weighting in MODALITY_WEIGHTINGS:
        model.refit_readout(weighting)
        z = model.get_latent_representation(key_added=None)
        base = {"dataset": ds, "rna_fraction": fraction, "seed": seed, "weighting": weighting,
                "w_rna": model.modality_weights_["rna"], "train_seconds": round(seconds, 1),
                "epochs": len(model.history)}  # fmt: skip
        rows += [{**base, **r} for r in metrics.cluster_embedding(z, y, seed=seed)]
    return rows


def main() -> int:
    a = depth_dev_args(__doc__, DATASETS, [0.1, 0.3, 1.0])
    done = pd.read_csv(LOG) if LOG.exists() else pd.DataFrame()
    for f in a.fractions:
        for ds in a.datasets:
            for seed in a.seeds:
                if (
                    len(done)
                    and (
                        (done.dataset == ds)
                        & np.isclose(done.rna_fraction, f)
                        & (done.seed == seed)
                    ).any()
                ):
                    continue
                rows = pd.DataFrame(run(ds, f, seed))
                done = pd.concat([done, rows], ignore_index=True)
                done.to_csv(LOG.with_suffix(".tmp"), index=False)
                os.replace(LOG.with_suffix(".tmp"), LOG)
                k = rows[rows.protocol == "kmeans"].set_index("weighting")
                print(f"{ds} rna{f} seed {seed}: " + ", ".join(
                    f"{w} w_rna {r.w_rna:.1f} NMI {r.nmi:.3f}" for w, r in k.iterrows()
                ), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
