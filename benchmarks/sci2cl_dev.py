"""Development log of scI2CL designs on the real paired development sets.

Usage:
  python -m benchmarks.sci2cl_dev --configs default pca_inputs [--datasets ...] [--seeds 0 1 2]
  python -m benchmarks.sci2cl_dev --peers              # RNA PCA, ATAC LSI, muon WNN once per set
  python -m benchmarks.sci2cl_dev --list               # the configurations

Every configuration tried is a named entry of ``CONFIGS`` (constructor and
``train`` arguments on top of the defaults). Each run trains one model per
dataset and seed and scores every read-out of that same model (the joint
embedding, each modality's encoder, the paper's fused read-out) with KMeans at
the true k and label-free Leiden. The rows are appended to
``results/sci2cl_dev_log.csv`` (losers included; a re-run of a configuration
replaces its rows), with the label-free quantities a per-dataset choice may use:
the best held-out loss and the read-out's modality weights. The labels only
score; nothing here reads them before the model is trained.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import peers
from benchmarks.common import append_log, label_key, prepare, set_threads
from benchmarks.report import paired_differences
from sci2cl import SCI2CL, metrics

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "results" / "sci2cl_dev_log.csv"
#: per-modality encoder outputs of every run, for read-out rules tried after training
EMB = ROOT / "build" / "dev" / "embeddings"

#: real paired development sets (issue 20)
DEV = ["bmmc_a", "bmmc_b", "scicar_kidney", "snare_adbrain"]
READOUTS = ["joint", "rna", "atac", "fused"]
#: label-free weightings of the joint read-out, each logged as ``joint_<name>`` besides the model's own
MODALITY_WEIGHTINGS = ("modularity", "wnn")
PEER_NAMES = ["RNA PCA", "ATAC LSI", "WNN (muon)"]

#: the settings every configuration starts from: the package defaults before issue 20
#: (all features in, no linear path, every loss on); each configuration states what it changes, so
#: a row of the log means the same whatever the package's defaults are today
BEFORE = {
    "n_input_pcs": None,
    "input_skip": False,
    "weights": {"rec": 1.0, "mse": 1.0, "moc": 1.0, "mom": 1.0},
}
PCA = {"n_input_pcs": 50}
SKIP = {"n_input_pcs": 50, "input_skip": True}


def _cfg(**init) -> dict:
    """A configuration: :data:`BEFORE` updated by ``init`` (``weights`` merged key by key)."""
    w = {**BEFORE["weights"], **init.pop("weights", {})}
    return {"init": {**BEFORE, **init, "weights": w}}


def package_defaults() -> dict:
    """``SCI2CL``'s defaults of the settings that :data:`BEFORE` names (the benchmark follows them)."""
    import inspect

    from sci2cl import SCI2CL
    from sci2cl.model._sci2cl import DEFAULT_WEIGHTS

    params = inspect.signature(SCI2CL).parameters
    return {k: dict(DEFAULT_WEIGHTS) if k == "weights" else params[k].default for k in BEFORE}


def _default(train: dict | None = None, **init) -> dict:
    """A configuration: the package's defaults with ``init`` changed (``weights`` key by key)."""
    d = package_defaults()
    w = {**d["weights"], **init.pop("weights", {})}
    return {"init": {**d, **init, "weights": w}, **({"train": train} if train else {})}


#: name -> {"init": SCI2CL(...) arguments, "train": SCI2CL.train(...) arguments}. The joint
#: read-out of rows logged before the global scaling and mixture margin (commit 943a3e6 and
#: earlier, and every ``skip_*`` row except ``skip_no_moc_mom``) scaled each cell to unit norm with
#: no margin; ``--rescore`` scores the current rule (``joint_gscale_tol``) on every saved run.
CONFIGS: dict[str, dict] = {
    "v0_all_features": _cfg(),
    "pca_inputs": _cfg(**PCA),
    "pca_inputs_latent64": _cfg(**PCA, n_latent=64),
    "pca_inputs_no_joint_rec": _cfg(**PCA, joint_rec=False),
    "latent64": _cfg(n_latent=64),
    # ablations of the paper's parts on top of pca_inputs (issue 20, goal 2)
    "pca_no_intra": _cfg(**PCA, n_views=0),
    "pca_no_moc": _cfg(**PCA, weights={"moc": 0}),
    "pca_no_mom": _cfg(**PCA, weights={"mom": 0}),
    "pca_rna_only": _cfg(**PCA, use_rna_only=True),
    # a linear path from the input PCs, initialised to the leading PCs (the MLP learns corrections)
    "pca_skip": _cfg(**SKIP),
    # ablations of the paper's parts on top of pca_skip, one at a time and all three
    "skip_no_intra": _cfg(**SKIP, n_views=0),
    "skip_no_moc": _cfg(**SKIP, weights={"moc": 0}),
    "skip_no_mom": _cfg(**SKIP, weights={"mom": 0}),
    # the parts with a measured gain on top of pca_skip (intra-omics): read from the package's
    # defaults, so that this configuration is whatever SCI2CL() does without arguments
    "skip_no_moc_mom": {"init": package_defaults()},
    "skip_minimal": _cfg(**SKIP, n_views=0, weights={"moc": 0, "mom": 0}),
    # issue 41, shallow RNA (--rna-fraction): one change each on top of the package's defaults
    "d_latent48": _default(n_latent=48),
    "d_no_joint_rec": _default(joint_rec=False),
    "d_paper_losses": _default(weights={"moc": 1.0, "mom": 1.0}),
    "d_moc": _default(weights={"moc": 1.0}),
    "d_epochs30": _default(train={"max_epochs": 30}),
    # the joint read-out smooths RNA over ATAC neighbours, its share chosen by count splitting
    # (the rows joint_s<share> refit the same encoders' read-out with a fixed share)
    "d_xsmooth_auto": _default(cross_smoothing="auto"),
    # the ATAC encoder reads input PCs 2..51: the first tracks depth (|Spearman r| with log depth
    # 0.99 on snare_adbrain, bmmc_a/b and the simulator; 0.80 on scicar_kidney), as LSI's does
    "d_atac_drop1": _default(drop_first_pc=["atac"]),
    # the ATAC encoder loses type information that its LSI input keeps (simulator,
    # results/sci2cl_whitening_log.csv): peaks binarised under a Bernoulli likelihood, as PeakVI
    # models them, instead of ZINB counts
    "d_atac_bernoulli": _default(likelihood={"rna": "zinb", "atac": "bernoulli"}),
    # issue 41 again, now that the read-out carries the shared block (0f8343f): one change each on
    # top of the package's defaults, aimed at the points still lost (bmmc_a at full depth against
    # MOFA+, SNARE-seq at 50 % against the RNA encoder, the simulator against MOFA+ and GLUE)
    "e_default": _default(),  # the package's defaults, to pair with the depth sweep's units
    "e_atac_drop1": _default(drop_first_pc=["atac"]),
    "e_paper_losses": _default(weights={"moc": 1.0, "mom": 1.0}),
    # the count decoders overfit (chapter 2: held-out loss 1.8 times the training loss on kidney)
    "e_wd1e-2": _default(train={"weight_decay": 1e-2}),
    # issue 41, on top of drop_first_pc=["atac"] (the one lever that moved the simulator): does
    # the ATAC encoder keep more of its input when trained on its own reconstruction, under a
    # Bernoulli likelihood, or with the paper's inter-omics terms?
    "f_drop1_no_joint_rec": _default(drop_first_pc=["atac"], joint_rec=False),
    "f_drop1_bernoulli": _default(
        drop_first_pc=["atac"], likelihood={"rna": "zinb", "atac": "bernoulli"}
    ),
    "f_drop1_paper_losses": _default(drop_first_pc=["atac"], weights={"moc": 1.0, "mom": 1.0}),
    # issue 41, the point still lost (SNARE-seq at 10 %, GLUE ahead): GLUE's inputs, 100 PCs
    "g_pcs100": _default(n_input_pcs=100),
    # the BMMC subsets (a few hundred cells) take 2 optimiser steps an epoch against 20 on
    # SNARE-seq: more epochs where the set is small (scvi-tools scales max_epochs with 1 / n_cells),
    # or fewer (the count decoders overfit small sets)
    "h_epochs120": _default(train={"max_epochs": 120}),
    "h_epochs240": _default(train={"max_epochs": 240}),
    "h_epochs30": _default(train={"max_epochs": 30}),
}
#: fixed shares of cross-modal smoothing whose joint read-outs are logged beside the model's own
READOUT_SMOOTHINGS = (0.0, 0.2, 0.4)


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "sci2cl"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def _fractions(df: pd.DataFrame) -> pd.Series:
    """The share of RNA counts of each row; rows logged before the depth option had all of them."""
    return df.get("rna_fraction", pd.Series(index=df.index, dtype=float)).fillna(1.0)


def _write(rows: list[dict], log: Path, keys=("config", "dataset", "rna_fraction", "seed")) -> None:
    """Append ``rows`` to ``log`` (:func:`benchmarks.common.append_log`); old rows had all RNA."""
    append_log(rows, log, keys, defaults={"rna_fraction": 1.0})


def _share(model) -> float:
    """The read-out's share of cross-modal smoothing of RNA."""
    return round(model.cross_smoothing_, 4)


def _score(rows, base, z, y, seed, adjacency=None):
    for res in metrics.cluster_embedding(z, y, seed=seed, adjacency=adjacency):
        rows.append({**base, **res})


def run_config(name: str, datasets, seeds, log: Path = LOG, rna_fraction: float = 1.0) -> None:
    """Train configuration ``name`` per dataset and seed and log every read-out's scores.

    ``rna_fraction < 1``: the RNA counts are thinned first, seeded by the run's
    seed (the cells of the depth sweep's unit of the same fraction and seed).
    """
    cfg = CONFIGS[name]
    commit = _commit()
    for ds in datasets:
        m = prepare(ds) if rna_fraction == 1.0 else None
        for seed in seeds:
            if rna_fraction != 1.0:
                m = prepare(ds, rna_fraction=rna_fraction, thin_seed=seed)
            y = m.obs[label_key(ds)].astype(str).to_numpy()
            t = time.perf_counter()
            init = {"likelihood": peers.sci2cl_likelihood(m), **cfg.get("init", {})}
            model = SCI2CL(peers.setup_sci2cl(m), seed=seed, **init)
            model.train(progress_bar=False, **cfg.get("train", {}))
            sec = time.perf_counter() - t
            h = model.history
            val = h["val_loss"].min() if "val_loss" in h else np.nan
            rows = []
            zs = {r: model.get_latent_representation(key_added=None, kind=r) for r in READOUTS}
            # the joint read-out under each label-free modality weighting, same encoders
            w_rna = {"joint": model.modality_weights_["rna"]}
            share = {"joint": _share(model)}
            own = model.init_params["modality_weighting"]
            for wt in MODALITY_WEIGHTINGS:
                if wt != own:
                    model.refit_readout(wt)
                    zs[f"joint_{wt}"] = model.get_latent_representation(key_added=None)
                    w_rna[f"joint_{wt}"] = model.modality_weights_["rna"]
                    share[f"joint_{wt}"] = _share(model)
            for s in READOUT_SMOOTHINGS:
                model.refit_readout(own, cross_smoothing=s)
                zs[f"joint_s{s:g}"] = model.get_latent_representation(key_added=None)
                w_rna[f"joint_s{s:g}"] = model.modality_weights_["rna"]
                share[f"joint_s{s:g}"] = _share(model)
            model.refit_readout(own, cross_smoothing=model.init_params["cross_smoothing"])
            EMB.mkdir(parents=True, exist_ok=True)
            tag = "" if rna_fraction == 1.0 else f"__rna{rna_fraction:g}"
            np.savez_compressed(EMB / f"{name}__{ds}{tag}__{seed}.npz", **zs)
            for r, z in zs.items():
                base = {
                    "config": name,
                    "params": json.dumps(cfg, sort_keys=True),
                    "dataset": ds,
                    "rna_fraction": rna_fraction,
                    "seed": seed,
                    "readout": r,
                    "seconds": round(sec, 1),
                    "epochs": len(h),
                    "best_val_loss": val,
                    "w_rna": w_rna.get(r, np.nan),
                    "smoothing": share.get(r, np.nan),
                    "commit": commit,
                }
                _score(rows, base, z, y, seed)
            _write(rows, log)
            summary = {(r["readout"], r["protocol"]): round(r["nmi"], 3) for r in rows}
            print(name, ds, rna_fraction, seed, f"{sec:.0f}s", f"w_rna={w_rna}",
                  summary, flush=True)  # fmt: skip


#: read-out rules scored from saved encoder outputs: name -> (row scaling, mixture margin);
#: ``joint_gscale_tol`` is the model's default since it was chosen (``readout_scaling="global"``,
#: ``MIXTURE_MARGIN``), ``joint`` rows before that used per-cell scaling without a margin
READOUT_RULES = {
    "joint_gscale": ("global", 0.0),
    "joint_gscale_tol": ("global", 0.01),
    "joint_l2_tol": ("cell", 0.01),
}


def _scaled(z: np.ndarray, how: str) -> np.ndarray:
    """``"cell"``: every row L2-normalised; ``"global"``: ``z`` over its mean row norm (geometry kept)."""
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / (norms if how == "cell" else norms.mean())


def rescore_readout(configs, datasets, seeds, log: Path = LOG) -> None:
    """Score other read-out rules (:data:`READOUT_RULES`) on the saved encoder outputs of runs.

    Each rule scales each modality's embedding (per cell, as the model's
    ``joint``, or by one number per modality so that it keeps its own
    geometry), picks the RNA weight on the model's grid by the same Leiden
    modularity criterion, optionally demanding that a mixture beat the better
    single modality by a tolerance, then takes the principal axes. No labels
    are used to choose; they only score. Rows are added to ``log`` with the
    rule's name as readout.
    """
    from sklearn.decomposition import PCA

    from sci2cl._graph import choose_modality_weight, modularity_weight_scores
    from sci2cl.model._sci2cl import WEIGHT_GRID

    commit = _commit()
    for ds in datasets:
        y = None
        for name in configs:
            for seed in seeds:
                f = EMB / f"{name}__{ds}__{seed}.npz"
                if not f.exists():
                    continue
                if y is None:
                    y = prepare(ds).obs[label_key(ds)].astype(str).to_numpy()
                e = np.load(f)
                n, d = len(y), e["rna"].shape[1]
                rng = np.random.default_rng(seed)
                sub = np.sort(rng.choice(n, 5000, replace=False)) if n > 5000 else np.arange(n)
                scores, rows = {}, []
                for rule, (how, tol) in READOUT_RULES.items():
                    z = {k: _scaled(e[k].astype(np.float64), how) for k in ("rna", "atac")}
                    if how not in scores:
                        scores[how] = modularity_weight_scores(
                            z["rna"][sub], z["atac"][sub], WEIGHT_GRID, d, seed
                        )
                    w = choose_modality_weight(scores[how], tol)
                    Y = np.hstack([np.sqrt(w) * z["rna"], np.sqrt(1 - w) * z["atac"]])
                    Y = PCA(n_components=min(d, *Y.shape), svd_solver="full").fit_transform(Y)
                    base = {"config": name, "params": json.dumps(CONFIGS[name], sort_keys=True),
                            "dataset": ds, "seed": seed, "readout": rule, "w_rna": w,
                            "commit": commit}  # fmt: skip
                    _score(rows, base, Y, y, seed)
                _write(rows, log, keys=["config", "dataset", "seed", "readout"])
                print(name, ds, seed, [(r["readout"], r["w_rna"], round(r["nmi"], 3)) for r in rows],
                      flush=True)  # fmt: skip


def run_peers(datasets, seeds, log: Path = LOG) -> None:
    commit = _commit()
    for ds in datasets:
        m = prepare(ds)
        y = m.obs[label_key(ds)].astype(str).to_numpy()
        for seed in seeds:
            rows = []
            for p in PEER_NAMES:
                r = peers.run_peer(p, m, seed=seed)
                base = {
                    "config": "peer",
                    "params": "{}",
                    "dataset": ds,
                    "seed": seed,
                    "readout": p,
                    "seconds": round(r["seconds"], 1),
                    "commit": commit,
                }
                _score(rows, base, r["embedding"], y, seed, r["adjacency"])
            _write(rows, log)
            print("peers", ds, seed, {(r["readout"], r["protocol"]): round(r["nmi"], 3)
                                      for r in rows}, flush=True)  # fmt: skip


def read_log(log: Path = LOG) -> pd.DataFrame:
    """The log, a thinned run's dataset named ``<dataset>@<share of RNA counts>``."""
    df = pd.read_csv(log)
    f = _fractions(df)
    df["dataset"] = df["dataset"].where(f == 1.0, df["dataset"] + "@" + f.map("{:g}".format))
    return df


def paired(base: str, others, log: Path = LOG, readout: str = "joint") -> pd.DataFrame:
    """Paired differences over seeds of ``readout`` NMI: each configuration minus ``base``.

    One row per (configuration, dataset, protocol): the mean and SD over the
    seeds both ran, and a verdict: ``gain`` when the mean exceeds the SD of
    the differences, ``loss`` when it is below minus the SD, else ``tie``.
    Over the datasets ("all"), the per-dataset means and their SD.
    """
    df = read_log(log)
    out = paired_differences(df[df["readout"] == readout], "config", base, others)
    return out.rename(columns={"method": "config"}) if not out.empty else out


def summary(log: Path = LOG) -> pd.DataFrame:
    """Mean NMI over seeds per configuration, read-out, dataset and protocol."""
    df = read_log(log)
    return df.pivot_table(
        index=["config", "readout"], columns=["protocol", "dataset"], values="nmi"
    ).round(3)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--configs", nargs="*", default=[])
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--list", action="store_true")
    ap.add_argument(
        "--rescore", action="store_true",
        help="score the joint_gscale read-out of --configs from their saved encoder outputs",
    )  # fmt: skip
    ap.add_argument(
        "--paired", nargs="+", metavar="CONFIG",
        help="BASE OTHER...: paired differences of the joint read-out over seeds, then exit",
    )  # fmt: skip
    ap.add_argument("--datasets", nargs="*", default=DEV)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--rna-fraction", type=float, default=1.0,
        help="thin the RNA counts to this share first (the depth sweep's cells, seeded by seed)",
    )  # fmt: skip
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--log", type=Path, default=LOG)
    a = ap.parse_args()
    if a.paired:
        print(paired(a.paired[0], a.paired[1:], a.log).to_string(index=False))
        return 0
    if a.list:
        for k, v in CONFIGS.items():
            print(f"{k}: {json.dumps(v)}")
        return 0
    unknown = set(a.configs) - set(CONFIGS)
    if unknown:
        ap.error(f"unknown configurations {sorted(unknown)}; see --list")
    set_threads(a.threads)
    if a.rescore:
        rescore_readout(a.configs, a.datasets, a.seeds, a.log)
        a.configs = []
    if a.peers:
        run_peers(a.datasets, a.seeds, a.log)
    for c in a.configs:
        run_config(c, a.datasets, a.seeds, a.log, rna_fraction=a.rna_fraction)
    if a.log.exists():
        print(summary(a.log).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
