"""scI2CL at atlas scale: training from a backed file, seconds per epoch and peak memory vs cells.

Usage:
  python -m benchmarks.sci2cl_scaling [--cells 100000 300000 1000000] [--epochs 1]
                                      [--genes 2000] [--peaks 5000] [--dir build/scaling]

For each size, ``sci2cl.datasets.simulate_multiome_to_disk`` writes the data to
``--dir`` chunk by chunk (kept there for the next run), then a fresh process
(one torch/BLAS thread) opens it backed (``mudata.read_h5mu(path, backed=True)``),
builds the default model, trains ``--epochs`` joint epochs (no pretraining, no
held-out split: one epoch means one pass over every cell), and writes the joint
embedding of every cell in chunks. Rows are merged into
``results/sci2cl_scaling.csv`` (one per size; a rerun replaces its sizes):
``cells``, ``s_per_epoch`` (wall time of the training epoch alone), ``cpu_s_per_epoch`` (its
process CPU time: with one thread, the wall time it would take on a machine of its own),
``peak_rss_mb`` (the
process's peak resident memory, ``ru_maxrss``, everything included),
``s_setup`` (opening, checking the counts, input scaling), ``s_embed`` (the read-out
and the embedding), the 1- and 5-minute load averages at the end (above 1 means
the machine was shared), and the NMI of KMeans on the embedding of 20,000 cells
against the simulated types (a check that the run learned, not a quality figure).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "sci2cl_scaling.csv"


def child(path: str, epochs: int, seed: int = 0) -> dict:
    """One measurement in this process (call it in a fresh one)."""
    import warnings

    import mudata as md
    import numpy as np
    import torch
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    import sci2cl

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    t = time.perf_counter()
    m = md.read_h5mu(path, backed=True)
    sci2cl.SCI2CL.setup_mudata(m, layer=None)
    model = sci2cl.SCI2CL(m, seed=seed, device="cpu")
    s_setup = time.perf_counter() - t
    model.train(max_epochs=epochs, pretrain_epochs=0, early_stopping=False, progress_bar=False)
    h = model.history
    s_train = float(h["seconds"].iloc[-1])
    cpu_train = float(h["cpu_seconds"].iloc[-1])
    t = time.perf_counter()
    z = model.get_latent_representation(key_added=None, batch_size=4096)
    s_embed = time.perf_counter() - t
    rng = np.random.default_rng(0)
    sub = np.sort(rng.choice(len(z), min(20000, len(z)), replace=False))
    y = m.obs["cell_type"].to_numpy()[sub]  # scores only
    km = KMeans(len(set(y)), n_init=3, random_state=0).fit_predict(z[sub])
    return {
        "cells": int(m.n_obs),
        "genes": int(m["rna"].n_vars),
        "peaks": int(m["atac"].n_vars),
        "epochs": int(len(h)),
        "s_per_epoch": s_train / len(h),
        "cpu_s_per_epoch": cpu_train / len(h),
        "s_setup": s_setup,
        "s_embed": s_embed,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "nmi_check": float(normalized_mutual_info_score(y, km)),
    }


def run(cells, epochs: int, genes: int, peaks: int, folder: Path, out: Path = OUT) -> pd.DataFrame:
    from sci2cl.datasets import simulate_multiome_to_disk

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in cells:
        path = folder / f"sim_{n}_{genes}x{peaks}.h5mu"
        s_write = None
        if not path.exists():
            t = time.perf_counter()
            simulate_multiome_to_disk(path, n, genes, peaks, chunk_size=10_000, seed=0)
            s_write = time.perf_counter() - t
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "PYTHONPATH": str(ROOT)}  # fmt: skip
        t = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "benchmarks.sci2cl_scaling", "--child", str(path),
             "--epochs", str(epochs)],
            capture_output=True, text=True, env=env, cwd=ROOT,
        )  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"the run on {n} cells failed:\n{r.stderr[-3000:]}")
        row = json.loads(r.stdout.strip().splitlines()[-1])
        la = os.getloadavg()
        row.update(
            s_total=time.perf_counter() - t,
            s_write_file=s_write,
            file_gb=path.stat().st_size / 1e9,
            load_1min=la[0],
            load_5min=la[1],
            threads=1,
            machine=f"{platform.machine()}, {os.cpu_count()} cores",
            when=time.strftime("%Y-%m-%d %H:%M"),
        )
        print(row, flush=True)
        rows.append(row)
        df = pd.DataFrame(rows)
        if out.exists():  # keep the other sizes' rows
            old = pd.read_csv(out)
            if "peak_rss_mb" in old.columns:
                df = pd.concat([old[~old["cells"].isin(df["cells"])], df])
        df.sort_values("cells").to_csv(out, index=False)
    return pd.read_csv(out)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cells", nargs="*", type=int, default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--genes", type=int, default=2000)
    ap.add_argument("--peaks", type=int, default=5000)
    ap.add_argument("--dir", default=str(ROOT / "build" / "scaling"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(child(a.child, a.epochs)), flush=True)
        return
    run(a.cells, a.epochs, a.genes, a.peaks, Path(a.dir))


if __name__ == "__main__":
    main()
