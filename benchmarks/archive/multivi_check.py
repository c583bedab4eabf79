"""Why MultiVI collapses here: its held-out KL and NMI under the tutorial's settings and two variants.

Usage: python -m benchmarks.archive.multivi_check [--variants tutorial penalty_none wide] [--epochs 250]

Trains scvi-tools' MULTIVI on the simulator (3,000 cells, its selected features) as
:func:`benchmarks.peers._multivi` does, then with the modality penalty off and with a
wider network, and prints per variant the held-out KL of the latent at several epochs,
the KMeans / Leiden NMI of the joint latent and the KMeans NMI of each modality's latent.
Appends the rows to ``--out`` (default ``results/multivi_check.csv``). Labels only score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mudata as md
import numpy as np
import pandas as pd

from benchmarks.common import label_key, prepare
from sci2cl import metrics

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = {
    "tutorial": {},
    "penalty_none": {"modality_penalty": "None"},
    "wide": {"n_hidden": 128, "n_latent": 20},
}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--epochs", type=int, default=250, help="0: scvi-tools' default (500)")
    ap.add_argument("--dataset", default="simulated")
    ap.add_argument("--out", default=str(ROOT / "results" / "multivi_check.csv"))
    a = ap.parse_args()
    import scvi
    import torch

    torch.set_num_threads(1)
    m = prepare(a.dataset)
    y = m.obs[label_key(a.dataset)].astype(str).to_numpy()
    k = len(np.unique(y))
    rows = []
    for name in a.variants:
        scvi.settings.seed = 0
        mm = md.MuData({"rna": m["rna"].copy(), "atac": m["atac"].copy()})
        scvi.model.MULTIVI.setup_mudata(
            mm, rna_layer="counts", atac_layer="counts",
            modalities={"rna_layer": "rna", "atac_layer": "atac"},
        )  # fmt: skip
        model = scvi.model.MULTIVI(mm, **VARIANTS[name])
        t = time.perf_counter()
        kw = {"max_epochs": a.epochs} if a.epochs else {}
        model.train(accelerator="cpu", enable_progress_bar=False, **kw)
        kl = model.history["kl_local_validation"].iloc[:, 0].astype(float).to_numpy()
        z = model.get_latent_representation()
        nmi = {r["protocol"]: r["nmi"] for r in metrics.cluster_embedding(z, y, seed=0)}
        per = {
            mod: metrics.nmi(
                y, metrics.kmeans_labels(model.get_latent_representation(modality=mod), k)
            )
            for mod in ("expression", "accessibility")
        }
        row = {
            "dataset": a.dataset, "variant": name, "epochs": len(kl),
            "seconds": time.perf_counter() - t,
            **{f"kl_epoch_{e}": kl[min(e, len(kl) - 1)] for e in (40, 80, 120, 200)},
            "kl_last": kl[-1], "nmi_kmeans": nmi["kmeans"], "nmi_leiden": nmi["leiden"],
            "nmi_expression_latent": per["expression"], "nmi_accessibility_latent": per["accessibility"],
        }  # fmt: skip
        rows.append(row)
        print(pd.DataFrame([row]).round(4).to_string(index=False), flush=True)
    out = Path(a.out)
    df = pd.DataFrame(rows)
    if out.exists():
        df = pd.concat([pd.read_csv(out), df], ignore_index=True)
    df.to_csv(out, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
