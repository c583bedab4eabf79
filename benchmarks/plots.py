"""Figures of the benchmark tables (dataset x method), used by the runners and chapter 03."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "METHOD_COLORS",
    "method_color",
    "benchmark_heatmap",
    "benchmark_bars",
    "time_vs_quality",
    "depth_curves",
    "readout_choices",
    "batch_tradeoff",
]


#: one colour per method in every figure of the book (Okabe-Ito, Tol and tab10 hues, far apart)
METHOD_COLORS: dict[str, str] = {
    "scI2CL": "#D55E00",
    "scRCL": "#D55E00",
    "scRCL + Leiden": "#E69F00",
    "RNA PCA": "#0072B2",
    "PCA": "#0072B2",
    "ATAC LSI": "#56B4E9",
    "PCA+LSI": "#009E73",
    "WNN (muon)": "#CC79A7",
    "WNN (Harmony)": "#CC79A7",
    "MOFA+": "#882255",
    "MultiVI": "#7F7F7F",
    "GLUE": "#332288",
    "scVI": "#17BECF",
    "PCA + Leiden": "#9467BD",
    "DESC": "#8C564B",
    "DESC + KMeans": "#C49C94",
    "scVI+PeakVI": "#17BECF",
    "Leiden": "#9467BD",
    "BANKSY": "#BCBD22",
    "GraphST": "#1F3A5F",
}


def method_color(method: str) -> str:
    """The book's colour of a method; variants (``"scI2CL (seed 1)"``, ``"scI2CL + L_MOC"``) share it.

    Raises ``KeyError`` naming the method when it has no colour: add it to
    :data:`METHOD_COLORS`, so that no figure falls back to a cycling colour.
    """
    if method in METHOD_COLORS:
        return METHOD_COLORS[method]
    for name in sorted(METHOD_COLORS, key=len, reverse=True):
        if method.startswith(name):
            return METHOD_COLORS[name]
    raise KeyError(f"no colour for method {method!r}: add it to benchmarks.plots.METHOD_COLORS")


def _agg(df: pd.DataFrame, metric: str, protocol: str) -> pd.DataFrame:
    d = df[df["protocol"] == protocol]
    return d.groupby(["dataset", "method"])[metric].mean().unstack("method")


def benchmark_heatmap(df: pd.DataFrame, metric: str = "nmi", protocol: str = "kmeans", ax=None):
    """Dataset x method heat map of a metric (mean over seeds), values annotated."""
    t = _agg(df, metric, protocol)
    ax = ax or plt.subplots(figsize=(1.3 * t.shape[1] + 2.5, 0.7 * t.shape[0] + 2))[1]
    im = ax.imshow(t.values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(t.shape[1]), t.columns, rotation=40, ha="right")
    ax.set_yticks(range(t.shape[0]), t.index)
    for i in range(t.shape[0]):
        for j in range(t.shape[1]):
            v = t.values[i, j]
            if np.isfinite(v):
                ax.text(
                    j,
                    i,
                    f"{v:.2f}",
                    ha="center",
                    va="center",
                    color="w" if v < 0.6 else "k",
                    fontsize=11,
                    fontweight="bold",
                )
    ax.figure.colorbar(im, ax=ax, label=metric.upper())
    ax.set(
        xlabel="method",
        ylabel="dataset",
        title=f"{metric.upper()} ({protocol} protocol, mean over seeds)",
    )
    return ax


def benchmark_bars(df: pd.DataFrame, protocol: str = "kmeans", metrics=("nmi", "ari")):
    """Bars of each metric per dataset and method, with the min-max spread over seeds."""
    d = df[df["protocol"] == protocol]
    datasets = list(dict.fromkeys(d["dataset"]))
    methods = list(dict.fromkeys(d["method"]))
    fig, axes = plt.subplots(
        len(metrics), 1, figsize=(max(6, 1.6 * len(datasets)), 3 * len(metrics)), squeeze=False
    )
    w = 0.8 / len(methods)
    for ax, m in zip(axes[:, 0], metrics):
        g = d.groupby(["dataset", "method"])[m].agg(["mean", "min", "max"])
        for j, meth in enumerate(methods):
            x = np.arange(len(datasets)) + j * w
            mean = [
                g.loc[(ds, meth), "mean"] if (ds, meth) in g.index else np.nan for ds in datasets
            ]
            lo = [
                mean[i] - g.loc[(ds, meth), "min"] if (ds, meth) in g.index else 0
                for i, ds in enumerate(datasets)
            ]
            hi = [
                g.loc[(ds, meth), "max"] - mean[i] if (ds, meth) in g.index else 0
                for i, ds in enumerate(datasets)
            ]
            ax.bar(x, mean, w, yerr=[lo, hi], capsize=2, label=meth, color=method_color(meth))
        ax.set_xticks(np.arange(len(datasets)) + 0.4 - w / 2, datasets)
        ax.set(
            ylabel=m.upper(),
            ylim=(0, 1),
            title=f"{m.upper()} per dataset ({protocol}; bars: mean, whiskers: seed range)",
        )
    # one legend above the panels, outside every bar
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles, labels, loc="lower center", ncol=min(len(methods), 5), fontsize=9,
        bbox_to_anchor=(0.5, 1.0), frameon=False,
    )  # fmt: skip
    axes[-1, 0].set_xlabel("dataset")
    fig.tight_layout()
    return fig


def time_vs_quality(df: pd.DataFrame, metric: str = "nmi", protocol: str = "kmeans", ax=None):
    """Scatter of wall time (log) against a metric, one point per dataset and method."""
    d = (
        df[df["protocol"] == protocol]
        .groupby(["dataset", "method"])[[metric, "seconds"]]
        .mean()
        .reset_index()
    )
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for meth, g in d.groupby("method"):
        ax.scatter(
            g["seconds"].clip(lower=0.01), g[metric], label=meth, s=30, color=method_color(meth)
        )
    ax.set_xscale("log")
    ax.set(
        xlabel="wall time (s, log scale)",
        ylabel=metric.upper(),
        title=f"Time vs. {metric.upper()} ({protocol})",
    )
    ax.legend(fontsize=7)
    return ax


def depth_curves(df: pd.DataFrame, protocol: str = "kmeans", metric: str = "nmi", methods=None):
    """NMI against the share of RNA counts kept, one panel per dataset, one line per method.

    Points are means over seeds, bars their SD (none for a method run at one
    seed, drawn with open markers); a method's encoders share its colour, the
    RNA encoder dashed, the ATAC encoder dotted. ``df``: the depth sweep's rows.
    """
    d = df[df["protocol"] == protocol]
    methods = methods or list(dict.fromkeys(d["method"]))
    datasets = list(dict.fromkeys(d["dataset"]))
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(3.6 * len(datasets), 3.9), sharey=True, squeeze=False
    )
    g = d.groupby(["dataset", "method", "rna_fraction"])[metric].agg(["mean", "std", "count"])
    for ax, ds in zip(axes[0], datasets):
        for m in methods:
            if (ds, m) not in g.droplevel("rna_fraction").index:
                continue
            t = g.loc[(ds, m)].sort_index()
            one = t["count"] < 2
            ls, mk = (
                ("--", "v") if "RNA encoder" in m else (":", "^") if "encoder" in m else ("-", "o")
            )
            ax.errorbar(
                t.index, t["mean"], yerr=t["std"].fillna(0), color=method_color(m), ls=ls,
                lw=2.2 if m == "scI2CL" else 1.3, marker=mk, ms=4, capsize=2, label=m,
                mfc="white" if one.all() else method_color(m),
            )  # fmt: skip
        ax.set_xscale("log")
        ax.set_xticks([0.1, 0.3, 0.5, 1.0], ["10 %", "30 %", "50 %", "100 %"])
        ax.minorticks_off()
        ax.set(title=ds, xlabel="share of RNA counts kept")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(f"{metric.upper()} ({protocol})")
    h, lab = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0, 1:]:  # methods missing from the first panel
        for hh, ll in zip(*ax.get_legend_handles_labels()):
            if ll not in lab:
                h, lab = [*h, hh], [*lab, ll]
    fig.legend(h, lab, loc="lower center", ncol=min(6, len(lab)), fontsize=9, frameon=False)
    fig.suptitle(f"{metric.upper()} against RNA depth ({protocol}; mean ± SD over seeds)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def readout_choices(df: pd.DataFrame, method: str = "scI2CL"):
    """The read-out's label-free choices per run against the share of RNA counts.

    Left: the RNA weight (``w_rna``); right, where the rows carry it, the share
    of cross-modal smoothing of RNA (``smoothing``). One point per seed.
    """
    d = df[(df["method"] == method) & (df["protocol"] == "kmeans")].dropna(subset=["w_rna"])
    cols = [("w_rna", "RNA weight", "modality weight")]
    if "smoothing" in d and d["smoothing"].notna().any():
        cols.append(("smoothing", "share of RNA from ATAC neighbours", "smoothing share"))
    fig, axes = plt.subplots(1, len(cols), figsize=(5.2 * len(cols), 3.8), squeeze=False)
    datasets = list(dict.fromkeys(d["dataset"]))
    for ax, (col, ylabel, what) in zip(axes[0], cols):
        for i, (ds, g) in enumerate(d.dropna(subset=[col]).groupby("dataset", sort=False)):
            x = g["rna_fraction"] * (1 + 0.06 * (i - (len(datasets) - 1) / 2))  # side by side
            ax.scatter(x, g[col], s=28, label=ds, marker="osD^v"[i % 5], alpha=0.85)
        ax.set_xscale("log")
        ax.set_xticks([0.1, 0.3, 0.5, 1.0], ["10 %", "30 %", "50 %", "100 %"])
        ax.minorticks_off()
        top = 1.05 if col == "w_rna" else 0.85
        ax.set(xlabel="share of RNA counts kept", ylabel=ylabel, ylim=(-0.05, top),
               title=f"{method}'s label-free {what}")  # fmt: skip
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8, title="dataset", loc="lower left")
    fig.tight_layout()
    return fig


def batch_tradeoff(scores: pd.DataFrame):
    """Bio-conservation against batch correction, one panel per batch case, one point per method.

    ``scores`` is :func:`benchmarks.batches.scores` (one row per case, method and seed); points
    are means over seeds with the seeds' SD as error bars; the methods run with their own batch
    options are hollow, in the colour of their family (scib's figure, Luecken et al. 2022).
    """
    cases = list(dict.fromkeys(scores["case"]))
    fig, axes = plt.subplots(1, len(cases), figsize=(3.6 * len(cases), 3.6), squeeze=False)
    g = scores.groupby(["case", "method", "batch_aware"])[["bio", "batch_score"]]
    m, sd = g.mean().reset_index(), g.std().reset_index()
    for ax, case in zip(axes[0], cases):
        for i, r in m[m["case"] == case].iterrows():
            c = method_color(r["method"])
            ax.errorbar(r["batch_score"], r["bio"], xerr=sd.loc[i, "batch_score"],
                        yerr=sd.loc[i, "bio"], fmt="o", ms=7, color=c,
                        mfc="white" if r["batch_aware"] else c, label=r["method"])  # fmt: skip
        ax.set(
            title=case, xlabel="batch correction (scib mean)", ylabel="bio-conservation (scib mean)"
        )
    legend = {}  # every method once, also those that ran on some cases only
    for ax in axes[0]:
        legend.update(zip(*reversed(ax.get_legend_handles_labels())))
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=4, fontsize=8,
               bbox_to_anchor=(0.5, -0.12))  # fmt: skip
    fig.suptitle("Several samples: conservation against batch mixing (hollow: the batch declared)")
    fig.tight_layout()
    return fig
