"""DESC (Li et al. 2020, Nat. Commun.) on one scRNA-seq AnnData, run inside DESC's own environment.

Usage (by :func:`benchmarks.scrcl.desc_clusters`, never imported by the package):
    <desc venv>/bin/python benchmarks/desc_worker.py IN.h5ad OUT.npz SEED

``IN.h5ad`` holds raw counts in ``X``. Settings of DESC's PBMC tutorial: counts per cell to 1e4,
log1p, highly variable genes, scaling clipped at 3, ``desc.train`` with ``tol=0.005``, 10
neighbours, batches of 256 and Louvain resolution 0.8, on the CPU. Two departures, the same on
every set: 1,000 highly variable genes by rank (the tutorial's dispersion cut-offs keep a number
that varies from set to set) and desc's own layer sizes for the set's size (``dims=None``). Writes the
embedding (``X_Embeded_z0.8``) and DESC's own clusters (``desc_0.8``) to ``OUT.npz``. This file
imports only DESC's environment (tensorflow 2.15, desc 2.1.1), never sci2cl.
"""

import os
import sys
import tempfile


def main() -> int:
    src, out, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import desc
    import numpy as np
    import scanpy as sc

    adata = sc.read_h5ad(src)
    sc.pp.filter_genes(adata, min_cells=3)
    desc.normalize_per_cell(adata, counts_per_cell_after=1e4)
    desc.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=1000, subset=True)
    desc.scale(adata, zero_center=True, max_value=3)
    with tempfile.TemporaryDirectory() as tmp:
        adata = desc.train(
            adata, tol=0.005, n_neighbors=10, batch_size=256, louvain_resolution=[0.8],
            save_dir=tmp, do_tsne=False, do_umap=False, use_GPU=False, num_Cores=1,
            random_seed=seed, verbose=False, save_encoder_weights=False,
        )  # fmt: skip
    np.savez(
        out,
        embedding=np.asarray(adata.obsm["X_Embeded_z0.8"], np.float32),
        labels=adata.obs["desc_0.8"].astype(str).to_numpy().astype("U"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
