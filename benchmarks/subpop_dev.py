"""Development log of the subclustering rule of :func:`sci2cl.tl.find_subpopulations` (chapter 4).

Usage: python -m benchmarks.subpop_dev [--methods scI2CL "RNA PCA"] [--seeds 0 1 2]

On SNARE-seq cortex, the development populations (L2/3, L4/5, Oligo: published fine types
hidden inside; Astro, L6: negative controls) are subclustered in each kept embedding of the
clustering benchmark (:mod:`benchmarks.embeddings`, made by ``python -m benchmarks.biology``)
with every candidate rule below. Labels only score: the number of subclusters, whether the
split is stable (mean subsample ARI >= 0.6, the function's default) and the ARI against the
published fine types. Every rule tried is logged, losers too, in
``results/subpopulation_rule_log.csv``.

Rules (``space`` x ``choice``):

- ``space``: ``raw`` (the embedding's rows), ``zscore`` (each dimension standardised within the
  population), ``pca`` (the population's own principal components of the standardised rows,
  as many as explain 90 % of its variance; sc-best-practices re-runs PCA per population),
  ``cosine`` (rows scaled to unit length);
- ``choice``: ``silhouette`` (the resolution of highest silhouette, the rule before),
  ``plateau`` (the same clusters, stability measured mid-plateau of the resolutions giving them),
  ``stability`` (the highest resolution whose clusters are stable under subsampling),
  ``markers`` (the silhouette rule among the resolutions whose every subcluster has at least
  :data:`MIN_MARKERS` marker genes against the rest of the population, ``min_markers``);
  ``plateau_nogate`` (the plateau rule without the marker gate: the rule before it; its rows were
  made in an earlier session, whose scI2CL seed-1 embedding differs from today's);
  ``plateau_fc<F>`` (the default, the plateau rule with 1 marker, but a marker needs a log2
  fold change of ``F`` or more, ``min_log2fc``; the default's is 1); ``plateau_own`` (the default
  with ``own_markers``: a marker counts only when the subcluster expresses it above every other
  population, so that genes of another cell type, from ambient RNA or doublets, support no split).

A run replaces the log's rows of the methods, seeds, spaces and choices it ran and keeps the rest.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
LOG = ROOT / "results" / "subpopulation_rule_log.csv"
SPACES = ("raw", "zscore", "pca", "cosine")
CHOICES = (
    "silhouette",
    "plateau",
    "stability",
    "markers",
    "markers1",
    "plateau_fc1.5",
    "plateau_fc2",
    "plateau_own",
    "plateau_nogate",
)
#: marker genes each subcluster needs under the ``markers`` choice (``markers<N>``: N of them)
MIN_MARKERS = 5
KEYS = ["method", "seed", "space", "choice"]


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--methods", nargs="*", default=["scI2CL", "RNA PCA"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--spaces", nargs="*", default=list(SPACES))
    ap.add_argument("--choices", nargs="*", default=list(CHOICES))
    a = ap.parse_args()
    import warnings

    from benchmarks.common import one_thread

    one_thread()  # the embeddings it trains are the biology runner's (one thread)

    from benchmarks import biology, clustering
    from sci2cl import metrics, tl

    task = biology.TASKS["snare_adbrain"]
    mdata = clustering._prepared("snare_adbrain", None)
    rows = []
    for method in a.methods:
        for seed in a.seeds:
            got = biology.embedding("snare_adbrain", method, seed, mdata)
            mdata.obsm["_e"] = got["embedding"]
            for space in a.spaces:
                for choice in a.choices:
                    for pop, kind in task["populations"].items():
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            r = tl.find_subpopulations(
                                mdata, task["coarse"], pop, use_rep="_e", seed=seed,
                                key_added="_sub", space=space, de=False,
                                **_rule(choice),
                            )  # fmt: skip
                        cells = r["labels"].index
                        del mdata.obs["_sub"]  # the embeddings' cache key hashes obs
                        fine = mdata.obs.loc[cells, task["fine"]].astype(str)
                        rows.append({
                            "method": method, "seed": seed, "space": space, "choice": choice,
                            "population": pop, "kind": kind, "cells": len(cells),
                            "published_types": fine.nunique(), "subclusters": r["n_subclusters"],
                            "resolution": r["resolution"],
                            "stability": float(np.mean(r["stability"])), "stable": r["stable"],
                            "ari_fine": metrics.ari(fine, r["labels"].astype(str)),
                        })  # fmt: skip
                    d = pd.DataFrame(rows[-len(task["populations"]) :])
                    print(
                        f"{method} seed {seed} {space}/{choice}: "
                        + ", ".join(
                            f"{p} {k} ARI {x:.2f}{' S' if s else ''}"
                            for p, k, x, s in d[
                                ["population", "subclusters", "ari_fine", "stable"]
                            ].itertuples(index=False)
                        ),
                        flush=True,
                    )
    df = pd.DataFrame(rows)
    if LOG.exists():  # keep the rows of the rules and runs not re-run here
        old = pd.read_csv(LOG)
        same = old.set_index(KEYS).index.isin(df.set_index(KEYS).index.unique())
        df = pd.concat([old[~same], df], ignore_index=True)
    tmp = LOG.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, LOG)
    print(summary(df).to_string())
    return 0


def _rule(choice: str) -> dict:
    """``find_subpopulations`` arguments of a choice of :data:`CHOICES`."""
    if choice == "plateau_nogate":  # the plateau rule before the marker gate became its default
        return {"resolution_rule": "plateau", "min_markers": 0}
    if choice == "plateau_own":
        return {"resolution_rule": "plateau", "own_markers": True}
    if choice.startswith("plateau_fc"):
        return {"resolution_rule": "plateau", "min_log2fc": float(choice[len("plateau_fc") :])}
    if choice.startswith("markers"):
        n = int(choice[len("markers") :] or MIN_MARKERS)
        return {"resolution_rule": "silhouette", "min_markers": n}
    return {"resolution_rule": choice}


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per rule and method: mean ARI per hidden population, and stable control splits (of 6)."""
    hid = df[df.kind == "hidden"].pivot_table(
        index=["space", "choice", "method"], columns="population", values="ari_fine"
    )
    ctl = df[df.kind == "control"].groupby(["space", "choice", "method"])["stable"].sum()
    hid["control_splits"] = ctl
    return hid.round(3)


if __name__ == "__main__":
    raise SystemExit(main())
