"""Development log of linear joint starts for scI2CL at shallow RNA (issue 41).

Usage: python -m benchmarks.joint_start_dev [--datasets ...] [--fractions 0.1 1.0] [--seeds 0 1 2]

scI2CL's encoders start from their inputs' principal components (a linear path initialised to
the leading PCs) and learn corrections. A joint latent would start from a linear combination of
the two modalities' inputs; this study scores candidate starts before any training, on the depth
sweep's cells (:func:`benchmarks.depth.prepare_thinned`, the RNA thinned with the run's seed):

- ``rna_in``/``atac_in``: each modality's encoder inputs (log-normalised, standardised, 50 PCs
  scaled to unit mean variance, :func:`sci2cl.model._inputs.fit_input_scaling`'s transform);
- ``concat_in``: the two side by side, each over its mean row norm (as the benchmark's PCA+LSI);
- ``jpca_in``: the leading ``n_latent`` (32) principal components of ``concat_in``;
- ``atac_white``: the ATAC inputs with every PC scaled to unit variance (as LSI's components),
  and ``concat_white``/``jpca_white`` built from it;
- ``rna_in+lsi``: the RNA inputs beside the benchmark's LSI;
- ``jpca_mod``: the leading 32 PCs of ``[sqrt(w) rna_in, sqrt(1 - w) atac_in]`` (each over its
  mean row norm), ``w`` chosen without labels as scI2CL's read-out chooses it (the most modular
  15-NN graph on the grid 0, 0.1, ..., 1, a mixture only if it beats the better single modality
  by :data:`sci2cl.model._readout.MIXTURE_MARGIN`); ``w`` is logged;
- the benchmark's ``PCA+LSI`` for reference.

Labels only score (KMeans at the true k, label-free Leiden). Every candidate is logged, losers
too, in ``results/joint_start_log.csv``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "results" / "joint_start_log.csv"
N_PCS, N_LATENT = 50, 32


def input_pcs(counts, seed: int, whiten: bool = False) -> np.ndarray:
    """The encoder inputs of one modality: log-normalise, standardise (clip 10), 50 PCs."""
    import scipy.sparse as sp
    from sklearn.decomposition import PCA

    X = sp.csr_matrix(counts).astype(np.float64)
    lib = np.asarray(X.sum(1)).ravel().clip(1)
    X = sp.diags(1e4 / lib) @ X
    X.data = np.log1p(X.data)
    X = X.toarray()
    S = np.clip((X - X.mean(0)) / X.std(0).clip(1e-2), -10, 10)
    pca = PCA(N_PCS, svd_solver="randomized", random_state=seed).fit(S)
    U = pca.transform(S)
    return U / U.std(0) if whiten else U / np.sqrt(pca.explained_variance_.mean())


def candidates(m, seed: int) -> dict[str, np.ndarray]:
    """Every candidate start of the module docstring for prepared ``m``."""
    from sklearn.decomposition import PCA

    from benchmarks import peers

    def unit(x):
        return x / np.linalg.norm(x, axis=1).mean()

    def jpca(x):
        return PCA(N_LATENT, svd_solver="full").fit_transform(x)

    r = input_pcs(m["rna"].layers["counts"], seed)
    a = input_pcs(m["atac"].layers["counts"], seed)
    aw = input_pcs(m["atac"].layers["counts"], seed, whiten=True)
    lsi = peers.run_peer("ATAC LSI", m, seed=seed)["embedding"]
    c = {
        "rna_in": r[:, :N_LATENT],
        "atac_in": a[:, :N_LATENT],
        "concat_in": np.hstack([unit(r), unit(a)]),
        "concat_white": np.hstack([unit(r), unit(aw)]),
        "rna_in+lsi": np.hstack([unit(r), unit(lsi)]),
        "PCA+LSI": peers.run_peer("PCA+LSI", m, seed=seed)["embedding"],
    }
    c["jpca_in"] = jpca(c["concat_in"])
    c["jpca_white"] = jpca(c["concat_white"])
    from sci2cl._graph import choose_modality_weight, modularity_weight_scores
    from sci2cl.model._readout import MIXTURE_MARGIN, WEIGHT_GRID

    scores = modularity_weight_scores(unit(r), unit(a), WEIGHT_GRID, N_LATENT, seed)
    w = choose_modality_weight(scores, MIXTURE_MARGIN)
    c["jpca_mod"] = jpca(np.hstack([np.sqrt(w) * unit(r), np.sqrt(1 - w) * unit(a)]))
    c["_w_rna"] = w
    return c


def main() -> int:
    from benchmarks.common import depth_dev_args, label_key

    sets = ["snare_adbrain", "scicar_kidney", "bmmc_a", "bmmc_b"]
    a = depth_dev_args(__doc__, sets, [0.1, 1.0])
    from benchmarks.depth import prepare_thinned
    from sci2cl import metrics

    old = pd.read_csv(LOG) if LOG.exists() else pd.DataFrame()
    for ds in a.datasets:
        for f in a.fractions:
            rows = []
            for seed in a.seeds:
                m = prepare_thinned(ds, f, seed)
                y = m.obs[label_key(ds)].astype(str).to_numpy()
                c = candidates(m, seed)
                w = c.pop("_w_rna")
                for name, z in c.items():
                    for r in metrics.cluster_embedding(z, y, seed=seed):
                        rows.append({"dataset": ds, "rna_fraction": f, "seed": seed,
                                     "candidate": name, "w_rna": w if name == "jpca_mod" else np.nan,
                                     **r})  # fmt: skip
                print(ds, f, seed, flush=True)
            new = pd.DataFrame(rows)
            if len(old):
                same = (old["dataset"] == ds) & (old["rna_fraction"] == f)
                same &= old["seed"].isin(a.seeds)
                old = old[~same]
            old = pd.concat([old, new], ignore_index=True)
            tmp = LOG.with_suffix(".tmp")
            old.to_csv(tmp, index=False)
            os.replace(tmp, LOG)
    t = old.groupby(["dataset", "rna_fraction", "candidate", "protocol"])["nmi"].agg(
        ["mean", "std"]
    )
    print(t.round(3).unstack("protocol").to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
