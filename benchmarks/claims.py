"""The intro's answer table: each claim of the two papers against what this book measures.

Usage: python -m benchmarks.claims   # writes book/_generated/claims.md from results/

Every cell is computed from a results CSV (the same files the chapters read), with the verdict rule
of :mod:`benchmarks.report` (paired over seeds; a difference within the seed spread is a tie), and
the time of each chapter from ``notebooks/timings-full.tsv`` (the last full run). Nothing is typed.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from benchmarks.common import write_text_atomic
from benchmarks.config import SIMULATED
from benchmarks.report import comparison

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
OUT = ROOT / "book" / "_generated" / "claims.md"

__all__ = ["rows", "table", "write", "versus_best_peer", "chapter_minutes"]

#: chapter file of each claim (the link and the time column of the table)
CHAPTERS = {
    "clustering": "03_benchmark_clustering",
    "depth": "03_benchmark_clustering",
    "subpopulations": "04_discover_subpopulations",
    "annotations": "05_correct_annotations",
    "trajectory": "06_reconstruct_trajectory",
    "scrcl": "07_identify_cell_types_scrcl",
    "spatial": "08_spatial_domains_scrcl",
}


def _read(name: str, root: Path) -> pd.DataFrame | None:
    p = root / f"{name}.csv"
    return pd.read_csv(p) if p.exists() else None


def versus_best_peer(df: pd.DataFrame, method: str, value: str = "nmi") -> pd.DataFrame:
    """Per dataset: ``method`` against the peer of highest mean ``value``, paired over seeds.

    ``df`` has columns ``dataset``, ``method``, ``seed`` and ``value`` (one protocol).
    Returns one row per dataset: ``peer``, ``mean`` (method minus peer), ``sd``,
    ``n`` and ``verdict`` (:func:`benchmarks.report.verdict`).
    """
    out = []
    for ds, d in df.groupby("dataset", sort=False):
        means = d.groupby("method")[value].mean()
        if method not in means or len(means) < 2:
            continue
        peer = means.drop(method).idxmax()
        a = d[d["method"] == method].groupby("seed")[value].mean()
        b = d[d["method"] == peer].groupby("seed")[value].mean()
        c = comparison((a - b).dropna(), peer)
        out.append(
            {"dataset": ds, "peer": peer, **{k: c[k] for k in ("mean", "sd", "n", "verdict")}}
        )
    return pd.DataFrame(out)


def _counts(v: pd.DataFrame) -> str:
    n = v["verdict"].value_counts()
    parts = [f"ahead on {n.get('gain', 0)}", f"tied on {n.get('tie', 0)}"]
    parts.append(f"behind on {n.get('loss', 0)}")
    if n.get("no verdict", 0):
        parts.append(f"one seed (no verdict) on {n['no verdict']}")
    return ", ".join(parts)


def _behind(v: pd.DataFrame) -> str:
    lost = v[v["verdict"] == "loss"]
    if lost.empty:
        return ""
    return (
        " (behind: "
        + "; ".join(f"{r.dataset}, {r.peer} by {-r.mean:.3f}" for r in lost.itertuples())
        + ")"
    )


def _clustering(root: Path) -> str | None:
    df = _read("benchmark_clustering", root)
    if df is None:
        return None
    df = df[df["dataset"] != SIMULATED]
    out = []
    for protocol, name in (("kmeans", "KMeans at the true k"), ("leiden", "label-free Leiden")):
        v = versus_best_peer(df[df["protocol"] == protocol], "scI2CL")
        out.append(f"{name}: {_counts(v)} of {len(v)} real sets{_behind(v)}")
    return "Against the best peer per set (NMI, 3 seeds): " + "; ".join(out) + "."


def _depth(root: Path) -> str | None:
    df = _read("depth_sweep", root)
    if df is None:
        return None
    from benchmarks import depth

    df = df[df["dataset"].isin(depth.DATASETS)]
    out = []
    for protocol, name in (("kmeans", "KMeans"), ("leiden", "Leiden")):
        v = depth.verdicts(df, protocol)
        pays = v[v["integration_pays"] == "gain"]
        ok = pays[pays["vs_best_peer"].isin(["gain", "tie"])]
        enc = v[v["vs_better_encoder"] == "gain"]
        one = v[v["vs_one_seed_peer_diff"] < 0]
        out.append(
            f"{name}: integration pays at {len(pays)} of {len(v)} (set, depth) points, and there "
            f"scI2CL is at least the best peer at {len(ok)}; its joint embedding beats its own "
            f"better encoder at {len(enc)} of {len(v)}"
            + "".join(
                f"; {r['one_seed_peer']} (one seed) is ahead of it at {r['dataset']} "
                f"{r['rna_fraction']:.0%} by {-r['vs_one_seed_peer_diff']:.3f}"
                for _, r in one.iterrows()
            )  # fmt: skip
        )
    return "RNA thinned to 100-10 % on 4 real sets: " + "; ".join(out) + "."


def _subpopulations(root: Path) -> str | None:
    df = _read("biology_subpopulations", root)
    if df is None:
        return None
    df = df[df["dataset"] == "snare_adbrain"]
    hid = df[df["kind"] == "hidden"]
    parts = []
    for pop, d in hid.groupby("population", sort=False):
        a = d[d["method"] == "scI2CL"].set_index("seed")["ari_fine"]
        b = d[d["method"] == "RNA PCA"].set_index("seed")["ari_fine"]
        if a.empty or b.empty:
            continue
        c = comparison((a - b).dropna(), "RNA PCA")
        parts.append(f"{pop} {a.mean():.2f} against {b.mean():.2f} ({c['verdict']})")
    ctl = df[(df["kind"] == "control") & (df["method"] == "scI2CL")]
    return (
        "SNARE-seq cortex, ARI of the subclusters with the published fine types, scI2CL against "
        f"RNA PCA: {'; '.join(parts)}. Controls split stably in {int(ctl['stable'].sum())} of "
        f"{len(ctl)} scI2CL runs."
    )


def _annotations(root: Path) -> str | None:
    df = _read("biology_annotation", root)
    if df is None:
        return None
    d = df[(df["dataset"] == "snare_adbrain") & (df["rule"] == "with evidence")]
    m = d.groupby("method")[["precision", "recall"]].mean()
    if "scI2CL" not in m.index:
        return None
    best = m["recall"].drop("scI2CL").idxmax()
    return (
        "SNARE-seq cortex, cells moved to a sibling type and flagged with evidence: scI2CL "
        f"precision {m.loc['scI2CL', 'precision']:.2f}, recall {m.loc['scI2CL', 'recall']:.2f}; "
        f"best peer by recall {best}: {m.loc[best, 'precision']:.2f} / {m.loc[best, 'recall']:.2f}."
    )


def _trajectory(root: Path) -> str | None:
    df = _read("biology_trajectory", root)
    if df is None:
        return None
    d = df[df["dataset"] == "snare_adbrain"]
    g = d.groupby("method").agg(
        tau=("kendall_tau_cells", "mean"), right=("order_correct", "sum"), n=("seed", "size")
    )
    if "scI2CL" not in g.index:
        return None
    s = g.loc["scI2CL"]
    best = g["tau"].drop("scI2CL").idxmax()
    b = g.loc[best]
    return (
        "SNARE-seq oligodendrocytes (OPC, new, mature): scI2CL orders the three stages correctly in "
        f"{int(s.right)} of {int(s.n)} seeds (Kendall tau {s.tau:.2f}); best peer {best}: "
        f"{int(b.right)} of {int(b.n)} (tau {b.tau:.2f})."
    )


def _as_scrcl(df: pd.DataFrame, own: str) -> pd.DataFrame:
    """``df`` with scRCL as a user runs it: the method ``own``, renamed "scRCL".

    scRCL's other read-outs are dropped: they are the same model, not its peers.
    """
    keep = ~df["method"].str.startswith("scRCL") | (df["method"] == own)
    return df[keep].replace({"method": {own: "scRCL"}})


def _scrcl(root: Path) -> str | None:
    df = _read("benchmark_scrcl", root)
    if df is None:
        return None
    v = versus_best_peer(_as_scrcl(df, "scRCL"), "scRCL")  # KMeans at the true k
    deep = (
        "Of the paper's deep-clustering peers, DESC is among them; the others are not on the "
        "package index and are not run."
        if "DESC" in set(df["method"])
        else "The paper's deep-clustering peers are not run here."
    )
    return (
        f"Against the best peer per set (KMeans NMI, seeds of the authors): {_counts(v)} of "
        f"{len(v)} labelled scRNA-seq sets{_behind(v)}. {deep}"
    )


def _spatial(root: Path) -> str | None:
    df = _read("benchmark_spatial", root)
    if df is None:
        return None
    d = df[df["protocol"] == "kmeans"].copy()
    d["dataset"] = d["dataset"] + " " + d["label"]
    # scRCL as a user runs it: the mode for the task (the spatial graph alone where that row is missing)
    own = "scRCL (mode for the task)"
    own = own if (d["method"] == own).any() else "scRCL (spatial graph)"
    v = versus_best_peer(_as_scrcl(d, own), "scRCL")
    return f"Tissue tasks (KMeans NMI, 3 seeds): {_counts(v)} of {len(v)}{_behind(v)}."


#: (key, the paper's claim, function computing what the book finds)
CLAIMS = [
    (
        "clustering",
        "scI2CL clusters paired cells better than single-modality and integration methods",
        _clustering,
    ),
    ("depth", "Integrating ATAC improves the embedding over RNA alone", _depth),
    ("subpopulations", "scI2CL reveals subpopulations that other methods miss", _subpopulations),
    ("annotations", "scI2CL corrects wrongly annotated cells", _annotations),
    ("trajectory", "scI2CL's embedding reconstructs developmental trajectories", _trajectory),
    ("scrcl", "scRCL identifies cell types better than existing clustering methods", _scrcl),
    ("spatial", "scRCL finds spatial domains in tissue", _spatial),
]


def chapter_minutes(root: Path = ROOT) -> dict[str, float]:
    """Minutes of each chapter's last full run (``notebooks/timings-full.tsv``), by file stem."""
    p = root / "notebooks" / "timings-full.tsv"
    if not p.exists():
        return {}
    t = pd.read_csv(p, sep="\t", header=None, names=["notebook", "seconds"])
    return {Path(n).stem: s / 60 for n, s in zip(t["notebook"], t["seconds"], strict=True)}


def rows(root: Path = RESULTS) -> pd.DataFrame:
    """One row per claim with a result: ``claim``, ``finding``, ``chapter``, ``minutes``."""
    minutes = chapter_minutes(root.parent)
    out = []
    for key, claim, fn in CLAIMS:
        finding = fn(root)
        if finding is None:
            continue
        ch = CHAPTERS[key]
        out.append({"claim": claim, "finding": finding, "chapter": ch, "minutes": minutes.get(ch)})
    return pd.DataFrame(out)


def table(df: pd.DataFrame) -> str:
    """The Markdown table of :func:`rows`."""
    lines = [
        "| the paper claims | what this book measures | chapter (time of a full run) |",
        "|---|---|---|",
    ]
    for r in df.itertuples():
        n = int(r.chapter[:2])
        when = "" if pd.isna(r.minutes) else f" ({max(1, round(r.minutes))} min)"
        link = f"[{n}](notebooks/{r.chapter}.ipynb){when}"
        lines.append(f"| {r.claim} | {r.finding} | {link} |")
    return "\n".join(lines) + "\n"


def write(path: Path = OUT, root: Path = RESULTS) -> Path:
    """Write :func:`table` of the current results to ``path`` (atomically)."""
    return write_text_atomic(path, table(rows(root)))


if __name__ == "__main__":
    print(write().read_text())
