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
