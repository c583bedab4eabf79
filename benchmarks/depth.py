"""When does ATAC help? Every method of the clustering benchmark on real cells with shallower RNA.

Usage: python -m benchmarks.depth [--datasets ...] [--fractions 1 0.5 0.3 0.1] [--methods ...]
       [--seeds 0 1 2] [--one-seed-methods MultiVI GLUE] [--report-only | --restamp]

RNA counts are thinned binomially (each UMI kept with probability ``fraction``; the standard
model of a shallower run of the same cells, seeded by the run's seed, so that every method at a
seed sees the same thinned cells), then the whole preparation a user would run is redone:
QC, feature selection, QC (:func:`benchmarks.common.prepare`). ATAC is left as it is.

The unit of work is one (dataset, fraction, method, seed); each finished unit is kept in
``results/depth_sweep/runs/<dataset>/<fraction>/<method>__<seed>.json`` with the version of the
code that made its embedding and of the code that scored it, so the same command resumes an
interrupted sweep. The embedding itself is kept under ``build/depth_sweep/`` (not committed): a
change of the scoring code re-scores a kept embedding instead of re-training. Units run one at
a time, one thread (the other core stays free). ``results/depth_sweep.csv`` gathers every row,
with the collapse check of the clustering benchmark (a multi-modal method below the better
single modality of its own seed is flagged). ``--restamp`` keeps the units of a method whose
code changed without changing its output (:func:`restamp`: one canary unit per dataset re-run
bit for bit), and ``book/_generated/depth_summary.md`` (the intro's paragraph) is rewritten at
every run.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import (
    one_thread,
    prepare,
    restamp_stale,
    thin_counts,
    thread_settings,
    write_text_atomic,
)
from benchmarks.config import FULL, epoch_kwargs

ROOT = Path(__file__).resolve().parents[1]
#: development sets of the sweep (issue: SNARE-seq cortex, BMMC subsets, sci-CAR kidney)
DATASETS = ["snare_adbrain", "scicar_kidney", "bmmc_a", "bmmc_b"]
FRACTIONS = [1.0, 0.5, 0.3, 0.1]
#: cheap first, so that an interrupted sweep has every cheap row; GLUE (about an hour a run) last
ORDER = ["RNA PCA", "ATAC LSI", "PCA+LSI", "WNN (muon)", "MOFA+", "scI2CL", "MultiVI", "GLUE"]
OUT = ROOT / "results" / "depth_sweep"
EMB = ROOT / "build" / "depth_sweep"


#: methods cheap enough to run in the sweep's own process (seconds); the others get a fresh
#: process each, so that their time and peak memory are their own
CHEAP = ("RNA PCA", "ATAC LSI", "PCA+LSI")
_PREPARED: dict = {}


def prepare_thinned(ds: str, fraction: float, seed: int):
    """Load ``ds``, thin its RNA counts to ``fraction`` (seeded), then QC and feature selection.

    Kept per process, so that the cheap methods share one preparation.
    """
    if (ds, fraction, seed) not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[ds, fraction, seed] = prepare(ds, rna_fraction=fraction, thin_seed=seed)
    return _PREPARED[ds, fraction, seed]


def _method_version(method: str) -> str:
    """Hash of the code that makes a method's embedding (the clustering benchmark's rule)."""
    from benchmarks import clustering, peers

    h = hashlib.sha256()
    for f in clustering.source_files(
        ["constraints-cpu.txt", *clustering.FINGERPRINT_METHOD.get(method, [])]
    ):
        h.update((ROOT / f).read_bytes())
    src = (ROOT / "benchmarks" / "peers.py").read_text()
    for name, fn in peers.PEERS.items():
        if name != method:
            src = src.replace(inspect.getsource(fn), "")
    h.update(src.encode())
    from sci2cl import pp

    for fn in (pp.pca, pp.tfidf_lsi, pp.log_normalize, thin_counts):
        h.update(inspect.getsource(fn).encode())
    return "src-" + h.hexdigest()[:12]


def _score_version() -> str:
    """Hash of the code that scores an embedding (metrics and graphs)."""
    from benchmarks import clustering

    h = hashlib.sha256()
    for f in ("sci2cl/metrics.py", "sci2cl/_graph.py"):
        h.update((ROOT / f).read_bytes())
    for fn in (clustering.scib_scores, _score):
        h.update(inspect.getsource(fn).encode())
    return "score-" + h.hexdigest()[:12]


def full_settings() -> dict:
    """The epoch caps of the full benchmark that a unit's key records."""
    return {k: FULL[k] for k in ("max_epochs", "multivi_epochs", "glue_epochs")}


def _embedding_arrays(res: dict) -> dict:
    """What a unit keeps of a method's output: its embedding and further embeddings (float32)."""
    arrays = {"embedding": np.asarray(res["embedding"], np.float32)}
    arrays.update({f"extra_{k}": np.asarray(v, np.float32) for k, v in res["extra"].items()})
    return arrays


def _write_record(path: Path, rec: dict) -> None:
    """Write a unit's record atomically."""
    write_text_atomic(path, json.dumps(rec, default=float, indent=0))


def _tag(fraction: float) -> str:
    return f"rna{fraction:g}"


def _paths(ds: str, fraction: float, method: str, seed: int) -> tuple[Path, Path]:
    name = f"{method.replace(' ', '_')}__{seed}"
    return (
        OUT / "runs" / ds / _tag(fraction) / f"{name}.json",
        EMB / ds / _tag(fraction) / f"{name}.npz",
    )


#: names of a method's further embeddings in the sweep's rows (scI2CL's encoders)
EXTRA_NAMES = {"rna": "RNA encoder", "atac": "ATAC encoder", "fused": "fused (paper)"}


def extra_method(method: str, kind: str) -> str:
    """Row name of ``method``'s further embedding ``kind``, e.g. ``"scI2CL RNA encoder"``."""
    return f"{method} {EXTRA_NAMES.get(kind, kind)}"


def _score(res: dict, y: np.ndarray, seed: int) -> list[dict]:
    """Scores of the embedding, then of each further embedding (``extra``, rows named by it)."""
    from benchmarks.clustering import scib_scores
    from sci2cl import metrics

    out = []
    for kind, emb in [(None, res["embedding"]), *res.get("extra", {}).items()]:
        base = {**scib_scores(emb, y, seed), "extra": kind or ""}
        adj = res["adj"] if kind is None else None
        out += [{**base, **r} for r in metrics.cluster_embedding(emb, y, seed=seed, adjacency=adj)]
    return out


def run_unit(ds: str, fraction: float, method: str, seed: int, settings: dict, log=print) -> dict:
    """Run (or read back, or re-score) one unit; returns its record."""
    import scipy.sparse as sp

    from benchmarks import peers
    from benchmarks.clustering import data_version
    from benchmarks.common import label_key

    rec_path, emb_path = _paths(ds, fraction, method, seed)
    mdata = prepare_thinned(ds, fraction, seed)
    key = {
        "method_version": _method_version(method),
        "data_version": data_version(mdata),
        **settings,
    }
    score_v = _score_version()
    old = json.loads(rec_path.read_text()) if rec_path.exists() else None
    if old is not None and old["key"] == key and old.get("score_version") == score_v:
        return old
    y = mdata.obs[label_key(ds)].astype(str).to_numpy()
    rec = {"key": key, "score_version": score_v, "status": "ok", "rows": [], "reason": ""}
    res = None
    if old is not None and old["key"] == key and old["status"] == "ok" and emb_path.exists():
        with np.load(emb_path, allow_pickle=False) as z:  # same embedding, new scoring code
            adj = (
                sp.csr_matrix(
                    (z["adj_data"], z["adj_indices"], z["adj_indptr"]), tuple(z["adj_shape"])
                )
                if "adj_data" in z
                else None
            )
            res = {"embedding": z["embedding"], "adj": adj, "seconds": old["seconds"]}
            res["extra"] = {k[6:]: z[k] for k in z.files if k.startswith("extra_")}
            res["peak_mb"], res["diagnostics"] = old["peak_mb"], old["diagnostics"]
    elif old is not None and old["key"] == key and old["status"] == "unavailable":
        rec.update(status="unavailable", reason=old["reason"])
    else:
        kw = epoch_kwargs(method, settings)
        try:
            out = peers.run_peer(method, mdata, seed=seed, **kw)
        except peers.PeerUnavailable as e:
            rec.update(status="unavailable", reason=str(e))
            log(f"{ds} {_tag(fraction)} {method}: cannot run ({e})")
        except Exception as e:  # a crash is recorded, never dropped
            rec.update(status="failed", reason=f"{type(e).__name__}: {e}")
            log(f"{ds} {_tag(fraction)} {method} seed {seed}: FAILED {type(e).__name__}: {e}")
        else:
            res = {**out, "adj": out["adjacency"]}
            rec["threads"] = thread_settings()  # the thread counts it was made with
            emb_path.parent.mkdir(parents=True, exist_ok=True)
            arrays = _embedding_arrays(res)
            if res["adj"] is not None:
                A = sp.csr_matrix(res["adj"])
                arrays.update(
                    adj_data=A.data, adj_indices=A.indices, adj_indptr=A.indptr,
                    adj_shape=np.array(A.shape),
                )  # fmt: skip
            tmp = emb_path.with_name(emb_path.stem + ".tmp.npz")
            np.savez_compressed(tmp, **arrays)
            os.replace(tmp, emb_path)
    if res is not None:
        rows = _score(res, y, seed)
        base = {
            "dataset": ds, "rna_fraction": fraction, "method": method, "seed": seed,
            "n_cells": mdata.n_obs, "rna_median_counts": float(
                np.median(np.asarray(mdata["rna"].layers["counts"].sum(1)).ravel())
            ),
            "seconds": res["seconds"], "peak_mb": res["peak_mb"],
            "method_version": key["method_version"],
        }  # fmt: skip
        rec["rows"] = [
            {**base, **res["diagnostics"], **r,
             "method": extra_method(method, r["extra"]) if r["extra"] else method}
            for r in rows
        ]  # fmt: skip
        rec.update(seconds=res["seconds"], peak_mb=res["peak_mb"], diagnostics=res["diagnostics"])
        km = rec["rows"][0]
        log(
            f"{ds:14s} {_tag(fraction):7s} {method:11s} seed {seed}: KMeans NMI {km['nmi']:.3f}, "
            f"Leiden NMI {rec['rows'][1]['nmi']:.3f} ({res['seconds']:.0f} s)"
        )
    _write_record(rec_path, rec)
    return rec


def _unit_job(args) -> str:
    """One unit in a fresh worker process (one thread)."""
    one_thread()
    ds, fraction, method, seed, settings = args
    rec = run_unit(ds, fraction, method, seed, settings, log=lambda *a: print(*a, flush=True))
    return f"{ds} {_tag(fraction)} {method} seed {seed}: {rec['status']}"


def units(datasets, fractions, methods, seeds, one_seed_methods) -> list[tuple]:
    """The (dataset, fraction, method, seed) units of a sweep, in the order they run."""
    rank = {m: i for i, m in enumerate(ORDER)}
    out = []
    for m in methods:
        for ds in datasets:
            for f in fractions:
                ss = seeds[:1] if (m in one_seed_methods and f < 1) else seeds
                out += [(ds, f, m, s) for s in ss]

    # shallow RNA first: full depth is also in the clustering benchmark
    # (the cheap methods of one preparation together, so that it is made once)
    def order(u):
        if u[2] in CHEAP:
            return (0, u[1], u[0], u[3], rank[u[2]])
        return (rank.get(u[2], len(ORDER)), u[1], u[0], u[3], 0)

    return sorted(out, key=order)


UNIT = ["dataset", "rna_fraction", "method", "seed"]


def earlier_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``results/depth_sweep.csv`` whose unit has no record here (kept, never dropped).

    Units finished before their records were committed live on in the CSV only; a new run of
    the same unit replaces them. Their ``method_version`` says which code made them.
    """
    path = ROOT / "results" / "depth_sweep.csv"
    if not path.exists():
        return pd.DataFrame()
    old = pd.read_csv(path).drop(columns=["check"], errors="ignore")
    if df.empty:
        return old
    have = pd.MultiIndex.from_frame(df[UNIT].drop_duplicates())
    return old[~pd.MultiIndex.from_frame(old[UNIT]).isin(have)]


def collect() -> pd.DataFrame:
    """Every finished unit's rows, with the clustering benchmark's collapse check per set and depth."""
    from benchmarks.clustering import collapse_check

    recs = [json.loads(p.read_text()) for p in sorted((OUT / "runs").rglob("*.json"))]
    rows = [r for rec in recs for r in rec["rows"]]
    df = pd.DataFrame(rows)
    df = pd.concat([df, earlier_rows(df)], ignore_index=True)
    if df.empty:
        return df
    parts = []
    for _, d in df.groupby(["dataset", "rna_fraction"], sort=False):
        d = d.copy()
        d["check"] = collapse_check(d)
        if "extra" in d:  # an encoder alone: no collapse check
            d.loc[d["extra"].fillna("").astype(str) != "", "check"] = ""
        parts.append(d)
    df = pd.concat(parts, ignore_index=True)
    skipped = [
        {"dataset": r["rows"][0]["dataset"] if r["rows"] else None, "status": r["status"],
         "reason": r["reason"]}
        for r in recs if r["status"] != "ok"
    ]  # fmt: skip
    if skipped:
        print(f"{len(skipped)} units did not run (unavailable or failed)")
    return df


def write(df: pd.DataFrame) -> Path:
    path = ROOT / "results" / "depth_sweep.csv"
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def summary(df: pd.DataFrame, protocol: str = "kmeans") -> pd.DataFrame:
    """(dataset, fraction) x method table of mean ± SD NMI over seeds."""
    d = df[df["protocol"] == protocol]
    g = d.groupby(["dataset", "rna_fraction", "method"])["nmi"].agg(["mean", "std", "count"])
    cell = g.apply(
        lambda r: f"{r['mean']:.3f}" + (f" ± {r['std']:.3f}" if r["count"] > 1 else " (1 seed)"),
        axis=1,
    )
    out = cell.unstack("method")
    return out[[m for m in ORDER if m in out.columns]].sort_index(ascending=[True, False])


SINGLE = ("RNA PCA", "ATAC LSI")
MULTI_PEERS = ("PCA+LSI", "WNN (muon)", "MOFA+", "MultiVI", "GLUE")


def verdicts(df: pd.DataFrame, protocol: str = "kmeans", method: str = "scI2CL") -> pd.DataFrame:
    """Per (dataset, fraction): does integration pay, and is ``method`` at least the best peer?

    Columns: the better single modality and the best multi-modal peer (by mean NMI, among
    peers run with at least two seeds, so that the verdicts pair over seeds), whether that
    peer beats the better single modality (paired over seeds, the book's tie rule),
    ``method``'s mean ± SD, and its paired comparison with the best peer and with its own
    better encoder (``"<method> RNA encoder"`` / ``"... ATAC encoder"``, where recorded).
    A peer run with one seed only (GLUE and MultiVI at thinned depths) that scores above that
    best peer is named in ``one_seed_peer``, with its NMI and ``method``'s difference from it on
    the same seed (``vs_one_seed_peer_diff``; no spread, so no verdict).
    """
    from benchmarks.report import comparison

    d = df[df["protocol"] == protocol]
    rows = []
    for (ds, f), g in d.groupby(["dataset", "rna_fraction"], sort=False):
        by = g.groupby(["method", "seed"])["nmi"].mean()
        mean = g.groupby("method")["nmi"].mean()

        def best(names, mean=mean):
            have = [n for n in names if n in mean.index]
            return max(have, key=mean.get) if have else None

        def cmp(a, b, mean=mean, by=by):
            if a is None or b is None or a not in mean.index or b not in mean.index:
                return {"verdict": "", "mean": np.nan, "sd": np.nan, "n": 0}
            return comparison((by[a] - by[b]).dropna(), b)

        seeds = g.groupby("method")["seed"].nunique()
        single = best(SINGLE)
        multi = [n for n in MULTI_PEERS if n in mean.index]
        peer = best([n for n in multi if seeds[n] > 1]) or best(multi)
        above = [n for n in multi if seeds[n] == 1 and n != peer and mean[n] > mean[peer]]
        one = best(above)
        one_diff = (by[method] - by[one]).dropna().mean() if one and method in mean else np.nan
        enc = best([extra_method(method, k) for k in ("rna", "atac")])
        pay = cmp(peer, single)
        vs_peer, vs_enc = cmp(method, peer), cmp(method, enc)
        rows.append({
            "dataset": ds, "rna_fraction": f, "better_single": single,
            "better_single_nmi": mean.get(single, np.nan), "best_peer": peer,
            "best_peer_nmi": mean.get(peer, np.nan),
            "best_peer_seeds": int(by.get(peer, pd.Series()).count()) if peer else 0,
            "integration_pays": pay["verdict"],
            method: mean.get(method, np.nan),
            f"{method}_sd": g[g.method == method]["nmi"].std(),
            f"{method}_seeds": int((g.method == method).sum()),
            "vs_best_peer": vs_peer["verdict"], "vs_best_peer_diff": vs_peer["mean"],
            "better_encoder": enc, "vs_better_encoder": vs_enc["verdict"],
            "vs_better_encoder_diff": vs_enc["mean"],
            "one_seed_peer": one, "one_seed_peer_nmi": mean.get(one, np.nan) if one else np.nan,
            "vs_one_seed_peer_diff": one_diff,
        })  # fmt: skip
    return pd.DataFrame(rows).sort_values(["dataset", "rna_fraction"], ascending=[True, False])


#: scI2CL's rows of the sweep under its previous default, and what changed since: the
#: read-out's shared block (``results/depth_sweep_scI2CL_before_smoothing.csv`` holds the
#: default before the cross-modal smoothing, the change before that)
PREVIOUS = ROOT / "results" / "depth_sweep_scI2CL_before_shared_block.csv"
PREVIOUS_WHAT = "its default before the shared block in the read-out"


def versus_previous(
    df: pd.DataFrame, protocol: str = "kmeans", previous: Path = PREVIOUS
) -> pd.DataFrame:
    """scI2CL now against its previous default, per (dataset, fraction), paired over seeds.

    Columns ``now``, ``before`` (mean NMI), ``diff`` (mean paired difference), ``sd`` and
    ``verdict`` (the book's tie rule). Empty when ``previous`` is absent.
    """
    from benchmarks.report import comparison

    if not Path(previous).exists():
        return pd.DataFrame()
    old = pd.read_csv(previous)
    key = ["dataset", "rna_fraction", "seed"]

    def nmi(d):
        d = d[(d["method"] == "scI2CL") & (d["protocol"] == protocol)]
        return d.groupby(key)["nmi"].mean()

    if "method_version" in df and "method_version" in old:  # runs of the old code are not "now"
        df = df[~df["method_version"].isin(set(old["method_version"]))]
    both = pd.concat({"now": nmi(df), "before": nmi(old)}, axis=1).dropna()
    rows = []
    for (ds, f), g in both.groupby(level=["dataset", "rna_fraction"], sort=False):
        c = comparison((g["now"] - g["before"]).round(10), "before")  # float noise is no gain
        rows.append({"dataset": ds, "rna_fraction": f, "now": g["now"].mean(),
                     "before": g["before"].mean(), "diff": c["mean"], "sd": c["sd"],
                     "seeds": c["n"], "verdict": c["verdict"]})  # fmt: skip
    out = pd.DataFrame(rows)
    return out.sort_values(["dataset", "rna_fraction"], ascending=[True, False]) if rows else out


def _point(r) -> str:
    return f"{r['dataset']} at {r['rna_fraction']:.0%}"


def findings(df: pd.DataFrame, protocol: str = "kmeans", method: str = "scI2CL") -> dict:
    """The sweep's answers in words, every number read from :func:`verdicts`.

    Keys: ``pays`` (where a multi-modal peer beats the better single
    modality), ``method`` (where ``method`` stands against the best peer
    there), ``encoder`` (``method`` against its own better encoder),
    ``previous`` (scI2CL against :data:`PREVIOUS_WHAT`,
    :func:`versus_previous`), ``missing`` (points ``method`` has not run), and counts ``n_points``,
    ``n_pays``, ``n_at_least`` (``method`` at least the best peer where
    integration pays).
    """
    v = verdicts(df, protocol, method)
    pays = v[v["integration_pays"] == "gain"]
    ran = v[v[f"{method}_seeds"] > 0]
    out = {"n_points": len(v), "n_pays": len(pays)}
    out["pays"] = (
        f"a multi-modal peer beats the better single modality at {len(pays)} of {len(v)} points"
        + (": " + "; ".join(f"{_point(r)} ({r['best_peer']} {r['best_peer_nmi']:.3f} against "
                            f"{r['better_single']} {r['better_single_nmi']:.3f})"
                            for _, r in pays.iterrows()) if len(pays) else "")
    )  # fmt: skip
    there = pays[pays[f"{method}_seeds"] > 0]
    ok = there[there["vs_best_peer"].isin(["gain", "tie"])]
    out["n_at_least"] = len(ok)
    words = {"gain": "ahead of", "tie": "tied with", "loss": "behind", "": "no verdict against"}
    out["method"] = (
        f"there, {method} is at least the best peer at {len(ok)} of {len(there)} points it ran"
        + (": " + "; ".join(f"{_point(r)}, {words.get(r['vs_best_peer'], 'no verdict (one seed) against')} {r['best_peer']} "
                            f"({r['vs_best_peer_diff']:+.3f})" for _, r in there.iterrows())
           if len(there) else "")
    )  # fmt: skip
    ones = ran[ran["one_seed_peer"].notna()]
    if len(ones):
        out["method"] += (
            "; a slower peer run with one seed only scores above that best peer at "
            + "; ".join(f"{_point(r)} ({r['one_seed_peer']} {r['one_seed_peer_nmi']:.3f}, "
                        f"{method} {'ahead' if r['vs_one_seed_peer_diff'] > 0 else 'behind'} by "
                        f"{abs(r['vs_one_seed_peer_diff']):.3f} on the same seed, no spread)"
                        for _, r in ones.iterrows())
        )  # fmt: skip
    enc = ran[ran["better_encoder"].notna()]
    gain = enc[enc["vs_better_encoder"] == "gain"]
    out["encoder"] = (
        f"{method}'s joint embedding is above its own better encoder at {len(gain)} of "
        f"{len(enc)} points where the encoders were scored"
        + (" (" + "; ".join(_point(r) for _, r in gain.iterrows()) + ")" if len(gain) else "")
    )
    prev = versus_previous(df, protocol) if method == "scI2CL" else pd.DataFrame()
    if len(prev):
        parts = []
        for word, key in (("ahead", "gain"), ("tied", "tie"), ("behind", "loss")):
            p = prev[prev["verdict"] == key]
            if len(p) and key == "tie":
                parts.append(f"tied at {len(p)}")
            elif len(p):
                parts.append(f"{word} at {len(p)} ("
                             + "; ".join(f"{_point(r)}, {r['diff']:+.3f}" for _, r in p.iterrows())
                             + ")")  # fmt: skip
        one = int((prev["verdict"] == "no verdict").sum())
        if one:
            parts.append(f"not yet compared at {one} (one seed so far)")
        out["previous"] = (
            f"against {PREVIOUS_WHAT} (paired over seeds), {method} is "
            + ", ".join(parts)
            + f" of the {len(prev)} points run so far"
        )
    else:
        out["previous"] = f"{method} has no run of its previous default to compare with"
    miss = v[v[f"{method}_seeds"] == 0]
    out["missing"] = (
        f"{method} has not run at " + "; ".join(_point(r) for _, r in miss.iterrows())
        if len(miss)
        else f"{method} ran at every point"
    )
    return out


#: the peers scI2CL must reach on the simulator regimes (issue 41)
REGIME_PEERS = ("MOFA+", "GLUE")


def regime_findings(df: pd.DataFrame, protocol: str = "kmeans", method: str = "scI2CL") -> str:
    """``method`` against :data:`REGIME_PEERS` on the simulator regimes, in words (paired over seeds).

    ``df`` holds the regimes' rows (datasets of ``benchmarks.config.SIM_REGIME_SETS``, full depth).
    """
    from benchmarks.config import SIM_REGIME_SETS
    from benchmarks.report import comparison

    d = df[df["dataset"].isin(SIM_REGIME_SETS) & (df["protocol"] == protocol)]
    out = []
    for ds, g in d.groupby("dataset", sort=False):
        by = g.groupby(["method", "seed"])["nmi"].mean()
        mean = g.groupby("method")["nmi"].mean()
        if method not in mean:
            out.append(f"{ds}: {method} not run")
            continue
        parts = []
        for peer in REGIME_PEERS:
            if peer not in mean:
                parts.append(f"{peer} not run")
                continue
            c = comparison((by[method] - by[peer]).dropna(), peer)
            parts.append(f"{c['phrase']} ({mean[method]:.3f} against {mean[peer]:.3f})")
        out.append(f"{ds}: {method} is " + "; ".join(parts))
    return ". ".join(out) if out else "the simulator regimes have not run"


def write_book_summary(df: pd.DataFrame, path: Path | None = None) -> Path:
    """Write the intro's paragraph on the depth sweep (``book/_generated/depth_summary.md``)."""
    path = path or ROOT / "book" / "_generated" / "depth_summary.md"
    lines = ["**When does ATAC help?** With RNA thinned to 100, 50, 30 and 10 % of its counts "
             f"({len(DATASETS)} real paired sets, mean over seeds, paired verdicts; chapter 3):", ""]  # fmt: skip
    found = {p: findings(df[df["dataset"].isin(DATASETS)], p) for p in ("kmeans", "leiden")}
    for proto, name in (("kmeans", "KMeans at the true k"), ("leiden", "label-free Leiden")):
        f = found[proto]
        lines.append(f"- {name}: {f['pays']}; {f['method']}. {f['encoder']}; {f['previous']}.")
    lines += ["", f"{found['kmeans']['missing']}." if found["kmeans"]["n_points"] else ""]
    return write_text_atomic(path, "\n".join(lines).rstrip() + "\n")


def _same_value(a, b) -> bool:
    """Equal, NaN equal to NaN (a score recorded in JSON against one computed now)."""
    if isinstance(a, float | np.floating) and isinstance(b, float | int) and np.isnan(a):
        return np.isnan(b)
    return a == b


def restamp(method: str = "scI2CL", settings: dict | None = None, log=print) -> dict:
    """Keep the runs of ``method`` whose code changed without changing what it computes.

    A unit whose method version is not the current one would re-run. Per old
    version and per dataset, the unit that ran fastest is re-run here as a
    canary (one thread); if every canary's embedding and further embeddings
    are equal bit for bit to the kept ones, every unit of that old version gets
    the current version, with the old one and the canaries written in its
    record (``restamped_from``, ``restamp_canary``); otherwise nothing changes
    and they re-run on the next sweep. Where the embedding is not kept (``build/`` of a fresh
    checkout) but the record was scored by the current scoring code, the canary's every score
    is compared with the record's instead, bit for bit. One canary per dataset, because a unit
    that reproduces on one dataset says nothing about a code path that only
    another dataset takes (a read-out choice, a different likelihood). Returns
    ``{old version: "kept" | "differs" | "no embedding"}``.
    """
    from benchmarks import peers
    from benchmarks.common import label_key

    settings = settings or full_settings()
    now = _method_version(method)
    stale: dict[str, list] = {}
    for f in sorted((OUT / "runs").glob(f"*/rna*/{method.replace(' ', '_')}__*.json")):
        rec = json.loads(f.read_text())
        v = rec["key"]["method_version"]
        if v != now and rec["status"] == "ok":
            stale.setdefault(v, []).append((rec.get("seconds", np.inf), f, rec))

    def canary(u):
        f, rec = u[1], u[2]
        ds, frac, seed = f.parts[-3], float(f.parts[-2][3:]), int(f.stem.split("__")[1])
        label, emb_path = f"{ds} {_tag(frac)} seed {seed}", _paths(ds, frac, method, seed)[1]
        scored_now = rec.get("score_version") == _score_version()
        if not emb_path.exists() and not scored_now:
            return label, "no embedding"
        mdata = prepare_thinned(ds, frac, seed)
        new = peers.run_peer(method, mdata, seed=seed, **epoch_kwargs(method, settings))
        arrays = _embedding_arrays({"extra": {}, **new})
        if emb_path.exists():
            with np.load(emb_path) as z:
                kept = set(z.files) - {"adj_data", "adj_indices", "adj_indptr", "adj_shape"}
                same = kept == set(arrays) and all(np.array_equal(z[k], arrays[k]) for k in arrays)
            return label, "same" if same else "differs"
        # no embedding kept (a fresh checkout): every score of the record, to the last bit
        y = mdata.obs[label_key(ds)].astype(str).to_numpy()
        rows = _score({**new, "adj": new["adjacency"]}, y, seed)
        same = len(rows) == len(rec["rows"]) and all(
            all(_same_value(r[k], old[k]) for k in r) for r, old in zip(rows, rec["rows"])
        )
        return label + " (its scores)", "same" if same else "differs"

    def stamp(u, old, canaries):
        _, g, r = u
        r["key"]["method_version"] = now
        r["restamped_from"], r["restamp_canary"] = old, canaries
        for row in r["rows"]:
            row["method_version"] = now
        _write_record(g, r)

    return restamp_stale(stale, now, lambda u: u[1].parts[-3], canary, stamp, method, log)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="*", default=DATASETS)
    ap.add_argument("--fractions", nargs="*", type=float, default=FRACTIONS)
    ap.add_argument("--methods", nargs="*", default=ORDER)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument(
        "--one-seed-methods", nargs="*", default=["MultiVI", "GLUE"],
        help="methods run at the first seed only below full depth (the slowest)",
    )  # fmt: skip
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--restamp", action="store_true",
        help="keep units whose method version changed if a canary re-run is identical (restamp())",
    )  # fmt: skip
    a = ap.parse_args()
    one_thread()
    settings = full_settings()
    t = time.perf_counter()
    if a.restamp:
        for m in a.methods:
            restamp(m, settings)
    if not a.report_only and not a.restamp:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        todo = units(a.datasets, a.fractions, a.methods, a.seeds, set(a.one_seed_methods))
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(1, mp_context=ctx, max_tasks_per_child=1) as ex:
            for u in todo:
                if u[2] in CHEAP:
                    rec = run_unit(*u, settings, log=lambda *a: print(*a, flush=True))
                    print(f"{u[0]} {_tag(u[1])} {u[2]} seed {u[3]}: {rec['status']}", flush=True)
                else:
                    print(ex.submit(_unit_job, (*u, settings)).result(), flush=True)
                write(collect())
    df = collect()
    write(df)
    write_book_summary(df)
    for proto in ("kmeans", "leiden"):
        print(f"\nNMI, {proto}\n" + summary(df, proto).to_string())
        print(verdicts(df, proto).round(3).to_string())
        print(f"\nscI2CL against {PREVIOUS_WHAT}, {proto}")
        print(versus_previous(df, proto).round(3).to_string())
    print(f"total wall time {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
