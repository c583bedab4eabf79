"""Lightning vs the hand-written training loop it replaced, on sci-CAR kidney.

Usage:
  python -m benchmarks.archive.lightning_overhead [--seeds 0 1 2] [--dataset scicar_kidney]

The loop is the package at commit ``LOOP_COMMIT`` (the last one that trained with
its own loop), checked out as a git worktree under ``build/``; the Lightning
version is this checkout. Each (implementation, seed) trains the default model
(60 joint epochs, early stopping) in a fresh process with one thread, the two
implementations alternating so that both see the same machine load. Writes
``results/sci2cl_lightning_vs_loop.csv``: one row per epoch (``impl``, ``seed``,
``epoch``, ``stage``, ``loss``, ``val_loss``) with the run's ``train_s`` (wall)
and ``train_cpu_s`` (process CPU time, which other jobs on the machine do not
inflate) and its number of epochs. Per-epoch cost is compared on CPU time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "sci2cl_lightning_vs_loop.csv"
#: the last commit whose SCI2CL.train ran the hand-written loop
LOOP_COMMIT = "43439d3"

CHILD = """
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(1)
from benchmarks.common import prepare
from benchmarks.peers import setup_sci2cl
import sci2cl
m = setup_sci2cl(prepare(sys.argv[1]))
model = sci2cl.SCI2CL(m, seed=int(sys.argv[2]), device="cpu")
t, c = time.perf_counter(), time.process_time()
model.train(progress_bar=False)
wall, cpu = time.perf_counter() - t, time.process_time() - c
h = model.history
print(json.dumps({"train_s": wall, "train_cpu_s": cpu, "history": h.to_dict(orient="list")}))
"""


def _loop_tree() -> Path:
    tree = ROOT / "build" / f"loop_{LOOP_COMMIT}"
    if not tree.exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(tree), LOOP_COMMIT], cwd=ROOT, check=True
        )
    return tree


def run(dataset: str, seeds) -> pd.DataFrame:
    trees = {"loop": _loop_tree(), "lightning": ROOT}
    rows = []
    for seed in seeds:
        for impl, tree in trees.items():
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                   "PYTHONPATH": str(tree)}  # fmt: skip
            r = subprocess.run(
                [sys.executable, "-c", CHILD, dataset, str(seed)],
                capture_output=True, text=True, env=env, cwd=tree,
            )  # fmt: skip
            if r.returncode != 0:
                raise RuntimeError(f"{impl}, seed {seed} failed:\n{r.stderr[-3000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            h = pd.DataFrame(res["history"])
            h = h[[c for c in ("epoch", "stage", "loss", "val_loss") if c in h]]
            h = h.assign(impl=impl, seed=seed, dataset=dataset, load_1min=os.getloadavg()[0],
                         train_s=res["train_s"], train_cpu_s=res["train_cpu_s"],
                         n_epochs=len(h))  # fmt: skip
            rows.append(h)
            print(impl, seed, len(h), "epochs", round(res["train_cpu_s"], 1), "cpu s", flush=True)
            pd.concat(rows).to_csv(OUT, index=False)
    return pd.concat(rows)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per implementation and seed: epochs, CPU and wall seconds per epoch, best held-out loss."""
    g = df.groupby(["impl", "seed"])
    s = g.agg(epochs=("n_epochs", "first"), train_cpu_s=("train_cpu_s", "first"),
              train_s=("train_s", "first"), best_val_loss=("val_loss", "min"))  # fmt: skip
    s["cpu_s_per_epoch"] = s["train_cpu_s"] / s["epochs"]
    s["wall_s_per_epoch"] = s["train_s"] / s["epochs"]
    return s.reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--dataset", default="scicar_kidney")
    a = ap.parse_args()
    df = run(a.dataset, a.seeds)
    print(summary(df).to_string(index=False))


if __name__ == "__main__":
    main()
