"""Dataset preparation shared by the benchmark runners."""

from __future__ import annotations

import argparse
import fcntl
import os
import sys
import warnings
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd

from benchmarks.config import N_GENES, N_PEAKS, PAIRED, PAPER, label_key
from sci2cl import datasets, pp

__all__ = [
    "one_thread",
    "set_threads",
    "available_paired",
    "thin_counts",
    "prepare",
    "label_key",
    "dev_parser",
    "report",
]


#: the variables that numerical libraries read when they load (children inherit them)
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def one_thread() -> None:
    """Pin this process, and every process it starts, to one thread in each numerical library.

    The benchmarks' numbers depend on the thread count, not only their times: a sum split over
    threads rounds differently, and the read-out's label-free choices (a modality weight, a
    smoothing share) can flip on such a difference, so scI2CL trained under
    ``OMP_NUM_THREADS=2`` is not the same embedding as under 1. The environment variables
    reach child processes; ``threadpoolctl`` limits the BLAS and OpenMP pools already loaded
    in this one (numpy may have been imported before this call), and torch gets one thread.

    numba (imported by scanpy) reads ``NUMBA_NUM_THREADS`` when it is imported, and its OpenMP
    layer sets the OpenMP thread count it shares with torch when it first starts its workers:
    after ``import scanpy`` and the first parallel scanpy call (``normalize_total`` on a sparse
    matrix, say), torch would compute with one thread per core again. So when numba is loaded,
    its configuration is re-read and its workers are started here, at one thread, before torch
    is pinned. Workers started earlier keep their number (numba cannot change it): the variable
    then states that number, since numba refuses to compile under a different one.
    """
    from threadpoolctl import threadpool_limits

    for k in THREAD_VARIABLES:
        os.environ[k] = "1"
    threadpool_limits(1)
    numba = sys.modules.get("numba")
    if numba is not None:  # loaded: it read the variable already
        try:
            numba.config.reload_config()
        except RuntimeError:  # its workers are running, at numba.config.NUMBA_NUM_THREADS
            os.environ["NUMBA_NUM_THREADS"] = str(numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(1)  # starts the workers (and their OpenMP count) before torch's
    import torch

    torch.set_num_threads(1)


def thread_settings() -> dict:
    """The thread counts this process computes with, as a benchmark unit records them.

    ``torch``: torch's intra-op threads; ``pools``: each BLAS/OpenMP pool loaded now
    (``threadpoolctl``), by its API; and the variables of :data:`THREAD_VARIABLES`.
    """
    import torch
    from threadpoolctl import threadpool_info

    pools: dict[str, int] = {}
    for p in threadpool_info():
        pools[p["internal_api"]] = max(pools.get(p["internal_api"], 0), int(p["num_threads"]))
    return {"torch": torch.get_num_threads(), "pools": pools,
            **{k: os.environ.get(k) for k in THREAD_VARIABLES}}  # fmt: skip


def set_threads(n: int) -> None:
    """A runner's ``--threads``: 1 is :func:`one_thread`; more sets torch's threads only.

    With more than one thread the other libraries keep their defaults, so such a run's numbers
    depend on the machine (see :func:`one_thread`); the committed tables come from one thread.
    """
    if n == 1:
        one_thread()
    else:
        import torch

        torch.set_num_threads(n)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file, so that a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def restamp_stale(stale: dict, now: str, dataset_of, canary, stamp, method: str, log=print) -> dict:
    """The benchmarks' restamp rule, given how to re-run and re-write one unit.

    ``stale`` maps an old code version to its units, each a tuple whose first
    item is the unit's run time. Per old version, the fastest unit of each
    dataset (``dataset_of(unit)``) is a canary: ``canary(unit)`` re-runs it and
    returns ``(label, "same" | "differs" | "no embedding")``. If every canary is
    the same, ``stamp(unit, old, labels)`` writes the current version ``now``
    into every unit of that old version. Returns ``{old version: "kept" |
    "differs" | "no embedding"}``.
    """
    out = {}
    for v, units in stale.items():
        by_ds: dict[str, tuple] = {}
        for u in units:
            ds = dataset_of(u)
            if ds not in by_ds or u[0] < by_ds[ds][0]:
                by_ds[ds] = u
        canaries, verdict = [], "kept"
        for u in by_ds.values():
            label, result = canary(u)
            if result == "no embedding":
                log(f"{method} {v} -> {now}: canary {label}: no embedding kept, nothing restamped")
                verdict = result
                break
            canaries.append(label)
            log(f"{method} {v} -> {now}: canary {label}: {result}")
            if result != "same":
                verdict = "differs"
                break
        out[v] = verdict
        if verdict == "kept":
            for u in units:
                stamp(u, v, "; ".join(canaries))
    return out


def available_paired(data_dir=None) -> list[str]:
    """Mirror datasets plus the paper's datasets that are present (no downloads)."""
    out = []
    for n in PAIRED + PAPER:
        try:
            if n != "simulated":
                info = datasets.DATASETS[n]
                root = datasets.get_data_dir(data_dir)
                ok = (
                    (root / info.path).exists()
                    if info.path
                    else all((root / n / r.name).exists() for r in info.remote)
                )
                if not ok:
                    continue
            out.append(n)
        except KeyError:
            continue
    return out


def prepare(
    name: str,
    *,
    max_cells: int | None = None,
    seed: int = 0,
    n_genes=N_GENES,
    n_peaks=N_PEAKS,
    data_dir=None,
    rna_fraction: float = 1.0,
    thin_seed: int = 0,
    thin_where: tuple[str, tuple] | None = None,
) -> md.MuData:
    """Load, align, subsample, select features, and drop cells left empty by the selection.

    The subsample is seeded and not stratified; cells without counts in a
    modality's selected features are dropped. ``rna_fraction < 1`` first thins
    the RNA counts binomially (seed ``thin_seed``), as a shallower run of the
    same cells (:func:`thin_counts`); with ``thin_where=(column, values)`` only
    the cells whose ``obs[column]`` is one of ``values`` (a technical batch
    effect on real cells).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = datasets.load(name, data_dir=data_dir, download=False)
    if rna_fraction != 1.0:
        rna = m["rna"]
        thinned = thin_counts(rna.layers["counts"], rna_fraction, thin_seed)
        if thin_where is not None:
            import scipy.sparse as sp

            col, values = thin_where
            sel = np.isin(m.obs[col].astype(str).to_numpy(), [str(v) for v in values])
            thinned = sp.diags(sel.astype(float)) @ thinned + sp.diags(
                (~sel).astype(float)
            ) @ sp.csr_matrix(rna.layers["counts"])
            thinned = sp.csr_matrix(thinned, dtype=rna.layers["counts"].dtype)  # fmt: skip
            thinned.eliminate_zeros()
        rna.layers["counts"] = thinned
        rna.X = rna.layers["counts"].copy()
    if max_cells is not None and m.n_obs > max_cells:
        import muon as mu

        keep = np.sort(np.random.default_rng(seed).choice(m.n_obs, max_cells, replace=False))
        mu.pp.filter_obs(m, m.obs_names[keep])
    pp.qc_filter(m)
    with warnings.catch_warnings():  # cells left empty by the selection are dropped next
        warnings.simplefilter("ignore", UserWarning)
        pp.select_features(m, n_top_genes=n_genes, n_top_peaks=n_peaks)
    pp.qc_filter(m)
    return m


def thin_counts(X, fraction: float, seed: int):
    """Binomial thinning of a count matrix: each count kept with probability ``fraction``.

    ``X`` is a scipy sparse matrix of non-negative integers; returns a CSR matrix of the same
    shape whose entries are ``Binomial(x, fraction)`` draws (``fraction = 1`` returns ``X``).
    """
    import scipy.sparse as sp

    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    X = sp.csr_matrix(X, copy=True)
    if fraction == 1:
        return X
    rng = np.random.default_rng(seed)
    X.data = rng.binomial(np.rint(X.data).astype(np.int64), fraction).astype(X.dtype)
    X.eliminate_zeros()
    return X


def dev_parser(doc: str, datasets: list[str], readouts: list[str]) -> argparse.ArgumentParser:
    """Command line shared by the development-set runners (``*_dev.py``)."""
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="*", default=datasets)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--readouts", nargs="*", default=readouts)
    ap.add_argument(
        "--threads", type=int, default=1,
        help="1 (the committed logs): every library pinned to one thread (set_threads)",
    )  # fmt: skip
    return ap


def depth_dev_args(doc: str, datasets: list[str], fractions: list[float]) -> argparse.Namespace:
    """Command line of the shallow-RNA development runners: ``--datasets --fractions --seeds``.

    Also keeps numerical libraries at one thread unless the caller set otherwise.
    """
    ap = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="*", default=datasets)
    ap.add_argument("--fractions", nargs="*", type=float, default=fractions)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return a


def report(rows: list[dict], n_last: int, columns: list[str], path: Path) -> None:
    """Print the last ``n_last`` result rows and rewrite ``path`` with all of them."""
    df = pd.DataFrame(rows)
    print(df.iloc[-n_last:][columns].to_string(header=False, index=False), flush=True)
    df.to_csv(path, index=False)


def append_log(rows: list[dict], log: Path, keys, defaults: dict | None = None) -> None:
    """Append ``rows`` to the CSV ``log`` atomically, dropping its old rows with the same ``keys``.

    ``defaults`` fill missing values of old rows (columns added to a log later). A lock file
    serialises runners that share the log (one per core).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        new = pd.DataFrame(rows)
        if log.exists():
            old = pd.read_csv(log)
            for col, value in (defaults or {}).items():
                old[col] = old.get(col, pd.Series(index=old.index, dtype=float)).fillna(value)
            keys = list(keys)
            same = old.set_index(keys).index.isin(new.set_index(keys).index.unique())
            new = pd.concat([old[~same], new], ignore_index=True)
        tmp = log.with_suffix(f".{os.getpid()}.tmp")
        new.to_csv(tmp, index=False)
        tmp.replace(log)
