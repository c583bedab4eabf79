"""Development of scRCL's spatial mode on the two labelled spatial sets; every configuration logged.

Usage: python -m benchmarks.scrcl_spatial_dev [--configs NAME ...] [--seeds 0 1 2]
                                             [--out results/scrcl_spatial_dev.csv]

Each configuration (:data:`CONFIGS`, keyword arguments of :class:`sci2cl.SCRCL`) is trained
on osmFISH cortex and the DLPFC slice for each seed and scored on the three tasks of
``benchmarks/spatial.py`` under its three protocols. Rows are appended to the log with the
configuration, so the losers stay on record; a configuration already in the log for a
dataset and seed is not run again. These two sets are the development sets of the spatial
mode: a default chosen here is then a claim about other tissue, not a measurement of it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd

from benchmarks import spatial
from benchmarks.common import one_thread

ROOT = Path(__file__).resolve().parents[1]


def _spatial(mode: str, k: int, smoothing: tuple[int, int] | None = None) -> dict:
    kw = {"spatial_key": "spatial", "spatial_mode": mode, "n_spatial_neighbors": k}
    return kw if smoothing is None else {**kw, "smoothing": smoothing}


#: configurations tried, by name (keyword arguments of SCRCL; "expression" has no spatial graph).
#: Runs before the spatial defaults were set used smoothing (3, 0) where none is given here; the
#: log's ``params`` column holds the arguments as they were passed.
CONFIGS = {
    "expression": {},
    "graph k15": _spatial("graph", 15, (3, 0)),
    "graph k6": _spatial("graph", 6, (3, 0)),
    "graph k15 t5": _spatial("graph", 15, (5, 0)),
    "smooth k15": _spatial("smooth", 15, (3, 0)),
    "smooth k6": _spatial("smooth", 6, (3, 0)),
    "union k6": _spatial("union", 6, (3, 0)),
    "union k15": _spatial("union", 15, (3, 0)),
    # the edges of the grid around the best so far (graph k15 t5)
    "graph k15 t8": _spatial("graph", 15, (8, 0)),
    "graph k25 t5": _spatial("graph", 25, (5, 0)),
    # BANKSY's neighbourhood augmentation (own expression and the neighbours' mean as features) at
    # its authors' two settings: lambda 0.2 for cell types, 0.8 for domains, 15 neighbours
    "augment k15 l0.2": {**_spatial("augment", 15, (3, 0)), "spatial_lambda": 0.2},
    "augment k15 l0.8": {**_spatial("augment", 15, (3, 0)), "spatial_lambda": 0.8},
    # counts normalised to the median count per cell (scanpy's default) instead of 10,000: on a
    # 33-gene FISH panel the log of counts scaled to 10,000 is far from the log of the counts
    "graph k25 t5 median": {**_spatial("graph", 25, (5, 0)), "target_sum": None},
    "expression median": {"target_sum": None},
    # cell types on the median-normalised counts: less or no smoothing, BANKSY's features
    "expression median t1": {"target_sum": None, "smoothing": (1, 0)},
    "expression median t0": {"target_sum": None, "smoothing": (0, 0)},
    "augment k15 l0.2 median": {
        **_spatial("augment", 15, (3, 0)),
        "spatial_lambda": 0.2,
        "target_sum": None,
    },
    # training length (``max_epochs`` goes to ``train``): on osmFISH cell typing the learned
    # embedding scores below its own smoothed input and falls as training goes on
    **{f"expression median e{e}": {"target_sum": None, "max_epochs": e} for e in (5, 10, 20)},
    **{
        f"graph k25 t5 median e{e}": {
            **_spatial("graph", 25, (5, 0)),
            "target_sum": None,
            "max_epochs": e,
        }
        for e in (5, 10, 20)
    },
}


def run(configs: list[str], seeds: list[int], out: Path, log=print) -> pd.DataFrame:
    """Run the configurations not yet in ``out`` and append their rows."""
    done = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=["config", "dataset", "seed"])
    have = set(zip(done["config"], done["dataset"], done["seed"], strict=True))
    for ds in dict.fromkeys(t[0] for t in spatial.TASKS):
        adata = spatial.load(ds)
        tasks = [(k, t) for d, k, t in spatial.TASKS if d == ds]
        for name in configs:
            for seed in seeds:
                if (name, ds, seed) in have:
                    continue
                kw = CONFIGS[name]
                method = (
                    "scRCL (spatial graph)" if "spatial_key" in kw else "scRCL (expression graph)"
                )
                kw = {k: v for k, v in kw.items() if k != "spatial_key"}
                epochs = kw.pop("max_epochs", None)
                rows = spatial.run_method(
                    adata, method, seed, tasks, max_epochs=epochs, scrcl_kw=kw
                )
                new = pd.DataFrame(rows).assign(config=name, params=json.dumps(CONFIGS[name]))
                for r in new[new.protocol != "leiden"].itertuples():
                    log(f"{name:14s} {ds:16s} {r.label:9s} {r.protocol:13s} seed {seed}: "
                        f"NMI {r.nmi:.3f} ({r.seconds:.0f} s)")  # fmt: skip
                # read the log again before appending: another runner may have written to it
                now = pd.read_csv(out) if out.exists() else pd.DataFrame()
                done = pd.concat([now, new], ignore_index=True)
                tmp = out.with_suffix(f".{os.getpid()}.tmp")
                done.to_csv(tmp, index=False)
                tmp.replace(out)
    return done


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--seeds", nargs="*", type=int, default=spatial.SEEDS)
    ap.add_argument("--out", default=str(ROOT / "results" / "scrcl_spatial_dev.csv"))
    a = ap.parse_args()
    one_thread()
    df = run(a.configs, a.seeds, Path(a.out))
    print(
        df[df.protocol != "leiden"]
        .groupby(["config", "dataset", "label", "protocol"])["nmi"]
        .agg(["mean", "std", "count"])
        .round(3)
        .to_string()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
