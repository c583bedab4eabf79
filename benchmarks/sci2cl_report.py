"""Tables of the scI2CL methods chapter, written from the committed CSVs (no number typed by hand).

Usage:
  python -m benchmarks.sci2cl_report      # writes book/_generated/sci2cl_*.md

Reads ``results/sci2cl_dev_log.csv`` (development runs, :mod:`benchmarks.sci2cl_dev`)
and ``results/sci2cl_quality.csv`` (:mod:`benchmarks.sci2cl_speed` ``quality``). The
methods chapter includes the files it writes. A difference is called a tie when
its mean over seeds is within one SD of the paired differences.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.sci2cl_dev import LOG, paired, read_log

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "book" / "_generated"
QUALITY = ROOT / "results" / "sci2cl_quality.csv"
DEPTH = ROOT / "results" / "depth_sweep.csv"
SPEED = ROOT / "results" / "sci2cl_speed.csv"
SCALING = ROOT / "results" / "sci2cl_scaling.csv"
LIGHTNING = ROOT / "results" / "sci2cl_lightning_vs_loop.csv"
GATE = ROOT / "results" / "sci2cl_readout_gate_log.csv"
#: the shared block's weight the package uses (``SCI2CL(shared_weight=...)``), as its gate study names it
DEFAULT_SHARED = "joint+1.25rshared16"
#: the development configuration that the package's defaults equal, and its read-out rule
DEFAULT_CONFIG, DEFAULT_READOUT = "skip_no_moc_mom", "joint"
DEV_SETS = ["scicar_kidney", "snare_adbrain", "bmmc_a", "bmmc_b"]
PROTOCOLS = {"kmeans": "KMeans (true k)", "leiden": "Leiden (label-free)"}


def _cell(values: pd.Series) -> str:
    v = values.dropna()
    if v.empty:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def _diff_cell(r: pd.DataFrame) -> str:
    """One row of :func:`benchmarks.sci2cl_dev.paired` as ``mean ± SD (verdict)``."""
    if r.empty:
        return "n/a"
    r = r.iloc[0]
    if r["count"] < 2:
        return f"{r['mean']:+.3f} (1 seed, no verdict)"
    return f"{r['mean']:+.3f} ± {r['std']:.3f} ({r['verdict']})"


def _md(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def dev_table(log: Path = LOG) -> str:
    """Development sets at full depth: the default's joint embedding, its encoders, the peers.

    Mean ± SD over seeds; thinned runs (``dataset@fraction`` in :func:`read_log`) are left out.
    """
    df = read_log(log)
    rows = {
        "scI2CL (joint)": (DEFAULT_CONFIG, DEFAULT_READOUT),
        "its RNA encoder": (DEFAULT_CONFIG, "rna"),
        "its ATAC encoder": (DEFAULT_CONFIG, "atac"),
        "its fused read-out (the paper's)": (DEFAULT_CONFIG, "fused"),
        "RNA PCA": ("peer", "RNA PCA"),
        "muon WNN": ("peer", "WNN (muon)"),
        "ATAC LSI": ("peer", "ATAC LSI"),
    }
    out = []
    for p, title in PROTOCOLS.items():
        recs = []
        for name, (cfg, ro) in rows.items():
            sel = df[(df["config"] == cfg) & (df["readout"] == ro) & (df["protocol"] == p)]
            rec = {"method": name}
            rec.update({ds: _cell(sel.loc[sel["dataset"] == ds, "nmi"]) for ds in DEV_SETS})
            means = sel.groupby("dataset")["nmi"].mean().reindex(DEV_SETS)
            rec["mean of 4"] = f"{means.mean():.3f}" if means.notna().all() else "n/a"
            recs.append(rec)
        out.append(f"**NMI, {title}**, mean ± SD over seeds 0-2\n\n" + _md(pd.DataFrame(recs)))
    return "\n".join(out)


#: ablations on top of the configuration without the default's choices (config -> what it changes)
ABLATIONS = {
    "skip_no_intra": "without the intra-omics module",
    "skip_no_moc": "without $\\mathcal{L}_{MOC}$",
    "skip_no_mom": "without $\\mathcal{L}_{MOM}$",
    "skip_no_moc_mom": "without $\\mathcal{L}_{MOC}$ and $\\mathcal{L}_{MOM}$ (the default)",
    "skip_minimal": "without all three",
}


def _paired_tables(steps, readout: str, first: str, log: Path = LOG) -> str:
    """One table per protocol of paired differences: ``steps`` are (configuration, baseline, label)."""
    p = pd.concat([paired(base, [cfg], log, readout=readout) for cfg, base, _ in steps])
    out = []
    for proto, title in PROTOCOLS.items():
        recs = []
        for cfg, base, what in steps:
            rec = {first: what}
            sel = p[(p["config"] == cfg) & (p["base"] == base) & (p["protocol"] == proto)]
            for ds in [*DEV_SETS, "all"]:
                key = "mean of 4 (± SD over sets)" if ds == "all" else ds
                rec[key] = _diff_cell(sel[sel["dataset"] == ds])
            recs.append(rec)
        out.append(f"**Change in NMI, {title}**\n\n" + _md(pd.DataFrame(recs)))
    return "\n".join(out)


def ablation_table(log: Path = LOG) -> str:
    """Paired differences over seeds of each ablation against the model with every part on."""
    steps = [(cfg, "pca_skip", what) for cfg, what in ABLATIONS.items()]
    return _paired_tables(steps, DEFAULT_READOUT_RULE, "change to the model with all parts on", log)


#: design steps before the ablations: (configuration, its baseline, what it changes)
STEPS = [
    ("pca_inputs", "v0_all_features", "50 input PCs instead of all features"),
    ("pca_skip", "pca_inputs", "a linear path from the PCs"),
    ("pca_inputs_latent64", "pca_inputs", "a 64-dimensional embedding instead of 32"),
]


def steps_table(log: Path = LOG) -> str:
    """Paired differences of each design step on the RNA encoder's embedding (the read-out changed meanwhile)."""
    return _paired_tables(STEPS, "rna", "step", log)


#: read-out rule whose rows compare like with like across the ablation configurations
DEFAULT_READOUT_RULE = "joint_gscale_tol"


#: the depth sweep's full-depth rows the quality table shows, and their names there
FULL_DEPTH_ROWS = {
    "scI2CL": "scI2CL",
    "scI2CL fused (paper)": "scI2CL, fused read-out",
    "scI2CL RNA encoder": "scI2CL, RNA encoder",
    "scI2CL ATAC encoder": "scI2CL, ATAC encoder",
    "RNA PCA": "RNA PCA",
    "ATAC LSI": "ATAC LSI",
    "PCA+LSI": "PCA+LSI",
    "WNN (muon)": "WNN (muon)",
    "MOFA+": "MOFA+",
}


def _nmi_rows(df: pd.DataFrame, names: dict, sets: list[str], mean_col: str | None) -> str:
    recs = []
    for m, label in names.items():
        sel = df[df["method"] == m]
        if sel.empty:
            continue
        rec = {"method": label}
        rec.update({ds: _cell(sel.loc[sel["dataset"] == ds, "nmi"]) for ds in sets})
        if mean_col:
            means = sel.groupby("dataset")["nmi"].mean().reindex(sets)
            rec[mean_col] = f"{means.mean():.3f}" if means.notna().all() else "n/a"
        recs.append(rec)
    return _md(pd.DataFrame(recs))


def quality_table(depth: Path = DEPTH, quality: Path = QUALITY) -> str:
    """The default against its read-outs and the peers, mean ± SD over seeds.

    The development sets' numbers are the depth sweep's full-depth run
    (``results/depth_sweep.csv`` at ``rna_fraction`` 1, today's code): the one
    run that chapter 3's depth section shows too. The simulator's (a sanity
    check, with the ablations) come from ``sci2cl_quality.csv``.
    """
    d = pd.read_csv(depth)
    d = d[d["rna_fraction"] == 1.0]
    q = pd.read_csv(quality)
    q = q[q["dataset"] == "simulated"]
    out = []
    for p, title in PROTOCOLS.items():
        sets = [ds for ds in DEV_SETS if ds in set(d["dataset"])]
        out.append(
            f"**NMI, {title}**, development sets at full depth, mean ± SD over seeds 0-2\n\n"
            + _nmi_rows(d[d["protocol"] == p], FULL_DEPTH_ROWS, sets, "mean of 4")
        )
        if not q.empty:
            sim = q[q["protocol"] == p]
            names = {m: m for m in dict.fromkeys(sim["method"])}
            out.append(
                f"**NMI, {title}**, the simulator (sanity check; `sci2cl_quality.csv`)\n\n"
                + _nmi_rows(sim, names, ["simulated"], None)
            )
    return "\n".join(out)


def speed_table(path: Path = SPEED) -> str:
    """Default training time and memory per dataset (``sci2cl_speed speed``)."""
    df = pd.read_csv(path)
    t = pd.DataFrame(
        {
            "dataset": df["dataset"],
            "cells": df["cells"],
            "genes + peaks": df["genes"].astype(str) + " + " + df["peaks"].astype(str),
            "threads": df["threads"],
            "epochs": df["epochs"],
            "seconds": df["seconds"].round(0).astype(int),
            "s / epoch": df["s_per_epoch"].round(2),
            "memory added by training (MB)": df["peak_mb"].round(0).astype(int),
        }
    )
    return _md(t)


def scaling_table(path: Path = SCALING) -> str:
    """Training from a backed file at 100k-1M cells (``benchmarks.sci2cl_scaling``)."""
    df = pd.read_csv(path).sort_values("cells")
    t = pd.DataFrame(
        {
            "cells": df["cells"].map("{:,}".format),
            "genes + peaks": df["genes"].astype(str) + " + " + df["peaks"].astype(str),
            "file (GB)": df["file_gb"].round(2),
            "s / epoch": df["s_per_epoch"].round(0).astype(int),
            "CPU s / epoch": df["cpu_s_per_epoch"].round(0).astype(int),
            "CPU s / epoch per 100k cells": (df["cpu_s_per_epoch"] / df["cells"] * 1e5).round(1),
            "set-up s": df["s_setup"].round(0).astype(int),
            "embedding s": df["s_embed"].round(0).astype(int),
            "peak RSS (MB)": df["peak_rss_mb"].round(0).astype(int),
            "load (1 min)": df["load_1min"].round(1),
        }
    )
    return _md(t)


def scaling_figure(path: Path = SCALING, out: Path = OUT / "sci2cl_scaling.png") -> Path:
    """Seconds per epoch and peak memory against cells (log-log), with the linear reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    df = pd.read_csv(path).sort_values("cells")
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
    n = df["cells"].to_numpy()
    ax[0].loglog(n, df["cpu_s_per_epoch"], "o-", color="#1f77b4", label="CPU time")
    ax[0].loglog(
        n, df["s_per_epoch"], "s:", color="#1f77b4", alpha=0.5, label="wall time (shared machine)"
    )
    ax[0].loglog(
        n, df["cpu_s_per_epoch"].iloc[0] * n / n[0], "--", color="grey", label="linear in cells"
    )
    ax[0].set(xlabel="cells", ylabel="seconds per epoch", title="Training time (1 thread)")
    ax[0].legend(frameon=False)
    ax[1].semilogx(n, df["peak_rss_mb"] / 1024, "o-", color="#1f77b4")
    ax[1].axhline(4, ls="--", color="grey", label="4 GB target")
    ax[1].set(xlabel="cells", ylabel="peak RSS (GB)", title="Memory (data read from disk)")
    ax[1].set_ylim(0, max(4.5, df["peak_rss_mb"].max() / 1024 * 1.1))
    ax[1].legend(frameon=False)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def lightning_table(path: Path = LIGHTNING) -> str:
    """Lightning vs the former loop on kidney (``benchmarks.archive.lightning_overhead``), mean ± SD over seeds."""
    from benchmarks.archive.lightning_overhead import summary

    s = summary(pd.read_csv(path))
    rows = []
    for impl, g in s.groupby("impl", sort=False):
        rows.append(
            {
                "training": {"loop": "hand-written loop", "lightning": "Lightning"}[impl],
                "seeds": len(g),
                "epochs": _cell(g["epochs"]),
                "CPU s / epoch": _cell(g["cpu_s_per_epoch"]),
                "wall s / epoch": _cell(g["wall_s_per_epoch"]),
                "best held-out loss": _cell(g["best_val_loss"]),
            }
        )
    df = pd.read_csv(path)
    v = df[df.stage == "joint"].pivot_table(
        index=["seed", "epoch"], columns="impl", values="val_loss"
    )
    gap = ((v["lightning"] - v["loop"]).abs() / v["loop"]).dropna().groupby("seed").max()
    note = (
        f"\nLargest gap between the two held-out loss curves, per seed, over the joint epochs both ran "
        f"(relative to the loop's loss): {', '.join(f'{x:.1%}' for x in gap)}.\n"
        if len(gap)
        else ""
    )
    return _md(pd.DataFrame(rows)) + note


def shared_block_table(path: Path = GATE) -> str:
    """The shared block's weights against the joint read-out without it, paired over seeds.

    Per protocol and read-out: the mean paired NMI difference over the real development
    set-fractions, how many of them gain or lose (mean beyond one SD over seeds), the
    largest loss, and the simulator regimes' paired differences.
    """
    log = pd.read_csv(path)
    p = log.pivot_table(
        index=["dataset", "rna_fraction", "protocol", "seed"], columns="readout", values="nmi"
    )
    diff = p.sub(p["joint"], axis=0).drop(columns="joint")
    g = diff.groupby(level=[0, 1, 2])
    mean, sd = g.mean(), g.std(ddof=1)
    sim = mean.index.get_level_values(0).str.startswith("simulated")
    rows = []
    for proto, title in PROTOCOLS.items():
        at = mean.index.get_level_values(2) == proto
        m, s = mean[~sim & at], sd[~sim & at]
        for name in diff.columns:
            rec = {
                "protocol": title,
                "read-out": name + (" (default)" if name == DEFAULT_SHARED else ""),
                f"mean over {len(m)} real set-fractions": f"{m[name].mean():+.3f}",
                "gains": int((m[name] > s[name]).sum()),
                "losses": int((m[name] < -s[name]).sum()),
                "largest loss": f"{m[name].min():+.3f}",
            }
            for (ds, _, _), v in mean[sim & at][name].items():
                rec[ds.replace("simulated_", "sim. ")] = f"{v:+.3f}"
            rows.append(rec)
    return _md(pd.DataFrame(rows))


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    files = {
        "sci2cl_dev.md": dev_table(),
        "sci2cl_steps.md": steps_table(),
        "sci2cl_ablation.md": ablation_table(),
    }
    if QUALITY.exists():
        files["sci2cl_quality.md"] = quality_table()
    if SPEED.exists():
        files["sci2cl_speed.md"] = speed_table()
    if SCALING.exists() and "peak_rss_mb" in pd.read_csv(SCALING).columns:
        files["sci2cl_scaling.md"] = scaling_table()
        print(f"wrote {scaling_figure()}")
    if LIGHTNING.exists():
        files["sci2cl_lightning.md"] = lightning_table()
    if GATE.exists():
        files["sci2cl_shared_block.md"] = shared_block_table()
    for name, text in files.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
