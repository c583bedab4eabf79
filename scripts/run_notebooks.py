"""Execute the book's notebooks with papermill (full or smoke runs) and report their wall times."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=["full", "smoke"], required=True)
    ap.add_argument("--out", required=True, help="folder for the executed notebooks")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = (ROOT / "build" / f"run-{args.mode}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {
        "SMOKE": args.mode == "smoke",
        "DATA_DIR": os.environ.get("SCI2CL_DATA_DIR", str(ROOT / "data")),
        "RUN_DIR": str(run_dir),
    }
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        nbs = [n for n in nbs if any(n.name.startswith(p) for p in args.only)]
    if not nbs:
        print("no notebooks found", file=sys.stderr)
        return 1
    times = []
    for nb in nbs:
        t = time.perf_counter()
        print(f"[{args.mode}] {nb.name} ...", flush=True)
        pm.execute_notebook(
            str(nb),
            str(out / nb.name),
            parameters=params,
            kernel_name="python3",
            cwd=str(ROOT / "notebooks"),
            execution_timeout=args.timeout,
            progress_bar=False,
        )
        times.append((nb.name, time.perf_counter() - t))
        print(f"[{args.mode}] {nb.name}: {times[-1][1]:.0f} s", flush=True)
    tsv = out / f"timings-{args.mode}.tsv"  # one line per notebook, updated in place
    old = dict(line.split("\t") for line in tsv.read_text().splitlines()) if tsv.exists() else {}
    old.update({n: f"{s:.1f}" for n, s in times})
    tsv.write_text("".join(f"{n}\t{s}\n" for n, s in sorted(old.items())))
    print(f"total {sum(s for _, s in times):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
