"""What scRCL's training adds to its graph-filtered input: k-means read-outs of one trained model (issue 37).

Usage: python -m benchmarks.archive.scrcl_readouts            # train, score, write the log and the table
       python -m benchmarks.archive.scrcl_readouts --report   # the Methods page's table from the log

On osmFISH cell typing the trained embedding scored below the view it is trained from. Here one
default scRCL (10 epochs) per development set and seed is read six ways, KMeans at the true k:
``refined`` (the package's read-out, :meth:`sci2cl.SCRCL.predict`), ``cell`` and ``both`` (its
other two), ``input`` (the first 50 principal components of view 1, the graph-filtered scaled
expression the model starts from: no training at all), and ``refined+input`` / ``cell+input``
(each L2-normalised per cell, side by side). Development sets only: the RNA of kidney, BMMC-a,
BMMC-b and the simulator (``benchmarks.scrcl_dev.DEV``) and the three tissue tasks, each from
the mode a user picks for it (expression graph for cell typing, spatial graph for domains).
Seeds 0-2. Rows go to ``results/scrcl_readout_log.csv``; the table the Methods page includes to
``book/_generated/scrcl_readouts.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.common import write_text_atomic

ROOT = Path(__file__).resolve().parents[2]
LOG = ROOT / "results" / "scrcl_readout_log.csv"
TABLE = ROOT / "book" / "_generated" / "scrcl_readouts.md"
SEEDS = (0, 1, 2)
#: the read-outs in the table's order, the package's first
ORDER = ("refined", "cell", "both", "input", "refined+input", "cell+input")


def write_table(log: Path = LOG, path: Path = TABLE) -> Path:
    """Mean NMI per task and read-out, the two groups' means and their mean, as markdown."""
    df = pd.read_csv(log)
    t = df.pivot_table(index=["group", "dataset", "task"], columns="readout", values="nmi")
    t = t[list(ORDER)]
    g = t.groupby(level="group").mean()
    rows = [
        {"": f"{grp}: {ds} {task}", **t.loc[(grp, ds, task)].to_dict()} for grp, ds, task in t.index
    ]
    rows += [{"": f"mean, {grp}", **g.loc[grp].to_dict()} for grp in g.index]
    rows.append({"": "mean of the two groups", **g.mean().to_dict()})
    out = pd.DataFrame(rows).rename(columns={"refined": "refined (package)"})
    text = out.to_markdown(index=False, floatfmt=".3f") + (
        "\n\nKMeans NMI at the true k, mean over seeds 0-2; one trained model per set and seed, read six "
        "ways (`python -m benchmarks.archive.scrcl_readouts`).\n"
    )
    return write_text_atomic(path, text)


def readouts(model, seed: int) -> dict[str, np.ndarray]:
    """The six read-outs of one trained :class:`sci2cl.SCRCL`."""
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import normalize

    cell, refined = model._embeddings()
    x1 = model._x1.cpu().numpy()
    pcs = PCA(min(50, x1.shape[1] - 1), random_state=seed).fit_transform(x1 - x1.mean(0))
    return {
        "refined": refined,
        "cell": cell,
        "both": np.hstack([normalize(cell), normalize(refined)]),
        "input": pcs,
        "refined+input": np.hstack([normalize(refined), normalize(pcs)]),
        "cell+input": np.hstack([normalize(cell), normalize(pcs)]),
    }


def main() -> int:
    from sklearn.cluster import KMeans

    if sys.argv[1:] == ["--report"]:
        print(f"wrote {write_table()}")
        return 0

    from benchmarks import spatial
    from benchmarks.common import one_thread
    from benchmarks.scrcl_dev import DEV, dev_rna
    from sci2cl import SCRCL

    one_thread()
    jobs = [("scRNA-seq", ds, None, "cell_type") for ds in DEV]
    jobs += [("tissue", ds, task, key) for ds, key, task in spatial.TASKS]
    rows = []
    for group, ds, task, key in jobs:
        a = dev_rna(ds) if group == "scRNA-seq" else spatial.load(ds)
        y = a.obs[key]
        k = int(y.dropna().nunique())
        kw = {"spatial_key": "spatial"} if task == "domains" else {}
        for seed in SEEDS:
            SCRCL.setup_anndata(a, layer="counts")
            m = SCRCL(a, n_clusters=k, seed=seed, **kw).train(progress_bar=False)
            for name, X in readouts(m, seed).items():
                lab = KMeans(k, n_init=10, random_state=seed).fit_predict(X)
                rows.append({"group": group, "dataset": ds, "task": task or "cell types",
                             "seed": seed, "readout": name, **spatial.score(y, lab)})  # fmt: skip
            print(group, ds, task, seed, {r["readout"]: round(r["nmi"], 3) for r in rows[-6:]},
                  flush=True)  # fmt: skip
    df = pd.DataFrame(rows)
    tmp = LOG.with_suffix(".tmp")
    df.to_csv(tmp, index=False)
    tmp.replace(LOG)
    t = df.pivot_table(index=["group", "dataset", "task"], columns="readout", values="nmi").round(3)
    print(t.to_string())
    g = t.groupby(level="group").mean()
    print(g.round(3).to_string())
    print("mean of the two groups:", g.mean().round(3).to_dict())
    print(f"wrote {write_table()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
