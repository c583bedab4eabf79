"""scI2CL measured targets: speed on sci-CAR kidney, scaling with cells, quality vs. peers, ablations.

Usage:
  python -m benchmarks.sci2cl_speed speed          # default training on scicar_kidney, snare_adbrain
  python -m benchmarks.sci2cl_speed quality [--datasets ...] [--seeds 0 1 2] [--variants ...]
                                          [--append]   # add rows to an existing quality CSV
  python -m benchmarks.sci2cl_speed all
Writes results/sci2cl_speed.csv, results/sci2cl_quality.csv. Scaling to atlas size (data on disk):
``python -m benchmarks.sci2cl_scaling``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

from benchmarks import peers
from benchmarks.common import label_key, prepare
from sci2cl import SCI2CL, metrics

ROOT = Path(__file__).resolve().parents[1]

OUT = ROOT / "results"
#: the default model and its ablations: each part off by default added back, each part on removed
VARIANTS = {
    "scI2CL": {},
    "scI2CL + L_MOC + L_MOM": {"weights": {"moc": 1.0, "mom": 1.0}},
    "scI2CL without intra-omics": {"n_views": 0},
}
PEERS = ["RNA PCA", "ATAC LSI", "WNN (muon)"]
#: other read-outs of the default model, scored beside its joint embedding (not timed)
READOUTS = {
    "fused": "scI2CL, fused read-out",  # the paper's read-out
    "rna": "scI2CL, RNA encoder",
    "atac": "scI2CL, ATAC encoder",
}


def _train(
    mdata,
    seed: int,
    max_epochs: int | None = 60,
    early_stopping: bool = True,
    readouts: bool = False,
    **kw,
) -> dict:
    with peers.PeakMemory() as mem:
        t = time.perf_counter()
        m = SCI2CL(
            peers.setup_sci2cl(mdata), likelihood=peers.sci2cl_likelihood(mdata), seed=seed, **kw
        )  # fmt: skip
        m.train(max_epochs=max_epochs, early_stopping=early_stopping, progress_bar=False)
        z = m.get_latent_representation(key_added=None)
        sec = time.perf_counter() - t
    other = READOUTS if readouts else {}
    return {
        "embedding": z,
        # the other read-outs of the same trained model (not timed)
        "readouts": {
            v: m.get_latent_representation(key_added=None, kind=k) for k, v in other.items()
        },
        "w_rna": m.modality_weights_["rna"],
        "seconds": sec,
        "epochs": len(m.history),
        "s_per_epoch": sec / len(m.history),
        "peak_mb": mem.peak_mb,
    }


def speed(out: Path = OUT, names=("scicar_kidney", "snare_adbrain")) -> pd.DataFrame:
    """Default training on each dataset in ``names`` (benchmark features: 2,000 HVGs, 5,000 peaks)."""
    torch.set_num_threads(2)
    rows = []
    for name in names:
        mdata = prepare(name)
        r = _train(mdata, seed=0)
        y = mdata.obs[label_key(name)].astype(str).to_numpy()
        rows.append(
            {
                "dataset": name,
                "cells": mdata.n_obs,
                "genes": mdata["rna"].n_vars,
                "peaks": mdata["atac"].n_vars,
                "threads": torch.get_num_threads(),
                **{k: v for k, v in r.items() if k not in ("embedding", "readouts")},
                "nmi_kmeans": metrics.nmi(y, metrics.kmeans_labels(r["embedding"], len(set(y)), 0)),
            }
        )
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    df.to_csv(out / "sci2cl_speed.csv", index=False)
    return df


def quality(
    datasets, seeds, variants, peer_names=PEERS, out: Path = OUT, append: bool = False
) -> pd.DataFrame:
    """KMeans (true k) and Leiden (resolution 1) NMI/ARI of scI2CL, its ablations and the peers.

    With ``append``, rows of an existing ``sci2cl_quality.csv`` for other
    (dataset, method, seed) combinations are kept, so a long run can be split.
    """
    path = out / "sci2cl_quality.csv"
    old = pd.read_csv(path) if append and path.exists() else pd.DataFrame()
    rows = []
    for ds in datasets:
        mdata = prepare(ds)
        y = mdata.obs[label_key(ds)].astype(str).to_numpy()
        for seed in seeds:
            embs = {}
            for v in variants:
                r = _train(mdata, seed, readouts=v == "scI2CL", **VARIANTS[v])
                embs[v] = (r["embedding"], None, r["seconds"], r["peak_mb"])
                for name, z in r["readouts"].items():
                    embs[name] = (z, None, r["seconds"], r["peak_mb"])
                print(ds, seed, v, "RNA weight", round(r["w_rna"], 3), flush=True)
            for p in peer_names:
                r = peers.run_peer(p, mdata, seed=seed)
                embs[p] = (r["embedding"], r["adjacency"], r["seconds"], r["peak_mb"])
            for name, (emb, adj, sec, mb) in embs.items():
                for res in metrics.cluster_embedding(emb, y, seed=seed, adjacency=adj):
                    rows.append(
                        {
                            "dataset": ds,
                            "method": name,
                            "seed": seed,
                            "seconds": sec,
                            "peak_mb": mb,
                            **res,
                        }
                    )
                print(
                    ds, seed, name, round(rows[-2]["nmi"], 3), round(rows[-2]["ari"], 3), flush=True
                )
        new = pd.DataFrame(rows)
        if len(old):
            keys = ["dataset", "method", "seed"]
            done = old.set_index(keys).index.isin(new.set_index(keys).index)
            new = pd.concat([old[~done], new], ignore_index=True)
        new.to_csv(path, index=False)
    return new


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["speed", "quality", "all"], nargs="?", default="all")
    ap.add_argument(
        "--datasets",
        nargs="*",
        default=["scicar_kidney", "snare_adbrain", "bmmc_a", "bmmc_b", "simulated"],
    )
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--peers", nargs="*", default=PEERS)
    ap.add_argument("--append", action="store_true", help="keep other rows of the quality CSV")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the quality runs")
    ap.add_argument("--out", type=Path, default=OUT, help="folder of the CSV files")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    if a.what in ("speed", "all"):
        print(speed(out=a.out).to_string())
    if a.what in ("quality", "all"):
        torch.set_num_threads(a.threads)
        df = quality(a.datasets, a.seeds, a.variants, a.peers, out=a.out, append=a.append)
        print(
            df.groupby(["protocol", "dataset", "method"])[["nmi", "ari"]]
            .mean()
            .unstack("dataset")
            .round(3)
            .to_string()
        )
    print(f"total wall time {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
