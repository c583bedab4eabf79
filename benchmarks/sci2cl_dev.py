"""Development sets for scI2CL design choices, kept apart from the quality table's test sets.

Usage: python -m benchmarks.sci2cl_dev [--datasets a549_dex simulated_s1 simulated_s1_thin]
                                       [--seeds 0 1 2] [--out build/bench/sci2cl_dev]

The read-out of the joint embedding (``SCI2CL.get_latent_representation(kind=...)``)
was chosen on paired sets that are *not* in ``sci2cl_speed.py quality`` (sci-CAR
kidney, BMMC-a, BMMC-b, the simulator at seed 0): sci-CAR A549 (scored by treatment
time), the simulator at seed 1 with 2,000 cells, and that simulation with its ATAC
counts binomially thinned to 15% (an uninformative ATAC, as in sci-CAR kidney). One
default model per dataset and seed; every read-out is scored on that same model
with KMeans (true k) and label-free Leiden. Writes ``sci2cl_dev.csv``.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from benchmarks import peers
from benchmarks.common import dev_parser, label_key, prepare, report
from sci2cl import SCI2CL, datasets, metrics, pp

ROOT = Path(__file__).resolve().parents[1]

DEV = ["a549_dex", "simulated_s1", "simulated_s1_thin"]
READOUTS = ["joint", "fused", "rna", "concat"]


def dev_set(name: str, thin: float = 0.15):
    """A development MuData and the ``obs`` column that scores it."""
    if name == "a549_dex":
        return prepare(name), label_key(name)
    m = datasets.simulate_multiome(n_cells=2000, seed=1)
    if name == "simulated_s1_thin":
        X = sp.csr_matrix(m["atac"].layers["counts"])
        X.data = np.random.default_rng(1).binomial(X.data.astype(np.int64), thin).astype(np.float32)
        X.eliminate_zeros()
        m["atac"].X, m["atac"].layers["counts"] = X, X.copy()
    pp.qc_filter(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pp.select_features(m, n_top_genes=2000, n_top_peaks=5000)
    pp.qc_filter(m)
    return m, "true_cell_type"


def run(datasets, seeds, readouts, out: Path) -> pd.DataFrame:
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for ds in datasets:
        m, key = dev_set(ds)
        y = m.obs[key].astype(str).to_numpy()
        for seed in seeds:
            t = time.perf_counter()
            model = SCI2CL(peers.setup_sci2cl(m), seed=seed).train(progress_bar=False)
            sec = time.perf_counter() - t
            for r in readouts:
                z = model.get_latent_representation(key_added=None, kind=r)
                for res in metrics.cluster_embedding(z, y, seed=seed):
                    rows.append(
                        {
                            "dataset": ds,
                            "readout": r,
                            "seed": seed,
                            "seconds": sec,
                            "w_rna": model.modality_weights_["rna"],
                            **res,
                        }
                    )
            report(
                rows,
                2 * len(readouts),
                ["dataset", "readout", "seed", "protocol", "nmi"],
                out / "sci2cl_dev.csv",
            )
    return pd.DataFrame(rows)


def main() -> int:
    ap = dev_parser(__doc__, DEV, READOUTS)
    ap.add_argument("--out", default=str(ROOT / "build" / "bench" / "sci2cl_dev"))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    df = run(a.datasets, a.seeds, a.readouts, Path(a.out))
    print(
        df.pivot_table(index=["dataset", "protocol"], columns="readout", values="nmi")
        .round(3)
        .to_string()
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
