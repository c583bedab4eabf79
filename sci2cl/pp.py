"""Preprocessing: validation, alignment of modalities, QC, feature selection, normalisation, LSI, PCA.

Functions take the data first and work in place (scanpy's convention), except
:func:`validate`, which only checks. The heavy lifting is scanpy's and muon's;
what is ours is the checking and the reporting.
"""

from __future__ import annotations

import functools
import warnings

import anndata as ad
import mudata as md
import numpy as np
import scipy.sparse as sp

from ._rows import RowReader, is_backed_matrix
from ._utils import dense, get_matrix, update_mudata

__all__ = [
    "DataValidationError",
    "validate",
    "align_modalities",
    "qc_filter",
    "select_features",
    "log_normalize",
    "tfidf_lsi",
    "pca",
]


class DataValidationError(ValueError):
    """Input data that the models or analyses cannot use, with the reason."""


def _no_pull(fn):
    """Run ``fn`` with mudata's ``pull_on_update=False`` (muon's filters update the MuData).

    The option is set for the call only; mudata's own setting stays as the user set it.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with md.set_options(pull_on_update=False):
            return fn(*args, **kwargs)

    return wrapper


def _mods(data: md.MuData | ad.AnnData) -> dict[str, ad.AnnData]:
    """The modalities of a MuData, or ``{"rna": adata}`` for an AnnData."""
    return dict(data.mod) if isinstance(data, md.MuData) else {"rna": data}


def _is_backed(data) -> bool:
    """Whether ``data`` (or one of its modalities) reads its matrices from a file."""
    return any(getattr(a, "isbacked", False) for a in [data, *_mods(data).values()])


#: how to select features for an atlas on disk (the error of select_features on backed data)
BACKED_SELECTION = (
    "select on cells in memory and write the selected features to a new file: "
    "sample = mudata.MuData({m: mdata[m][:20000].to_memory() for m in mdata.mod}); "
    "sci2cl.pp.select_features(sample, ...); "
    "mdata[:, mdata.var_names.isin(sample.var_names)].copy('atlas_features.h5mu'); "
    "then open that file with mudata.read_h5mu(..., backed=True)"
)


# --------------------------------------------------------------------------- validation
@_no_pull
def align_modalities(mdata: md.MuData, min_shared: float = 0.5) -> md.MuData:
    """Restrict the modalities to their shared cells (muon), all in ``mdata.obs_names``' order.

    Works in place and returns ``mdata``: afterwards ``mdata.obs_names`` and
    every modality's ``obs_names`` are the shared cells in the order
    ``mdata.obs`` lists them (so columns of ``mdata.obs`` stay with their cells).

    Raises
    ------
    DataValidationError
        Fewer than ``min_shared`` of the cells of the largest modality are
        shared, or barcodes are duplicated.
    ValueError
        ``mdata`` is backed (reordering would read every modality into memory).
    """
    import muon as mu

    if _is_backed(mdata):
        order = [a.obs_names for a in mdata.mod.values()]
        if all(o.equals(mdata.obs_names) for o in order):
            return mdata
        raise ValueError(
            "align_modalities would read this backed MuData into memory to reorder it; "
            "align the cells before writing the file, or read it into memory with "
            "mudata.read_h5mu(path) if it fits"
        )

    names = {m: a.obs_names for m, a in mdata.mod.items()}
    for m, idx in names.items():
        if idx.has_duplicates:
            dup = idx[idx.duplicated()].unique()[:3].tolist()
            raise DataValidationError(f"modality {m!r} has duplicated cell barcodes, e.g. {dup}")
    shared = mdata.obs_names
    for idx in names.values():
        shared = shared[shared.isin(idx)]
    sizes = {m: len(v) for m, v in names.items()}
    if len(shared) < min_shared * max(sizes.values()):
        raise DataValidationError(
            f"only {len(shared)} cells are shared between modalities {sizes}; "
            f"at least {min_shared:.0%} must match by barcode (check obs_names)."
        )
    if all(idx.equals(shared) for idx in names.values()) and mdata.obs_names.equals(shared):
        return mdata
    mu.pp.intersect_obs(mdata)
    for m in list(mdata.mod):
        if not mdata[m].obs_names.equals(shared):
            mdata.mod[m] = mdata[m][shared].copy()
    update_mudata(mdata)
    return mdata


def validate(
    data: md.MuData | ad.AnnData,
    *,
    label_key: str | None = None,
    count_modalities: tuple[str, ...] | None = ("rna", "atac"),
    layer: str | None = "counts",
    modalities: tuple[str, ...] | None = None,
    allow_empty: bool = True,
    chunk_size: int = 10_000,
) -> None:
    """Check data before use; raise :class:`DataValidationError` with the reason.

    Checks: required modalities exist; the layer exists; NaN/inf; negative
    or non-integer values in count modalities; duplicated barcodes or
    feature names; identical cell order across modalities; empty
    cells/features (unless ``allow_empty``); the label column exists.

    Parameters
    ----------
    data
        MuData or AnnData (an AnnData is checked as modality ``"rna"``).
    label_key
        Column of ``obs`` that must exist.
    count_modalities
        Modalities that must hold non-negative integers.
    layer
        Layer to check (``None``: ``.X``); a missing layer is an error.
    modalities
        Modalities that must exist (only these are checked).
    allow_empty
        Accept cells or features without any non-zero value.
    chunk_size
        Cells read at a time from a matrix on disk (backed AnnData or
        MuData): its values are checked chunk by chunk, and an error names
        the chunk's cells; memory holds one chunk.
    """
    if not isinstance(data, md.MuData | ad.AnnData):
        raise TypeError(f"expected a MuData or AnnData, got {type(data).__name__}")
    mods = _mods(data)
    if isinstance(data, md.MuData):
        if modalities is not None:
            missing = [m for m in modalities if m not in mods]
            if missing:
                raise DataValidationError(
                    f"MuData lacks modalities {missing}; it has {list(mods)}. "
                    "Name them 'rna' and 'atac' (e.g. mdata.mod = {'rna': ..., 'atac': ...}) "
                    "or map the names in setup_mudata(modalities=...)."
                )
            mods = {m: mods[m] for m in modalities}
        order = [a.obs_names for a in mods.values()]
        if any(not o.equals(order[0]) for o in order[1:]):
            raise DataValidationError(
                "modalities hold different or differently ordered cells; "
                "call sci2cl.pp.align_modalities(mdata) first."
            )
    for m, a in mods.items():
        if a.n_obs == 0 or a.n_vars == 0:
            raise DataValidationError(
                f"modality {m!r} is empty ({a.n_obs} cells x {a.n_vars} features)"
            )
        for kind, idx in (("cell barcodes", a.obs_names), ("feature names", a.var_names)):
            if idx.has_duplicates:
                dup = idx[idx.duplicated()].unique()[:3].tolist()
                raise DataValidationError(f"modality {m!r} has duplicated {kind}, e.g. {dup}")
        try:
            X = get_matrix(a, layer, what=f"modality {m!r}")
        except KeyError as e:
            raise DataValidationError(e.args[0]) from None
        counts = count_modalities is not None and m in count_modalities
        if is_backed_matrix(X):  # on disk: one chunk of cells in memory at a time
            nonzero_cells = 0
            for start, rows in RowReader(X).chunks(chunk_size):
                where = f"modality {m!r} (cells {start} to {start + rows.shape[0] - 1})"
                _check_values(rows, where, counts, layer)
                nz = np.asarray((rows != 0).sum(1)).ravel()
                nonzero_cells += int((nz > 0).sum())
                if not allow_empty and (nz == 0).any():
                    raise DataValidationError(
                        f"{where} has {(nz == 0).sum()} empty cells; remove them with "
                        "sci2cl.pp.qc_filter(data) before writing the file"
                    )
            if nonzero_cells == 0:
                raise DataValidationError(f"every value of modality {m!r} is zero")
            continue
        _check_values(X, f"modality {m!r}", counts, layer)
        if not allow_empty:
            ncell = np.asarray((X != 0).sum(1)).ravel()
            nfeat = np.asarray((X != 0).sum(0)).ravel()
            if (ncell == 0).any() or (nfeat == 0).any():
                raise DataValidationError(
                    f"modality {m!r} has {(ncell == 0).sum()} empty cells and {(nfeat == 0).sum()} "
                    "empty features; remove them with sci2cl.pp.qc_filter(data)."
                )
    if label_key is not None and label_key not in data.obs.columns:
        raise DataValidationError(
            f"label column {label_key!r} not found in obs; available: {list(data.obs.columns)}"
        )


#: the largest count :func:`validate` accepts (2**24: float32 holds every integer up to it)
MAX_COUNT = 2**24


def _check_values(X, where: str, counts: bool, layer) -> None:
    """Numbers, finite, and (``counts``) non-negative integers; the error names ``where``."""
    vals = X.data if sp.issparse(X) else np.asarray(X)
    if not np.issubdtype(vals.dtype, np.number) or np.issubdtype(vals.dtype, np.complexfloating):
        raise DataValidationError(
            f"{where} holds {vals.dtype} values; numbers (int or float) are needed"
        )
    if not np.isfinite(vals).all():
        raise DataValidationError(f"{where} contains NaN or infinite values")
    if counts:
        if (vals < 0).any():
            raise DataValidationError(
                f"{where} has negative values where raw counts are expected "
                f"(layer {layer!r}); pass raw counts or declare the modality as non-count "
                "(likelihood 'gaussian')."
            )
        if not np.allclose(vals, np.round(vals)):
            raise DataValidationError(
                f"{where} has non-integer values where raw counts are expected "
                f"(layer {layer!r}); pass raw counts or use a Gaussian likelihood for it."
            )
        if vals.size and vals.max() > MAX_COUNT:
            raise DataValidationError(
                f"{where} has a count of {vals.max():.3g}, above {MAX_COUNT:,} (2**24, the "
                f"largest integer a float32 holds exactly); reads of one feature in one cell "
                f"do not come that high: check that layer {layer!r} holds raw counts"
            )


# --------------------------------------------------------------------------- preprocessing
def _qc_report_backed(mods: dict, min_features: int, min_cells: int, layer) -> dict:
    """``qc_filter``'s report for data on disk, read chunk by chunk; raises if it must drop."""
    report = {}
    for m, a in mods.items():
        X = get_matrix(a, layer, what=f"modality {m!r}")
        per_feature = np.zeros(a.n_vars, dtype=np.int64)
        cells = 0
        for _, rows in RowReader(X).chunks():
            nz = rows != 0
            cells += int((np.asarray(nz.sum(1)).ravel() < min_features).sum())
            per_feature += np.asarray(nz.sum(0)).ravel()
        report[m] = {
            "cells_dropped": cells,
            "features_dropped": int((per_feature < min_cells).sum()),
        }
    if any(r["cells_dropped"] or r["features_dropped"] for r in report.values()):
        raise ValueError(
            f"qc_filter would drop cells or features of this backed data ({report}), which a file "
            "opened backed cannot do in place; filter before writing the file, or read it into "
            "memory with mudata.read_h5mu(path) / anndata.read_h5ad(path) if it fits"
        )
    return report


def _detected_per_cell(a: ad.AnnData, layer: str | None) -> np.ndarray:
    """Number of features with a count in each cell, ``(n_cells,)``."""
    return np.asarray((get_matrix(a, layer) > 0).sum(1)).ravel()


@_no_pull
def qc_filter(
    data: md.MuData | ad.AnnData,
    min_features: int = 1,
    min_cells: int = 1,
    layer: str | None = "counts",
) -> dict[str, dict[str, int]]:
    """Drop sparse cells and rare features (muon filters).

    Cells with fewer than ``min_features`` detected features in any modality,
    and features detected in fewer than ``min_cells`` cells, are removed.

    Works in place; returns ``{modality: {"cells_dropped": n, "features_dropped": n}}``.
    Backed data are read chunk by chunk: with nothing to drop, the report is
    returned; otherwise a ``ValueError`` says how many and how to proceed (a
    file on disk cannot be filtered in place).
    """
    import muon as mu

    mods = _mods(data)
    if _is_backed(data):
        return _qc_report_backed(mods, min_features, min_cells, layer)
    report = {}
    keep = np.ones(data.n_obs, dtype=bool)
    for m, a in mods.items():
        n_feat = _detected_per_cell(a, layer)
        keep &= n_feat >= min_features
        report[m] = {"cells_dropped": int((n_feat < min_features).sum())}
    if not keep.all():
        mu.pp.filter_obs(data, data.obs_names[keep])
    for m, a in _mods(data).items():
        detected = np.asarray((get_matrix(a, layer) > 0).sum(0)).ravel()
        report[m]["features_dropped"] = int((detected < min_cells).sum())
        if (detected < min_cells).any():
            mu.pp.filter_var(a, detected >= min_cells)
    if isinstance(data, md.MuData):
        update_mudata(data)
    return report


@_no_pull
def select_features(
    data: md.MuData | ad.AnnData,
    n_top_genes: int | None = 2000,
    n_top_peaks: int | None = 5000,
    subset: bool = True,
    layer: str | None = "counts",
) -> dict[str, int]:
    """Highly variable genes (scanpy ``seurat_v3`` on counts) and most accessible peaks.

    Peaks are ranked by the number of cells in which they are open (the
    usual choice for sparse ATAC; variance is dominated by depth there).
    Returns ``{modality: n_kept}``; with ``subset`` the data is subset in place.
    Warns when a cell keeps no counts in a modality's selected features:
    such cells share one all-zero profile (muon's WNN then computes NaN
    weights for them); drop them with :func:`qc_filter`. A model built
    before the selection no longer matches the data: build it after.
    """
    import muon as mu
    import scanpy as sc

    if _is_backed(data):
        raise ValueError(
            f"select_features needs the data in memory; for an atlas on disk, {BACKED_SELECTION}"
        )
    mods = _mods(data)
    kept = {}
    for m, a in mods.items():
        n = n_top_genes if m == "rna" else n_top_peaks
        if n is not None and n < 1:
            raise ValueError(f"the number of features to keep for {m!r} must be >= 1, got {n}")
        if n is None or n >= a.n_vars:
            a.var["highly_variable"] = True
        elif m == "rna":
            sc.pp.highly_variable_genes(a, n_top_genes=n, flavor="seurat_v3", layer=layer)
        else:
            det = np.asarray((get_matrix(a, layer) > 0).sum(0)).ravel()
            top = np.zeros(a.n_vars, dtype=bool)
            top[np.argsort(-det, kind="stable")[:n]] = True
            a.var["highly_variable"] = top
        kept[m] = int(a.var["highly_variable"].sum())
    if subset:
        for a in mods.values():
            if not a.var["highly_variable"].all():
                mu.pp.filter_var(a, a.var["highly_variable"].to_numpy())
        if isinstance(data, md.MuData):
            update_mudata(data)
        for m, a in _mods(data).items():
            n_empty = int((_detected_per_cell(a, layer) == 0).sum())
            if n_empty:
                warnings.warn(
                    f"{n_empty} cells have no counts in the {kept[m]} selected {m} features; "
                    "remove them with sci2cl.pp.qc_filter(data) before clustering or WNN",
                    UserWarning,
                    stacklevel=3,
                )
    return kept


def log_normalize(adata: ad.AnnData, target_sum: float = 1e4, layer: str | None = "counts") -> None:
    """``normalize_total`` + ``log1p`` (scanpy) of the raw counts in ``layer`` into ``.X``."""
    import scanpy as sc

    adata.X = get_matrix(adata, layer).copy()
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)


def pca(
    adata: ad.AnnData,
    n_comps: int = 30,
    *,
    layer: str | None = "counts",
    n_top_genes: int | None = None,
    flavor: str = "seurat",
    scale: bool = True,
    seed: int = 0,
    key_added: str = "X_pca",
) -> np.ndarray:
    """The usual scanpy pipeline on a copy: log-normalise, HVGs, scale, PCA.

    Parameters
    ----------
    adata
        Raw counts in ``layer``; left unchanged except for ``obsm[key_added]``.
    n_comps
        Components (capped at ``min(n_cells, n_genes) - 1``).
    n_top_genes
        Highly variable genes (scanpy ``flavor`` on log data); ``None``: all genes.
    scale
        Z-score each gene, clipped at 10 (``sc.pp.scale(max_value=10)``).
    seed
        ``random_state`` of the PCA.

    Returns
    -------
    numpy.ndarray
        ``(n_cells, n_comps)``, also in ``adata.obsm[key_added]``.
    """
    import scanpy as sc

    a = ad.AnnData(get_matrix(adata, layer).copy(), obs=adata.obs[[]], var=adata.var[[]])
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    if n_top_genes is not None and n_top_genes < a.n_vars:
        sc.pp.highly_variable_genes(a, n_top_genes=n_top_genes, flavor=flavor, subset=True)
    if scale:
        a.X = dense(a.X)
        sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=min(n_comps, min(a.shape) - 1), random_state=seed)
    adata.obsm[key_added] = a.obsm["X_pca"]
    return a.obsm["X_pca"]


def tfidf_lsi(
    atac: ad.AnnData, n_comps: int = 30, layer: str | None = "counts", seed: int = 0
) -> None:
    """TF-IDF (muon) of raw ATAC counts into ``.X`` and LSI into ``.obsm["X_lsi"]``.

    LSI is a truncated SVD of the TF-IDF matrix (scikit-learn, ARPACK,
    ``random_state=seed``), each component scaled to zero mean and unit
    variance as muon's ``atac.tl.lsi`` does; the first component, which
    tracks depth, is dropped as is customary.
    Cells without any count in the selected peaks (common after feature
    selection on very sparse data such as sci-CAR kidney) would make TF-IDF
    divide by zero; they are left out of the decomposition and get an
    all-zero LSI row, with a warning.
    """
    from muon import atac as ac
    from sklearn.decomposition import TruncatedSVD

    counts = get_matrix(atac, layer)
    empty = np.asarray((counts != 0).sum(1)).ravel() == 0
    sub = atac[~empty].copy() if empty.any() else atac
    if empty.any():
        warnings.warn(
            f"{int(empty.sum())} cells have no ATAC counts in the selected peaks; their LSI is 0",
            stacklevel=2,
        )
    sub.X = get_matrix(sub, layer).copy()
    ac.pp.tfidf(sub, scale_factor=1e4)
    k = min(n_comps + 1, min(sub.shape) - 1)
    emb = TruncatedSVD(k, algorithm="arpack", random_state=seed).fit_transform(sub.X)
    emb = (emb - emb.mean(0)) / np.maximum(emb.std(0), 1e-12)
    lsi = np.zeros((atac.n_obs, k - 1), dtype=np.float32)
    lsi[~empty] = emb[:, 1:]
    atac.X = counts.copy() if empty.any() else sub.X
    atac.obsm["X_lsi"] = lsi
