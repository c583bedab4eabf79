"""The dataset registry: the data directory, what each dataset is and how its files are read."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import new_mudata
from ..pp import align_modalities

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
    repo = Path(__file__).resolve().parents[2]
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
    return new_mudata({"rna": mdata["rna"][cells].copy(), "atac": atac[cells][:, ~bad].copy()})


def _read_glue_pair(files: list[Path], label_key: str = "cell_type") -> md.MuData:
    rna, atac = ad.read_h5ad(files[0]), ad.read_h5ad(files[1])
    for a in (rna, atac):
        if "counts" in a.layers:
            a.X = a.layers["counts"]
    return new_mudata({"rna": rna, "atac": atac})


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
    mdata = new_mudata({m: mdata[m][cells].copy() for m in ("rna", "atac")})
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
    mdata = align_modalities(new_mudata(mods))
    cells = mdata.obs_names.intersection(labels.index)
    mdata = new_mudata({m: mdata[m][cells].copy() for m in ("rna", "atac")})
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
