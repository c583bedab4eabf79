"""Small files in the exact formats of the paper's PBMC datasets, made from the simulator.

Usage:
  python scripts/paper_format_files.py OUT_DIR [--cells 1500] [--seed 0]

Writes, under ``OUT_DIR`` (use it as ``SCI2CL_DATA_DIR``):

- ``pbmc10k/10x-Multiome-Pbmc10k-{RNA,ATAC}.h5ad``: GLUE's preprocessed pair (counts in ``X``,
  ``obs["cell_type"]``, gene coordinates ``chrom/chromStart/chromEnd/strand`` in the RNA ``var``,
  peaks named ``chrN:start-end``);
- ``pbmc3k/pbmc_granulocyte_sorted_3k_filtered_feature_bc_matrix.h5``: a Cell Ranger ARC
  feature-barcode matrix (``matrix/{data,indices,indptr,shape,barcodes}``,
  ``matrix/features/{id,name,feature_type,genome,interval}``, Gene Expression + Peaks), and
  ``labels/pbmc3k_multiome_azimuth_l2_2874.txt`` (Azimuth level-2 table: ``Cell``, ``Cluster``).

The cells are the simulator's (PBMC type names); gene names are PBMC symbols, among them the paper's
markers (VCAN, HLA-DRA, NPC2 for the monocyte subpopulations; SELL, CCR7, ITGAL for naive vs memory
CD4 T). They let the chapters run end to end with ``DATASET="pbmc10k"`` / ``"pbmc3k"``, the path a
user with the real files takes; they carry no biology of those datasets.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

#: PBMC gene symbols given to the simulator's first genes (the rest keep synthetic names)
SYMBOLS = [
    "VCAN", "HLA-DRA", "NPC2", "SELL", "CCR7", "ITGAL", "CD14", "LYZ", "S100A8", "S100A9",
    "FCGR3A", "CD34", "TCL1A", "IGHD", "IGHM", "CD27", "MS4A1", "CD79A", "CD3E", "CD4", "CD8A",
    "IL7R", "GZMK", "NKG7", "GNLY", "KLRD1", "FOXP3", "CD74", "HLA-DRB1", "CST3",
]  # fmt: skip
LABELS = "pbmc3k_multiome_azimuth_l2_2874.txt"


def _simulated(n_cells: int, seed: int):
    from sci2cl.datasets import simulate_multiome

    m = simulate_multiome(n_cells=n_cells, seed=seed)
    rna, atac = m["rna"].copy(), m["atac"].copy()
    names = list(rna.var_names)
    names[: len(SYMBOLS)] = SYMBOLS
    rna.var_names = names
    names = pd.Index([f"{c}:{s}-{e}" for c, s, e in
                      zip(atac.var["chrom"], atac.var["chromStart"], atac.var["chromEnd"])])  # fmt: skip
    atac = atac[:, ~names.duplicated()].copy()  # simulated peaks may share coordinates
    atac.var_names = names[~names.duplicated()]
    labels = m.obs["cell_type"].astype(str)
    return rna, atac, labels


def write_pbmc10k(out: Path, n_cells: int = 1500, seed: int = 0) -> Path:
    """GLUE's PBMC-10K pair (``10x-Multiome-Pbmc10k-{RNA,ATAC}.h5ad``)."""
    rna, atac, labels = _simulated(n_cells, seed)
    folder = out / "pbmc10k"
    folder.mkdir(parents=True, exist_ok=True)
    for a, mod in ((rna, "RNA"), (atac, "ATAC")):
        b = ad.AnnData(sp.csr_matrix(a.layers["counts"], dtype=np.float32), var=a.var.copy())
        b.obs_names = a.obs_names
        b.obs["cell_type"] = pd.Categorical(labels.values)
        b.obs["domain"] = "scRNA-seq" if mod == "RNA" else "scATAC-seq"
        b.layers["counts"] = b.X.copy()
        b.write_h5ad(folder / f"10x-Multiome-Pbmc10k-{mod}.h5ad")
    return folder


def write_pbmc3k(out: Path, n_cells: int = 1500, seed: int = 0) -> Path:
    """Cell Ranger ARC ``filtered_feature_bc_matrix.h5`` and the Azimuth label table."""
    rna, atac, labels = _simulated(n_cells, seed)
    folder = out / "pbmc3k"
    folder.mkdir(parents=True, exist_ok=True)
    barcodes = [
        f"{''.join('ACGT'[(i >> (2 * k)) & 3] for k in range(16))}-1" for i in range(rna.n_obs)
    ]
    X = (
        sp.hstack([rna.layers["counts"], atac.layers["counts"]]).T.tocsc().astype(np.int32)
    )  # features x cells
    n_genes, n_peaks = rna.n_vars, atac.n_vars
    with h5py.File(folder / "pbmc_granulocyte_sorted_3k_filtered_feature_bc_matrix.h5", "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=X.data)
        g.create_dataset("indices", data=X.indices.astype(np.int64))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(X.shape, dtype=np.int32))
        ft = g.create_group("features")
        ids = [f"ENSG{j:011d}" for j in range(n_genes)] + list(atac.var_names)
        names = list(rna.var_names) + list(atac.var_names)
        types = ["Gene Expression"] * n_genes + ["Peaks"] * n_peaks
        intervals = [
            f"{c}:{s}-{e}"
            for c, s, e in zip(rna.var["chrom"], rna.var["chromStart"], rna.var["chromEnd"])
        ]
        intervals += list(atac.var_names)
        ft.create_dataset("id", data=np.array(ids, dtype="S"))
        ft.create_dataset("name", data=np.array(names, dtype="S"))
        ft.create_dataset("feature_type", data=np.array(types, dtype="S"))
        ft.create_dataset("genome", data=np.array(["GRCh38"] * len(ids), dtype="S"))
        ft.create_dataset("interval", data=np.array(intervals, dtype="S"))
        ft.create_dataset("_all_tag_keys", data=np.array([b"genome", b"interval"]))
    lab_dir = out / "labels"
    lab_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"Cell": barcodes, "Cluster": labels.values}).to_csv(
        lab_dir / LABELS, sep="\t", index=False
    )
    return folder


def write(out: str | Path, n_cells: int = 1500, seed: int = 0) -> Path:
    """Both datasets under ``out``; returns ``out``."""
    out = Path(out)
    write_pbmc10k(out, n_cells, seed)
    write_pbmc3k(out, n_cells, seed)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("out")
    ap.add_argument("--cells", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(write(a.out, a.cells, a.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
