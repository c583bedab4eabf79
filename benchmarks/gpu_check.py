"""scI2CL on a GPU: seconds per epoch, peak GPU memory, and the embedding against the CPU run.

Usage:
  python -m benchmarks.gpu_check [--sim-cells 100000] [--dir build/scaling]

On a machine with a CUDA device: trains the default model on sci-CAR kidney on
``device="cuda"`` and on ``device="cpu"`` (seed 0, the same settings), and one
joint epoch on ``--sim-cells`` simulated cells read backed from disk (the file
of :mod:`benchmarks.sci2cl_scaling`, written if absent) on the GPU. Reports
seconds per epoch, peak GPU memory (``torch.cuda.max_memory_allocated``) and
KMeans NMI at the true number of types (labels score only) for both devices.
Without a CUDA device it writes one row saying "not measured": nothing in the
package or the book depends on a GPU. Writes ``results/gpu_check.csv``.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "gpu_check.csv"


def _nmi(z: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    k = len(set(y))
    return float(
        normalized_mutual_info_score(y, KMeans(k, n_init=10, random_state=seed).fit_predict(z))
    )


def _train(mdata, device: str, label_key: str, **train_kw) -> dict:
    import sci2cl

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    model = sci2cl.SCI2CL(mdata, seed=0, device=device)
    model.train(progress_bar=False, **train_kw)
    z = model.get_latent_representation(key_added=None, batch_size=4096)
    sec = time.perf_counter() - t
    h = model.history
    epoch_s = float(h["seconds"].iloc[-1]) / len(h)
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(len(z), min(20000, len(z)), replace=False))
    y = np.asarray(mdata.obs[label_key].astype(str))[sub]
    return {
        "device": device,
        "cells": int(mdata.n_obs),
        "epochs": len(h),
        "s_per_epoch": epoch_s,
        "seconds": sec,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else np.nan,
        "nmi_kmeans": _nmi(z[sub], y),
    }


def run(sim_cells: int, folder: Path) -> pd.DataFrame:
    if not torch.cuda.is_available():
        row = {
            "status": "not measured: no CUDA device on this machine",
            "when": time.strftime("%Y-%m-%d"),
        }
        print(row["status"])
        df = pd.DataFrame([row])
        df.to_csv(OUT, index=False)
        return df
    import mudata as md

    import sci2cl
    from benchmarks.common import label_key, prepare
    from benchmarks.peers import setup_sci2cl
    from sci2cl.datasets import simulate_multiome_to_disk

    rows = []
    kidney = setup_sci2cl(prepare("scicar_kidney"))
    for device in ("cuda", "cpu"):
        rows.append({"data": "scicar_kidney", **_train(kidney, device, label_key("scicar_kidney"))})
        print(rows[-1], flush=True)
    path = folder / f"sim_{sim_cells}_2000x5000.h5mu"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        simulate_multiome_to_disk(path, sim_cells, 2000, 5000, chunk_size=10_000, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sim = md.read_h5mu(path, backed=True)
    sci2cl.SCI2CL.setup_mudata(sim, layer=None)
    rows.append(
        {
            "data": f"simulated {sim_cells} (backed)",
            **_train(
                sim, "cuda", "cell_type", max_epochs=1, pretrain_epochs=0, early_stopping=False
            ),
        }
    )
    print(rows[-1], flush=True)
    df = pd.DataFrame(rows).assign(gpu=torch.cuda.get_device_name(0), status="measured")
    df.to_csv(OUT, index=False)
    return df


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--sim-cells", type=int, default=100_000)
    ap.add_argument("--dir", default=str(ROOT / "build" / "scaling"))
    a = ap.parse_args()
    print(run(a.sim_cells, Path(a.dir)).to_string(index=False))


if __name__ == "__main__":
    main()
