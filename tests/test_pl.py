import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sci2cl import pl  # noqa: E402


def test_grouped_bars_labels_missing_values_as_na():
    table = pd.DataFrame({"a": [0.5, np.nan], "b": [0.25, 0.75]}, index=["x", "y"])
    ax = pl.grouped_bars(table, title="t", ylabel="NMI")
    assert [t.get_text() for t in ax.texts] == ["0.50", "n/a", "0.25", "0.75"]
    assert ax.get_title() == "t" and ax.get_ylabel() == "NMI"
