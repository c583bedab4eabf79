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
