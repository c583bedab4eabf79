"""Verdicts and sentences of the book: the one rule that calls a difference a gain, loss or tie.

A difference measured on several seeds is a **gain** when its mean exceeds the
SD of the paired differences, a **loss** when it is below minus that SD, and a
**tie** otherwise; one seed gives **no verdict** (no spread). Every table and
chapter calls these functions, so that no chapter re-implements the rule. :func:`table`
shows a result table as the chapters print it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["verdict", "paired_differences", "comparison", "table"]


def verdict(mean: float, sd: float, n: int) -> str:
    """``"gain"``, ``"loss"``, ``"tie"`` or ``"no verdict"`` (fewer than 2 seeds) of a paired difference."""
    if n < 2:
        return "no verdict"
    sd = sd if np.isfinite(sd) else 0.0
    return "gain" if mean > sd else "loss" if mean < -sd else "tie"


def comparison(diffs, other: str) -> dict:
    """How a method compares with ``other`` from per-seed paired differences (method - other).

    Returns ``mean``, ``sd`` (NaN for one seed), ``n``, ``verdict`` and
    ``phrase``: "a tie with X (the difference is within its spread over
    seeds)", "ahead of X" or "behind X" (with "(one seed: no spread)").
    """
    d = pd.Series(diffs, dtype=float).dropna()
    mean = float(d.mean()) if len(d) else float("nan")
    sd = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    v = verdict(mean, sd, len(d))
    one = "" if len(d) > 1 else " (one seed: no spread)"
    if v == "tie":
        phrase = f"a tie with {other} (the difference is within its spread over seeds)"
    elif mean > 0:
        phrase = f"ahead of {other}{one}"
    else:
        phrase = f"behind {other}{one}"
    return {"mean": mean, "sd": sd, "n": len(d), "verdict": v, "phrase": phrase}


def paired_differences(
    df: pd.DataFrame,
    by: str,
    base: str,
    others,
    value: str = "nmi",
    keys=("dataset", "protocol", "seed"),
) -> pd.DataFrame:
    """Paired differences over seeds: each of ``others`` minus ``base`` (rows told apart by ``by``).

    One row per (other, dataset, protocol): ``mean``, ``std`` and ``count`` of
    the differences over the seeds both ran, and a verdict: ``gain`` when the
    mean exceeds the SD of the differences, ``loss`` when it is below minus
    the SD, else ``tie`` (a single seed gives no SD: ``no verdict``). The
    dataset ``"all"`` summarises the per-dataset means (their mean and SD).
    Columns ``method`` (the other) and ``base``.
    """
    keys = list(keys)
    b = df[df[by] == base].groupby(keys)[value].mean()
    rows = []
    for c in others:
        d = (df[df[by] == c].groupby(keys)[value].mean() - b).dropna()
        if d.empty:
            continue
        g = d.groupby(level=keys[:-1]).agg(["mean", "std", "count"]).reset_index()
        allds = g.groupby(keys[1:-1])["mean"].agg(["mean", "std", "count"]).reset_index()
        allds[keys[0]] = "all"
        for r in pd.concat([g, allds], ignore_index=True).to_dict("records"):
            rows.append(
                {
                    "method": c,
                    "base": base,
                    **r,
                    "verdict": verdict(r["mean"], r["std"], r["count"]),
                }
            )
    return pd.DataFrame(rows).round(4)


def _cell(v, digits: int) -> str:
    if isinstance(v, bool | np.bool_):
        return str(bool(v))
    if isinstance(v, int | np.integer):
        return f"{int(v):d}"
    if isinstance(v, float | np.floating):
        v = float(v)
        if v.is_integer():
            return f"{int(v):d}"
        return f"{v:.1e}" if abs(v) < 0.5 * 10**-digits else f"{v:.{digits}f}"
    return str(v)


def table(df: pd.DataFrame, digits: int = 3, missing: str = "n/a"):
    """``df`` as a chapter shows it: whole numbers without ``.0``, others to ``digits``, gaps as ``missing``.

    A number that would round to zero at ``digits`` (a p-value, say) is written in scientific notation.

    A pandas ``Styler`` (rendered as HTML by the notebook and the book); the data are not changed.
    ``missing`` stands for a cell with no value, e.g. a method that cannot run on a dataset.
    """
    return df.style.format(lambda v: _cell(v, digits), na_rep=missing)
