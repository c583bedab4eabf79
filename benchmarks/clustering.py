"""Clustering benchmark: scI2CL against peer tools on every available paired dataset.

Usage: python -m benchmarks.clustering [--smoke] [--jobs 2] [--seeds 0 1 2] [--datasets ...] [--methods ...]

The unit of work is one method at one seed on one dataset (``--jobs`` units run side by
side, one thread each, the costliest first). Each finished unit is kept in
``results/benchmark_clustering/runs/<dataset>/`` with the hash of the code behind it
(:func:`code_version`), so the same command resumes an interrupted run and re-runs only
what the code change touched. Per dataset the runner then writes
``results/benchmark_clustering/<dataset>.csv`` (one row per method, seed and protocol),
``<dataset>_skipped.csv`` (the methods that could not run there, and why) and the 2-D
coordinates of every method's seed-0 embedding (``embeddings_<dataset>.npz``). The parts
are then merged into ``results/benchmark_clustering.csv`` and the figures redrawn.

Each unit that runs records the machine's load average when it ends (``load_15min``, next to
its record), so that a time measured while other jobs shared the machine can be told apart.

Every peer is checked for collapse before its rows are read (:func:`collapse_check`);
the ``check`` column says why a row is flagged and the tables mark it.
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

from benchmarks import embeddings, peers, plots, protocols
from benchmarks.common import (
    available_paired,
    label_key,
    one_thread,
    prepare,
    restamp_stale,
    set_threads,
    thread_settings,
)
from benchmarks.config import MAX_EPOCHS, MULTIVI_EPOCHS, SEEDS, SIMULATED, SMOKE, epoch_kwargs
from benchmarks.report import paired_differences
from sci2cl import metrics, pl

ROOT = Path(__file__).resolve().parents[1]

COLUMNS = [
    "dataset",
    "method",
    "protocol",
    "seed",
    "nmi",
    "ari",
    "acc",
    "asw",
    "n_clusters",
    "scib_silhouette_label",
    "scib_clisi",
    "seconds",
    "peak_mb",
    "load_15min",
    "kl_local",
    "epochs",
    "check",
    "code_version",
]
#: inputs of a multi-modal method, whose better NMI it should reach
SINGLE_MODALITY = ["RNA PCA", "ATAC LSI"]
#: per-cell KL (nats) of a VAE latent below which it has collapsed to its prior
KL_COLLAPSED = 0.1


#: source files whose content fixes every method's numbers (preprocessing, scores; with
#: ``benchmarks/peers.py`` less the other methods' functions); their hash, with that of the
#: prepared data (:func:`data_version`), is a unit's code version
FINGERPRINT = [
    "constraints-cpu.txt",
    "benchmarks/config.py",
    "sci2cl/_graph.py",
    "sci2cl/_utils.py",
    "sci2cl/metrics.py",
    "sci2cl/pp.py",
]
#: and those that fix one method's numbers only
FINGERPRINT_METHOD = {
    "scI2CL": [
        "sci2cl/distributions.py",
        # the joint read-out's weights and smoothing, argument checks and data validation (the
        # depth sweep hashes only these lists; a test checks that every module the model imports
        # is listed)
        "sci2cl/_graph.py",
        "sci2cl/_utils.py",
        "sci2cl/pp.py",
        "sci2cl/_rows.py",
        # the scI2CL model's own files, not scRCL's (a change to scRCL keeps scI2CL's units)
        "sci2cl/model/_base.py",
        "sci2cl/model/_data.py",
        "sci2cl/model/_harmony.py",
        "sci2cl/model/_inputs.py",
        "sci2cl/model/_readout.py",
        "sci2cl/model/_sci2cl.py",
        "sci2cl/model/_setup.py",
        "sci2cl/model/_training.py",
        "sci2cl/module/_losses.py",
        "sci2cl/module/_sci2cl.py",
        "sci2cl/nn.py",
    ],
}


def source_files(entries: list[str]) -> list[str]:
    """The files behind fingerprint entries: a file as is, a folder as its ``*.py`` files.

    Raises ``FileNotFoundError`` naming the entry when it is neither, so that a
    module moved or split fails here rather than hashing less than it should.
    """
    out = []
    for entry in entries:
        path = ROOT / entry
        if path.is_dir():
            out += sorted(str(p.relative_to(ROOT)) for p in path.rglob("*.py"))
        elif path.is_file():
            out.append(entry)
        else:
            raise FileNotFoundError(f"fingerprint entry {entry!r} is neither a file nor a folder")
    return out


def data_version(mdata) -> str:
    """Hash of a prepared dataset: cells, features, raw counts and every obs column.

    It stands for the loading and preparing code (``sci2cl.datasets``,
    ``benchmarks.common``): a change there that leaves the prepared data as it
    was keeps the units already run.
    """
    import scipy.sparse as sp

    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(mdata.obs.astype(str), index=True).to_numpy().tobytes())
    for mod in ("rna", "atac"):
        a = mdata[mod]
        h.update("\x00".join(a.var_names).encode())
        X = sp.csr_matrix(a.layers["counts"] if "counts" in a.layers else a.X)
        for arr in (X.indptr, X.indices, X.data):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:12]


def code_version(method: str | None = None) -> str:
    """Hash of the code behind one method's numbers.

    It covers the files in :data:`FINGERPRINT` and ``FINGERPRINT_METHOD[method]``,
    ``benchmarks/peers.py`` without the functions of the other methods in
    :data:`peers.PEERS`, and this module's functions that run and score a
    unit. A content hash rather than a commit: a run interrupted and resumed
    (:func:`run_unit` keeps each finished unit) stays one run as long as the
    code that makes its numbers is unchanged, and a change to one method
    re-runs that method only.
    """
    h = hashlib.sha256()
    for f in source_files(FINGERPRINT + FINGERPRINT_METHOD.get(method, [])):
        h.update(f.encode())
        h.update((ROOT / f).read_bytes())
    src = (ROOT / "benchmarks" / "peers.py").read_text()
    for name, fn in peers.PEERS.items():
        if name != method:
            src = src.replace(inspect.getsource(fn), "")
    h.update(src.encode())
    for fn in (run_unit, _score, _prepared, _umap, scib_scores):  # this module's share
        h.update(inspect.getsource(fn).encode())
    return "src-" + h.hexdigest()[:12]


def scib_scores(X: np.ndarray, y: np.ndarray, seed: int = 0) -> dict:
    """scib-metrics' bio-conservation scores of an embedding: label silhouette and cLISI.

    Both scaled to [0, 1] (higher: types better kept), as scib-metrics reports them.
    """
    from scib_metrics import clisi_knn, silhouette_label
    from scib_metrics.nearest_neighbors import pynndescent

    X = np.asarray(X, dtype=np.float32)
    nn = pynndescent(X, n_neighbors=min(90, X.shape[0] - 1), random_state=seed)
    return {
        "scib_silhouette_label": float(silhouette_label(X, y)),
        "scib_clisi": float(clisi_knn(nn, y)),
    }


def collapse_check(df: pd.DataFrame) -> pd.Series:
    """Why each row's embedding is suspect ("" when it passes), for one dataset's rows.

    A VAE whose latent KL per cell is below :data:`KL_COLLAPSED` has collapsed to
    its prior; a multi-modal method whose KMeans NMI falls below the better of its
    own single-modality inputs (RNA PCA, ATAC LSI; same seed) has lost what one
    input alone holds.
    """
    km = df[df["protocol"] == "kmeans"].set_index(["method", "seed"])["nmi"]
    reasons = []
    for r in df.itertuples():
        why = []
        kl = getattr(r, "kl_local", np.nan)
        if pd.notna(kl) and kl < KL_COLLAPSED:
            why.append(f"latent KL {kl:.3g} nats per cell: collapsed to the prior")
        if r.method not in SINGLE_MODALITY:
            ref = [km.get((m, r.seed), np.nan) for m in SINGLE_MODALITY]
            own = km.get((r.method, r.seed), np.nan)
            if np.isfinite(ref).any() and own < np.nanmax(ref):
                best = SINGLE_MODALITY[int(np.nanargmax(ref))]
                why.append(f"KMeans NMI {own:.3f} below {best} alone ({np.nanmax(ref):.3f})")
        reasons.append("; ".join(why))
    return pd.Series(reasons, index=df.index)


_PREPARED: dict = {}


def _prepared(ds: str, max_cells: int | None):
    """The prepared dataset, kept per process so that a worker loads each set once."""
    if (ds, max_cells) not in _PREPARED:
        _PREPARED[ds, max_cells] = prepare(ds, max_cells=max_cells)
    return _PREPARED[ds, max_cells]


def _unit_path(out_dir: Path, ds: str, method: str, seed: int) -> Path:
    return (
        out_dir / "benchmark_clustering" / "runs" / ds / f"{method.replace(' ', '_')}__{seed}.npz"
    )


def run_unit(
    ds: str,
    method: str,
    seed: int,
    *,
    settings: dict,
    coords: bool = False,
    out_dir: Path = ROOT / "results",
    log=print,
) -> dict:
    """Run one method at one seed on one dataset, score it, and keep the record on disk.

    ``settings`` holds ``max_cells``, ``max_epochs``, ``multivi_epochs``,
    ``glue_epochs`` and ``paper_repeats``. The record (rows of scores, training
    curves, 2-D coordinates when ``coords``, or why the method could not run or
    crashed) goes to ``out_dir/benchmark_clustering/runs/<ds>/<method>__<seed>.npz``
    with the code version and settings; a later call with the same code version
    and settings reads it instead of running again, so an interrupted benchmark
    resumes where it stopped. Returns the record: ``{"key", "status", "rows",
    "curves", "reason", "coords"}``.
    """
    path = _unit_path(out_dir, ds, method, seed)
    mdata = _prepared(ds, settings["max_cells"])
    key = {"code_version": code_version(method), "data_version": data_version(mdata), **settings}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            rec = json.loads(str(z["record"]))
            if rec["key"] == key:
                rec["coords"] = z["coords"] if "coords" in z else None
                return rec
    y = mdata.obs[label_key(ds)].astype(str).to_numpy()
    kw = epoch_kwargs(method, settings)
    rec = {"key": key, "status": "ok", "rows": [], "curves": [], "reason": ""}
    xy = None
    try:
        res = peers.run_peer(method, mdata, seed=seed, **kw)
    except peers.PeerUnavailable as e:  # the method cannot run on this dataset: say why
        rec.update(status="unavailable", reason=str(e))
        log(f"{ds} {method}: cannot run ({e})")
    except Exception as e:  # a crash is recorded, never dropped
        rec.update(status="failed", reason=f"failed: {type(e).__name__}: {e}")
        log(f"{ds} {method} seed {seed}: FAILED {type(e).__name__}: {e}")
    else:
        rec["rows"] = _score(res, y, ds, method, seed, settings["paper_repeats"], key)
        if res["curves"] is not None:
            rec["curves"] = res["curves"].to_dict(orient="records")
        if coords:
            emb = res["embedding"]
            xy = (emb if emb.shape[1] == 2 else _umap(emb, seed)).astype(np.float32)
        km = rec["rows"][0]
        log(
            f"{ds:14s} {method:12s} seed {seed}: NMI {km['nmi']:.3f} ARI {km['ari']:.3f} "
            f"({res['seconds']:.0f} s, {res['peak_mb']:.0f} MB)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.npz")
    arrays = {"record": np.array(json.dumps(rec, default=float))}
    if xy is not None:
        arrays["coords"] = xy
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, path)
    rec["coords"] = xy
    return rec


#: row fields that a re-run may change without the method computing anything else
_TIMING = ("seconds", "peak_mb", "code_version")


def _same_rows(a: list[dict], b: list[dict]) -> bool:
    """Whether two units' rows are equal in every field but the timings and the code version."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        keys = (set(x) | set(y)) - set(_TIMING)
        for k in keys:
            u, v = x.get(k), y.get(k)
            if isinstance(u, float) and isinstance(v, float) and np.isnan(u) and np.isnan(v):
                continue
            if u != v:
                return False
    return True


def restamp(method: str = "scI2CL", out_dir: Path = ROOT / "results", log=print) -> dict:
    """Keep the units of ``method`` whose code changed without changing what it computes.

    The clustering benchmark's counterpart of :func:`benchmarks.depth.restamp`. A unit whose
    code version is not the current one would re-run. Per old version, the fastest unit of
    each dataset is re-run here as a canary with the settings in its key; if every canary's
    rows equal the kept ones in every score (timings aside; floats bit for bit), every unit of
    that old version gets the current version, with the old one and the canaries in its
    record (``restamped_from``, ``restamp_canary``), and the rows of the per-dataset tables
    follow; otherwise nothing changes and they re-run on the next benchmark. Returns
    ``{old version: "kept" | "differs"}``.
    """
    now = code_version(method)
    stale: dict[str, list] = {}
    for f in sorted((out_dir / "benchmark_clustering" / "runs").glob(
        f"*/{method.replace(' ', '_')}__*.npz"
    )):  # fmt: skip
        with np.load(f, allow_pickle=False) as z:
            rec = json.loads(str(z["record"]))
            coords = z["coords"] if "coords" in z else None
        v = rec["key"]["code_version"]
        if v != now and rec["status"] == "ok":
            secs = rec["rows"][0].get("seconds", np.inf) if rec["rows"] else np.inf
            stale.setdefault(v, []).append((secs, f, rec, coords))

    def canary(u):
        _, f, rec, _ = u
        ds, key, seed = f.parent.name, rec["key"], int(f.stem.split("__")[1])
        mdata = _prepared(ds, key["max_cells"])
        y = mdata.obs[label_key(ds)].astype(str).to_numpy()
        res = peers.run_peer(method, mdata, seed=seed, **epoch_kwargs(method, key))
        rows = _score(res, y, ds, method, seed, key["paper_repeats"], key)
        return f"{ds} seed {seed}", "same" if _same_rows(rows, rec["rows"]) else "differs"

    def stamp(u, old, canaries):
        _, f, rec, coords = u
        rec["key"]["code_version"] = now
        rec["restamped_from"], rec["restamp_canary"] = old, canaries
        for row in rec["rows"]:
            row["code_version"] = now
        extra = {} if coords is None else {"coords": coords}
        tmp = f.with_name(f.stem + ".tmp.npz")
        np.savez_compressed(tmp, record=np.array(json.dumps(rec, default=float)), **extra)
        os.replace(tmp, f)

    out = restamp_stale(stale, now, lambda u: u[1].parent.name, canary, stamp, method, log)
    for v, verdict in out.items():  # the per-dataset tables follow the kept units
        parts = {f.parent.name for _, f, _, _ in stale[v]} if verdict == "kept" else set()
        for part in sorted(parts):
            csv = out_dir / "benchmark_clustering" / f"{part}.csv"
            if csv.exists():
                df = pd.read_csv(csv)
                hit = (df["method"] == method) & (df["code_version"] == v)
                df.loc[hit, "code_version"] = now
                _atomic_csv(df, csv)
    return out


def _score(res: dict, y: np.ndarray, ds: str, method: str, seed: int, paper_repeats: int, key):
    """Rows of scores of one embedding under the three protocols."""
    emb, adj = res["embedding"], res["adjacency"]
    base = {
        "dataset": ds,
        "method": method,
        "seed": seed,
        "seconds": res["seconds"],
        "peak_mb": res["peak_mb"],
        **res["diagnostics"],
        **scib_scores(emb, y, seed),
        "code_version": key["code_version"],
    }
    rows = [{**base, **r} for r in metrics.cluster_embedding(emb, y, seed=seed, adjacency=adj)]
    if paper_repeats:
        pp = protocols.paper_protocol(
            emb, y, n_repeats=1 if adj is not None else paper_repeats, seed=seed
        )
        rows.append(
            {
                **base,
                "protocol": "paper",
                **pp.drop(columns="repeat").mean().to_dict(),
                "nmi_min": pp.nmi.min(),
                "nmi_max": pp.nmi.max(),
                "ari_min": pp.ari.min(),
                "ari_max": pp.ari.max(),
            }
        )
    return rows


def run_dataset(
    ds: str,
    methods: list[str],
    seeds: list[int],
    *,
    max_cells: int | None = None,
    max_epochs: int | None = MAX_EPOCHS,
    multivi_epochs: int | None = None,
    glue_epochs: int | None = None,
    paper_repeats: int = 1,
    out_dir: Path = ROOT / "results",
    log=print,
) -> pd.DataFrame:
    """Run (or read back) every method and seed on one dataset and write its tables.

    ``max_epochs``, ``multivi_epochs`` and ``glue_epochs`` cap the epochs of
    scI2CL, MultiVI and GLUE (``None``: each package's default, with its own
    early stopping; caps are for smoke runs). Each (method, seed) is a
    :func:`run_unit`, read back when already run with the same code and
    settings. Writes ``out_dir/benchmark_clustering/<ds>.csv``,
    ``<ds>_skipped.csv``, ``<ds>_curves.csv`` and the 2-D coordinates of each
    method's first-seed embedding (``out_dir/embeddings_<ds>.npz``); returns the rows.
    """
    parts = out_dir / "benchmark_clustering"
    parts.mkdir(parents=True, exist_ok=True)
    settings = {
        "max_cells": max_cells,
        "max_epochs": max_epochs,
        "multivi_epochs": multivi_epochs,
        "glue_epochs": glue_epochs,
        "paper_repeats": paper_repeats,
    }
    rows, skipped, coords, curves = [], [], {}, []
    for method in methods:
        for seed in seeds:
            rec = run_unit(
                ds, method, seed, settings=settings, coords=seed == seeds[0],
                out_dir=out_dir, log=log,
            )  # fmt: skip
            if rec["status"] == "unavailable":
                skipped.append({"dataset": ds, "method": method, "reason": rec["reason"]})
                break
            if rec["status"] == "failed":
                skipped.append(
                    {"dataset": ds, "method": method, "seed": seed, "reason": rec["reason"]}
                )
                continue
            side = _unit_path(out_dir, ds, method, seed).with_suffix(".load.json")
            load = json.loads(side.read_text()) if side.exists() else {}
            rows += [{**r, "load_15min": load.get("load_15min", np.nan)} for r in rec["rows"]]
            if rec["curves"]:
                curves.append(
                    pd.DataFrame(rec["curves"]).assign(dataset=ds, method=method, seed=seed)
                )
            if rec["coords"] is not None:
                coords[method] = rec["coords"]
    df = pd.DataFrame(rows)
    if len(df):
        df["check"] = collapse_check(df)
    df = df[[c for c in COLUMNS if c in df] + [c for c in df if c not in COLUMNS]]
    _atomic_csv(df, parts / f"{ds}.csv")
    _atomic_csv(
        pd.DataFrame(skipped, columns=["dataset", "method", "seed", "reason"]),
        parts / f"{ds}_skipped.csv",
    )
    if curves:
        _atomic_csv(pd.concat(curves, ignore_index=True), parts / f"{ds}_curves.csv")
    y = _prepared(ds, max_cells).obs[label_key(ds)].astype(str).to_numpy() if coords else None
    np.savez_compressed(
        out_dir / f"embeddings_{ds}.npz",
        labels=y if y is not None else np.array([]),
        **{k.replace(" ", "_"): v for k, v in coords.items()},
    )
    return df


def merge(out_dir: Path = ROOT / "results", datasets: list[str] | None = None) -> pd.DataFrame:
    """Concatenate the per-dataset parts into ``out_dir/benchmark_clustering.csv``.

    ``datasets`` (default: every part present) fixes the order; a missing part raises.
    """
    parts = out_dir / "benchmark_clustering"
    if datasets is None:
        datasets = sorted(
            p.stem for p in parts.glob("*.csv") if not p.stem.endswith(("_skipped", "_curves"))
        )
    missing = [d for d in datasets if not (parts / f"{d}.csv").exists()]
    if missing:
        raise FileNotFoundError(f"no benchmark results for {missing} in {parts}: run them first")
    df = pd.concat([pd.read_csv(parts / f"{d}.csv") for d in datasets], ignore_index=True)
    _atomic_csv(df, out_dir / "benchmark_clustering.csv")
    sk = [pd.read_csv(parts / f"{d}_skipped.csv") for d in datasets]
    _atomic_csv(pd.concat(sk, ignore_index=True), out_dir / "benchmark_skipped.csv")
    cv = [
        pd.read_csv(parts / f"{d}_curves.csv")
        for d in datasets
        if (parts / f"{d}_curves.csv").exists()
    ]
    if cv:
        _atomic_csv(pd.concat(cv, ignore_index=True), out_dir / "benchmark_curves.csv")
    return df


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def summary_table(
    df: pd.DataFrame, metric: str = "nmi", protocol: str = "kmeans", digits: int = 3
) -> pd.DataFrame:
    """Dataset x method table of ``mean ± SD`` over seeds; a flagged method gets a dagger.

    Two more rows: the mean over the real datasets and over all (with the simulator).
    """
    d = df[df["protocol"] == protocol]
    g = d.groupby(["dataset", "method"])[metric].agg(["mean", "std", "count"])
    flagged = d[d["check"].fillna("") != ""].groupby(["dataset", "method"]).size()
    datasets = list(dict.fromkeys(d["dataset"]))
    methods = list(dict.fromkeys(d["method"]))
    out = pd.DataFrame(index=datasets, columns=methods, dtype=object)
    for (ds, m), r in g.iterrows():
        cell = f"{r['mean']:.{digits}f}"
        if r["count"] > 1:
            cell += f" ± {r['std']:.{digits}f}"
        out.loc[ds, m] = cell + (" †" if (ds, m) in flagged.index else "")
    means = g["mean"].unstack("method").reindex(columns=methods)
    real = [x for x in datasets if x != SIMULATED]
    rows = {f"mean of all {len(datasets)}": datasets}
    if real and len(real) < len(datasets):
        rows = {f"mean of {len(real)} real sets": real, **rows}
    for label, sel in rows.items():
        m = means.loc[sel]
        out.loc[label] = [
            f"{m[c].mean():.{digits}f}" if m[c].notna().all() else "n/a" for c in methods
        ]
    return out.fillna("not run")


def paired_table(
    df: pd.DataFrame, protocol: str = "kmeans", metric: str = "nmi", base: str = "scI2CL"
) -> pd.DataFrame:
    """scI2CL minus each peer, paired over seeds: ``mean ± SD (verdict)`` per dataset.

    The verdict is ``gain``/``loss`` when the mean difference exceeds the SD of the
    paired differences, else ``tie``. Rows ``real sets`` and ``all`` summarise the
    per-dataset means (their mean ± SD over datasets).
    """
    d = df[df["protocol"] == protocol]
    peers_ = [m for m in dict.fromkeys(d["method"]) if m != base]
    out = {}
    scopes = [("all", d)]
    if (d["dataset"] == SIMULATED).any():  # without the simulator the two rows are the same
        scopes.append(("real sets", d[d["dataset"] != SIMULATED]))
    for scope, sub in scopes:
        # base minus peer: paired_differences gives other minus base, so negate
        p = paired_differences(sub, "method", base, peers_, value=metric)
        if p.empty:
            continue
        p["mean"] = -p["mean"]
        p["verdict"] = p["verdict"].map({"gain": "loss", "loss": "gain"}).fillna(p["verdict"])
        for r in p.itertuples():
            key = r.dataset if r.dataset != "all" else scope
            if r.dataset != "all" and scope != "all":
                continue
            cell = f"{r.mean:+.3f}"
            one = " (1 dataset)" if r.dataset == "all" else " (1 seed)"  # no spread, no verdict
            cell += f" ± {r.std:.3f} ({r.verdict})" if r.count > 1 else one
            out.setdefault(key, {})[r.method] = cell
    datasets = [x for x in dict.fromkeys(d["dataset"])] + ["real sets", "all"]
    return pd.DataFrame(out).T.reindex(index=[x for x in datasets if x in out], columns=peers_)


#: order in which units start when run side by side: the costly ones first so that the workers
#: finish together, except GLUE (by far the longest), last, so that a run stopped before its end
#: has every other row
_ORDER = ["MultiVI", "MOFA+", "scI2CL", "WNN (muon)", "RNA PCA", "ATAC LSI", "PCA+LSI", "GLUE"]


def _unit_job(ds: str, method: str, seed: int, settings: dict, coords: bool, out_dir: str) -> str:
    """One unit in a worker process (one thread); returns its status line."""
    one_thread()
    path = _unit_path(Path(out_dir), ds, method, seed)
    before = path.stat().st_mtime if path.exists() else None
    run_peer = peers.run_peer

    def run_and_keep(name, mdata, seed=0, **kw):  # keep the embedding for chapters 4-6
        res = run_peer(name, mdata, seed=seed, **kw)
        key = {"code_version": code_version(name), "data_version": data_version(mdata), **settings}
        embeddings.save(ds, name, seed, res, key)
        return res

    peers.run_peer = run_and_keep  # this worker process runs this one unit only
    rec = run_unit(
        ds, method, seed, settings=settings, coords=coords, out_dir=Path(out_dir),
        log=lambda *a: print(*a, flush=True),
    )  # fmt: skip
    if (
        path.exists() and path.stat().st_mtime != before
    ):  # it ran here: say how busy the machine was and the thread counts it ran with
        load = dict(zip(("load_1min", "load_5min", "load_15min"), os.getloadavg(), strict=True))
        side = path.with_suffix(".load.json")
        side.write_text(json.dumps({**load, "cpus": os.cpu_count(), "threads": thread_settings()}))
    return f"{ds} {method} seed {seed}: {rec['status']}"


def run(
    datasets: list[str],
    methods: list[str],
    seeds: list[int],
    *,
    jobs: int = 1,
    out_dir: Path = ROOT / "results",
    log=print,
    **kwargs,
) -> pd.DataFrame:
    """Run the benchmark on ``datasets`` and merge; ``jobs`` units side by side.

    A unit is one (dataset, method, seed) (:func:`run_unit`); with ``jobs > 1``
    units run ``jobs`` at a time, each in a fresh process with one thread (so
    that ``peak_mb`` is its own), the costliest first. Units already on disk from the same code version and settings are
    read back, so re-running the same command resumes an interrupted run.
    ``kwargs`` go to :func:`run_dataset`.
    """
    if jobs > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        settings = {
            "max_cells": kwargs.get("max_cells"),
            "max_epochs": kwargs.get("max_epochs", MAX_EPOCHS),
            "multivi_epochs": kwargs.get("multivi_epochs"),
            "glue_epochs": kwargs.get("glue_epochs"),
            "paper_repeats": kwargs.get("paper_repeats", 1),
        }
        rank = {m: i for i, m in enumerate(_ORDER)}
        units = sorted(
            ((ds, m, s) for ds in datasets for m in methods for s in seeds),
            key=lambda u: (rank.get(u[1], len(_ORDER) - 1), datasets.index(u[0]), u[2]),
        )
        one_thread()  # inherited by the workers
        # one process per unit: its peak memory is then the method's, not an earlier unit's
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx, max_tasks_per_child=1) as ex:
            futures = [
                ex.submit(_unit_job, ds, m, s, settings, s == seeds[0], str(out_dir))
                for ds, m, s in units
            ]
            for f in as_completed(futures):
                log(f.result())
    for ds in datasets:
        run_dataset(ds, methods, seeds, out_dir=out_dir, log=log, **kwargs)
    return merge(out_dir, datasets)


def _umap(X: np.ndarray, seed: int) -> np.ndarray:
    import umap

    return umap.UMAP(n_neighbors=30, random_state=seed).fit_transform(X)


def figures(df: pd.DataFrame, out_dir: Path = ROOT / "results") -> list[Path]:
    """Heatmaps, seed-spread bars, UMAP grids and time vs. quality into out_dir/figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for metric in ("nmi", "ari"):
        ax = plots.benchmark_heatmap(df, metric=metric, protocol="kmeans")
        paths.append(fig_dir / f"heatmap_{metric}.png")
        ax.figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
        plt.close(ax.figure)
    fig = plots.benchmark_bars(df, protocol="kmeans")
    paths.append(fig_dir / "bars_kmeans.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    ax = plots.time_vs_quality(df)
    paths.append(fig_dir / "time_vs_quality.png")
    ax.figure.savefig(paths[-1], dpi=120, bbox_inches="tight")
    for f in sorted(out_dir.glob("embeddings_*.npz")):
        z = dict(np.load(f, allow_pickle=True))
        labels = z.pop("labels")
        fig = pl.embedding_grid(
            {k.replace("_", " "): v for k, v in z.items()},
            labels,
            title=f.stem.replace("embeddings_", ""),
        )
        paths.append(fig_dir / f"umap_grid_{f.stem.replace('embeddings_', '')}.png")
        fig.savefig(paths[-1], dpi=110, bbox_inches="tight")
    plt.close("all")
    return paths


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="one small dataset, one seed, few epochs")
    ap.add_argument("--datasets", nargs="*")
    ap.add_argument("--one", metavar="DATASET", help="run one dataset in this process (no merge)")
    ap.add_argument("--jobs", type=int, default=1, help="units run side by side (one thread each)")
    ap.add_argument("--methods", nargs="*", default=list(peers.PEERS))
    ap.add_argument("--seeds", nargs="*", type=int, default=SEEDS)
    ap.add_argument("--max-cells", type=int, default=0, help="subsample (0: all cells)")
    ap.add_argument(
        "--max-epochs",
        type=int,
        default=MAX_EPOCHS or 0,
        help="cap on scI2CL's epochs (0: its default)",
    )
    ap.add_argument(
        "--paper-repeats", type=int, default=1, help="UMAP repeats of the paper's protocol per seed"
    )
    ap.add_argument(
        "--multivi-epochs",
        type=int,
        default=MULTIVI_EPOCHS or 0,
        help="cap on MultiVI's epochs (0: scvi-tools' default, 500 stopped early, as its tutorial)",
    )
    ap.add_argument("--glue-epochs", type=int, default=0, help="cap on GLUE's epochs (0: its own)")
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads of an in-process run (default 1: every library at one thread, as the "
        "units of the committed tables ran, so that a second run gives the same numbers)",
    )  # fmt: skip
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument(
        "--restamp", action="store_true",
        help="keep the units of --methods whose code changed if a canary re-run is identical "
        "(restamp()), then merge the tables",
    )  # fmt: skip
    a = ap.parse_args()
    set_threads(a.threads)
    out = Path(a.out)
    if a.restamp:
        for m in a.methods:
            print(m, restamp(m, out), flush=True)
        merge(out, a.datasets or None)
        return 0
    kw = {
        "max_cells": a.max_cells or None,
        "max_epochs": a.max_epochs or None,
        "multivi_epochs": a.multivi_epochs or None,
        "glue_epochs": a.glue_epochs or None,
        "paper_repeats": a.paper_repeats,
    }
    seeds = a.seeds
    if a.smoke:
        kw = {
            "max_cells": SMOKE["max_cells"],
            "max_epochs": SMOKE["max_epochs"],
            "multivi_epochs": SMOKE["multivi_epochs"],
            "glue_epochs": SMOKE["glue_epochs"],
            "paper_repeats": SMOKE["paper_repeats"],
        }
        seeds = SMOKE["seeds"]
    if a.one:
        run_dataset(a.one, a.methods, seeds, out_dir=out, **kw)
        return 0
    t = time.perf_counter()
    datasets = a.datasets or (SMOKE["datasets"] if a.smoke else available_paired())
    df = run(datasets, a.methods, seeds, jobs=a.jobs, out_dir=out, **kw)
    figures(df, out)
    for proto in ("kmeans", "leiden", "paper"):
        print(f"\nNMI, {proto}\n" + summary_table(df, "nmi", proto).to_string())
    print(f"total wall time {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
