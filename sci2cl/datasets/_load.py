"""Loading a registered dataset: read, align the modalities, attach labels and links, validate."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import anndata as ad
import mudata as md
import pandas as pd
import scipy.sparse as sp

from ..pp import DataValidationError, align_modalities, validate
from ._fetch import fetch_file
from ._registry import DATASETS, ENV_VAR, DatasetUnavailableError, get_data_dir
from ._simulate import SIM_REGIMES, simulate_multiome


def _read(path: Path, read: Callable):
    """``read()``, with errors of truncated or corrupted files naming ``path``."""
    try:
        return read()
    except (DatasetUnavailableError, DataValidationError):
        raise
    except Exception as e:  # h5py, anndata's registry, pandas: all mean "not this file"
        raise DatasetUnavailableError(
            f"cannot read {path}: the file is truncated, corrupted or not in the expected "
            f"format ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Delete it so that it is downloaded again, or replace it with a good copy."
        ) from None


def _check_kind(data, info, where: Path) -> None:
    """A paired dataset is a MuData with ``rna`` and ``atac``; the others an AnnData."""
    if info.kind == "multiome":
        mods = list(data.mod) if isinstance(data, md.MuData) else None
        if mods is None or not {"rna", "atac"} <= set(mods):
            held = f"modalities {mods}" if mods is not None else f"a {type(data).__name__}"
            raise DataValidationError(
                f"{info.name}: {where} holds {held}, but a paired dataset needs a MuData with "
                "'rna' and 'atac'; replace it with the dataset's file"
            )
    elif not isinstance(data, ad.AnnData):
        raise DataValidationError(
            f"{info.name}: {where} holds a {type(data).__name__}, but a {info.kind} dataset is "
            "one AnnData (.h5ad); replace it with the dataset's file"
        )


def load(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    fallback: str | None = None,
) -> md.MuData | ad.AnnData:
    """Load a registered dataset.

    Parameters
    ----------
    name
        A key of :data:`DATASETS` (``"simulated"`` gives :func:`simulate_multiome`,
        ``"simulated_<regime>"`` its other regimes, e.g. ``"simulated_atac_types"``).
    data_dir
        Data directory; see :func:`get_data_dir`.
    download
        Allow downloads of the paper's datasets when they are not present.
    fallback
        Dataset to load instead (with a warning) when ``name`` is unavailable,
        e.g. ``"simulated"`` so that notebooks run anywhere.

    Returns
    -------
    MuData or AnnData
        Paired sets: MuData with ``rna`` and ``atac``; scRNA-seq sets: AnnData.
        Raw values in ``.X`` and ``.layers["counts"]``, labels in
        ``.obs[info.label_key]``, the registry entry in ``.uns["sci2cl_dataset"]``.
        Where the dataset ships a peak-to-gene table, ``atac.var["gene"]``
        holds each peak's gene (empty string for unlinked peaks).
    """
    if fallback is not None:
        try:
            return load(name, data_dir=data_dir, download=download)
        except DatasetUnavailableError as e:
            warnings.warn(f"{e}\nUsing {fallback!r} instead.", stacklevel=2)
            return load(fallback, data_dir=data_dir, download=download)
    if name == "simulated":
        return simulate_multiome()
    if name.startswith("simulated_") and name[len("simulated_") :] in SIM_REGIMES:
        return simulate_multiome(regime=name[len("simulated_") :])
    if name not in DATASETS:
        sims = ["simulated"] + [f"simulated_{r}" for r in SIM_REGIMES if r != "book"]
        raise KeyError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} or {sims}")
    info = DATASETS[name]
    root = get_data_dir(data_dir)
    if info.path is not None:
        p = root / info.path
        if not p.exists():
            raise DatasetUnavailableError(
                f"{name}: {p} not found. Point {ENV_VAR} (or data_dir=) at a folder holding "
                f"{info.path}; source: {info.source}."
            )
        data = _read(p, lambda: md.read_h5mu(p) if p.suffix == ".h5mu" else ad.read_h5ad(p))
        if info.reader is not None:
            data = info.reader(data)
    else:
        files = [fetch_file(r, root / name, download=download) for r in info.remote]
        data = _read(files[0].parent, lambda: info.reader(files, root))
    _check_kind(data, info, p if info.path is not None else root / name)
    mods = data.mod.values() if isinstance(data, md.MuData) else [data]
    for a in mods:
        if not sp.issparse(a.X):
            a.X = sp.csr_matrix(a.X)
        a.layers["counts"] = a.X.copy()
    if isinstance(data, md.MuData):
        data = align_modalities(data)
        for key in (info.label_key, *info.obs_keys):
            if key is not None and key in data["rna"].obs:
                data.obs[key] = data["rna"].obs[key].values
                for a in data.mod.values():
                    a.obs[key] = data.obs[key].values
    if info.peak_gene_links is not None:
        _add_peak_gene_links(data, root / info.peak_gene_links, name)
    data.uns["sci2cl_dataset"] = {
        "name": name,
        "label_key": info.label_key or "",
        "count_modalities": list(info.count_modalities),
    }
    validate(data, label_key=info.label_key, count_modalities=info.count_modalities, layer="counts")
    return data


def _add_peak_gene_links(mdata: md.MuData, path: Path, name: str) -> None:
    """Read a ``peak,gene`` table into ``mdata["atac"].var["gene"]`` ("" where a peak has none)."""
    if not path.exists():
        raise DatasetUnavailableError(
            f"{name}: its peak-to-gene table {path} is missing; it ships with the dataset "
            f"(point {ENV_VAR} or data_dir= at the folder that holds both)"
        )
    links = pd.read_csv(path)
    if not {"peak", "gene"} <= set(links.columns) or links["peak"].duplicated().any():
        raise DataValidationError(
            f"{path}: expected columns 'peak' and 'gene' with one row per peak, "
            f"got columns {list(links.columns)}"
        )
    gene = links.set_index("peak")["gene"].reindex(mdata["atac"].var_names)
    mdata["atac"].var["gene"] = gene.fillna("").astype(str).to_numpy()
