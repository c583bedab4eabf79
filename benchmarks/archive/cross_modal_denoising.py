"""Two ways to let ATAC denoise shallow RNA that lost (issue 41), beside the default read-out.

Usage: python -m benchmarks.archive.cross_modal_denoising DATASET FRACTION SEED [...]

On real cells with thinned RNA (binomial thinning, :func:`benchmarks.depth.prepare_thinned`)
the default read-out already smooths the RNA embedding over ATAC neighbours. Two variants of
that idea, scored on the same trained default model (labels only score):

* ``smooth_joint w<w> a<a>``: the RNA encoder's embedding averaged over each cell's 15
  nearest neighbours of the *joint* embedding (RNA and ATAC encoders, each scaled to unit
  mean row norm, RNA weight ``w``) with share ``a``. Purer neighbourhoods than ATAC alone
  gives, but RNA now takes part in choosing them, so RNA noise is partly averaged with itself.
* ``smooth_atac a<a>``: the rule of the default read-out (ATAC neighbours) at a fixed share,
  the reference for the above.
* ``pca(rna+<lam>*gene_activity)``: no model; where the data link peaks to genes
  (:func:`sci2cl.tl.gene_activity`), each gene's ATAC counts are added to its RNA counts
  (weight ``lam``) before scanpy's log-normalise, scale and 30-PC PCA: ATAC in RNA's own
  basis, as a guidance graph links them in GLUE. ``rna_pca`` is the same without ATAC.

Rows go to ``results/sci2cl_denoising_log.csv`` (one per variant, protocol and run).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "sci2cl_denoising_log.csv"
SHARES = (0.4, 0.6)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1).mean()


def _smoothed(z: np.ndarray, nbr_space: np.ndarray, share: float) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    idx = NearestNeighbors(n_neighbors=15).fit(nbr_space).kneighbors(return_distance=False)
    idx = np.hstack([np.arange(len(z))[:, None], idx[:, :14]])  # a cell finds itself first
    return (1 - share) * z + share * z[idx].mean(1)


def _pca(counts) -> np.ndarray:
    import anndata as ad
    import scanpy as sc
    import scipy.sparse as sp

    a = ad.AnnData(sp.csr_matrix(counts).astype(np.float32))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.scale(a, max_value=10)
    sc.tl.pca(a, n_comps=30, random_state=0)
    return a.obsm["X_pca"]


def variants(mdata, seed: int) -> dict[str, np.ndarray]:
    """Every variant's embedding of one prepared (thinned) dataset at one seed."""
    from benchmarks.readout_dev import train_default
    from sci2cl import datasets, tl

    model, _ = train_default(mdata, seed)
    zr = _unit(model.get_latent_representation(key_added=None, kind="rna"))
    za = _unit(model.get_latent_representation(key_added=None, kind="atac"))
    out = {"default joint": model.get_latent_representation(key_added=None), "rna encoder": zr}
    for a in SHARES:
        out[f"smooth_atac a{a}"] = _smoothed(zr, za, a)
        for w in (0.5, 0.7):
            joint = np.hstack([np.sqrt(w) * zr, np.sqrt(1 - w) * za])
            out[f"smooth_joint w{w} a{a}"] = _smoothed(zr, joint, a)
    name = mdata.uns["sci2cl_dataset"]["name"]
    full = datasets.load(name, download=False)["atac"][mdata.obs_names]
    try:
        ga = tl.gene_activity(full)
    except ValueError:  # no peak-gene links in this dataset
        return out
    genes = [g for g in mdata["rna"].var_names if g in ga.var_names]
    r = mdata["rna"][:, genes].layers["counts"]
    out["rna_pca"] = _pca(r)
    for lam in (0.5, 1.0):
        out[f"pca(rna+{lam:g}*gene_activity)"] = _pca(r + lam * ga[:, genes].X)
    return out


def run(ds: str, fraction: float, seed: int) -> list[dict]:
    from benchmarks.common import label_key
    from benchmarks.depth import prepare_thinned
    from sci2cl import metrics

    mdata = prepare_thinned(ds, fraction, seed)
    mdata.uns["sci2cl_dataset"] = {**mdata.uns.get("sci2cl_dataset", {}), "name": ds}
    y = mdata.obs[label_key(ds)].astype(str).to_numpy()
    rows = []
    for name, z in variants(mdata, seed).items():
        base = {"dataset": ds, "rna_fraction": fraction, "seed": seed, "variant": name}
        rows += [{**base, **r} for r in metrics.cluster_embedding(z, y, seed=seed)]
    return rows


def main(argv: list[str] | None = None) -> int:
    from benchmarks.archive import run_groups
    from benchmarks.common import append_log

    def step(ds: str, frac: str, seed: str) -> None:
        rows = run(ds, float(frac), int(seed))
        append_log(rows, LOG, ["dataset", "rna_fraction", "seed", "variant", "protocol"])
        print(ds, frac, seed, "done", flush=True)

    return run_groups(argv, 3, __doc__, step)


if __name__ == "__main__":
    sys.exit(main())
