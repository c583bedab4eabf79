import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from sci2cl import pl  # noqa: E402


def test_grouped_bars_labels_missing_values_as_na():
    table = pd.DataFrame({"a": [0.5, np.nan], "b": [0.25, 0.75]}, index=["x", "y"])
    ax = pl.grouped_bars(table, title="t", ylabel="NMI")
    assert [t.get_text() for t in ax.texts] == ["0.50", "n/a", "0.25", "0.75"]
    assert ax.get_title() == "t" and ax.get_ylabel() == "NMI"


def test_grouped_bars_draws_each_column_in_its_colour():
    import matplotlib.colors as mcolors

    table = pd.DataFrame({"a": [0.5, 0.2], "b": [0.25, 0.75]}, index=["x", "y"])
    ax = pl.grouped_bars(table, colors={"b": "#00ff00", "a": "#ff0000"})
    faces = [[mcolors.to_hex(p.get_facecolor()) for p in c] for c in ax.containers]
    assert faces == [["#ff0000", "#ff0000"], ["#00ff00", "#00ff00"]]
    with pytest.raises(KeyError, match="'b'"):
        pl.grouped_bars(table, colors={"a": "#ff0000"})


def test_modality_weights_plot_orders_groups_and_checks_lengths():
    w = pd.DataFrame({"rna": [0.9, 0.8, 0.2, 0.3], "atac": [0.1, 0.2, 0.8, 0.7]})
    ax = pl.modality_weights(w, ["T", "T", "NK", "NK"])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["NK (n=2)", "T (n=2)"]  # sorted by RNA weight
    widths = [p.get_width() for p in ax.containers[0]]
    np.testing.assert_allclose(widths, [0.25, 0.85])
    with pytest.raises(ValueError, match="group labels"):
        pl.modality_weights(w, ["T"])


def test_one_colour_per_method_and_variants_share_it():
    import matplotlib.colors as mcolors

    from benchmarks.plots import method_color

    assert method_color("scI2CL") == method_color("scI2CL + L_MOC + L_MOM")
    peers = ["RNA PCA", "ATAC LSI", "PCA+LSI", "WNN (muon)", "MOFA+", "MultiVI", "GLUE", "scI2CL"]
    rgb = np.array([mcolors.to_rgb(method_color(m)) for m in peers])
    gaps = np.linalg.norm(rgb[:, None] - rgb[None], axis=-1)[np.triu_indices(len(peers), 1)]
    assert gaps.min() > 0.29  # no two methods of one figure in near-identical shades
    with pytest.raises(KeyError, match="no colour for method 'SomeTool'"):
        method_color("SomeTool")


def test_benchmark_bars_use_the_book_colours():
    import matplotlib.colors as mcolors
    import pandas as pd

    from benchmarks import plots

    df = pd.DataFrame(
        [
            {"dataset": d, "method": m, "protocol": "kmeans", "seed": s, "nmi": 0.5, "ari": 0.3}
            for d in ("a", "b")
            for m in ("RNA PCA", "scI2CL")
            for s in (0, 1)
        ]
    )
    fig = plots.benchmark_bars(df)
    bars = [p for p in fig.axes[0].patches]
    got = {mcolors.to_hex(b.get_facecolor()) for b in bars}
    assert got == {plots.method_color("RNA PCA").lower(), plots.method_color("scI2CL").lower()}
    # the legend sits above the panels, not over the bars
    assert fig.axes[0].get_legend() is None and len(fig.legends) == 1


def test_spatial_map_greys_out_missing_labels_and_counts_them():
    xy = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)
    ax = pl.spatial_map(xy, ["a", None, "b", np.nan], title="t", legend_title="layer")
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["unlabelled (2)", "a", "b"]
    assert ax.get_title() == "t" and ax.get_aspect() == 1.0


def test_readout_choices_plot_one_point_per_run_and_the_smoothing_panel_only_with_its_column():
    from benchmarks import plots

    rows = [
        {"dataset": d, "method": "scI2CL", "protocol": p, "seed": s, "rna_fraction": f,
         "w_rna": 1.0 - 0.2 * (f < 1), "smoothing": 0.4 * (f < 1)}
        for d in ("a", "b") for p in ("kmeans", "leiden") for s in (0, 1, 2) for f in (0.1, 1.0)
    ]  # fmt: skip
    df = pd.DataFrame(rows)
    fig = plots.readout_choices(df)
    assert len(fig.axes) == 2
    for ax, col in zip(fig.axes, ("w_rna", "smoothing")):
        ys = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections])
        assert len(ys) == 12  # kmeans rows only: 2 sets x 3 seeds x 2 depths
        assert sorted(ys) == sorted(df.loc[df["protocol"] == "kmeans", col])
        assert ax.get_xlabel() == "share of RNA counts kept" and ax.get_title()
    assert len(plots.readout_choices(df.drop(columns="smoothing")).axes) == 1


def test_history_draws_losses_only_and_keeps_a_term_equal_to_the_total_visible():
    n = 12
    h = pd.DataFrame({
        "epoch": np.arange(n), "stage": ["pretrain"] * 6 + ["joint"] * 6,
        "rec": np.linspace(5, 2, n), "mse": np.linspace(1, 0.2, n),
        "seconds": np.arange(n) * 3.0, "cpu_seconds": np.arange(n) * 2.9,
    })  # fmt: skip
    h["loss"] = h["rec"] + np.where(h["stage"] == "joint", h["mse"], 0.0)
    h["val_loss"] = h["loss"] * 1.1
    assert pl.loss_columns(h) == ["rec", "mse", "loss", "val_loss"]
    ax = pl.history(h)
    drawn = {line.get_label(): line for line in ax.lines if not line.get_label().startswith("_")}
    assert set(drawn) == {"rec", "mse", "training total", "held-out total", "joint training starts"}
    # the reconstruction equals the total in pretraining: it is drawn in its own colour, under a
    # dashed total, so that both can be told apart
    assert drawn["rec"].get_color() != drawn["training total"].get_color()
    assert drawn["training total"].get_linestyle() != "-"
    np.testing.assert_allclose(drawn["rec"].get_ydata(), h["rec"])
    with pytest.raises(ValueError, match="train the model first"):
        pl.history(pd.DataFrame())


def test_gene_trends_follow_a_sparse_gene_that_rises_along_pseudotime():
    rng = np.random.default_rng(0)
    pt = rng.uniform(0, 1, 2000)
    rising = rng.poisson(0.05 + 0.6 * pt)  # mostly zeros, rises along pseudotime
    flat = rng.poisson(0.3, 2000)
    ax = pl.gene_trends(pt, pd.DataFrame({"Rising": rising, "Flat": flat}), n_bins=10)
    lines = {line.get_label(): line for line in ax.lines}
    y = lines["Rising"].get_ydata()
    assert np.all(np.diff(y[::3]) > 0) and y[-1] == pytest.approx(1.0) and y[0] < 0.3
    # a flat gene stays flat on its own scale (no stretching of noise to 0..1)
    assert lines["Flat"].get_ydata().min() > 0.6
    with pytest.raises(ValueError, match="expr has 3 rows"):
        pl.gene_trends(pt, pd.DataFrame({"g": [1, 2, 3]}))


def test_gene_trends_bins_of_equal_width_skip_sparse_stretches():
    """Most cells at the end of the path: equal-width bins spread along it and drop the empty
    stretch; equal-count bins pile up where the cells are."""
    rng = np.random.default_rng(1)
    pt = np.r_[rng.uniform(0, 1, 60), rng.uniform(2.0, 2.2, 20), rng.uniform(4.9, 5.0, 300)]
    expr = pd.DataFrame({"g": rng.poisson(1 + pt)})
    ax = pl.gene_trends(pt, expr, n_bins=10)
    x = ax.lines[0].get_xdata()
    assert np.all(np.diff(x) > 0.4) and len(x) == 4  # 0-0.5, 0.5-1, 2-2.5, 4.5-5
    ax = pl.gene_trends(pt, expr, n_bins=10, bins="cells")
    assert (ax.lines[0].get_xdata() > 4.8).sum() >= 7
    with pytest.raises(ValueError, match="bins must be"):
        pl.gene_trends(pt, expr, bins="quantile")


def test_grouped_bars_leave_out_value_labels_when_bars_are_many():
    table = pd.DataFrame(np.full((7, 6), 0.5), columns=list("abcdef"))
    assert len(pl.grouped_bars(table).texts) == 0
    assert len(pl.grouped_bars(table.iloc[:4, :3]).texts) == 12


def test_gsea_bars_grey_out_and_count_the_non_significant_sets():
    import matplotlib.colors as mcolors

    res = pd.DataFrame({
        "Term": ["up set", "down set", "weak set", "noise set"],
        "NES": [2.1, -1.8, 1.2, -0.4],
        "FDR q-val": [0.001, 0.02, 0.3, 0.9],
    })  # fmt: skip
    ax = pl.gsea_bars(res, n=3, title="g")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == ["weak set  (n.s.)", "down set", "up set"]  # top 3 by FDR, best on top
    grey = [np.allclose(mcolors.to_rgb(p.get_facecolor()), mcolors.to_rgb("#bbbbbb"))
            for p in ax.containers[0]]  # fmt: skip
    assert grey == [True, False, False]
    assert "2 of 4 sets at FDR < 0.05" in ax.get_title()
    ax = pl.gsea_bars(res.iloc[2:], title="g")
    assert "0 of 2 sets" in ax.get_title()


def test_many_classes_get_distinct_colours_and_a_readable_legend():
    import matplotlib.colors as mcolors

    rng = np.random.default_rng(0)
    labels = np.repeat([f"type {i}" for i in range(31)], 5)
    ax = pl.spatial_map(rng.normal(size=(len(labels), 2)), labels, legend_title="cell type")
    colours = {mcolors.to_hex(c.get_facecolor()[0]) for c in ax.collections}
    assert len(colours) == 31  # no two classes share a colour
    leg = ax.get_legend()
    assert leg._ncols == 2 and min(t.get_fontsize() for t in leg.get_texts()) >= 8
