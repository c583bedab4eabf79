"""What the analyses share: reading labels and embeddings, recording parameters."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..pp import DataValidationError


def _labels(data, key: str, what: str = "labels") -> pd.Series:
    """``obs[key]`` as strings with missing values kept missing (never the label "nan")."""
    if key not in data.obs:
        raise KeyError(f"{what} column {key!r} not in obs; available: {list(data.obs.columns)}")
    col = data.obs[key]
    return col.astype(object).where(col.notna(), None).map(lambda v: v if v is None else str(v))


def _obsm(data, key: str) -> np.ndarray:
    if key not in data.obsm:
        raise KeyError(
            f"obsm[{key!r}] missing (obsm has {list(data.obsm)}); compute the embedding first"
        )
    X = np.asarray(data.obsm[key])
    if not np.isfinite(X).all():
        raise DataValidationError(f"obsm[{key!r}] holds NaN or infinite values")
    return X


def check_names(data) -> None:
    """Refuse duplicated cell names (and, in a MuData, duplicated feature names), naming examples."""
    mods = dict(data.mod) if hasattr(data, "mod") else {"data": data}
    for where, idx in [("cell", data.obs_names)] + [
        (f"feature ({m})", a.var_names) for m, a in mods.items()
    ]:
        if idx.has_duplicates:
            dup = idx[idx.duplicated()].unique()[:3].tolist()
            raise DataValidationError(
                f"duplicated {where} names, e.g. {dup}: results could not be told apart. Make "
                "them unique first (obs_names_make_unique() / var_names_make_unique())"
            )


def record(data, key: str, params: dict, **results) -> None:
    """``data.uns[key] = {"params": params, **results}``, as scanpy records its analyses.

    Parameters left at ``None`` are not written (h5ad files cannot hold ``None``).
    """
    data.uns[key] = {"params": {k: v for k, v in params.items() if v is not None}, **results}
