"""Several samples (issue 39): batch cases with known answers, batch mixing against conservation.

Usage:
  python -m benchmarks.batches [--cases ...] [--methods ...] [--seeds 0 1 2]
                               [--one-seed-methods "GLUE (use_batch)"]
  python -m benchmarks.batches --report-only

Cases, each with ``obs["batch"]`` (labels and batches only score):

- ``simulated_batches``: the simulator's ``"batches"`` regime (one of two batches shifted in every
  gene and peak, at half the depth, with more RNA dropout); not used elsewhere in the book;
- ``bmmc_a``, ``bmmc_b``: two donors each (``s1d1``, ``s1d2``), a real donor effect;
- ``snare_thinned``: SNARE-seq cortex with the RNA of batches 09D-09F thinned to
  :data:`SNARE_FRACTION` of its counts (binomial, seeded) and the others kept: a real technical
  effect on real cells, whose batch is "full depth" or "thinned".

Methods: every one of :data:`NO_BATCH` ignores the batch, as a user who has not declared it gets;
:data:`WITH_BATCH` are the peers run with their own batch options, as their authors recommend
(MOFA+ with the batches as groups; muon's WNN on Harmony-corrected RNA PCA and ATAC LSI;
MultiVI with its ``batch_key``; GLUE with ``use_batch`` where the case has a guidance graph), and
scI2CL set up with ``batch_key``. A method that cannot run on a case (GLUE without a guidance
graph) is recorded as skipped, with the reason (:func:`skipped`). A VAE whose latent KL per
cell ends below ``clustering.KL_COLLAPSED`` has collapsed and is left out of the tables (named
in :func:`findings`).

Scores per embedding: bio-conservation (KMeans NMI at the true k, label-free Leiden NMI, scib
label silhouette and cLISI) and batch correction (scib iLISI, batch silhouette, graph
connectivity). One record per (case, method, seed) in ``results/batch_benchmark/``, so an
interrupted run resumes; the table is ``results/batch_benchmark.csv``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd

from benchmarks import peers
from benchmarks.common import label_key, one_thread, prepare, write_text_atomic
from sci2cl import metrics, pp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "batch_benchmark"
CSV = ROOT / "results" / "batch_benchmark.csv"
CASES = ["simulated_batches", "bmmc_a", "bmmc_b", "snare_thinned"]
BATCH = "batch"
#: the RNA depth kept in the thinned half of SNARE-seq cortex's batches
SNARE_FRACTION = 0.3
SNARE_THINNED = ("09D", "09E", "09F")
#: label columns of the cases that are not datasets of ``benchmarks.config``
LABELS = {"simulated_batches": "true_cell_type", "snare_thinned": "cell_type"}
NO_BATCH = ["RNA PCA", "PCA+LSI", "WNN (muon)", "MOFA+", "scI2CL"]
WITH_BATCH = [
    "MOFA+ (batches as groups)",
    "WNN (Harmony)",
    "MultiVI (batch key)",
    "GLUE (use_batch)",
    "scI2CL (batch key)",
]
#: the slowest peers (GLUE: about 50 min a run on the simulator, 70 min on SNARE-seq, one
#: thread), run at the first seed only unless ``--one-seed-methods`` says otherwise (as the depth
#: sweep runs them); their comparisons are on that seed, with no spread
ONE_SEED = ["GLUE (use_batch)"]
#: development variants of "scI2CL (batch key)" (arguments to ``SCI2CL``): run with
#: ``--methods``, kept in the records as the log of what was tried, left out of the tables.
#: The records also hold variants whose code was not kept (``batch_centring="clusters"``:
#: cluster-balanced batch means, and ``"smoothed"``: SD ratios pooled over features of similar
#: mean; ``benchmarks/archive/batch_centring.patch``). Every variant of the centring ran before
#: Harmony's correction of the embedding (``batch_correction``) existed, so without it.
VARIANTS = {
    "scI2CL (batch key, batch_correction=none)": {"batch_correction": "none"},
    "scI2CL (batch key, batch_centring=cells, batch_correction=none)": {
        "batch_centring": "cells",
        "batch_correction": "none",
    },
    "scI2CL (batch key, batch_centring=none, batch_correction=none)": {
        "batch_centring": "none",
        "batch_correction": "none",
    },
}


def prepare_case(case: str, seed: int) -> md.MuData:
    """The prepared cells of ``case`` with their batch in ``obs["batch"]`` (strings)."""
    if case == "snare_thinned":
        m = prepare(
            "snare_adbrain",
            rna_fraction=SNARE_FRACTION,
            thin_seed=seed,
            thin_where=("batch", SNARE_THINNED),
        )
        thin = m.obs["batch"].astype(str).isin(SNARE_THINNED).to_numpy()
        batch = np.where(thin, "thinned", "full depth")
    else:
        m = prepare(case)
        col = BATCH if BATCH in m.obs else "rna:batch"
        batch = m.obs[col].astype(str).to_numpy()
    if len(set(batch)) < 2:
        raise ValueError(f"case {case!r} holds one batch only; it needs at least two")
    m.obs[BATCH] = pd.Categorical(batch)
    return m


def _harmony(x: np.ndarray, batch: np.ndarray, seed: int) -> np.ndarray:
    """Harmony (harmonypy) on an embedding ``(n_cells, d)``, the batches as its one covariate."""
    import harmonypy

    meta = pd.DataFrame({BATCH: batch})
    ho = harmonypy.run_harmony(x, meta, [BATCH], random_state=seed, verbose=False)
    z = np.asarray(ho.Z_corr)
    return z.T if z.shape[0] != x.shape[0] else z


def wnn_harmony(m: md.MuData, seed: int) -> np.ndarray:
    """WNN (muon) on Harmony-corrected RNA PCA and ATAC LSI (Hao et al. 2021's practice)."""
    import muon as mu
    import scanpy as sc

    batch = m.obs[BATCH].astype(str).to_numpy()
    w = md.MuData({"rna": m["rna"].copy(), "atac": m["atac"].copy()})
    w["rna"].obsm["X_h"] = _harmony(peers.run_peer("RNA PCA", m, seed)["embedding"], batch, seed)
    w["atac"].obsm["X_h"] = _harmony(peers.run_peer("ATAC LSI", m, seed)["embedding"], batch, seed)
    for mod in ("rna", "atac"):
        sc.pp.neighbors(w[mod], use_rep="X_h", random_state=seed)
    mu.pp.neighbors(w, key_added="wnn", random_state=seed)
    peers.check_graph(w.obsp["wnn_connectivities"], "muon's WNN graph on Harmony")
    mu.tl.umap(w, neighbors_key="wnn", random_state=seed)
    return w.obsm["X_umap"]


def mofa_groups(m: md.MuData, seed: int, n_factors: int = 15) -> np.ndarray:
    """MOFA+ with the batches as groups (``groups_label``), its factors standardised."""
    import contextlib
    import io
    import tempfile

    import muon as mu
    from sklearn.preprocessing import StandardScaler

    w = md.MuData({"rna": m["rna"].copy(), "atac": m["atac"].copy()})
    w.obs[BATCH] = m.obs[BATCH].astype(str).to_numpy()
    pp.log_normalize(w["rna"])
    pp.tfidf_lsi(w["atac"], seed=seed)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        mu.tl.mofa(w, groups_label=BATCH, n_factors=n_factors, seed=seed, quiet=True,
                   verbose=False, use_obs="union", gpu_mode=False, outfile=f"{tmp}/mofa.hdf5")  # fmt: skip
    return StandardScaler().fit_transform(w.obsm["X_mofa"])


def multivi_batch_key(m: md.MuData, seed: int, max_epochs: int | None = None) -> dict:
    """scvi-tools MultiVI with the batches as its ``batch_key``.

    Otherwise as the benchmark's MultiVI (``peers._multivi``: raw counts, features in at least
    1 % of cells, the tutorial's defaults).
    """
    scvi = peers._require_scvi()
    scvi.settings.seed = seed
    mods = {}
    for k in ("rna", "atac"):
        a = m[k]
        detected = np.asarray((a.layers["counts"] > 0).sum(0)).ravel()
        mods[k] = a[:, detected >= 0.01 * a.n_obs].copy()
    mm = md.MuData(mods)
    mm.obs[BATCH] = pd.Categorical(m.obs[BATCH].astype(str).to_numpy())
    scvi.model.MULTIVI.setup_mudata(mm, rna_layer="counts", atac_layer="counts", batch_key=BATCH,
                                    modalities={"rna_layer": "rna", "atac_layer": "atac"})  # fmt: skip
    model = scvi.model.MULTIVI(mm)
    z = peers._train_latent(model, max_epochs)
    return {"embedding": z, "kl_local": peers._history_last(model, "kl_local_validation")}


def glue_use_batch(m: md.MuData, seed: int) -> np.ndarray:
    """GLUE as the benchmark runs it (``peers._glue``), with the batches as its ``use_batch``.

    ``use_batch`` is set in each modality's ``scglue.models.configure_dataset``, as GLUE's
    tutorial on batches does; everything else is the benchmark's GLUE.
    """
    import scglue

    w = md.MuData({"rna": m["rna"].copy(), "atac": m["atac"].copy()})
    for mod in ("rna", "atac"):
        w[mod].obs[BATCH] = m.obs[BATCH].astype(str).to_numpy()
    configure = scglue.models.configure_dataset

    def with_batch(adata, *args, **kw):
        return configure(adata, *args, use_batch=BATCH, **kw)

    scglue.models.configure_dataset = with_batch
    try:
        return peers._glue(w, seed)
    finally:
        scglue.models.configure_dataset = configure


def sci2cl_batch_key(m: md.MuData, seed: int, **kwargs) -> dict:
    """scI2CL with its defaults (or ``kwargs``), set up with ``batch_key``.

    Its joint embedding, and per modality its input centring (``input_batch_mixing_``):
    ``mixing_all_<modality>``, ``mixing_batch_<modality>``, ``centred_<modality>``.
    """
    import sci2cl

    sci2cl.SCI2CL.setup_mudata(m, layer="counts", batch_key=BATCH)
    model = sci2cl.SCI2CL(m, likelihood=peers.sci2cl_likelihood(m), seed=seed, **kwargs)
    model.train(progress_bar=False)
    return {"embedding": model.get_latent_representation(key_added=None), **centring(model)}


def centring(model) -> dict:
    """A scI2CL model's input centring per modality (``input_batch_mixing_``), flat."""
    names = {"over all cells": "mixing_all", "per batch": "mixing_batch", "centred": "centred"}
    t = model.input_batch_mixing_
    return {
        f"{names[c]}_{r}": bool(t.loc[r, c]) if c == "centred" else float(t.loc[r, c])
        for r in t.index
        for c in t.columns
    }


def embed(method: str, m: md.MuData, seed: int) -> np.ndarray | dict:
    """The embedding of one method (the peers' own wrappers for those without batch).

    MultiVI's comes as ``{"embedding", "kl_local"}`` (its collapse check), scI2CL's with its
    input centring (:func:`sci2cl_batch_key`).
    """
    if method == "scI2CL (batch key)":
        return sci2cl_batch_key(m, seed)
    if method in VARIANTS:
        return sci2cl_batch_key(m, seed, **VARIANTS[method])
    if method == "MOFA+ (batches as groups)":
        return mofa_groups(m, seed)
    if method == "WNN (Harmony)":
        return wnn_harmony(m, seed)
    if method == "MultiVI (batch key)":
        return multivi_batch_key(m, seed)
    if method == "GLUE (use_batch)":
        return glue_use_batch(m, seed)
    return peers.run_peer(method, m, seed)["embedding"]


def batch_scores(z: np.ndarray, y: np.ndarray, batch: np.ndarray, seed: int) -> dict:
    """scib-metrics' batch-correction scores (each in [0, 1], higher: batches better mixed)."""
    from scib_metrics import graph_connectivity, ilisi_knn, silhouette_batch
    from scib_metrics.nearest_neighbors import pynndescent

    z = np.asarray(z, dtype=np.float32)
    nn = pynndescent(z, n_neighbors=min(90, z.shape[0] - 1), random_state=seed)
    return {
        "ilisi": float(ilisi_knn(nn, batch)),
        "batch_silhouette": float(silhouette_batch(z, y, batch)),
        "graph_connectivity": float(graph_connectivity(nn, y)),
    }


def run_unit(case: str, method: str, seed: int) -> list[dict]:
    """Embed and score one (case, method, seed); returns one row per clustering protocol."""
    from benchmarks.clustering import scib_scores

    m = prepare_case(case, seed)
    y = m.obs[LABELS.get(case) or label_key(case)].astype(str)
    y, batch = y.to_numpy(), m.obs[BATCH].astype(str).to_numpy()
    t = time.perf_counter()
    z = embed(method, m, seed)
    seconds = time.perf_counter() - t
    diagnostics = dict(z) if isinstance(z, dict) else {"embedding": z}
    z = diagnostics.pop("embedding")
    common = {"case": case, "method": method, "seed": seed, "n_cells": m.n_obs,
              "batch_aware": method in WITH_BATCH or method in VARIANTS, "seconds": round(seconds, 1),
              **diagnostics, **scib_scores(z, y, seed), **batch_scores(z, y, batch, seed)}  # fmt: skip
    return [{**common, **r} for r in metrics.cluster_embedding(z, y, seed=seed)]


def _record(case: str, method: str, seed: int) -> Path:
    safe = method.replace(" ", "_").replace("/", "_").replace("(", "").replace(")", "")
    return OUT / f"{case}__{safe}__{seed}.json"


def _records() -> list[dict]:
    return [r for p in sorted(OUT.glob("*.json")) for r in json.loads(p.read_text())]


def skipped() -> pd.DataFrame:
    """The (case, method, seed) units that could not run, with the reason (``reason``)."""
    rows = [r for r in _records() if "reason" in r]
    return pd.DataFrame(rows, columns=["case", "method", "seed", "reason"])


def collect() -> pd.DataFrame:
    """Every finished unit's rows, in one table (written to :data:`CSV`; skipped units left out)."""
    df = pd.DataFrame([r for r in _records() if "reason" not in r])
    if len(df):
        write_text_atomic(CSV, df.to_csv(index=False))
    return df


#: scib's aggregates (Luecken et al. 2022): bio-conservation and batch-correction scores, each
#: the mean of its metrics, and the overall score 0.6 * bio + 0.4 * batch
BIO = ("nmi", "scib_silhouette_label", "scib_clisi")
BATCH_METRICS = ("ilisi", "batch_silhouette", "graph_connectivity")


def collapsed(df: pd.DataFrame) -> pd.Series:
    """Rows of a VAE whose latent collapsed to its prior (KL per cell below the benchmark's bar)."""
    from benchmarks.clustering import KL_COLLAPSED

    kl = df["kl_local"] if "kl_local" in df else pd.Series(np.nan, index=df.index)
    return kl < KL_COLLAPSED


def scores(df: pd.DataFrame, protocol: str = "kmeans") -> pd.DataFrame:
    """Per (case, method, seed): ``bio``, ``batch`` and ``overall`` (scib's aggregates).

    ``nmi`` is the NMI of ``protocol``'s clusters; the other metrics do not depend on it.
    """
    d = df[(df["protocol"] == protocol) & df["method"].isin(NO_BATCH + WITH_BATCH)].copy()
    d = d[~collapsed(d)]
    d["bio"] = d[list(BIO)].mean(1)
    d["batch_score"] = d[list(BATCH_METRICS)].mean(1)
    d["overall"] = 0.6 * d["bio"] + 0.4 * d["batch_score"]
    keep = ["case", "method", "seed", "batch_aware", *BIO, *BATCH_METRICS]
    return d[keep + ["bio", "batch_score", "overall"]]


def summary(df: pd.DataFrame, protocol: str = "kmeans") -> pd.DataFrame:
    """(case, method) x score table, mean over seeds, best overall first in each case."""
    s = scores(df, protocol).drop(columns=["seed", "batch_aware"])
    out = s.groupby(["case", "method"]).mean().round(3)
    return out.sort_values(["case", "overall"], ascending=[True, False])


def key_table(df: pd.DataFrame, protocol: str = "kmeans") -> pd.DataFrame:
    """scI2CL with its batch key, default and every variant run, against scI2CL without it.

    Per (case, configuration): mean over seeds of iLISI, bio-conservation and the overall score,
    each with its paired difference from scI2CL without the key (mean ± SD over seeds) and the
    verdict of the book's tie rule. The variants are the development log (:data:`VARIANTS` and
    those whose code was not kept).
    """
    from benchmarks.report import comparison

    d = df[(df["protocol"] == protocol) & df["method"].str.startswith("scI2CL")].copy()
    d["bio"] = d[list(BIO)].mean(1)
    d["overall"] = 0.6 * d["bio"] + 0.4 * d[list(BATCH_METRICS)].mean(1)
    rows = []
    for case, g in d.groupby("case", sort=False):
        by = g.set_index(["method", "seed"])
        for method in sorted(
            set(g["method"]) - {"scI2CL"}, key=lambda m: (m != "scI2CL (batch key)", m)
        ):
            row = {
                "case": case,
                "configuration": method,
                "seeds": int((g["method"] == method).sum()),
            }
            for col, name in (("ilisi", "iLISI"), ("bio", "bio"), ("overall", "overall")):
                c = comparison((by[col][method] - by[col]["scI2CL"]).dropna(), "scI2CL")
                row[name] = (f"{by[col][method].mean():.3f} ({c['mean']:+.3f} ± {c['sd']:.3f}, "
                             f"{c['verdict']})")  # fmt: skip
            rows.append(row)
    return pd.DataFrame(rows)


def centring_table(df: pd.DataFrame) -> pd.DataFrame:
    """scI2CL's input centring per (case, modality).

    The batch mixing of its inputs scaled over all cells and per batch (mean over seeds), and the
    share of seeds whose modality was standardised per batch.
    """
    d = df[(df["method"] == "scI2CL (batch key)") & (df["protocol"] == "kmeans")]
    rows = []
    for r in ("rna", "atac"):
        cols = [f"mixing_all_{r}", f"mixing_batch_{r}", f"centred_{r}"]
        if set(cols) <= set(d.columns):
            t = d.groupby("case")[cols].mean()
            t.columns = ["mixing over all cells", "mixing per batch", "centred (share of seeds)"]
            rows.append(t.assign(modality=r).set_index("modality", append=True))
    return pd.concat(rows).sort_index().round(3) if rows else pd.DataFrame()


def _case_verdicts(case: str, g: pd.DataFrame) -> str:
    """One case in words: the best overall method, scI2CL without and with its batch key.

    ``g`` holds the case's rows of :func:`scores`; paired comparisons over seeds use the
    book's tie rule (:func:`benchmarks.report.comparison`).
    """
    from benchmarks.report import comparison

    mean = g.groupby("method")[["overall", "bio", "batch_score", "ilisi"]].mean()
    best = mean["overall"].idxmax()
    text = (f"{case}: best overall {best} ({mean.loc[best, 'overall']:.3f}; "
            f"bio {mean.loc[best, 'bio']:.3f}, batch {mean.loc[best, 'batch_score']:.3f})")  # fmt: skip
    by = g.set_index(["method", "seed"])
    if "scI2CL" in mean.index and best != "scI2CL":
        c = comparison((by["overall"]["scI2CL"] - by["overall"][best]).dropna(), best)
        text += (f"; scI2CL without the batch {mean.loc['scI2CL', 'overall']:.3f} "
                 f"(iLISI {mean.loc['scI2CL', 'ilisi']:.3f}), {c['phrase']}")  # fmt: skip
    key = "scI2CL (batch key)"
    if key in mean.index and "scI2CL" in mean.index:
        parts = []
        for col, name in (("ilisi", "iLISI"), ("bio", "bio-conservation")):
            c = comparison((by[col][key] - by[col]["scI2CL"]).dropna(), "scI2CL without it")
            parts.append(f"{name} {mean.loc[key, col]:.3f} against {mean.loc['scI2CL', col]:.3f} "
                         f"({c['verdict']})")  # fmt: skip
        text += "; with its batch key, scI2CL's " + ", ".join(parts)
        if best != key:
            name = "scI2CL without it" if best == "scI2CL" else best
            c = comparison((by["overall"][key] - by["overall"][best]).dropna(), name)
            text += f", overall {mean.loc[key, 'overall']:.3f}, {c['phrase']}"
    return text


def _seed_notes(ran: pd.DataFrame, cannot: set) -> str:
    """What of a case ran with fewer seeds: the one-seed methods, and methods not yet run with all.

    ``ran``: the case's rows under one protocol (collapsed runs included: they ran);
    ``cannot``: the methods that cannot run on the case (:func:`skipped`).
    """
    seeds = ran.groupby("method")["seed"].nunique()
    one = [m for m in ONE_SEED if seeds.get(m, 0) == 1]
    short = [
        m
        for m in NO_BATCH + WITH_BATCH
        if seeds.get(m, 0) < seeds.max() and m not in cannot and m not in one
    ]
    text = f" ({', '.join(one)} with one seed only, for its run time)" if one else ""
    if short:
        text += f" (not yet run with every seed here: {', '.join(short)})"
    return text


def findings(df: pd.DataFrame, protocol: str = "kmeans") -> str:
    """Per case, in words: the best overall method, and scI2CL (no batch covariate) beside it.

    Every number is read from :func:`scores` (:func:`_case_verdicts`, :func:`_seed_notes`);
    then the methods that cannot run on a case and the runs left out as collapsed.
    """
    s = scores(df, protocol)
    gone_here = skipped()
    out = []
    for case, g in s.groupby("case", sort=False):
        ran = df[(df["protocol"] == protocol) & (df["case"] == case)]
        cannot = set(gone_here.loc[gone_here["case"] == case, "method"])
        out.append(_case_verdicts(case, g) + _seed_notes(ran, cannot))
    for method, g in gone_here.groupby("method", sort=False):
        reason = g["reason"].iloc[0].split(":")[0]
        out.append(f"{method} cannot run on {', '.join(sorted(set(g['case'])))} ({reason})")
    gone = df[(df["protocol"] == protocol) & collapsed(df)]
    if len(gone):
        out.append("left out as collapsed (latent KL below the bar): " + ", ".join(
            f"{r.method} on {r.case}, seed {r.seed}" for r in gone.itertuples()))  # fmt: skip
    return ". ".join(out) if out else "no batch case has run"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--cases", nargs="*", default=CASES)
    ap.add_argument("--methods", nargs="*", default=NO_BATCH + WITH_BATCH)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    ap.add_argument("--one-seed-methods", nargs="*", default=ONE_SEED,
                    help="methods run at the first of --seeds only (the slowest)")  # fmt: skip
    ap.add_argument("--report-only", action="store_true")
    a = ap.parse_args()
    one_thread()
    OUT.mkdir(parents=True, exist_ok=True)
    for case in [] if a.report_only else a.cases:
        for method in a.methods:
            for seed in a.seeds[:1] if method in a.one_seed_methods else a.seeds:
                path = _record(case, method, seed)
                if path.exists():
                    continue
                try:
                    rows = run_unit(case, method, seed)
                except peers.PeerUnavailable as e:  # the method cannot run on this case: say why
                    write_text_atomic(path, json.dumps([{"case": case, "method": method,
                                                         "seed": seed, "reason": str(e)}]))  # fmt: skip
                    print(f"{case} {method}: skipped ({e})", flush=True)
                    continue
                write_text_atomic(path, json.dumps(rows))
                print(f"{case} {method} seed {seed}: KMeans NMI {rows[0]['nmi']:.3f}, "
                      f"iLISI {rows[0]['ilisi']:.3f}", flush=True)  # fmt: skip
    df = collect()
    if len(df):
        print(summary(df).to_string())
    return 0


if __name__ == "__main__":
    sys.exit(main())
