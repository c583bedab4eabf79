"""Batch correction of scI2CL's embeddings with Harmony (Korsunsky et al. 2019, harmonypy).

Harmony clusters the cells softly and moves each batch's cells within each cluster towards
the cluster's centre, with a penalty that favours clusters holding every batch. It corrects
cells of one type that sit apart by batch, while batches may differ in which types they hold,
which a global correction (one offset per batch) cannot do. It is fitted on the cells it
corrects, so an embedding is corrected over the cells embedded together.

harmonypy is licensed GPL-3.0 and is an optional dependency (``pip install "sci2cl[batch]"``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["BATCH_CORRECTIONS", "harmony", "require_harmony"]

#: how ``SCI2CL(batch_correction=...)`` corrects the embeddings of a model with a batch key
BATCH_CORRECTIONS = ("harmony", "none")


def require_harmony() -> None:
    """Raise an ``ImportError`` that says what to do when harmonypy is not installed."""
    try:
        import harmonypy  # noqa: F401
    except ImportError:
        raise ImportError(
            "batch_correction='harmony' (the default with setup_mudata(batch_key=...)) needs "
            "harmonypy (GPL-3.0, an optional dependency): pip install 'sci2cl[batch]', or pass "
            "batch_correction='none' to correct batches in the model's inputs and decoders only"
        ) from None


def harmony(z: np.ndarray, batch: np.ndarray, seed: int) -> np.ndarray:
    """``z`` ``(n_cells, d)`` corrected for ``batch`` ``(n_cells,)`` by Harmony, float32.

    Harmony's defaults (``theta=2``, its number of clusters), seeded by ``seed``. With fewer
    than two batches among the cells there is nothing to correct and ``z`` is returned as it is.
    """
    import harmonypy

    batch = np.asarray(batch)
    if len(np.unique(batch)) < 2:
        return z
    meta = pd.DataFrame({"batch": pd.Categorical(batch.astype(str))})
    ho = harmonypy.run_harmony(
        np.asarray(z, dtype=np.float64), meta, ["batch"], random_state=seed, verbose=False
    )
    return np.asarray(ho.Z_corr, dtype=np.float32)  # (n_cells, d) from harmonypy 2
