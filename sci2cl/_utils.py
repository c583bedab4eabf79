"""Small private helpers shared by the package's modules (no public API)."""

from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import scipy.sparse as sp


def dense(X) -> np.ndarray:
    """A dense ``numpy`` copy (or view) of a dense or sparse matrix."""
    return X.toarray() if sp.issparse(X) else np.asarray(X)


def get_matrix(adata: ad.AnnData, layer: str | None, what: str = "data"):
    """``adata.layers[layer]``, or ``adata.X`` when ``layer`` is ``None``.

    Raises
    ------
    KeyError
        ``layer`` is not a layer of ``adata``; the message lists the layers there are.
    """
    if layer is None:
        return adata.X
    if layer not in adata.layers:
        raise KeyError(
            f"layer {layer!r} not found in the {what} (layers: {list(adata.layers) or 'none'}); "
            "pass layer=None to use .X, or store the raw counts there "
            "(adata.layers['counts'] = adata.X.copy())"
        )
    return adata.layers[layer]


def check_choice(name: str, value, allowed) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` is not one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_range(
    name: str,
    value,
    lo=None,
    hi=None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> None:
    """Raise ``ValueError`` (``TypeError`` for a wrong type) unless ``lo <= value <= hi``.

    ``lo_open``/``hi_open`` make a bound strict; ``integer`` requires an ``int``
    (``bool`` is refused). The message states the allowed range.
    """
    if integer:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise TypeError(f"{name} must be an integer, got {value!r}")
    elif isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    rng = f"{left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
    bad = (lo is not None and (value <= lo if lo_open else value < lo)) or (
        hi is not None and (value >= hi if hi_open else value > hi)
    )
    if bad:
        raise ValueError(f"{name} must be in {rng}, got {value}")


def as_int(name: str, value, lo=None, hi=None, *, optional: bool = False) -> int | None:
    """``value`` as a Python ``int`` after :func:`check_range` (numpy integers accepted).

    ``optional``: ``None`` passes through. Libraries downstream (Lightning)
    accept only Python integers, so every count a user gives goes through here.
    """
    if optional and value is None:
        return None
    check_range(name, value, lo, hi, integer=True)
    return int(value)


def check_flag(name: str, value) -> None:
    """Raise ``TypeError`` unless ``value`` is ``True`` or ``False`` (``"no"`` is not ``False``)."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def check_weights(
    weights: dict | None, keys: tuple[str, ...], defaults: dict[str, float] | None = None
) -> dict[str, float]:
    """Loss weights ``{key: w >= 0}``, missing keys at ``defaults`` (else 1); refuses unknown keys and all zeros.

    Raises ``TypeError`` when ``weights`` is not a dict and ``ValueError`` naming
    the key at fault otherwise.
    """
    w = dict.fromkeys(keys, 1.0)
    w.update(defaults or {})
    if weights is None:
        return w
    if not isinstance(weights, dict):
        raise TypeError(f"weights must be a dict with keys among {list(keys)}, got {weights!r}")
    unknown = set(weights) - set(keys)
    if unknown:
        raise ValueError(f"unknown loss weights {sorted(unknown)}; use {list(keys)}")
    for k, v in weights.items():
        check_range(f"weights[{k!r}]", v, 0)
    w.update({k: float(v) for k, v in weights.items()})
    if not any(w.values()):
        raise ValueError(f"all loss weights are 0; give at least one of {list(keys)} a weight > 0")
    return w


def new_mudata(mods: dict[str, ad.AnnData]) -> md.MuData:
    """``md.MuData(mods)`` without pulling the modalities' obs columns (mudata's future default)."""
    with md.set_options(pull_on_update=False):
        return md.MuData(mods)


def update_mudata(mdata: md.MuData) -> None:
    """``mdata.update()`` without pulling the modalities' obs columns into ``mdata.obs``.

    Where every modality names its cell (feature) index alike and ``mdata``'s
    index is named otherwise (as after muon's filters on a file whose
    modalities name it, e.g. ``barcode``), ``mdata`` takes that name first:
    mudata cannot join the two otherwise.
    """
    for axis in ("obs", "var"):
        names = {getattr(a, axis).index.name for a in mdata.mod.values()}
        if len(names) == 1 and getattr(mdata, axis).index.name != next(iter(names)):
            getattr(mdata, axis).index.name = next(iter(names))
    with md.set_options(pull_on_update=False):
        mdata.update()


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in blocks of 1 MiB."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
