"""Clustering benchmark: scI2CL against peer tools on every available paired dataset.

Usage: python -m benchmarks.clustering [--smoke] [--seeds 0 1 2] [--datasets ...] [--methods ...]
Writes results/benchmark_clustering.csv, results/embeddings_<dataset>.npz and figures in results/figures/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import peers, plots
from benchmarks.common import available_paired, label_key, prepare
from benchmarks.config import MAX_EPOCHS, MULTIVI_EPOCHS, SEEDS, SMOKE
from sci2cl import metrics, pl

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = [
    "dataset",
    "method",
    "protocol",
    "seed",
    "nmi",
    "ari",
    "acc",
    "asw",
    "n_clusters",
    "seconds",
    "peak_mb",
]


def run(
    datasets: list[str],
    methods: list[str],
    seeds: list[int],
    *,
    max_cells: int | None = None,
    max_epochs: int = MAX_EPOCHS,
    multivi_epochs: int | None = None,
    paper_repeats: int = 5,
    out_dir: Path = ROOT / "results",
    log=print,
) -> pd.DataFrame:
    """Run every method on every dataset and seed under the three protocols.

    ``max_epochs`` is scI2CL's; ``multivi_epochs`` caps MultiVI's (``None``:
    scvi-tools' default with its early stopping).

    Returns the tidy table (also written to ``out_dir/benchmark_clustering.csv``)
    and stores 2-D UMAPs of each method's seed-0 embedding for the figure grid.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    epochs = {"scI2CL": {"max_epochs": max_epochs}, "MultiVI": {"max_epochs": multivi_epochs}}
    rows = []
    for ds in datasets:
        mdata = prepare(ds, max_cells=max_cells)
        y = mdata.obs[label_key(ds)].astype(str).to_numpy()
        coords = {}
        for method in methods:
            for seed in seeds:
                try:
                    res = peers.run_peer(method, mdata, seed=seed, **epochs.get(method, {}))
                except Exception as e:  # a failing peer is reported, not fatal
                    log(f"{ds} {method} seed {seed}: FAILED {type(e).__name__}: {e}")
                    continue
                emb, adj = res["embedding"], res["adjacency"]
                base = {
                    "dataset": ds,
                    "method": method,
                    "seed": seed,
                    "seconds": res["seconds"],
                    "peak_mb": res["peak_mb"],
                }
                for r in metrics.cluster_embedding(emb, y, seed=seed, adjacency=adj):
                    rows.append({**base, **r})
                if paper_repeats:
                    pp = metrics.paper_protocol(
                        emb, y, n_repeats=1 if adj is not None else paper_repeats, seed=seed
                    )
                    rows.append(
                        {
                            **base,
                            "protocol": "paper",
                            **pp.drop(columns="repeat").mean().to_dict(),
                            "nmi_min": pp.nmi.min(),
                            "nmi_max": pp.nmi.max(),
                            "ari_min": pp.ari.min(),
                            "ari_max": pp.ari.max(),
                        }
                    )
                if seed == seeds[0]:
                    coords[method] = emb if emb.shape[1] == 2 else _umap(emb, seed)
                km = next(
                    r for r in rows[::-1] if r["protocol"] == "kmeans" and r["method"] == method
                )
                log(
                    f"{ds:14s} {method:12s} seed {seed}: NMI {km['nmi']:.3f} ARI {km['ari']:.3f} ({res['seconds']:.0f} s, {res['peak_mb']:.0f} MB)"
                )
        np.savez_compressed(
            out_dir / f"embeddings_{ds}.npz",
            labels=y,
            **{k.replace(" ", "_"): v for k, v in coords.items()},
        )
        _write(rows, out_dir)  # after every dataset, so a long run leaves partial results
    return _write(rows, out_dir)


def _write(rows: list[dict], out_dir: Path) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    df = df[[c for c in COLUMNS if c in df] + [c for c in df if c not in COLUMNS]]
    df.to_csv(out_dir / "benchmark_clustering.csv", index=False)
    return df


def _umap(X: np.ndarray, seed: int) -> np.ndarray:
    import umap

    return umap.UMAP(n_neighbors=30, random_state=seed).fit_transform(X)


def figures(df: pd.DataFrame, out_dir: Path = ROOT / "results") -> list[Path]:
    """Heatmaps, seed-spread bars, UMAP grids and time vs. quality into out_dir/figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in ("nmi", "ari"):
        ax = plots.benchmark_heatmap(df, metric=metric, protocol="kmeans")
        paths.append(fig_dir / f"heatmap_{metric}.png")
        ax.figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    fig = plots.benchmark_bars(df, protocol="kmeans")
    paths.append(fig_dir / "bars_kmeans.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    ax = plots.time_vs_quality(df)
    paths.append(fig_dir / "time_vs_quality.png")
    ax.figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
    for f in sorted(out_dir.glob("embeddings_*.npz")):
        z = dict(np.load(f, allow_pickle=True))
        labels = z.pop("labels")
        fig = pl.embedding_grid(
            {k.replace("_", " "): v for k, v in z.items()},
            labels,
            title=f.stem.replace("embeddings_", ""),
        )
        paths.append(fig_dir / f"umap_grid_{f.stem.replace('embeddings_', '')}.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close("all")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="one small dataset, one seed, few epochs")
    ap.add_argument("--datasets", nargs="*")
    ap.add_argument("--methods", nargs="*", default=list(peers.PEERS))
    ap.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    ap.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    ap.add_argument("--paper-repeats", type=int, default=5)
    ap.add_argument(
        "--multivi-epochs",
        type=int,
        default=MULTIVI_EPOCHS,
        help="cap on MultiVI's epochs, stopped earlier by scvi-tools' early stopping "
        "(default 200, as in the committed results; 0: scvi-tools' own cap of 500)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--out", default=str(ROOT / "results"))
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    t = time.perf_counter()
    if a.smoke:
        df = run(
            a.datasets or SMOKE["datasets"],
            a.methods,
            SMOKE["seeds"],
            max_cells=SMOKE["max_cells"],
            max_epochs=SMOKE["max_epochs"],
            multivi_epochs=SMOKE["multivi_epochs"],
            paper_repeats=SMOKE["paper_repeats"],
            out_dir=Path(a.out),
        )
    else:
        df = run(
            a.datasets or available_paired(),
            a.methods,
            a.seeds,
            max_epochs=a.max_epochs,
            multivi_epochs=a.multivi_epochs or None,
            paper_repeats=a.paper_repeats,
            out_dir=Path(a.out),
        )
    figures(df, Path(a.out))
    summary = (
        df.groupby(["dataset", "method", "protocol"])[["nmi", "ari"]]
        .mean()
        .unstack("protocol")
        .round(3)
    )
    print(summary.to_string())
    print(f"total wall time {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
