"""Does MOFA+'s lead on the BMMC sets come from ATAC? MOFA+ on RNA alone against RNA + ATAC (issue 41).

Usage: python -m benchmarks.archive.mofa_views DATASET [DATASET ...]

The depth sweep says that on ``bmmc_a`` and ``bmmc_b`` at full depth integration pays: MOFA+
beats RNA PCA. That could be MOFA+'s model (a factor analysis with a noise variance per
feature, 15 factors read standardised) rather than ATAC. So MOFA+ is fitted as the
benchmark's wrapper fits it (``benchmarks.peers._mofa``: log-normalised RNA, TF-IDF/LSI ATAC,
15 factors, muon's ``mu.tl.mofa``), once on RNA alone and once on both views, seeds 0-2, and
scored with KMeans at the true k and label-free Leiden (labels only score). Rows go to
``results/mofa_views_log.csv`` (a re-run of a dataset replaces its rows).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "mofa_views_log.csv"
SEEDS = (0, 1, 2)
VIEWS = (("rna",), ("rna", "atac"))


def factors(mdata, views: tuple[str, ...], seed: int, n_factors: int = 15) -> np.ndarray:
    """MOFA+ factors of ``views`` of ``mdata``, standardised as the benchmark reads them."""
    import mudata as md
    import muon as mu
    from sklearn.preprocessing import StandardScaler

    from sci2cl import pp

    m = md.MuData({v: mdata[v].copy() for v in views})
    pp.log_normalize(m["rna"])
    if "atac" in views:
        pp.tfidf_lsi(m["atac"], seed=seed)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        mu.tl.mofa(m, n_factors=n_factors, seed=seed, quiet=True, verbose=False,
                   use_obs="union", gpu_mode=False, outfile=f"{tmp}/mofa.hdf5")  # fmt: skip
    return StandardScaler().fit_transform(m.obsm["X_mofa"])


def step(ds: str) -> None:
    from benchmarks.common import append_log, label_key, one_thread, prepare
    from sci2cl import metrics

    one_thread()
    mdata = prepare(ds)
    y = mdata.obs[label_key(ds)].astype(str).to_numpy()
    rows = []
    for seed in SEEDS:
        for views in VIEWS:
            Z = factors(mdata, views, seed).astype(np.float32)
            for r in metrics.cluster_embedding(Z, y, seed=seed):
                rows.append({"dataset": ds, "seed": seed, "views": "+".join(views), **r})
    new = pd.DataFrame(rows)
    append_log(rows, LOG, ["dataset"])
    print(new.pivot_table(index="views", columns="protocol", values="nmi").round(3), flush=True)


if __name__ == "__main__":
    import sys

    from benchmarks.archive import run_groups

    sys.exit(run_groups(None, 1, __doc__, step))
