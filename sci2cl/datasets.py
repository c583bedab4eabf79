"""Datasets: the registry, the data directory, hash-checked downloads, loading, and the simulator.

Data directory
--------------
One setting decides where datasets are read from and downloaded to:
the ``data_dir`` argument, else the environment variable ``SCI2CL_DATA_DIR``,
else ``data/`` of the repository checkout (or ``~/.cache/sci2cl`` for an
installed package). The local mirror layout (``multiome/``, ``scrna/``,
``labels/``, ``genesets/``) is the same as that of ``../shared/data``.

Downloads
---------
The paper's datasets are fetched with :mod:`pooch` from their public sources
into ``<data_dir>/<name>/``. A file that is already there is used without a
download. Where the source publishes no checksum, the SHA-256 of the first
download is written next to the file (``<file>.sha256``) and every later load
is checked against it (trust on first use); where the registry knows the hash,
the download itself is checked.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .pp import DataValidationError, align_modalities, validate

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "DatasetUnavailableError",
    "RemoteFile",
    "get_data_dir",
    "load",
    "fetch_file",
    "simulate_multiome",
    "simulate_spatial",
    "simulate_multiome_to_disk",
    "SIM_TYPES",
]

ENV_VAR = "SCI2CL_DATA_DIR"


class DatasetUnavailableError(FileNotFoundError):
    """A dataset file is neither in the data directory nor downloadable."""


# --------------------------------------------------------------------------- data dir
def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Resolve the data directory (argument, then ``$SCI2CL_DATA_DIR``, then default)."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser().resolve()
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists() and (repo / "data").is_dir():
        return repo / "data"
    import pooch

    return Path(pooch.os_cache("sci2cl"))


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class RemoteFile:
    """A file of a downloadable dataset: local name, URL, and SHA-256 when published."""

    name: str
    url: str
    sha256: str | None = None


@dataclass(frozen=True)
class DatasetInfo:
    """Registry entry of a dataset."""

    name: str
    kind: str  # "multiome", "scrna" or "spatial"
    description: str
    source: str
    licence: str
    label_key: str | None
    path: str | None = None  # mirror file relative to data_dir
    remote: tuple[RemoteFile, ...] = ()
    count_modalities: tuple[str, ...] = ("rna", "atac")
    obs_keys: tuple[str, ...] = ()  # more obs columns shared by the modalities (e.g. fine labels)
    #: CSV (``peak``, ``gene``) relative to data_dir, read into ``atac.var["gene"]`` by :func:`load`
    peak_gene_links: str | None = None
    reader: Callable | None = field(default=None, repr=False, compare=False)


def _drop_kidney_artefacts(mdata: md.MuData) -> md.MuData:
    """sci-CAR kidney: drop two artefact peaks and the cells with inexact ATAC counts.

    The peaks at chr2:98.66 Mb hold about 93% of all ATAC counts; 6 cells'
    ATAC counts were not recovered exactly from the shipped values.
    """
    atac = mdata["atac"]
    bad = atac.var_names.str.startswith("chr2-9866")
    ok = mdata["atac"].obs.get("counts_recovered_exactly", pd.Series(True, index=atac.obs_names))
    cells = mdata.obs_names[np.asarray(ok.reindex(mdata.obs_names).fillna(False), dtype=bool)]
    return md.MuData({"rna": mdata["rna"][cells].copy(), "atac": atac[cells][:, ~bad].copy()})


def _read_glue_pair(files: list[Path], label_key: str = "cell_type") -> md.MuData:
    rna, atac = ad.read_h5ad(files[0]), ad.read_h5ad(files[1])
    for a in (rna, atac):
        if "counts" in a.layers:
            a.X = a.layers["counts"]
    return md.MuData({"rna": rna, "atac": atac})


def _read_pbmc3k(files: list[Path], data_dir: Path) -> md.MuData:
    import muon as mu

    mdata = mu.read_10x_h5(str(files[0]))
    missing = {"rna", "atac"} - set(mdata.mod)
    if missing:
        raise DatasetUnavailableError(
            f"{files[0]} holds the modalities {list(mdata.mod)}, not 'rna' and 'atac': a Cell Ranger "
            "ARC matrix has 'Gene Expression' and 'Peaks' features"
        )
    for a in mdata.mod.values():
        a.var_names_make_unique()
    lab = data_dir / "labels" / "pbmc3k_multiome_azimuth_l2_2874.txt"
    if not lab.exists():
        raise DatasetUnavailableError(
            f"PBMC-3K labels not found at {lab}. They are the Azimuth level-2 annotation "
            "of the 10x pbmc_granulocyte_sorted_3k barcodes (columns Cell, Cluster); "
            "place the table there."
        )
    labels = pd.read_csv(lab, sep="\t", index_col=0).iloc[:, 0]
    cells = mdata.obs_names.intersection(labels.index)
    mdata = md.MuData({m: mdata[m][cells].copy() for m in ("rna", "atac")})
    for a in mdata.mod.values():
        a.obs["cell_type"] = pd.Categorical(labels.reindex(a.obs_names).values)
    return mdata


def _read_cellmix(files: list[Path], data_dir: Path) -> md.MuData:
    mods = {}
    for m, f in zip(("rna", "atac"), files):
        df = pd.read_csv(f, sep="\t", index_col=0)  # features x cells
        mods[m] = ad.AnnData(
            sp.csr_matrix(df.values.T.astype(np.float32)),
            obs=pd.DataFrame(index=df.columns),
            var=pd.DataFrame(index=df.index),
        )
    lab = data_dir / "labels" / "snare_cellmix_cell_metadata.txt"
    if not lab.exists():
        raise DatasetUnavailableError(
            f"CellMix labels not found at {lab} (columns cell, cell_line)."
        )
    labels = pd.read_csv(lab, sep="\t", index_col=0).iloc[:, 0]
    mdata = align_modalities(md.MuData(mods))
    cells = mdata.obs_names.intersection(labels.index)
    mdata = md.MuData({m: mdata[m][cells].copy() for m in ("rna", "atac")})
    for a in mdata.mod.values():
        a.obs["cell_type"] = pd.Categorical(labels.reindex(a.obs_names).values)
    return mdata


_GLUE = "http://download.gao-lab.org/GLUE/dataset/"


def _glue_pair(name: str, prefix: str, description: str, source: str, licence: str) -> DatasetInfo:
    """A paired dataset distributed by GLUE as ``<prefix>-RNA.h5ad`` and ``<prefix>-ATAC.h5ad``."""
    files = tuple(
        RemoteFile(f"{prefix}-{m}.h5ad", f"{_GLUE}{prefix}-{m}.h5ad") for m in ("RNA", "ATAC")
    )
    return DatasetInfo(
        name,
        "multiome",
        description,
        source,
        licence,
        "cell_type",
        remote=files,
        reader=lambda paths, _dir: _read_glue_pair(paths),
    )


_GEO = "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE126nnn/GSE126074/suppl/"
_SCRNA = {
    "baron_human": (
        "baron_human_2142.h5ad",
        "Baron et al. 2016 human pancreas (Cell BLAST), 25% subsample",
        "MIT",
    ),
    "ifnb_pbmc": ("ifnb_pbmc_2800.h5ad", "Kang et al. 2018 IFN-beta PBMC subset (GSE96583)", "MIT"),
    "pbmc4k": ("pbmc4k_top2000.h5ad", "10x PBMC 4k, top 2,000 genes (scDCC)", "Apache-2.0"),
    "cbmc": ("cbmc_top2000.h5ad", "CITE-seq CBMC RNA, top 2,000 genes (scDCC)", "Apache-2.0"),
    "mouse_bladder": (
        "mouse_bladder_top2000.h5ad",
        "Mouse Cell Atlas bladder (scDCC)",
        "Apache-2.0",
    ),
    "cellmix_rna": (
        "snare_cellmix_rna_1047.h5ad",
        "SNARE-seq CellMix RNA part (GSE126074)",
        "GEO public data",
    ),
    "camp2015": ("camp2015_fetal_brain_220.h5ad", "Camp et al. 2015 fetal brain", "GPL-2+"),
}

DATASETS: dict[str, DatasetInfo] = (
    {
        "scicar_kidney": DatasetInfo(
            "scicar_kidney",
            "multiome",
            "sci-CAR mouse kidney, 5k genes x 10k peaks (JSNMF subset)",
            "Cao et al. 2018, GEO GSE117089",
            "GEO public data",
            "cell_type",
            path="multiome/scicar_mouse_kidney.h5mu",
            reader=_drop_kidney_artefacts,
        ),
        "snare_adbrain": DatasetInfo(
            "snare_adbrain",
            "multiome",
            "SNARE-seq adult mouse cortex, 5,232 cells (batches 09A-09F); cell_type 15 classes, "
            "cell_type_fine the 23 published types nested in them",
            "Chen, Lake & Zhang 2019, GEO GSE126074 (AdBrainCortex), via scMoMaT",
            "MIT (scMoMaT)",
            "cell_type",
            path="multiome/snare_adbrain_5232.h5mu",
            obs_keys=("cell_type_fine", "batch"),
            peak_gene_links="multiome/snare_adbrain_peak_gene_links.csv.gz",
        ),
        "bmmc_a": DatasetInfo(
            "bmmc_a",
            "multiome",
            "NeurIPS 2021 BMMC multiome starter subset A (500 cells)",
            "GEO GSE194122",
            "MIT",
            "cell_type",
            path="multiome/bmmc_multiome_500a.h5mu",
        ),
        "bmmc_b": DatasetInfo(
            "bmmc_b",
            "multiome",
            "NeurIPS 2021 BMMC multiome starter subset B (500 cells)",
            "GEO GSE194122",
            "MIT",
            "cell_type",
            path="multiome/bmmc_multiome_500b.h5mu",
        ),
        "a549_dex": DatasetInfo(
            "a549_dex",
            "multiome",
            "sci-CAR A549 dexamethasone 0/1/3 h; ATAC is normalised, not counts",
            "Cao et al. 2018 (scAI package data)",
            "GPL-3",
            "dex_time_h",
            path="multiome/scicar_a549_dex.h5mu",
            count_modalities=("rna",),
        ),
        "pbmc10k_tiny": DatasetInfo(
            "pbmc10k_tiny",
            "multiome",
            "10x PBMC 10k multiome, 1,000-cell test subset, unlabelled",
            "10x Genomics via muon test data",
            "BSD-3",
            None,
            path="multiome/pbmc10k_multiome_tiny_unlabelled.h5mu",
        ),
        "pbmc10k": _glue_pair(
            "pbmc10k",
            "10x-Multiome-Pbmc10k",
            "10x Multiome PBMC 10k as preprocessed for GLUE (paper's PBMC-10K)",
            "10x Genomics; GLUE (Cao & Gao 2022)",
            "CC BY 4.0",
        ),
        "ma2020": _glue_pair(
            "ma2020",
            "Ma-2020",
            "SHARE-seq mouse skin as preprocessed for GLUE (paper's Ma-2020)",
            "Ma et al. 2020, GEO GSE140203; GLUE",
            "GEO public data",
        ),
        "pbmc3k": DatasetInfo(
            "pbmc3k",
            "multiome",
            "10x pbmc_granulocyte_sorted_3k multiome with Azimuth level-2 labels",
            "10x Genomics",
            "CC BY 4.0",
            "cell_type",
            remote=(
                RemoteFile(
                    "pbmc_granulocyte_sorted_3k_filtered_feature_bc_matrix.h5",
                    "https://cf.10xgenomics.com/samples/cell-arc/2.0.0/pbmc_granulocyte_sorted_3k/"
                    "pbmc_granulocyte_sorted_3k_filtered_feature_bc_matrix.h5",
                ),
            ),
            reader=_read_pbmc3k,
        ),
        "cellmix": DatasetInfo(
            "cellmix",
            "multiome",
            "SNARE-seq cell-line mixture (H1, BJ, K562, GM12878)",
            "Chen et al. 2019, GEO GSE126074",
            "GEO public data",
            "cell_type",
            remote=(
                RemoteFile(
                    "GSE126074_CellLineMixture_SNAREseq_cDNA_counts.tsv.gz",
                    _GEO + "GSE126074_CellLineMixture_SNAREseq_cDNA_counts.tsv.gz",
                ),
                RemoteFile(
                    "GSE126074_CellLineMixture_SNAREseq_chromatin_counts.tsv.gz",
                    _GEO + "GSE126074_CellLineMixture_SNAREseq_chromatin_counts.tsv.gz",
                ),
            ),
            reader=_read_cellmix,
        ),
    }
    | {
        k: DatasetInfo(
            k,
            "scrna",
            desc,
            desc,
            lic,
            "cell_type",
            path=f"scrna/{fname}",
            count_modalities=("rna",),
        )
        for k, (fname, desc, lic) in _SCRNA.items()
    }
    | {
        "osmfish_sscortex": DatasetInfo(
            "osmfish_sscortex",
            "spatial",
            "osmFISH mouse somatosensory cortex: 4,839 cells x 33 genes (molecule counts), 31 cell "
            "types (obs 'cell_type') and 11 anatomical regions (obs 'region'), coordinates in "
            "obsm['spatial'] (micrometres)",
            "Codeluppi et al. 2018, Nat Methods 15:932 (loom as redistributed by RubD/spatial-datasets)",
            "MIT (repository)",
            "cell_type",
            path="spatial/osmfish_sscortex_4839.h5ad",
            count_modalities=("rna",),
            obs_keys=("region",),
        ),
        "dlpfc_151510": DatasetInfo(
            "dlpfc_151510",
            "spatial",
            "10x Visium human DLPFC slice 151510: 4,634 spots x 500 genes (counts), cortical layers "
            "1-6 and white matter in obs 'layer' (39 spots unlabelled: missing, never a class), "
            "array coordinates in obsm['spatial']",
            "Maynard et al. 2021, Nat Neurosci 24:425 (500-gene subset shipped by the DR.SC package)",
            "GPL-3 (DR.SC)",
            "layer",
            path="spatial/dlpfc_151510_top500.h5ad",
            count_modalities=("rna",),
        ),
    }
)


# --------------------------------------------------------------------------- download
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_file(remote: RemoteFile, folder: Path, *, download: bool = True) -> Path:
    """Return the local path of ``remote``, downloading it with pooch when missing.

    Raises
    ------
    DatasetUnavailableError
        The file is absent and cannot be downloaded; the message says where
        to get it and where to put it.
    ValueError
        The file's SHA-256 differs from the registry's or the first download's.
    """
    import pooch

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / remote.name
    sidecar = target.with_name(target.name + ".sha256")
    if target.exists():
        expected = remote.sha256 or (sidecar.read_text().strip() if sidecar.exists() else None)
        if expected and _sha256(target) != expected:
            raise ValueError(
                f"{target} does not match its SHA-256 ({expected[:12]}...); delete it to download again."
            )
        return target
    help_msg = (
        f"{remote.name} is missing. Download it from {remote.url} and place it at {target} "
        f"(or set {ENV_VAR} to a folder holding <dataset>/{remote.name})."
    )
    if not download:
        raise DatasetUnavailableError(help_msg)
    try:
        path = pooch.retrieve(
            remote.url,
            known_hash=remote.sha256 and f"sha256:{remote.sha256}",
            fname=remote.name,
            path=folder,
            progressbar=True,
        )
    except ValueError as e:  # pooch's hash mismatch
        raise ValueError(f"download of {remote.url} failed its hash check: {e}") from e
    except Exception as e:  # network or HTTP errors
        raise DatasetUnavailableError(
            f"{help_msg} (download failed: {type(e).__name__}: {e})"
        ) from e
    if remote.sha256 is None:
        sidecar.write_text(_sha256(Path(path)) + "\n")
    return Path(path)


# --------------------------------------------------------------------------- load
def _read(path: Path, read: Callable):
    """``read()``, with errors of truncated or corrupted files naming ``path``."""
    try:
        return read()
    except (DatasetUnavailableError, DataValidationError):
        raise
    except (OSError, KeyError, ValueError, EOFError, pd.errors.ParserError) as e:
        raise DatasetUnavailableError(
            f"cannot read {path}: the file is truncated, corrupted or not in the expected "
            f"format ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}). "
            "Delete it so that it is downloaded again, or replace it with a good copy."
        ) from None


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
        A key of :data:`DATASETS` (``"simulated"`` gives :func:`simulate_multiome`).
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
    if name not in DATASETS:
        raise KeyError(f"unknown dataset {name!r}; choose one of {sorted(DATASETS)} or 'simulated'")
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


# --------------------------------------------------------------------------- simulator
#: simulated genome: gene bodies of GENE_LENGTH on a grid of GENE_SPACING, peaks of PEAK_WIDTH
GENE_SPACING, GENE_LENGTH, PEAK_WIDTH, N_CHROM = 200_000, 20_000, 500, 10


def _simulated_coordinates(
    gene_programs: np.ndarray, peak_programs: np.ndarray, seed: int, min_r: float = 0.5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coordinates of simulated genes and peaks from their programs ``(n_types, n_features)``.

    A peak whose program correlates (r > ``min_r`` over the types) with a
    gene's lies in that gene's body; the others lie between genes, farther
    than any promoter window. Uses its own random stream, so the counts of a
    seed do not depend on it.
    """
    rng = np.random.default_rng([seed, 1])
    n_genes, n_peaks = gene_programs.shape[1], peak_programs.shape[1]

    def z(a):
        a = a - a.mean(0)
        n = np.linalg.norm(a, axis=0)
        return np.divide(a, n, out=np.zeros_like(a), where=n > 0)

    r = z(peak_programs).T @ z(gene_programs)  # (n_peaks, n_genes)
    best = r.argmax(1)
    linked = r[np.arange(n_peaks), best] > min_r
    gene_names = np.array([f"gene{j:05d}" for j in range(n_genes)])
    chrom_idx = np.arange(n_genes) % N_CHROM
    start = (1 + np.arange(n_genes) // N_CHROM) * GENE_SPACING
    genes = pd.DataFrame(
        {
            "chrom": [f"chr{c + 1}" for c in chrom_idx],
            "chromStart": start,
            "chromEnd": start + GENE_LENGTH,
            "strand": "+",
        },
        index=gene_names,
    )
    anchor = np.where(linked, best, rng.integers(0, n_genes, n_peaks))
    offset = np.where(
        linked,
        rng.integers(0, GENE_LENGTH - PEAK_WIDTH, n_peaks),  # in the gene body
        rng.integers(GENE_LENGTH + 50_000, GENE_SPACING - 50_000, n_peaks),  # between genes
    )
    p_start = start[anchor] + offset
    peaks = pd.DataFrame(
        {
            "chrom": [f"chr{c + 1}" for c in chrom_idx[anchor]],
            "chromStart": p_start,
            "chromEnd": p_start + PEAK_WIDTH,
            "gene": np.where(linked, gene_names[best], ""),
        },
        index=[f"peak{j:05d}" for j in range(n_peaks)],
    )
    return genes, peaks


SIM_TYPES = (
    "HSPC",
    "B naive",
    "B intermediate",
    "B memory",  # trajectory
    "CD14 Mono",  # hides three subtypes
    "CD4 naive T",
    "CD4 memory T",  # partly mislabelled pair
    "NK",
    "ILC",  # differ only in ATAC
    "CD8 naive T",
    "CD8 TEM",  # differ only in RNA
)


def simulate_multiome(
    n_cells: int = 3000,
    n_genes: int = 1000,
    n_peaks: int = 3000,
    mislabel_fraction: float = 0.2,
    seed: int = 0,
) -> md.MuData:
    """Paired RNA + ATAC counts with planted ground truth.

    Eleven cell types (``SIM_TYPES``) are drawn in equal proportions; each
    has a latent program that sets log-means of genes and accessibility of
    peaks. Planted structure:

    * ``CD14 Mono`` hides three subpopulations (``obs["true_subtype"]``) that
      differ in 8 genes and 30 peaks each;
    * a fraction ``mislabel_fraction`` of true ``CD4 naive T`` cells carry the
      label ``CD4 memory T`` in ``obs["cell_type"]``; the truth is in
      ``obs["true_cell_type"]``;
    * ``HSPC -> B naive -> B intermediate -> B memory`` is a continuous path
      with ``obs["true_pseudotime"]`` in [0, 1]; type = quarter of the path;
    * genomic coordinates (``var`` columns ``chrom``, ``chromStart``,
      ``chromEnd``, ``strand``) place a peak in the body of the gene whose
      cell-type program its own program follows (Pearson r > 0.5 over the
      types; its name in ``atac.var["gene"]``) and the other peaks between
      genes, so that tools that link peaks to genes by position (GLUE) find
      real regulatory links;
    * ``NK``/``ILC`` share their RNA program and differ only in ATAC;
      ``CD8 naive T``/``CD8 TEM`` share their ATAC program and differ only in
      RNA, so integration separates what neither modality alone can.

    Sparsity is calibrated on the mirror: RNA library sizes log-normal around
    a median of ~475 counts (sci-CAR kidney: 490, BMMC subsets: ~370; 73%
    zeros at the defaults); ATAC Poisson counts with a median of 200
    fragments in peaks per cell (BMMC subsets: ~190) over 3,000 peaks, i.e.
    93% zeros with 99% of non-zero entries at 1 or 2 (measured at seed 0).
    With 2,000 cells RNA PCA reaches NMI 0.55, ATAC LSI 0.50 and their
    concatenation 0.58 against ``true_cell_type`` (KMeans, true k, seed 0).

    Returns
    -------
    MuData
        ``rna`` ``(n_cells, n_genes)`` and ``atac`` ``(n_cells, n_peaks)``
        with raw counts in ``.X`` and ``.layers["counts"]``; truth in ``.obs``;
        ``.uns["simulation"]`` holds the parameters.
    """
    rng = np.random.default_rng(seed)
    n_types = len(SIM_TYPES)
    t_idx = rng.integers(0, n_types, n_cells)
    true_type = np.array(SIM_TYPES, dtype=object)[t_idx]

    def programs(n_feat, n_prog, scale, frac):
        return rng.normal(0, scale, (n_prog, n_feat)) * (rng.random((n_prog, n_feat)) < frac)

    # program ids per type for each modality (shared ids = indistinguishable in that modality)
    rna_prog = {t: i for i, t in enumerate(SIM_TYPES)}
    atac_prog = {t: i for i, t in enumerate(SIM_TYPES)}
    rna_prog["ILC"] = rna_prog["NK"]
    atac_prog["CD8 TEM"] = atac_prog["CD8 naive T"]
    g_base = rng.normal(0, 1.0, n_genes)
    p_base = rng.normal(0.0, 0.5, n_peaks)
    G = programs(n_genes, n_types, 1.2, 0.08)
    P = programs(n_peaks, n_types, 1.2, 0.06)
    # related types share part of a program (T cells, B path, myeloid)
    for group in (("CD4 naive T", "CD4 memory T", "CD8 naive T", "CD8 TEM"), ("NK", "ILC")):
        ids = [rna_prog[t] for t in group]
        G[ids] = 0.7 * G[ids] + 0.3 * G[ids].mean(0)
        ids = [atac_prog[t] for t in group]
        P[ids] = 0.7 * P[ids] + 0.3 * P[ids].mean(0)

    g_logit = g_base + G[[rna_prog[t] for t in true_type]]
    p_logit = p_base + P[[atac_prog[t] for t in true_type]]

    # trajectory: interpolate along 4 anchors (use the programs of the 4 B-path types)
    path = list(SIM_TYPES[:4])
    on_path = np.isin(true_type, path)
    pt = np.full(n_cells, np.nan)
    pt[on_path] = rng.random(on_path.sum())
    seg = np.minimum((pt[on_path] * 3).astype(int), 2)
    frac = pt[on_path] * 3 - seg
    ga = np.stack([g_base + G[rna_prog[t]] for t in path])
    pa = np.stack([p_base + P[atac_prog[t]] for t in path])
    g_logit[on_path] = (1 - frac)[:, None] * ga[seg] + frac[:, None] * ga[seg + 1]
    p_logit[on_path] = (1 - frac)[:, None] * pa[seg] + frac[:, None] * pa[seg + 1]
    stage = np.minimum((pt[on_path] * 4).astype(int), 3)
    true_type[on_path] = np.array(path, dtype=object)[stage]

    # CD14 Mono subtypes
    subtype = np.array(["none"] * n_cells, dtype=object)
    mono = np.flatnonzero(true_type == "CD14 Mono")
    sub = rng.integers(0, 3, mono.size)
    for s in range(3):
        gi = rng.choice(n_genes, 8, replace=False)
        pi = rng.choice(n_peaks, 30, replace=False)
        cells = mono[sub == s]
        g_logit[np.ix_(cells, gi)] += 2.0
        p_logit[np.ix_(cells, pi)] += 2.5
        subtype[cells] = f"Mono-{s + 1}"

    # counts
    lib_rna = rng.lognormal(np.log(500), 0.4, n_cells)
    mu = np.exp(g_logit - g_logit.max(1, keepdims=True))
    mu = mu / mu.sum(1, keepdims=True) * lib_rna[:, None]
    theta = 2.0
    rna = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    dropout = rng.random(rna.shape) < 0.1 * np.exp(-mu)
    rna[dropout] = 0
    lib_atac = rng.lognormal(np.log(200), 0.5, n_cells)
    acc = np.exp(p_logit - p_logit.max(1, keepdims=True))
    rate = acc / acc.sum(1, keepdims=True) * lib_atac[:, None]
    atac = rng.poisson(rate).astype(np.float32)

    given = true_type.copy()
    naive = np.flatnonzero(true_type == "CD4 naive T")
    flip = rng.choice(naive, int(round(mislabel_fraction * naive.size)), replace=False)
    given[flip] = "CD4 memory T"

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(given),
            "true_cell_type": pd.Categorical(true_type),
            "true_subtype": pd.Categorical(subtype),
            "true_pseudotime": pt,
            "mislabelled": given != true_type,
        },
        index=[f"cell{i:05d}" for i in range(n_cells)],
    )
    gene_var, peak_var = _simulated_coordinates(
        np.stack([G[rna_prog[t]] for t in SIM_TYPES]),
        np.stack([P[atac_prog[t]] for t in SIM_TYPES]),
        seed,
    )
    mods = {}
    for m, X, var in (("rna", rna, gene_var), ("atac", atac, peak_var)):
        a = ad.AnnData(sp.csr_matrix(X), obs=obs.copy(), var=var)
        a.layers["counts"] = a.X.copy()
        mods[m] = a
    mdata = md.MuData(mods)
    for c in obs.columns:
        mdata.obs[c] = obs[c].values
    mdata.uns["simulation"] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_peaks": n_peaks,
        "seed": seed,
        "mislabel_fraction": mislabel_fraction,
        "n_linked_peaks": int((peak_var["gene"] != "").sum()),
    }
    mdata.uns["sci2cl_dataset"] = {
        "name": "simulated",
        "label_key": "cell_type",
        "count_modalities": ["rna", "atac"],
    }
    return mdata


def simulate_spatial(
    n_side: int = 40,
    n_genes: int = 60,
    n_domains: int = 4,
    n_types: int = 6,
    seed: int = 0,
) -> ad.AnnData:
    """A tissue slice with planted spatial domains and cell types, for tests and smoke runs.

    ``n_side x n_side`` spots on a grid (``obsm["spatial"]``). Domains are
    bands along the second coordinate with wavy borders, like cortical
    layers (``obs["domain"]``); each spot holds one cell type
    (``obs["cell_type"]``) drawn with domain-dependent proportions, so types
    mix within a domain. A spot's counts are Poisson around a type program
    (a quarter of the genes) plus a weaker domain program (another quarter,
    shared by every type in the domain): the domains show in expression only
    on average over neighbouring spots.

    Returns
    -------
    AnnData
        ``(n_side ** 2, n_genes)`` raw counts in ``.X`` and ``.layers["counts"]``.
    """
    from ._utils import check_range

    check_range("n_side", n_side, 4, integer=True)
    check_range("n_genes", n_genes, 8, integer=True)
    check_range("n_domains", n_domains, 2, n_side, integer=True)
    check_range("n_types", n_types, 2, integer=True)
    rng = np.random.default_rng(seed)
    xy = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2)
    wave = 1.5 * np.sin(xy[:, 0] / n_side * 2 * np.pi)
    domain = np.clip(((xy[:, 1] + wave) / n_side * n_domains).astype(int), 0, n_domains - 1)
    props = rng.dirichlet(np.full(n_types, 0.7), n_domains)
    ctype = np.array([rng.choice(n_types, p=props[d]) for d in domain])
    q = max(n_genes // 4, 1)
    log_mu = np.full((len(xy), n_genes), np.log(0.5))
    type_prog = rng.normal(0, 1.2, (n_types, q))
    dom_prog = rng.normal(0, 0.6, (n_domains, q))
    log_mu[:, :q] += type_prog[ctype]
    log_mu[:, q : 2 * q] += dom_prog[domain]
    lib = rng.lognormal(0, 0.3, (len(xy), 1))
    X = rng.poisson(lib * np.exp(log_mu)).astype(np.float32)
    empty = X.sum(1) == 0
    X[empty, rng.integers(0, n_genes, empty.sum())] = 1  # every spot has a count
    a = ad.AnnData(
        sp.csr_matrix(X),
        obs=pd.DataFrame(
            {
                "domain": pd.Categorical([f"domain {d}" for d in domain]),
                "cell_type": pd.Categorical([f"type {t}" for t in ctype]),
            },
            index=[f"spot{i}" for i in range(len(xy))],
        ),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )
    a.obsm["spatial"] = xy.astype(float)
    a.layers["counts"] = a.X.copy()
    a.uns["sci2cl_dataset"] = {"name": "simulated_spatial", "label_key": "domain",
                               "count_modalities": ["rna"]}  # fmt: skip
    return a


#: values per HDF5 chunk of the count arrays written by :func:`simulate_multiome_to_disk`
FILE_CHUNK = 2**20


def simulate_multiome_to_disk(
    path: str | os.PathLike,
    n_cells: int,
    n_genes: int = 2000,
    n_peaks: int = 5000,
    chunk_size: int = 10_000,
    seed: int = 0,
) -> Path:
    """Write a large paired dataset to an ``.h5mu`` file chunk by chunk (for scaling runs).

    Memory stays at one chunk of dense counts (``chunk_size x max(n_genes,
    n_peaks)`` floats) plus the cell index, whatever ``n_cells``. The model is
    a lean version of :func:`simulate_multiome`: the eleven types of
    ``SIM_TYPES`` in equal proportions, each with a sparse RNA and ATAC
    programme; negative-binomial RNA counts around a median library of ~500
    and Poisson ATAC counts around ~200 fragments per cell. No planted
    subtypes, trajectory or label errors. The programmes come from ``seed``,
    chunk ``c``'s cells from the seed sequence ``[seed, c + 1]``: a file
    depends on ``seed`` and ``chunk_size``; keep both to reproduce it.

    Parameters
    ----------
    path
        Output file (``.h5mu``); written to a temporary name and renamed at the end.
    n_cells, n_genes, n_peaks
        Shape (>= 1 each).
    chunk_size
        Cells generated and appended at a time (>= 1).
    seed
        Seed of the programmes and the cells.

    Returns
    -------
    Path
        The file: raw counts in each modality's ``X`` (CSR, float32), the true
        type in ``obs["cell_type"]``. Open it with ``mudata.read_h5mu(path,
        backed=True)``.
    """
    import h5py
    from anndata.io import sparse_dataset, write_elem

    from ._utils import check_range

    check_range("n_cells", n_cells, 1, integer=True)
    check_range("n_genes", n_genes, 1, integer=True)
    check_range("n_peaks", n_peaks, 1, integer=True)
    check_range("chunk_size", chunk_size, 1, integer=True)
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_types = len(SIM_TYPES)
    G = rng.normal(0, 1.2, (n_types, n_genes)) * (rng.random((n_types, n_genes)) < 0.08)
    P = rng.normal(0, 1.2, (n_types, n_peaks)) * (rng.random((n_types, n_peaks)) < 0.06)
    G += rng.normal(0, 1.0, n_genes)
    P += rng.normal(0, 0.5, n_peaks)
    g_w = np.exp(G - G.max(1, keepdims=True))
    g_w /= g_w.sum(1, keepdims=True)
    p_w = np.exp(P - P.max(1, keepdims=True))
    p_w /= p_w.sum(1, keepdims=True)
    starts = range(0, n_cells, chunk_size)
    types = np.concatenate(
        [np.random.default_rng([seed, c + 1]).integers(0, n_types, min(chunk_size, n_cells - s))
         for c, s in enumerate(starts)]
    )  # fmt: skip
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(types, categories=list(SIM_TYPES))},
        index=pd.Index([f"cell{i:08d}" for i in range(n_cells)]),
    )
    mods = {
        m: ad.AnnData(
            sp.csr_matrix((n_cells, k), dtype=np.float32),
            obs=obs.copy(),
            var=pd.DataFrame(index=[f"{m[0]}{j:05d}" for j in range(k)]),
        )
        for m, k in (("rna", n_genes), ("atac", n_peaks))
    }
    mdata = md.MuData(mods)
    mdata.obs["cell_type"] = obs["cell_type"].values
    mdata.uns["sci2cl_dataset"] = {"name": "simulated_disk", "label_key": "cell_type",
                                   "count_modalities": ["rna", "atac"]}  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mdata.write_h5mu(tmp)
    del mdata, mods
    try:
        with h5py.File(tmp, "r+") as f:
            for m, k in (("rna", n_genes), ("atac", n_peaks)):
                del f[f"mod/{m}/X"]
                # large HDF5 chunks: with h5py's default for an empty resizable dataset (1,024
                # values) a reader's memory grows with the part of the file it has read
                write_elem(f[f"mod/{m}"], "X", sp.csr_matrix((0, k), dtype=np.float32),
                           dataset_kwargs={"chunks": (FILE_CHUNK,)})  # fmt: skip
            X = {m: sparse_dataset(f[f"mod/{m}/X"]) for m in ("rna", "atac")}
            for c, s in enumerate(starts):
                r = np.random.default_rng([seed, c + 1])
                t = r.integers(0, n_types, min(chunk_size, n_cells - s))  # the same draw as above
                lib = r.lognormal(np.log(500), 0.4, (len(t), 1))
                mu = g_w[t] * lib
                X["rna"].append(
                    sp.csr_matrix(r.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(np.float32))
                )
                del mu
                rate = p_w[t] * r.lognormal(np.log(200), 0.5, (len(t), 1))
                X["atac"].append(sp.csr_matrix(r.poisson(rate).astype(np.float32)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
