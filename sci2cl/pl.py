"""Plots. Every function takes the data or result first and returns the matplotlib Axes/Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["history"]


def history(history: pd.DataFrame, ax=None, title: str = "Training losses"):
    """Loss components per epoch (log scale), the pretraining/joint boundary marked."""
    if history is None or len(history) == 0:
        raise ValueError("no training history: train the model first")
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    skip = {"epoch", "stage", "seconds"}
    for c in history.columns:
        if c in skip:
            continue
        y = history[c].astype(float)
        if np.nanmax(np.abs(y)) == 0:
            continue
        ax.plot(history["epoch"], y.abs(), label=c)
    if "stage" in history and (history["stage"] == "joint").any():
        ax.axvline(history.loc[history["stage"] == "joint", "epoch"].min() - 0.5, color="grey", ls="--", lw=1)
    ax.set_yscale("log")
    ax.set(xlabel="epoch", ylabel="loss (|value|, log scale)", title=title)
    ax.legend(fontsize=8, ncol=2)
    return ax
