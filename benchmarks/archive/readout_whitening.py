"""A read-out rule that lost (issue 41): standardising the joint embedding's components, as MOFA+ factors are read.

Usage: python -m benchmarks.archive.readout_whitening DATASET SEED [DATASET SEED ...]

The question: on the simulator MOFA+ (whose factors the benchmark reads standardised) leads
scI2CL by about 0.14 KMeans NMI; standardising PCA + LSI's principal components closes most of
that gap there. So each default model (one seed) is trained once and its joint embedding read
with each component divided by ``SD ** alpha`` for ``alpha`` in 0 (today's read-out), 0.5 and 1
(standardised). Scored two ways: KMeans at the true k and label-free Leiden (labels only
score), and the label-free rule a per-dataset choice would use, count splitting (the half-A
joint embedding's neighbours predicting the half-B inputs of both modalities,
:func:`sci2cl._graph.agreement_weight_scores`). A second question on the same models
(``readout`` other than ``"joint"``, labels only): is the ATAC encoder the weak link? Its
output is replaced by the ATAC LSI it could have kept (RNA encoder and LSI, each scaled to unit
mean row norm, concatenated with RNA weight ``w``; ``white``: that concatenation's 30 principal
components standardised). Rows are appended to ``results/sci2cl_whitening_log.csv``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "sci2cl_whitening_log.csv"
ALPHAS = (0.0, 0.5, 1.0)


def run(ds: str, seed: int) -> list[dict]:
    """Train the default model on ``ds`` at ``seed``; one row per ``alpha`` and protocol."""
    import torch

    from benchmarks.common import label_key, prepare
    from benchmarks.readout_dev import train_default
    from sci2cl import metrics
    from sci2cl._graph import agreement_weight_scores

    mdata = prepare(ds)
    y = mdata.obs[label_key(ds)].astype(str).to_numpy()
    model, seconds = train_default(mdata, seed)
    z = model.get_latent_representation(key_added=None)
    mod = model.module.eval()
    X = model._matrices(model.mdata)
    n = model.mdata.n_obs
    sub = np.sort(np.random.default_rng(seed).choice(n, min(n, 5000), replace=False))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # count splitting: embed half A of each cell's counts, predict half B
        x = mod.inputs(model._batch(X, sub))
        a = {m: torch.binomial(v, torch.full_like(v, 0.5), generator=gen) for m, v in x.items()}
        za = mod.joint_embedding(a).numpy()
        xb = {m: mod.ae[m].transform_input(x[m] - a[m]).numpy() for m in x}
    sd = z.std(0) + 1e-12
    rows = []
    for alpha in ALPHAS:
        held = agreement_weight_scores(za / sd**alpha, np.zeros((len(za), 1)), xb, [1.0])
        base = {"dataset": ds, "seed": seed, "alpha": alpha, "train_seconds": round(seconds, 1),
                "w_rna": model.modality_weights_["rna"],
                "heldout_score": float(held["score"].iloc[0]),
                "heldout_rna": float(held["score_rna"].iloc[0]),
                "heldout_atac": float(held["score_atac"].iloc[0])}  # fmt: skip
        rows += [
            {**base, "readout": "joint", **r}
            for r in metrics.cluster_embedding(z / sd**alpha, y, seed=seed)
        ]
    rows += _blocks(model, mdata, y, seed, seconds)
    return rows


def _blocks(model, mdata, y, seed: int, seconds: float) -> list[dict]:
    """The RNA encoder concatenated with ATAC LSI or with the ATAC encoder (labels only score)."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    from benchmarks import peers
    from sci2cl import metrics

    def unit(x):
        return x / np.linalg.norm(x, axis=1).mean()

    zr = model.get_latent_representation(key_added=None, kind="rna")
    atac = {"atac_lsi": peers._atac_lsi(mdata, seed),
            "atac_encoder": model.get_latent_representation(key_added=None, kind="atac")}  # fmt: skip
    rows = []
    for name, za in atac.items():
        for w in (0.5, 0.7):
            c = np.hstack([np.sqrt(w) * unit(zr), np.sqrt(1 - w) * unit(za)])
            white = StandardScaler().fit_transform(PCA(30, random_state=seed).fit_transform(c))
            for tag, emb in (
                (f"rna_encoder+{name} w{w}", c),
                (f"rna_encoder+{name} w{w} white", white),
            ):
                base = {"dataset": mdata.uns.get("sci2cl_dataset", {}).get("name", ""), "seed": seed,
                        "train_seconds": round(seconds, 1), "readout": tag}  # fmt: skip
                rows += [{**base, **r} for r in metrics.cluster_embedding(emb, y, seed=seed)]
    return rows


def main(argv: list[str] | None = None) -> int:
    from benchmarks.archive import run_groups
    from benchmarks.common import append_log

    def step(ds: str, seed: str) -> None:
        rows = [{**r, "dataset": ds} for r in run(ds, int(seed))]
        append_log(rows, LOG, ["dataset", "seed", "readout", "alpha", "protocol"])

    return run_groups(argv, 2, __doc__, step)


if __name__ == "__main__":
    sys.exit(main())
