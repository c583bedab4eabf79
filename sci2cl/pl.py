"""Plots. Every function takes the data or result first and returns the matplotlib Axes/Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = [
    "history",
    "loss_columns",
    "NOT_LOSSES",
    "LOSS_COLORS",
    "embedding_grid",
    "scatter",
    "spatial_map",
    "grouped_bars",
    "gsea_bars",
    "heatmap",
    "trajectory",
    "gene_trends",
]


#: columns of a training history that are bookkeeping, not losses (never drawn by :func:`history`)
NOT_LOSSES = frozenset({"epoch", "stage", "seconds", "cpu_seconds", "lr", "step"})
#: colours of the loss terms in :func:`history` (the total is drawn in black)
LOSS_COLORS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#999999",
)


def loss_columns(history: pd.DataFrame) -> list[str]:
    """The columns of ``history`` that :func:`history` draws: numeric, not in :data:`NOT_LOSSES`."""
    return [
        c
        for c in history.columns
        if c not in NOT_LOSSES and pd.api.types.is_numeric_dtype(history[c])
    ]


def history(history: pd.DataFrame, ax=None, title: str = "Training losses"):
    """Loss terms per epoch (log scale), the pretraining/joint boundary marked.

    The total training loss (``loss``) and the held-out loss (``val_loss``) are
    drawn as black dashed lines over the terms, so that a term equal to the
    total (the reconstruction during pretraining) stays visible under it. Time
    columns and other bookkeeping (:data:`NOT_LOSSES`) are not drawn.
    """
    if history is None or len(history) == 0:
        raise ValueError("no training history: train the model first")
    if "epoch" not in history:
        raise ValueError("history has no 'epoch' column: pass the model's .history")
    ax = ax or plt.subplots(figsize=(7, 3.8))[1]
    totals = {"loss": ("-", "training total"), "val_loss": (":", "held-out total")}
    terms = [c for c in loss_columns(history) if c not in totals]
    x = history["epoch"].to_numpy()
    for i, c in enumerate(terms):
        y = history[c].astype(float).abs()
        if not np.nanmax(y.to_numpy(), initial=0) > 0:
            continue
        ax.plot(x, y, color=LOSS_COLORS[i % len(LOSS_COLORS)], lw=1.6, label=c)
    for c, (ls, name) in totals.items():
        if c in history:
            y = history[c].astype(float).abs()
            ax.plot(x, y, color="k", lw=1.2, ls=(0, (4, 3)) if ls == "-" else ls, label=name)
    if "stage" in history and (history["stage"] == "joint").any():
        ax.axvline(
            history.loc[history["stage"] == "joint", "epoch"].min() - 0.5,
            color="grey",
            ls="--",
            lw=1,
            label="joint training starts",
        )
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss (|value|, log scale)", title=title)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return ax


MISSING_COLOR = "#DDDDDD"


def _labelled_points(
    xy, labels, what: str = "xy"
) -> tuple[np.ndarray, pd.Series, np.ndarray, list]:
    """Checked ``(n, 2)`` points, their labels as text, the missing-label mask, the classes.

    Missing labels (NaN/None, or their text "nan"/"None") are never a class.
    Raises ``ValueError`` naming the argument when the shapes do not fit.
    """
    pts = np.asarray(xy, dtype=float)
    if pts.ndim != 2 or pts.shape[1] < 2:
        raise ValueError(
            f"{what} must be an (n_cells, 2) array of coordinates, got shape {pts.shape}"
        )
    if len(pts) == 0:
        raise ValueError(f"{what} holds no cells: nothing to draw")
    lab = pd.Series(np.asarray(labels, dtype=object).ravel())
    if len(lab) != len(pts):
        raise ValueError(
            f"labels has {len(lab)} entries for {len(pts)} cells in {what}; pass one label per cell"
        )
    missing = lab.isna().to_numpy() | lab.astype(str).isin(["nan", "None", "<NA>"]).to_numpy()
    text = lab.astype(str)
    return pts[:, :2], text, missing, sorted(text[~missing].unique())


def _class_colors(n: int):
    """A colour map with ``n`` distinct colours.

    tab10 up to 10, tab20 up to 20, then tab20, tab20b and tab20c joined (60);
    beyond that colours repeat (the legend names the classes).
    """
    from matplotlib.colors import ListedColormap

    if n <= 10:
        return plt.get_cmap("tab10", max(n, 1))
    if n <= 20:
        return plt.get_cmap("tab20", n)
    pool = [c for name in ("tab20", "tab20b", "tab20c") for c in plt.get_cmap(name).colors]
    return ListedColormap([pool[i % len(pool)] for i in range(n)])


def _class_legend(ax, title: str, n: int) -> None:
    """The classes' legend right of the axes, readable at the page's width (two columns past 16)."""
    ax.legend(fontsize=8, markerscale=2.5, title=title or None, loc="center left",
              bbox_to_anchor=(1, 0.5), frameon=False, ncol=2 if n > 16 else 1,
              columnspacing=0.8, handletextpad=0.3)  # fmt: skip


def _draw_classes(ax, pts, text, missing, cats, cmap, s) -> None:
    """Missing labels in grey (counted in the legend), then one colour per class."""
    if missing.any():
        ax.scatter(*pts[missing].T, s=s, color=MISSING_COLOR, label=f"unlabelled ({missing.sum()})",
                   rasterized=True)  # fmt: skip
    for i, c in enumerate(cats):
        sel = ~missing & (text == c).to_numpy()
        ax.scatter(*pts[sel].T, s=s, color=cmap(i), label=c, rasterized=True)


def embedding_grid(
    coords: dict[str, np.ndarray], labels, title: str = "", ncols: int = 4, s: float = 3
):
    """One 2-D scatter per method, coloured by (true) label, shared legend.

    Missing labels (NaN/None) are drawn in light grey, never as a class.
    """
    if not coords:
        raise ValueError("coords is empty: pass {method: (n_cells, 2) array}")
    checked = {
        name: _labelled_points(xy, labels, f"coords[{name!r}]") for name, xy in coords.items()
    }
    _, text, missing, cats = next(iter(checked.values()))
    cmap = _class_colors(len(cats))
    n = len(coords)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(
        nrows, min(ncols, n), figsize=(3.2 * min(ncols, n), 3.2 * nrows), squeeze=False
    )
    for ax, (name, (pts, *_)) in zip(axes.ravel(), checked.items()):
        _draw_classes(ax, pts, text, missing, cats, cmap, s)
        ax.set(title=name, xlabel="UMAP 1", ylabel="UMAP 2", xticks=[], yticks=[])
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=c) for i, c in enumerate(cats)
    ]
    if missing.any():
        handles.append(plt.Line2D([], [], marker="o", ls="", color=MISSING_COLOR,
                                  label=f"unlabelled ({missing.sum()})"))  # fmt: skip
    fig.legend(
        handles=handles,
        loc="center left",
        bbox_to_anchor=(1.0, 0.5),
        fontsize=7,
        title="true label",
    )
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def spatial_map(
    xy: np.ndarray,
    labels,
    ax=None,
    title: str = "",
    legend_title: str = "",
    s: float = 6,
    invert_y: bool = False,
    unit: str = "",
):
    """Spots ``(n, 2)`` at their tissue coordinates, coloured by a categorical label.

    Missing labels (NaN/None) are drawn in light grey and counted in the
    legend ("unlabelled (n)"), never given a colour of their own class.
    ``invert_y`` puts the first row at the top, as images (Visium) are shown.
    """
    pts, text, missing, cats = _labelled_points(xy, labels)
    ax = ax or plt.subplots(figsize=(5, 4.5))[1]
    _draw_classes(ax, pts, text, missing, cats, _class_colors(len(cats)), s)
    suffix = f" ({unit})" if unit else ""
    ax.set(title=title, xlabel=f"x{suffix}", ylabel=f"y{suffix}", aspect="equal")
    if invert_y:
        ax.invert_yaxis()
    _class_legend(ax, legend_title, len(cats) + int(missing.any()))
    return ax


def scatter(
    xy: np.ndarray,
    labels,
    ax=None,
    title: str = "",
    legend_title: str = "",
    s: float = 4,
    highlight=None,
):
    """2-D scatter coloured by a categorical label; ``highlight`` (bool mask) drawn as black rings.

    Missing labels (NaN/None) are drawn in light grey, never as a class.
    """
    pts, text, missing, cats = _labelled_points(xy, labels)
    if highlight is not None:
        h = np.asarray(highlight)
        if h.shape != (len(pts),) or h.dtype != bool:
            raise ValueError(
                f"highlight must be a boolean mask of the {len(pts)} cells, got "
                f"{h.dtype} of shape {h.shape}"
            )
    ax = ax or plt.subplots(figsize=(5, 4.5))[1]
    _draw_classes(ax, pts, text, missing, cats, _class_colors(len(cats)), s)
    if highlight is not None:
        ax.scatter(
            pts[h, 0],
            pts[h, 1],
            s=s * 4,
            facecolors="none",
            edgecolors="k",
            linewidths=0.5,
            label="flagged",
        )
    ax.set(title=title, xlabel="dimension 1", ylabel="dimension 2", xticks=[], yticks=[])
    _class_legend(ax, legend_title, len(cats) + int(missing.any()))
    return ax


def grouped_bars(
    table: pd.DataFrame,
    ax=None,
    title: str = "",
    ylabel: str = "",
    ylim=(0, 1),
    colors: dict[str, str] | None = None,
):
    """Grouped bars of a wide table (rows: groups on the x axis, columns: bars).

    ``colors`` maps each column to its colour (e.g. the book's one colour per method);
    ``None``: matplotlib's cycle. A column missing from ``colors`` raises ``KeyError``.
    Each bar carries its value up to 24 bars; beyond that the labels would not
    read at a page's width and are left out (show the table beside the figure).
    """
    many = table.size > 24  # too many bars to label each: the values belong in a table
    width = min(11.0, 0.2 * table.size + 2) if many else 1.2 * len(table) + 2
    ax = ax or plt.subplots(figsize=(max(5, width), 4 if many else 3.5))[1]
    if colors is not None:
        missing = [c for c in table.columns if c not in colors]
        if missing:
            raise KeyError(f"colors has no colour for the columns {missing}")
    kw = {} if colors is None else {"color": [colors[c] for c in table.columns]}
    table.plot.bar(ax=ax, rot=0, width=0.8, **kw)
    ax.set(title=title, ylabel=ylabel, ylim=ylim, xlabel=table.index.name or "")
    for cont, col in zip(ax.containers, table.columns):  # missing values: "n/a", not a 0.00 bar
        vals = table[col].to_numpy(dtype=float)
        if not many:
            labels = [f"{v:.2f}" if np.isfinite(v) else "n/a" for v in vals]
            ax.bar_label(cont, labels, fontsize=7)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return ax


def modality_weights(weights: pd.DataFrame, groups, ax=None, title: str = "Modality weights"):
    """Mean per-cell modality weight by group, as stacked horizontal bars.

    Parameters
    ----------
    weights
        Output of :func:`sci2cl.tl.modality_weights`, ``(n_cells, n_modalities)``.
    groups
        Group of each cell (e.g. the cell-type annotation), length ``n_cells``.
    """
    groups = np.asarray(groups).astype(str)
    if len(groups) != len(weights):
        raise ValueError(f"{len(groups)} group labels for {len(weights)} cells")
    mean = weights.groupby(groups).mean()
    counts = pd.Series(groups).value_counts()
    mean = mean.loc[mean.iloc[:, 0].sort_values().index]
    ax = ax or plt.subplots(figsize=(7, 0.3 * len(mean) + 1.5))[1]
    mean.plot.barh(
        stacked=True, ax=ax, width=0.8, color=["#4c72b0", "#dd8452", "#55a868"][: mean.shape[1]]
    )
    ax.axvline(0.5, color="k", lw=0.8, ls="--")
    ax.set_yticks(range(len(mean)), [f"{g} (n={counts[g]})" for g in mean.index])
    ax.set(xlim=(0, 1), xlabel="mean weight per cell", ylabel="", title=title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1, 0.5))
    return ax


def gsea_bars(
    res: pd.DataFrame,
    n: int = 10,
    ax=None,
    title: str = "GSEA (prerank)",
    alpha: float = 0.05,
):
    """Normalised enrichment scores of the ``n`` terms with the lowest FDR q-value.

    Terms at FDR q-value below ``alpha`` are drawn in colour (red: enriched
    among the subcluster's up-ranked genes, blue: among its down-ranked ones),
    the others in grey and marked "n.s."; the title counts the significant
    terms of ``res``, so a panel of non-significant sets says so.
    """
    d = res.copy()
    d["NES"] = d["NES"].astype(float)
    d["FDR q-val"] = d["FDR q-val"].astype(float)
    n_sig = int((d["FDR q-val"] < alpha).sum())
    d = d.sort_values("FDR q-val").head(n).iloc[::-1]
    ax = ax or plt.subplots(figsize=(8, 0.4 * len(d) + 1.4))[1]
    sig = (d["FDR q-val"] < alpha).to_numpy()
    colors = np.where(sig, np.where(d["NES"] > 0, "#c0392b", "#2e6da4"), "#bbbbbb")
    labels = [t[:60] + ("" if s else "  (n.s.)") for t, s in zip(d["Term"], sig, strict=True)]
    ax.barh(labels, d["NES"], color=colors)
    ax.axvline(0, color="k", lw=0.8)
    head = f"{n_sig} of {len(res)} sets at FDR < {alpha:g}"
    ax.set(xlabel="normalised enrichment score (NES)", ylabel="gene set",
           title=f"{title}\n{head}")  # fmt: skip
    return ax


def heatmap(
    table: pd.DataFrame,
    ax=None,
    title: str = "",
    cbar_label: str = "",
    cmap: str = "RdBu_r",
    vmin=None,
    vmax=None,
    fmt="{:.2f}",
):
    """Annotated heat map of a small table."""
    ax = ax or plt.subplots(figsize=(0.8 * table.shape[1] + 2.5, 0.5 * table.shape[0] + 1.5))[1]
    im = ax.imshow(table.values.astype(float), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(table.shape[1]), table.columns, rotation=40, ha="right")
    ax.set_yticks(range(table.shape[0]), table.index)
    for i in range(table.shape[0]):
        for j in range(table.shape[1]):
            ax.text(j, i, fmt.format(table.values[i, j]), ha="center", va="center", fontsize=7)
    ax.figure.colorbar(im, ax=ax, label=cbar_label)
    ax.set(title=title)
    return ax


def trajectory(
    coords: np.ndarray, pseudotime, slingshot=None, labels=None, ax=None, title: str = "Trajectory"
):
    """Cells on the 2-D view coloured by pseudotime, with Slingshot's lineage curves."""
    ax = ax or plt.subplots(figsize=(5.5, 4.5))[1]
    sc_ = ax.scatter(coords[:, 0], coords[:, 1], c=pseudotime, s=5, cmap="viridis", rasterized=True)
    ax.figure.colorbar(sc_, ax=ax, label="pseudotime")
    if slingshot is not None:
        for i, curve in enumerate(slingshot.curves):
            pts = curve.points_interp[curve.order]
            ax.plot(
                pts[:, 0], pts[:, 1], color="k", lw=2, label="lineage curve" if i == 0 else None
            )
    if labels is not None:
        lab = pd.Series(np.asarray(labels).astype(str))
        for c in lab.unique():
            m = (lab == c).to_numpy()
            ax.annotate(
                c,
                coords[m].mean(0),
                fontsize=8,
                ha="center",
                weight="bold",
                bbox={"boxstyle": "round", "fc": "w", "alpha": 0.7},
            )
    ax.set(title=title, xlabel="UMAP 1", ylabel="UMAP 2")
    if slingshot is not None:
        ax.legend(fontsize=8)
    return ax


def gene_trends(
    pseudotime,
    expr: pd.DataFrame,
    ax=None,
    n_bins: int = 20,
    title: str = "Gene trends along pseudotime",
    bins: str = "width",
    min_cells: int = 5,
):
    """Mean expression of genes (columns of ``expr``) in pseudotime bins, with its standard error.

    Cells with a finite pseudotime are cut into ``n_bins`` bins: ``bins="width"``
    (the default), bins of equal pseudotime width, each drawn at its centre,
    bins with fewer than ``min_cells`` cells left out (where cells are few the
    band widens instead of the line jumping); ``"cells"``, bins of equal cell
    counts, drawn at their median pseudotime (several bins share one place
    where many cells do). Each gene's bin means (band: plus or minus one
    standard error) are divided by its largest bin mean, so that genes of
    different levels share one axis. Binned means rather than a robust
    smoother: on sparse counts a robust smoother treats the non-zero cells as
    outliers and draws a flat line.
    """
    pt = np.asarray(pseudotime, float)
    if pt.shape[0] != len(expr):
        raise ValueError(f"pseudotime has {pt.shape[0]} values but expr has {len(expr)} rows")
    if bins not in ("width", "cells"):
        raise ValueError(f"bins must be 'width' or 'cells', got {bins!r}")
    ok = np.isfinite(pt)
    if ok.sum() < 2 * n_bins:
        raise ValueError(
            f"{int(ok.sum())} cells have a finite pseudotime: need at least 2 * n_bins = "
            f"{2 * n_bins}; lower n_bins"
        )
    ax = ax or plt.subplots(figsize=(6.5, 3.8))[1]
    t = pt[ok]
    if bins == "cells":
        groups = np.array_split(np.argsort(t, kind="stable"), n_bins)
        centre = np.array([np.median(t[b]) for b in groups])
        how = f"{n_bins} bins of equal cell counts"
    else:
        edges = np.linspace(t.min(), t.max(), n_bins + 1)
        which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, n_bins - 1)
        keep = [i for i in range(n_bins) if (which == i).sum() >= min_cells]
        groups = [np.flatnonzero(which == i) for i in keep]
        centre = np.array([(edges[i] + edges[i + 1]) / 2 for i in keep])
        how = f"{n_bins} bins of equal width, those with {min_cells}+ cells"
    for g in expr.columns:
        y = expr[g].to_numpy(float)[ok]
        mean = np.array([y[b].mean() for b in groups])
        se = np.array([y[b].std(ddof=1) / np.sqrt(len(b)) for b in groups])
        top = mean.max() if mean.max() > 0 else 1.0
        (line,) = ax.plot(centre, mean / top, marker="o", ms=3, lw=1.6, label=g)
        ax.fill_between(
            centre, (mean - se) / top, (mean + se) / top, color=line.get_color(), alpha=0.2, lw=0
        )
    ax.set(xlabel=f"pseudotime ({how})", ylabel="mean expression / its maximum", title=title)
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return ax
