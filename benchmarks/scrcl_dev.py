"""Development sets for scRCL design choices, kept apart from the benchmark's test sets.

Usage: python -m benchmarks.scrcl_dev [--seeds 0 1 2] [--readouts refined cell both]
                                      [--out build/bench/scrcl_dev]

A design choice of scRCL (here: which embedding its k-means reads) is chosen on
labelled sets that are *not* in ``benchmarks/scrcl.py`` -- the RNA of the paired
datasets (sci-CAR kidney, BMMC-a, BMMC-b) and the simulator -- so that the
benchmark's seven scRNA-seq sets stay a test the choice never saw. One model is
trained per dataset and seed; every read-out clusters that same model (true k),
and PCA + KMeans on the same cells is the reference. Writes ``scrcl_dev.csv``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import append_log, dev_parser, set_threads
from benchmarks.scrcl import pca_embedding
from sci2cl import SCRCL, datasets, metrics, pp

ROOT = Path(__file__).resolve().parents[1]

DEV = ["scicar_kidney", "bmmc_a", "bmmc_b", "simulated"]


def dev_rna(name: str):
    """The RNA modality of a paired set with its cell-type labels (``obs["cell_type"]``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name == "simulated":
            m = datasets.simulate_multiome(n_cells=3000, seed=0)
            a = m["rna"].copy()
            a.obs["cell_type"] = m.obs["true_cell_type"].to_numpy()
        else:
            m = datasets.load(name, download=False)
            a = m["rna"].copy()
            a.obs["cell_type"] = m.obs["cell_type"].to_numpy()
    pp.qc_filter(a)
    return a


def run(datasets, seeds, readouts, out: Path, config: str = "default", **model_kw) -> pd.DataFrame:
    """Train one scRCL per dataset and seed (``model_kw`` to ``SCRCL``); score each read-out.

    Rows carry ``config`` (a name for ``model_kw``) and ``params``; the log at ``out`` keeps the
    rows of other configurations, datasets and seeds (the losers stay on record).
    """
    import json

    rows = []
    for ds in datasets:
        a = dev_rna(ds)
        y = a.obs["cell_type"].astype(str).to_numpy()
        k = len(np.unique(y))
        for seed in seeds:
            t = time.perf_counter()
            SCRCL.setup_anndata(a, layer="counts")
            m = SCRCL(a, n_clusters=k, seed=seed, **model_kw).train(progress_bar=False)
            sec = time.perf_counter() - t
            for r in readouts:
                lab = m.predict(key_added=None, use=r)
                rows.append(
                    {
                        "config": config,
                        "params": json.dumps(model_kw),
                        "dataset": ds,
                        "method": f"scRCL ({r})",
                        "seed": seed,
                        "seconds": sec,
                        "epochs": len(m.history),
                        **metrics.score_all(y, lab),
                    }
                )
            lab = metrics.kmeans_labels(pca_embedding(a, seed), k, seed)
            rows.append({"config": config, "dataset": ds, "method": "PCA + KMeans", "seed": seed,
                         **metrics.score_all(y, lab)})  # fmt: skip
            last = rows[-len(readouts) - 1 :]
            cols = ["config", "dataset", "method", "seed", "nmi", "ari"]
            print(pd.DataFrame(last)[cols].to_string(header=False, index=False), flush=True)
            append_log(last, out, ["config", "dataset", "seed"])
    return pd.DataFrame(rows)


def main() -> int:
    ap = dev_parser(__doc__, DEV, ["refined", "cell", "both"])
    ap.add_argument("--smoothing", nargs=2, type=int, default=None, help="scRCL's (t1, t2)")
    ap.add_argument("--target-sum", default=None, help="scRCL's target_sum ('median': None)")
    ap.add_argument("--config", default="default", help="the configuration's name in the log")
    ap.add_argument("--out", default=str(ROOT / "results" / "scrcl_dev_log.csv"))
    a = ap.parse_args()
    set_threads(a.threads)
    kw = {} if a.smoothing is None else {"smoothing": tuple(a.smoothing)}
    if a.target_sum is not None:
        kw["target_sum"] = None if a.target_sum == "median" else float(a.target_sum)
    df = run(a.datasets, a.seeds, a.readouts, Path(a.out), config=a.config, **kw)
    print(
        df.pivot_table(index="dataset", columns="method", values=["nmi", "ari"])
        .round(3)
        .to_string()
    )
    print(df.groupby("method")[["nmi", "ari"]].mean().round(3).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
