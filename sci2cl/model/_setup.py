"""How :class:`~sci2cl.SCI2CL` reads a MuData: the set-up record, its checks and data fingerprints.

The values of a modality are checked once, when the data are set up
(:func:`setup_record`); the record keeps a fingerprint of each modality's
matrix, and later calls (building the model, training, embedding) check the
values again only when the fingerprint differs, i.e. for new or changed data.
The cheap checks (modalities, cell order, features) run on every call.
"""

from __future__ import annotations

import hashlib
import os
import warnings

import mudata as md
import numpy as np
import scipy.sparse as sp

from .._rows import RowReader, is_backed_matrix
from .._utils import check_choice, get_matrix
from ..module._sci2cl import COUNT_LIKELIHOODS, LIKELIHOODS
from ..pp import MAX_COUNT, DataValidationError, validate

__all__ = [
    "ROLES",
    "SETUP_KEY",
    "batch_categories",
    "batch_codes",
    "fingerprint",
    "setup_record",
    "check_data",
    "check_likelihoods",
    "likelihoods",
    "check_key_added",
]

ROLES = ("rna", "atac")
SETUP_KEY = "_sci2cl_setup"


def _backed_file(X) -> str | None:
    group = getattr(X, "group", None)
    f = getattr(group, "file", None) if group is not None else getattr(X, "file", None)
    return getattr(f, "filename", None)


def fingerprint(X) -> str:
    """A short text that changes when the matrix ``X`` (in memory or on disk) changes.

    In memory: a hash of the shape and of every stored value and index. On
    disk (backed): the file's path, size and modification time (reading the
    whole file to hash it is what the fingerprint saves).
    """
    if is_backed_matrix(X):
        f = _backed_file(X)
        st = os.stat(f) if f is not None else None
        where = getattr(getattr(X, "group", None), "name", "")
        return f"file:{f}:{where}:{st.st_size}:{st.st_mtime_ns}" if st else f"file:{id(X)}"
    h = hashlib.blake2b(digest_size=12)
    h.update(repr(tuple(X.shape)).encode())
    if sp.issparse(X):
        X = sp.csr_matrix(X)
        for arr in (X.indptr, X.indices, X.data):
            h.update(np.ascontiguousarray(arr).tobytes())
    else:
        h.update(np.ascontiguousarray(np.asarray(X)).tobytes())
    return h.hexdigest()


def _first_row(rows, bad: np.ndarray, start: int) -> int:
    """Index of the first cell of ``rows`` (offset ``start``) with a ``bad`` stored value, or -1."""
    hits = np.flatnonzero(bad)
    if not len(hits):
        return -1
    if sp.issparse(rows):
        return start + int(np.searchsorted(rows.indptr, hits[0], side="right") - 1)
    return start + int(hits[0] // rows.shape[1])


def _value_facts(X, name: str) -> dict:
    """What the values are: ``counts`` (non-negative integers), ``nonnegative``, and examples.

    ``noncount_cell`` / ``negative_cell``: the first cell holding a value that
    is not a count / is negative (-1: none); ``empty_cells``: the cells with no
    non-zero value. Raises when every value is zero.
    """
    chunks = RowReader(X).chunks() if is_backed_matrix(X) else [(0, X)]
    noncount = negative = -1
    nonzero = False
    empty = []
    vmax = -np.inf
    for start, rows in chunks:
        filled = (
            np.asarray((rows != 0).sum(1)).ravel()
            if sp.issparse(rows)
            else (np.asarray(rows) != 0).any(1)
        )
        empty.append(start + np.flatnonzero(filled == 0))
        vals = rows.data if sp.issparse(rows) else np.asarray(rows).ravel()
        if not vals.size:
            continue
        if negative < 0:
            negative = _first_row(rows, vals < 0, start)
        if noncount < 0:
            noncount = _first_row(rows, (vals < 0) | ~np.isclose(vals, np.round(vals)), start)
        nonzero |= bool((vals != 0).any())
        vmax = max(vmax, float(vals.max()))
    if not nonzero:
        raise DataValidationError(f"every value of modality {name!r} is zero")
    return {
        "counts": noncount < 0,
        "nonnegative": negative < 0,
        "noncount_cell": noncount,
        "negative_cell": negative,
        "n_empty": int(sum(len(e) for e in empty)),
        "empty_cell": int(next((e[0] for e in empty if len(e)), -1)),
        "max": float(vmax),
    }


def _check_structure(mdata: md.MuData, modalities: dict, features: dict | None) -> None:
    """Modalities present, the same cells in the same order everywhere, and the model's features."""
    missing = [m for m in modalities.values() if m not in mdata.mod]
    if missing:
        raise DataValidationError(
            f"MuData lacks modalities {missing}; it has {list(mdata.mod)}. Name them in "
            "SCI2CL.setup_mudata(mdata, modalities={'rna': ..., 'atac': ...})."
        )
    if modalities["rna"] == modalities["atac"]:
        raise ValueError(
            f"modalities maps RNA and ATAC to the same modality {modalities['rna']!r}; "
            "name two different modalities"
        )
    for r in ROLES:
        a = mdata[modalities[r]]
        if a.n_obs != mdata.n_obs or not a.obs_names.equals(mdata.obs_names):
            raise DataValidationError(
                f"modality {modalities[r]!r} ({r}) holds {a.n_obs} cells that are not the "
                f"MuData's {mdata.n_obs} cells in the same order, so an embedding could not be "
                "written to the right cells. Call mdata.update() after changing a modality, "
                "then sci2cl.pp.align_modalities(mdata)."
            )
        if features is not None and a.var_names.tolist() != features[r]:
            raise DataValidationError(
                f"modality {modalities[r]!r} ({r}) has {a.n_vars} features, not the "
                f"{len(features[r])} features the model was built with (in that order); "
                "select the same features, or build the model again after select_features"
            )


def batch_categories(mdata: md.MuData, batch_key: str | None) -> list[str]:
    """The sorted batch names of ``mdata.obs[batch_key]`` (``[]`` without a key), checked.

    Raises
    ------
    DataValidationError
        The column is missing or has missing values (a missing batch never becomes a batch).
    """
    if batch_key is None:
        return []
    if not isinstance(batch_key, str):
        raise TypeError(f"batch_key must be a column name of mdata.obs (str), got {batch_key!r}")
    if batch_key not in mdata.obs:
        raise DataValidationError(
            f"batch_key {batch_key!r} is not a column of mdata.obs (columns: "
            f"{list(mdata.obs.columns)[:20]}); a column of one modality is found as "
            "'<modality>:<column>', or copy it to mdata.obs first"
        )
    col = mdata.obs[batch_key]
    if col.isna().any():
        raise DataValidationError(
            f"mdata.obs[{batch_key!r}] has {int(col.isna().sum())} cells without a batch: give "
            "them one (e.g. 'unknown') or leave them out"
        )
    return sorted(col.astype(str).unique().tolist())


def batch_codes(mdata: md.MuData, batch_key: str, batches: list[str]) -> np.ndarray:
    """Each cell's position in ``batches`` (the model's), ``(n_cells,)`` int64.

    Raises
    ------
    DataValidationError
        The column is missing or incomplete, or holds a batch the model was not trained on.
    """
    names = batch_categories(mdata, batch_key)
    unseen = sorted(set(names) - set(batches))
    if unseen:
        raise DataValidationError(
            f"mdata.obs[{batch_key!r}] holds batches the model was not trained on: {unseen[:10]} "
            f"(trained on {batches[:10]}); scI2CL corrects only the batches it was trained on: "
            "train one model on all batches together"
        )
    lookup = {b: i for i, b in enumerate(batches)}
    return np.array([lookup[b] for b in mdata.obs[batch_key].astype(str)], dtype=np.int64)


def setup_record(
    mdata: md.MuData, layer: str | None, modalities: dict | None, batch_key: str | None = None
) -> dict:
    """Check ``mdata`` fully and return its set-up record (what ``setup_mudata`` stores).

    The record: ``layer``, ``modalities`` (role -> name), with a
    ``batch_key`` that key and ``batches`` (the sorted batch names), and per
    role the value facts (``counts``, ``nonnegative``) and the
    :func:`fingerprint` of the checked matrix.
    """
    if not isinstance(mdata, md.MuData):
        raise TypeError(f"setup_mudata needs a MuData, got {type(mdata).__name__}")
    if mdata.is_view and mdata.isbacked:
        raise ValueError(
            "setup_mudata got a view of a backed MuData (e.g. mdata[:100]), which mudata cannot "
            "annotate without writing a file: write those cells to their own file with "
            "view.copy('cells.h5mu') and open it with mudata.read_h5mu(..., backed=True), or set "
            "up the whole backed MuData"
        )
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (str) or None for .X, got {layer!r}")
    if modalities is None:
        mods = {r: r for r in ROLES}
    elif isinstance(modalities, dict):
        mods = dict(modalities)
    else:
        raise TypeError(
            "modalities must be a dict {'rna': name, 'atac': name}, got "
            f"{type(modalities).__name__} {modalities!r}"
        )
    if set(mods) != set(ROLES) or not all(isinstance(v, str) for v in mods.values()):
        raise ValueError(f"modalities must map exactly {list(ROLES)} to modality names, got {mods}")
    _check_structure(mdata, mods, None)
    validate(mdata, modalities=tuple(mods[r] for r in ROLES), count_modalities=(), layer=layer)
    batches = batch_categories(mdata, batch_key)
    record = {"layer": layer, "modalities": mods, "facts": {}, "fingerprints": {}}
    if batch_key is not None:  # only then: a file cannot hold None in .uns
        record.update(batch_key=batch_key, batches=batches)
    for r in ROLES:
        X = get_matrix(mdata[mods[r]], layer)
        record["facts"][r] = _value_facts(X, mods[r])
        record["fingerprints"][r] = fingerprint(X)
    return record


def read_setup(mdata: md.MuData) -> dict:
    """The set-up record that :meth:`SCI2CL.setup_mudata` stored in ``mdata``."""
    setup = mdata.uns.get(SETUP_KEY)
    if setup is None:
        raise DataValidationError(
            "the MuData is not set up: call sci2cl.SCI2CL.setup_mudata(mdata, layer='counts') "
            "first (it records the layer of raw counts and the modality names, and checks "
            "the values)"
        )
    if "fingerprints" not in setup:
        raise DataValidationError(
            "the MuData was set up by an older version of sci2cl: call "
            "sci2cl.SCI2CL.setup_mudata(mdata, ...) again"
        )
    return {
        "layer": setup["layer"],
        "modalities": dict(setup["modalities"]),
        "facts": {r: dict(setup["facts"][r]) for r in ROLES},
        "fingerprints": dict(setup["fingerprints"]),
        "batch_key": setup.get("batch_key"),
        "batches": [str(b) for b in setup.get("batches", [])],
    }


def likelihoods(likelihood) -> dict[str, str]:
    """``{"rna": ..., "atac": ...}`` from one name or a partial dict (missing roles: ``"zinb"``)."""
    if isinstance(likelihood, str):
        lik = dict.fromkeys(ROLES, likelihood)
    elif isinstance(likelihood, dict):
        lik = dict(likelihood)
    else:
        raise TypeError(
            f"likelihood must be a name or a dict {{'rna': name, 'atac': name}}, got {likelihood!r}"
        )
    unknown = set(lik) - set(ROLES)
    if unknown:
        raise ValueError(f"likelihood keys must be among {list(ROLES)}, got {sorted(unknown)}")
    for r in ROLES:
        lik.setdefault(r, "zinb")
        check_choice(f"likelihood[{r!r}]", lik[r], LIKELIHOODS)
    return lik


def check_likelihoods(likelihood: dict, facts: dict, modalities: dict) -> None:
    """Refuse a likelihood the recorded values cannot take, naming the modality and the fix."""
    for r in ROLES:
        lik, f = likelihood[r], facts[r]
        name = f"modality {modalities[r]!r} ({r})"
        if lik in COUNT_LIKELIHOODS and not f["counts"]:
            raise DataValidationError(
                f"{name} does not hold raw counts (non-negative integers; cell "
                f"{f['noncount_cell']} holds another value), which likelihood {lik!r} needs: "
                "set up the layer that holds the counts, or use likelihood={..., "
                f"{r!r}: 'gaussian'}} for normalised values"
            )
        if lik in COUNT_LIKELIHOODS and f.get("max", 0) > MAX_COUNT:
            raise DataValidationError(
                f"{name} has a count of {f['max']:.3g}, above {MAX_COUNT:,} (2**24, the largest "
                "integer a float32 holds exactly); reads of one feature in one cell do not come "
                "that high: check that the set-up layer holds raw counts"
            )
        if lik == "bernoulli" and not f["nonnegative"]:
            raise DataValidationError(
                f"{name} has negative values (cell {f['negative_cell']}), which likelihood "
                "'bernoulli' (accessible or not) cannot take; pass counts or binary values, "
                "or use 'gaussian'"
            )


def warn_empty_cells(facts: dict, modalities: dict, obs_names) -> None:
    """Warn when cells hold no value in a modality (they would share one embedding)."""
    for r in ROLES:
        n = facts[r].get("n_empty", 0)
        if n:
            warnings.warn(
                f"{n} cells have no value in modality {modalities[r]!r} (e.g. "
                f"{obs_names[facts[r]['empty_cell']]!r}): the model cannot tell them apart "
                "there, and they share one embedding, a false cluster; drop them first with "
                "sci2cl.pp.qc_filter(mdata)",
                UserWarning,
                stacklevel=4,
            )


def check_key_added(mdata: md.MuData, key_added) -> None:
    """``key_added`` is ``None`` or a text key of ``obsm`` that mudata does not own."""
    if key_added is None:
        return
    if not isinstance(key_added, str) or not key_added:
        raise TypeError(
            f"key_added must be a non-empty str (an obsm key) or None, got {key_added!r}"
        )
    if key_added in mdata.mod:
        raise ValueError(
            f"key_added={key_added!r} is the name of a modality: mudata keeps that modality's "
            "cell mask in obsm[{key_added!r}] and would overwrite the embedding; choose another "
            "key, e.g. 'X_sci2cl_" + key_added + "'"
        )


def check_data(
    mdata: md.MuData,
    setup: dict,
    likelihood: dict,
    features: dict | None = None,
    layer: str | None | type = ...,
    known: set | None = None,
) -> str:
    """Check ``mdata`` against a model's set-up; the values only when they are new.

    ``layer`` (default: the set-up's) is where the raw data are in
    ``mdata``, which may differ from the training data's. The values are
    checked (and their facts held against ``likelihood``) unless each
    modality's fingerprint is the set-up's or is in ``known``, the set of
    fingerprints this model has already checked (it is updated). Returns the
    layer used.
    """
    if not isinstance(mdata, md.MuData):
        raise TypeError(f"mdata must be a MuData, got {type(mdata).__name__}")
    layer = setup["layer"] if layer is ... else layer
    mods = setup["modalities"]
    _check_structure(mdata, mods, features)
    known = set() if known is None else known
    prints = {}
    for r in ROLES:
        try:
            X = get_matrix(mdata[mods[r]], layer, what=f"modality {mods[r]!r}")
        except KeyError as e:
            raise DataValidationError(
                f"{e.args[0]}; where the raw data of these cells are elsewhere, name them with "
                "layer=..."
            ) from None
        prints[r] = fingerprint(X)
    if all(prints[r] == setup["fingerprints"].get(r) or prints[r] in known for r in ROLES):
        return layer
    counts = tuple(mods[r] for r in ROLES if likelihood[r] in COUNT_LIKELIHOODS)
    validate(mdata, modalities=tuple(mods[r] for r in ROLES), count_modalities=counts, layer=layer)
    facts = {r: _value_facts(get_matrix(mdata[mods[r]], layer), mods[r]) for r in ROLES}
    check_likelihoods(likelihood, facts, mods)
    warn_empty_cells(facts, mods, mdata.obs_names)
    known.update(prints.values())
    return layer
