"""The paper's three biological experiments on real cells whose answers are known (chapters 4-6).

Usage:
  python -m benchmarks.biology [--datasets snare_adbrain] [--methods ...] [--seeds 0 1 2]

On SNARE-seq cortex (``snare_adbrain``), whose published annotation is nested
(``cell_type`` 15 classes holding the 23 ``cell_type_fine`` types), each
embedding of the clustering benchmark (the same prepared data, the same code;
read from :mod:`benchmarks.embeddings`, computed and kept when missing) is put
to three tests:

- **Subpopulations** (chapter 4): :func:`sci2cl.tl.find_subpopulations` on
  each class that hides published types (L2/3: 3, L4/5: 6, Oligo: 2) and on the
  negative controls that hide none (Astro, L6): number of subclusters, their
  stability under subsampling, and their ARI against ``cell_type_fine``.
- **Annotation correction** (chapter 5): label errors planted between nested
  real types (a fraction of E3Rorb cells labelled E2Rasgrf2, of OliM labelled
  OliI) in the fine annotation; :func:`sci2cl.tl.audit_annotation` (kNN
  majority, and with evidence) on the corrupted labels; precision and recall
  of the relabelled cells against the planted ones.
- **Trajectory** (chapter 6): Slingshot (:func:`sci2cl.tl.trajectory`) from OPC
  through OliI (newly formed) to OliM (mature oligodendrocytes); Kendall's tau
  between the stage order and each cell's pseudotime, and whether the stage
  medians come out in order.

Labels only score (and name the population to subcluster or the start of the
trajectory, as a user would); no embedding saw them. Rows go to
``results/biology_{subpopulations,annotation,trajectory}.csv``, merged by
(dataset, method, seed).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import clustering, embeddings, peers
from benchmarks.common import one_thread
from benchmarks.config import FULL, SEEDS, epoch_kwargs
from sci2cl import metrics, tl

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results"
#: the benchmark's settings for a full run (the key of its embeddings)
SETTINGS = FULL
METHODS = ["scI2CL", "RNA PCA", "ATAC LSI", "PCA+LSI", "WNN (muon)", "MOFA+", "MultiVI", "GLUE"]

#: per dataset: the coarse and fine label columns (``types``: the true types where they differ
#: from ``fine``), the populations to subcluster (hidden
#: published types, or a negative control), the planted errors (true type, given label,
#: fraction) and the differentiation path (stages in order, from which column)
TASKS = {
    "snare_adbrain": {
        "coarse": "cell_type",
        "fine": "cell_type_fine",
        "populations": {
            "L2/3": "hidden",
            "L4/5": "hidden",
            "Oligo": "hidden",
            "Astro": "control",
            "L6": "control",
        },  # fmt: skip
        # OliI has 16 cells: a tenth of OliM (13 cells) keeps the wrong cells a minority there
        "plants": [("E3Rorb", "E2Rasgrf2", 0.2), ("OliM", "OliI", 0.1)],
        "path": ["OPC", "OliI", "OliM"],
    },
    # the planted-truth sanity check: three subtypes planted in CD14 Mono, none in NK
    "simulated": {
        "coarse": "cell_type",
        "fine": "true_subtype",
        "types": "true_cell_type",  # the true types (the audit's and the trajectory's labels)
        "populations": {"CD14 Mono": "hidden", "NK": "control"},
        "plants": [("CD4 naive T", "CD4 memory T", 0.2)],
        "path": ["HSPC", "B naive", "B intermediate", "B memory"],
    },
}


def embedding(ds: str, method: str, seed: int, mdata, settings: dict = SETTINGS) -> dict:
    """The benchmark's embedding of ``method`` at ``seed`` (computed and kept when missing).

    ``settings`` are the clustering benchmark's (epoch caps for scI2CL, MultiVI
    and GLUE; the cache key includes them), e.g. ``config.SMOKE``'s in a smoke run.
    """
    settings = {k: settings.get(k) for k in SETTINGS}
    key = {"code_version": clustering.code_version(method),
           "data_version": clustering.data_version(mdata), **settings}  # fmt: skip
    got = embeddings.load(ds, method, seed, key)
    if got is None:
        kw = epoch_kwargs(method, settings)
        res = peers.run_peer(method, mdata, seed=seed, **kw)
        embeddings.save(ds, method, seed, res, key)
        got = {"embedding": res["embedding"], "adjacency": res["adjacency"]}
    return got


def subpopulations(mdata, rep: str, seed: int, task: dict) -> list[dict]:
    rows = []
    for pop, kind in task["populations"].items():
        r = tl.find_subpopulations(
            mdata, task["coarse"], pop, use_rep=rep, seed=seed, key_added="_sub"
        )
        cells = r["labels"].index
        fine = mdata.obs.loc[cells, task["fine"]].astype(str)
        rows.append({
            "population": pop, "kind": kind, "cells": len(cells),
            "published_types": fine.nunique(), "subclusters": r["n_subclusters"],
            "stability": float(np.mean(r["stability"])), "stable": bool(r["stable"]),
            "ari_fine": metrics.ari(fine, r["labels"].astype(str)),
        })  # fmt: skip
    return rows


def planted_labels(mdata, task: dict, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fine labels with the planted errors, and the positions of the planted cells."""
    given = mdata.obs[task.get("types", task["fine"])].astype(str).to_numpy().copy()
    rng = np.random.default_rng(seed)
    flipped = []
    for src, dst, frac in task["plants"]:
        idx = np.flatnonzero(given == src)
        pick = rng.choice(idx, int(round(frac * len(idx))), replace=False)
        given[pick] = dst
        flipped.append(pick)
    return given, np.sort(np.concatenate(flipped))


def annotation(mdata, rep: str, seed: int, task: dict) -> list[dict]:
    given, flipped = planted_labels(mdata, task, seed)
    mdata.obs["_given"] = pd.Categorical(given)
    wrong = set(mdata.obs_names[flipped])
    true = mdata.obs[task.get("types", task["fine"])].astype(str)
    rows = []
    for rule, ev in (("kNN majority", False), ("with evidence", True)):
        t = tl.audit_annotation(mdata, "_given", use_rep=rep, evidence=ev, key_added="_audit")
        flagged = set(t.index)
        tp = len(flagged & wrong)
        restored = int((t.loc[list(flagged & wrong), "proposed"].astype(str)
                        == true[list(flagged & wrong)]).sum()) if tp else 0  # fmt: skip
        rows.append({
            "rule": rule, "planted": len(wrong), "flagged": len(flagged),
            "precision": tp / len(flagged) if flagged else np.nan,
            "recall": tp / len(wrong), "restored_true_label": restored,
        })  # fmt: skip
    del mdata.obs["_given"]
    return rows


def trajectory(mdata, rep: str, seed: int, task: dict) -> list[dict]:
    from scipy.stats import kendalltau

    stages = task["path"]
    stage = mdata.obs[task.get("types", task["fine"])].astype(str)
    mdata.obs["_stage"] = pd.Categorical(stage, categories=sorted(stage.unique()))
    fit = tl.trajectory(mdata, "_stage", stages[0], use_rep=rep, clusters=stages, seed=seed,
                        key_added="_pt")  # fmt: skip
    on = stage.isin(stages).to_numpy()
    pt = np.asarray(fit["pseudotime"], float)[on]
    rank = stage[on].map({s: i for i, s in enumerate(stages)}).to_numpy()
    order = metrics.stage_order_score(pt, stage[on].to_numpy(), stages)
    del mdata.obs["_stage"]
    return [{
        "cells": int(on.sum()), "lineages": len(fit["lineages"]),
        "kendall_tau_cells": float(kendalltau(rank, pt).statistic),
        "kendall_tau_medians": order["kendall_tau"], "order_correct": order["order_correct"],
        **{f"median_{s}": v for s, v in order["medians"].items()},
    }]  # fmt: skip


EXPERIMENTS = {"subpopulations": subpopulations, "annotation": annotation, "trajectory": trajectory}


def run(datasets, methods, seeds, out: Path = OUT, log=print) -> dict[str, pd.DataFrame]:
    rows = {e: [] for e in EXPERIMENTS}
    for ds in datasets:
        task = TASKS[ds]
        mdata = clustering._prepared(ds, None)
        for method in methods:
            for seed in seeds:
                t = time.perf_counter()
                try:
                    got = embedding(ds, method, seed, mdata)
                except peers.PeerUnavailable as e:
                    log(f"{ds} {method}: cannot run ({e})")
                    continue
                rep = f"_emb_{method}"
                mdata.obsm[rep] = got["embedding"]
                base = {"dataset": ds, "method": method, "seed": seed}
                clean = list(mdata.obs.columns)
                for name, fn in EXPERIMENTS.items():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        rows[name] += [{**base, **r} for r in fn(mdata, rep, seed, task)]
                del mdata.obsm[rep]
                # the experiments' columns go: the next embedding's cache key hashes obs
                mdata.obs.drop(columns=[c for c in mdata.obs if c not in clean], inplace=True)
                log(f"{ds} {method} seed {seed}: {time.perf_counter() - t:.0f} s")
    out_frames = {}
    for name, r in rows.items():
        path = out / f"biology_{name}.csv"
        df = pd.DataFrame(r)
        if path.exists() and not df.empty:
            old = pd.read_csv(path)
            keys = ["dataset", "method", "seed"]
            done = df[keys].drop_duplicates().astype(str).agg("|".join, axis=1)
            old = old[~old[keys].astype(str).agg("|".join, axis=1).isin(done)]
            df = pd.concat([old, df], ignore_index=True)
        if not df.empty:
            df.to_csv(path, index=False)
        out_frames[name] = df
    return out_frames


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="*", default=list(TASKS))
    ap.add_argument("--methods", nargs="*", default=METHODS)
    ap.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    a = ap.parse_args()
    # one thread, as the clustering benchmark's workers: a second run trains the same embeddings
    one_thread()
    res = run(a.datasets, a.methods, a.seeds)
    for name, df in res.items():
        if not df.empty:
            print(name)
            print(df.groupby(["dataset", "method"]).mean(numeric_only=True).round(3).to_string())


if __name__ == "__main__":
    main()
