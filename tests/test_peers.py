"""The benchmark's peer plumbing (benchmarks/peers.py)."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from benchmarks import peers
from sci2cl import metrics


def test_scvi_latent_separates_cell_types(tiny_mdata):
    """scVI (scvi-tools, the bench extra) on CPU: its latent space carries the planted types."""
    pytest.importorskip("scvi")
    z = peers.scvi_embedding(tiny_mdata["rna"], seed=0, max_epochs=30)
    assert z.shape == (tiny_mdata.n_obs, 10) and np.isfinite(z).all()
    y = tiny_mdata.obs["true_cell_type"].astype(str).to_numpy()
    shuffled = np.random.default_rng(0).permutation(y)
    k = len(set(y))
    assert (
        metrics.nmi(y, metrics.kmeans_labels(z, k))
        > metrics.nmi(shuffled, metrics.kmeans_labels(z, k)) + 0.2
    )


def test_multivi_as_its_tutorial_runs_learns_the_planted_types(tiny_mdata):
    """MultiVI through the benchmark's wrapper learns cell types and reports its KL curve.

    A wrapper that fed it the wrong layer or mixed up the modalities would leave
    a latent at the shuffled-label level. On the simulator MultiVI with its
    tutorial's settings does not beat ATAC LSI alone (chapter 3 shows why: its
    modality penalty); this test checks that it is run correctly, not that it wins.
    """
    pytest.importorskip("scvi")
    r = peers._multivi(tiny_mdata, seed=0, max_epochs=100)
    z = r["embedding"]
    assert z.shape[0] == tiny_mdata.n_obs and np.isfinite(z).all()
    assert r["diagnostics"]["epochs"] == 100 and r["diagnostics"]["kl_local"] > 0.1
    assert {"epoch", "kl_local_validation"} <= set(r["curves"].columns)
    y = tiny_mdata.obs["true_cell_type"].astype(str).to_numpy()
    k = len(set(y))
    labels = metrics.kmeans_labels(z, k)
    shuffled = np.random.default_rng(0).permutation(y)
    assert metrics.nmi(y, labels) > metrics.nmi(shuffled, labels) + 0.04


def test_run_peer_reports_time_and_memory(tiny_mdata):
    r = peers.run_peer("RNA PCA", tiny_mdata, seed=0)
    assert r["embedding"].shape == (tiny_mdata.n_obs, 30) and r["adjacency"] is None
    assert r["seconds"] > 0 and np.isfinite(r["peak_mb"])


def test_peak_memory_sees_an_allocation_and_its_size():
    with peers.PeakMemory(interval=0.01) as mem:
        big = np.ones(200 * 2**20 // 8)  # 200 MB, every page touched
        del big
    assert 150 < mem.peak_mb < 400


def test_check_graph_rejects_non_finite_weights():
    g = sp.random(30, 30, density=0.2, random_state=0, format="csr")
    peers.check_graph(g)  # finite: silent
    g.data[[0, 1]] = np.nan
    rows = len(np.unique(np.repeat(np.arange(30), np.diff(g.indptr))[[0, 1]]))
    with pytest.raises(ValueError, match=f"2 non-finite weights in the rows of {rows} cells"):
        peers.check_graph(g, "test graph")


# ------------------------------------------------------------------ GLUE's guidance graph
def test_simulated_peaks_sit_in_the_gene_they_follow(tiny_mdata):
    """A peak placed in a gene's body is more accessible where that gene is expressed."""
    rna, atac = tiny_mdata["rna"], tiny_mdata["atac"]
    g = atac.var["gene"]
    linked = np.flatnonzero(g != "")
    assert 0.1 < linked.size / atac.n_vars < 0.9
    gene_pos = rna.var.loc[g.iloc[linked]]
    peak_pos = atac.var.iloc[linked]
    assert (peak_pos["chrom"].to_numpy() == gene_pos["chrom"].to_numpy()).all()
    assert (peak_pos["chromStart"].to_numpy() >= gene_pos["chromStart"].to_numpy()).all()
    assert (peak_pos["chromEnd"].to_numpy() <= gene_pos["chromEnd"].to_numpy()).all()

    # pseudobulk per true type: a linked peak follows its gene across the types
    y = tiny_mdata.obs["true_cell_type"].astype(str).to_numpy()
    types = np.unique(y)

    def bulk(a):
        x = a.layers["counts"].toarray()
        x = np.log1p(x / x.sum(1, keepdims=True).clip(1) * 1e4)
        return np.stack([x[y == t].mean(0) for t in types])

    x, p = bulk(rna), bulk(atac)

    def corr(gi, pi):
        a, b = x[:, gi] - x[:, gi].mean(0), p[:, pi] - p[:, pi].mean(0)
        return (a * b).sum(0) / (np.linalg.norm(a, axis=0) * np.linalg.norm(b, axis=0) + 1e-12)

    gi = rna.var_names.get_indexer(g.iloc[linked])
    rng = np.random.default_rng(0)
    linked_r = np.mean(corr(gi, linked))
    random_r = np.mean(corr(rng.integers(0, rna.n_vars, linked.size), linked))
    assert linked_r > 0.3 and linked_r > random_r + 0.2


def test_guidance_graph_from_coordinates_and_from_a_table(tiny_mdata):
    pytest.importorskip("scglue")
    import scglue

    m = tiny_mdata
    g = peers.guidance_graph(m)  # simulator: coordinates -> scglue's own construction
    scglue.graph.check_graph(g, [m["rna"], m["atac"]])
    linked = m["atac"].var["gene"]
    pairs = {(gene, p) for p, gene in linked.items() if gene}
    gene_peak = {
        (u, v) for u, v in g.edges() if u in m["rna"].var_names and v in m["atac"].var_names
    }
    assert pairs <= gene_peak  # every planted link is an edge
    # the same links as a table (as a dataset that ships one): exactly those edges
    t = m.copy()
    for c in ("chrom", "chromStart", "chromEnd"):
        del t["rna"].var[c], t["atac"].var[c]
    gt = peers.guidance_graph(t)
    scglue.graph.check_graph(gt, [t["rna"], t["atac"]])
    edges = {(u, v) for u, v, k in gt.edges(keys=True) if u != v}
    assert edges == pairs | {(p, gene) for gene, p in pairs}
    del t["atac"].var["gene"]
    with pytest.raises(ValueError, match="no peak-to-gene table.*chrom"):
        peers.guidance_graph(t)


def test_peak_gene_table_is_read_and_checked(tmp_path):
    import anndata as ad
    import mudata as md
    import pandas as pd

    from sci2cl import datasets
    from sci2cl.datasets._load import _add_peak_gene_links
    from sci2cl.pp import DataValidationError

    atac = ad.AnnData(np.zeros((2, 3)), var=pd.DataFrame(index=["p1", "p2", "p3"]))
    m = md.MuData({"rna": ad.AnnData(np.zeros((2, 1))), "atac": atac})
    pd.DataFrame({"peak": ["p1", "p3"], "gene": ["A", "B"]}).to_csv(tmp_path / "l.csv", index=False)
    _add_peak_gene_links(m, tmp_path / "l.csv", "toy")
    assert m["atac"].var["gene"].tolist() == ["A", "", "B"]
    pd.DataFrame({"peak": ["p1", "p1"], "gene": ["A", "B"]}).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(DataValidationError, match="one row per peak"):
        _add_peak_gene_links(m, tmp_path / "d.csv", "toy")
    with pytest.raises(datasets.DatasetUnavailableError, match="peak-to-gene table"):
        _add_peak_gene_links(m, tmp_path / "missing.csv", "toy")


# ------------------------------------------------------------------ the benchmark's verdicts
def _rows(values: dict, dataset="d1", protocol="kmeans"):
    import pandas as pd

    return pd.DataFrame(
        [
            {
                "dataset": dataset,
                "method": m,
                "protocol": protocol,
                "seed": s,
                "nmi": v,
                "check": "",
            }
            for m, vs in values.items()
            for s, v in enumerate(vs)
        ]
    )


def test_collapse_check_flags_a_collapsed_latent_and_a_method_below_its_inputs():
    from benchmarks import clustering

    df = _rows(
        {
            "RNA PCA": [0.5, 0.5],
            "ATAC LSI": [0.3, 0.3],
            "MultiVI": [0.2, 0.6],
            "scI2CL": [0.55, 0.52],
        }
    )
    df["kl_local"] = np.nan
    df.loc[df["method"] == "MultiVI", "kl_local"] = [0.002, 5.0]
    why = clustering.collapse_check(df).to_numpy()
    mv = df["method"].to_numpy() == "MultiVI"
    assert "collapsed to the prior" in why[mv][0] and "below RNA PCA alone (0.500)" in why[mv][0]
    assert why[mv][1] == ""  # healthy KL and above both inputs
    assert (why[df["method"].to_numpy() == "scI2CL"] == "").all()
    assert (why[df["method"].isin(["RNA PCA", "ATAC LSI"]).to_numpy()] == "").all()


def test_paired_table_calls_ties_ties():
    from benchmarks import clustering

    df = _rows(
        {
            "scI2CL": [0.60, 0.62, 0.61],
            "A": [0.50, 0.51, 0.52],  # scI2CL ahead by ~0.10 every seed: gain
            "B": [0.62, 0.59, 0.63],  # within the spread: tie
            "C": [0.70, 0.71, 0.72],  # behind: loss
        }
    )
    t = clustering.paired_table(df)
    assert t.loc["d1", "A"].endswith("(gain)") and t.loc["d1", "A"].startswith("+0.100")
    assert t.loc["d1", "B"].endswith("(tie)")
    assert t.loc["d1", "C"].endswith("(loss)") and t.loc["d1", "C"].startswith("-0.100")
    assert t.loc["all", "A"].endswith("(1 dataset)")  # a mean over one dataset has no spread
    s = clustering.summary_table(df)
    assert s.loc["d1", "A"] == "0.510 ± 0.010"


def test_a_method_that_cannot_run_or_crashes_is_recorded_not_dropped(tmp_path, monkeypatch):
    import pandas as pd

    from benchmarks import clustering

    def unavailable(mdata, seed):
        raise peers.PeerUnavailable("needs a guidance graph")

    def broken(mdata, seed):
        raise RuntimeError("boom")

    monkeypatch.setitem(peers.PEERS, "Unavailable", unavailable)
    monkeypatch.setitem(peers.PEERS, "Broken", broken)
    df = clustering.run_dataset(
        "simulated",
        ["RNA PCA", "ATAC LSI", "Unavailable", "Broken"],
        [0, 1],
        max_cells=300,
        paper_repeats=0,
        out_dir=tmp_path,
        log=lambda *a: None,
    )
    assert set(df["method"]) == {"RNA PCA", "ATAC LSI"}
    assert {"check", "code_version", "scib_silhouette_label", "scib_clisi"} <= set(df.columns)
    assert df["scib_clisi"].between(0, 1).all()
    sk = pd.read_csv(tmp_path / "benchmark_clustering" / "simulated_skipped.csv")
    assert sk.loc[sk.method == "Unavailable", "reason"].tolist() == ["needs a guidance graph"]
    assert len(sk[sk.method == "Unavailable"]) == 1  # one reason, not one per seed
    assert sk.loc[sk.method == "Broken", "reason"].str.contains("RuntimeError: boom").all()
    assert len(sk[sk.method == "Broken"]) == 2
    merged = clustering.merge(tmp_path, ["simulated"])
    assert len(merged) == len(df)
    with pytest.raises(FileNotFoundError, match="no benchmark results for \\['bmmc_a'\\]"):
        clustering.merge(tmp_path, ["simulated", "bmmc_a"])


def test_scrcl_benchmark_rerun_of_one_method_keeps_the_other_rows(tmp_path, monkeypatch):
    """Re-running scRCL alone replaces its rows and leaves the peers' rows of the table."""
    from benchmarks import scrcl as bench

    old = pd.DataFrame(
        [
            {"dataset": d, "method": m, "seed": 5, "nmi": 0.1}
            for d in ("a", "b")
            for m in ("scRCL", "PCA + KMeans")
        ]
    )
    old.to_csv(tmp_path / "benchmark_scrcl.csv", index=False)

    def fake(name, seeds, *, methods, checkpoint, **kw):
        rows = [{"dataset": name, "method": "scRCL", "seed": s, "nmi": 0.9} for s in seeds]
        checkpoint(rows)
        return rows

    monkeypatch.setattr(bench, "run_dataset", fake)
    df = bench.run(["a"], [5], out_dir=tmp_path, methods=("scRCL",))
    on_disk = pd.read_csv(tmp_path / "benchmark_scrcl.csv")
    assert len(df) == len(on_disk) == 4
    nmi = on_disk.set_index(["dataset", "method"])["nmi"]
    assert nmi[("a", "scRCL")] == 0.9
    assert nmi[("a", "PCA + KMeans")] == nmi[("b", "scRCL")] == nmi[("b", "PCA + KMeans")] == 0.1


def test_desc_without_its_environment_or_when_it_fails_says_so(tmp_path, monkeypatch, tiny_mdata):
    """DESC runs in its own environment: a missing one names the make target, a crash its output."""
    from benchmarks import scrcl as bench

    rna = tiny_mdata["rna"]
    monkeypatch.setattr(bench, "DESC_PYTHON", tmp_path / "nowhere" / "python")
    with pytest.raises(peers.PeerUnavailable, match="make desc-env"):
        bench.desc_clusters(rna, seed=0)
    fake = tmp_path / "python"
    fake.write_text(
        "#!/bin/sh\n"
        '[ "$MPLBACKEND" = Agg ] || { echo "backend $MPLBACKEND" >&2; exit 4; }\n'
        "echo 'ModuleNotFoundError: tensorflow' >&2\nexit 3\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(bench, "DESC_PYTHON", fake)
    # run from a notebook, the parent's backend is Jupyter's inline one, unknown to DESC's matplotlib
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    with pytest.raises(RuntimeError, match="exit 3.*tensorflow"):
        bench.desc_clusters(rna, seed=0)


def test_one_entry_point_runs_every_live_study_and_names_the_unknown(capsys):
    import importlib

    from benchmarks.__main__ import STUDIES, main

    for name, module in STUDIES.items():
        assert callable(importlib.import_module(f"benchmarks.{module}").main), name
    assert main(["no-such-study"]) == 2
    assert "unknown study 'no-such-study'" in capsys.readouterr().err
    assert "benchmarks.archive" not in STUDIES.values()


def test_depth_verdicts_find_where_integration_pays_and_who_wins_there():
    from benchmarks import depth

    def rows(ds, f, scores):
        return [
            {
                "dataset": ds,
                "rna_fraction": f,
                "method": m,
                "seed": s,
                "protocol": "kmeans",
                "nmi": v,
            }  # fmt: skip
            for m, vals in scores.items()
            for s, v in enumerate(vals)
        ]

    df = pd.DataFrame(
        rows(
            "a",
            0.1,
            {  # PCA+LSI clearly above RNA PCA: integration pays; scI2CL behind it
                "RNA PCA": [0.30, 0.31, 0.29],
                "ATAC LSI": [0.20, 0.20, 0.21],
                "PCA+LSI": [0.40, 0.41, 0.40],
                "scI2CL": [0.35, 0.36, 0.34],
                "scI2CL RNA encoder": [0.30, 0.30, 0.31],
                "scI2CL ATAC encoder": [0.2, 0.2, 0.2],
                "GLUE": [0.45],  # one seed only: named, never the paired best peer
            },
        )  # fmt: skip
        + rows(
            "a",
            1.0,
            {  # no multi-modal gain; scI2CL not run here
                "RNA PCA": [0.60, 0.62, 0.61],
                "ATAC LSI": [0.2, 0.2, 0.2],
                "PCA+LSI": [0.58, 0.63, 0.60],
            },
        )  # fmt: skip
    )
    v = depth.verdicts(df).set_index("rna_fraction")
    assert v.loc[0.1, "integration_pays"] == "gain" and v.loc[0.1, "best_peer"] == "PCA+LSI"
    assert v.loc[0.1, "vs_best_peer"] == "loss"
    assert v.loc[0.1, "better_encoder"] == "scI2CL RNA encoder"
    assert v.loc[0.1, "vs_better_encoder"] == "gain"
    assert v.loc[1.0, "integration_pays"] == "tie" and v.loc[1.0, "scI2CL_seeds"] == 0
    f = depth.findings(df)
    assert (f["n_points"], f["n_pays"], f["n_at_least"]) == (2, 1, 0)
    assert "a at 10% (PCA+LSI 0.403 against RNA PCA 0.300)" in f["pays"]
    assert "behind PCA+LSI (-0.053)" in f["method"]
    assert v.loc[0.1, "one_seed_peer"] == "GLUE" and np.isnan(v.loc[1.0, "one_seed_peer_nmi"])
    assert "GLUE 0.450, scI2CL behind by 0.100 on the same seed" in f["method"]
    assert f["missing"] == "scI2CL has not run at a at 100%"


def test_depth_versus_previous_pairs_seeds_and_calls_identical_runs_ties(tmp_path):
    from benchmarks import depth

    def rows(vals, f):
        return [{"dataset": "a", "rna_fraction": f, "method": "scI2CL", "seed": s,
                 "protocol": "kmeans", "nmi": v} for s, v in enumerate(vals)]  # fmt: skip

    before = pd.DataFrame(rows([0.30, 0.32, 0.31], 0.1) + rows([0.6, 0.6, 0.6], 1.0))
    before.to_csv(tmp_path / "prev.csv", index=False)
    now = pd.DataFrame(rows([0.33, 0.35, 0.34], 0.1) + rows([0.6, 0.6, 0.6], 1.0))
    v = depth.versus_previous(now, previous=tmp_path / "prev.csv").set_index("rna_fraction")
    assert v.loc[0.1, "verdict"] == "gain" and v.loc[0.1, "diff"] == pytest.approx(0.03)
    assert v.loc[1.0, "verdict"] == "tie" and v.loc[1.0, "seeds"] == 3
    assert depth.versus_previous(now, previous=tmp_path / "none.csv").empty


def test_depth_regime_findings_pair_scI2CL_with_mofa_and_glue():
    from benchmarks import depth

    rows = [
        {"dataset": "simulated_atac_types", "rna_fraction": 1.0, "method": m, "seed": s,
         "protocol": "kmeans", "nmi": v}
        for m, vals in {"scI2CL": [0.80, 0.82, 0.81], "MOFA+": [0.70, 0.71, 0.70]}.items()
        for s, v in enumerate(vals)
    ] + [{"dataset": "bmmc_a", "rna_fraction": 1.0, "method": "scI2CL", "seed": 0,
          "protocol": "kmeans", "nmi": 0.5}]  # fmt: skip
    text = depth.regime_findings(pd.DataFrame(rows))
    assert text.startswith("simulated_atac_types: scI2CL is ahead of MOFA+ (0.810 against 0.703)")
    assert "GLUE not run" in text and "bmmc_a" not in text
    assert depth.regime_findings(pd.DataFrame(rows[-1:])) == "the simulator regimes have not run"


def test_depth_restamp_keeps_runs_only_when_every_dataset_canary_is_identical(
    tmp_path, monkeypatch
):
    import json

    from benchmarks import depth, peers

    monkeypatch.setattr(depth, "OUT", tmp_path / "out")
    monkeypatch.setattr(depth, "EMB", tmp_path / "emb")
    monkeypatch.setattr(depth, "prepare_thinned", lambda ds, f, seed: ds)
    units = [("d", 0, 9.0), ("d", 1, 3.0), ("e", 0, 5.0)]
    emb = {(d, s): np.random.default_rng([ord(d), s]).normal(size=(5, 2)).astype(np.float32)
           for d, s, _ in units}  # fmt: skip
    for ds, seed, secs in units:
        rec_path, emb_path = depth._paths(ds, 0.1, "M", seed)
        rec_path.parent.mkdir(parents=True, exist_ok=True)
        emb_path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(emb_path, embedding=emb[ds, seed], extra_rna=emb[ds, seed] + 1)
        rec = {"key": {"method_version": "old"}, "status": "ok", "seconds": secs,
               "rows": [{"method_version": "old"}]}  # fmt: skip
        rec_path.write_text(json.dumps(rec))
    calls = []

    def rerun(method, ds, seed, **kw):  # the fastest unit of each dataset is its canary
        calls.append((ds, seed))
        return {
            "embedding": emb[ds, seed] + shift.get(ds, 0.0),
            "extra": {"rna": emb[ds, seed] + 1},
        }

    def read():
        return [json.loads(depth._paths(d, 0.1, "M", s)[0].read_text()) for d, s, _ in units]

    monkeypatch.setattr(peers, "run_peer", rerun)
    monkeypatch.setattr(depth, "_method_version", lambda m: "new")
    quiet = {"settings": {}, "log": lambda *a: None}
    shift = {"d": 1e-6}  # the code now computes something else on d: nothing is restamped
    assert depth.restamp("M", **quiet) == {"old": "differs"}
    assert calls == [("d", 1)]
    assert all(r["key"]["method_version"] == "old" for r in read())
    calls.clear()
    shift = {"e": 1e-6}  # d reproduces but e does not: still nothing is restamped
    assert depth.restamp("M", **quiet) == {"old": "differs"}
    assert calls == [("d", 1), ("e", 0)]
    assert all(r["key"]["method_version"] == "old" for r in read())
    shift = {}  # identical bit for bit on every dataset: every unit of the old version is kept
    assert depth.restamp("M", **quiet) == {"old": "kept"}
    got = read()
    assert all(r["key"]["method_version"] == "new" for r in got)
    assert all(r["rows"][0]["method_version"] == "new" for r in got)
    assert got[0]["restamped_from"] == "old"
    assert got[0]["restamp_canary"] == "d rna0.1 seed 1; e rna0.1 seed 0"
    assert depth.restamp("M", **quiet) == {}  # nothing stale any more


def test_depth_restamp_without_kept_embeddings_compares_every_score(tmp_path, monkeypatch):
    """A fresh checkout keeps no embeddings: a canary then re-scores and must match its record."""
    import json
    from types import SimpleNamespace

    from benchmarks import common, depth, peers

    monkeypatch.setattr(depth, "OUT", tmp_path / "out")
    monkeypatch.setattr(depth, "EMB", tmp_path / "emb")  # empty
    cells = SimpleNamespace(obs=pd.DataFrame({"t": ["a", "b", "a"]}))
    monkeypatch.setattr(depth, "prepare_thinned", lambda ds, f, seed: cells)
    monkeypatch.setattr(common, "label_key", lambda ds: "t")
    monkeypatch.setattr(depth, "_score_version", lambda: "score-now")
    monkeypatch.setattr(
        depth, "_score", lambda res, y, seed: [{"nmi": float(res["embedding"].sum()), "r": None}]
    )
    rec_path, _ = depth._paths("d", 0.1, "M", 0)
    rec_path.parent.mkdir(parents=True)
    z = np.arange(6, dtype=np.float32).reshape(3, 2)
    rec = {"key": {"method_version": "old"}, "status": "ok", "seconds": 1.0,
           "score_version": "score-now", "rows": [{"nmi": float(z.sum()), "r": None}]}  # fmt: skip
    rec_path.write_text(json.dumps(rec))
    out = {"embedding": z, "extra": {}, "adjacency": None}
    monkeypatch.setattr(peers, "run_peer", lambda *a, **k: {**out, "embedding": z + shift})
    monkeypatch.setattr(depth, "_method_version", lambda m: "new")
    logged = []
    quiet = {"settings": {}, "log": logged.append}
    shift = 1e-3  # another score: nothing is restamped
    assert depth.restamp("M", **quiet) == {"old": "differs"}
    shift = 0.0
    assert depth.restamp("M", **quiet) == {"old": "kept"}
    assert json.loads(rec_path.read_text())["restamp_canary"] == "d rna0.1 seed 0 (its scores)"
    # scored by older scoring code and no embedding: cannot tell, said so, nothing restamped
    rec["score_version"] = "score-old"
    rec_path.write_text(json.dumps(rec))
    assert depth.restamp("M", **quiet) == {"old": "no embedding"}
    assert "no embedding kept, nothing restamped" in logged[-1]


def test_clustering_restamp_keeps_units_only_when_every_dataset_canary_scores_the_same(
    tmp_path, monkeypatch
):
    import json

    import pandas as pd

    from benchmarks import clustering, peers

    key = {"code_version": "old", "data_version": "x", "max_cells": None, "max_epochs": None,
           "multivi_epochs": None, "glue_epochs": None, "paper_repeats": 0}  # fmt: skip
    units = [("d", 0, 9.0), ("d", 1, 3.0), ("e", 0, 5.0)]
    score = {(d, s): 0.1 * s + (0.5 if d == "d" else 0.3) for d, s, _ in units}
    for ds, seed, secs in units:
        path = clustering._unit_path(tmp_path, ds, "M", seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {"dataset": ds, "method": "M", "seed": seed, "seconds": secs,
               "code_version": "old", "protocol": "kmeans", "nmi": score[ds, seed]}  # fmt: skip
        rec = {"key": key, "status": "ok", "rows": [row], "curves": [], "reason": ""}
        np.savez(path, record=np.array(json.dumps(rec)), coords=np.ones((3, 2), np.float32))
    for ds in ("d", "e"):
        pd.DataFrame([{"method": "M", "seed": s, "code_version": "old"} for d, s, _ in units
                      if d == ds]).to_csv(tmp_path / "benchmark_clustering" / f"{ds}.csv")  # fmt: skip
    calls = []

    def rerun(method, mdata, seed, **kw):  # the fastest unit of each dataset is its canary
        calls.append((mdata.ds, seed))
        return {"seconds": 99.0}

    def fake_score(res, y, ds, method, seed, paper_repeats, key):
        nmi = score[ds, seed] + shift.get(ds, 0.0)
        return [{"dataset": ds, "method": method, "seed": seed, "seconds": res["seconds"],
                 "code_version": key["code_version"], "protocol": "kmeans", "nmi": nmi}]  # fmt: skip

    monkeypatch.setattr(clustering, "_prepared", lambda ds, max_cells: _Prepared(ds))
    monkeypatch.setattr(clustering, "label_key", lambda ds: "cell_type")
    monkeypatch.setattr(clustering, "_score", fake_score)
    monkeypatch.setattr(clustering, "code_version", lambda m: "new")
    monkeypatch.setattr(peers, "run_peer", rerun)

    def read():
        out = []
        for d, s, _ in units:
            with np.load(clustering._unit_path(tmp_path, d, "M", s)) as z:
                out.append((json.loads(str(z["record"])), "coords" in z))
        return out

    quiet = {"out_dir": tmp_path, "log": lambda *a: None}
    shift = {"d": 1e-12}  # the code now scores something else on d: nothing is restamped
    assert clustering.restamp("M", **quiet) == {"old": "differs"}
    assert calls == [("d", 1)]
    assert all(r["key"]["code_version"] == "old" for r, _ in read())
    calls.clear()
    shift = {"e": 1e-12}  # d reproduces but e does not: still nothing is restamped
    assert clustering.restamp("M", **quiet) == {"old": "differs"}
    assert calls == [("d", 1), ("e", 0)]
    assert all(r["key"]["code_version"] == "old" for r, _ in read())
    shift = {}  # the same scores on every dataset (timings aside): every unit is kept
    assert clustering.restamp("M", **quiet) == {"old": "kept"}
    got = read()
    assert all(r["key"]["code_version"] == "new" and has for r, has in got)
    assert all(r["rows"][0]["code_version"] == "new" for r, _ in got)
    assert got[0][0]["restamped_from"] == "old"
    assert got[0][0]["restamp_canary"] == "d seed 1; e seed 0"
    assert got[0][0]["rows"][0]["seconds"] == 9.0  # the kept run's own timing
    for ds in ("d", "e"):
        assert set(pd.read_csv(tmp_path / "benchmark_clustering" / f"{ds}.csv").code_version) == {
            "new"
        }
    assert clustering.restamp("M", **quiet) == {}  # nothing stale any more


class _Prepared:
    """A prepared dataset's stand-in: its name and one label column."""

    def __init__(self, ds):
        import pandas as pd

        self.ds = ds
        self.obs = pd.DataFrame({"cell_type": ["a", "b"]})


def test_embedding_cache_keeps_runs_of_other_settings_apart(tmp_path):
    from benchmarks import embeddings

    full, smoke = {"max_epochs": None, "data": "a"}, {"max_epochs": 2, "data": "b"}
    e_full, e_smoke = np.ones((4, 2)), np.zeros((3, 2))
    embeddings.save("d", "M", 0, {"embedding": e_full}, full, cache=tmp_path)
    embeddings.save("d", "M", 0, {"embedding": e_smoke}, smoke, cache=tmp_path)  # a smoke run
    np.testing.assert_array_equal(
        embeddings.load("d", "M", 0, full, cache=tmp_path)["embedding"], e_full
    )
    np.testing.assert_array_equal(
        embeddings.load("d", "M", 0, smoke, cache=tmp_path)["embedding"], e_smoke
    )
    assert embeddings.load("d", "M", 0, {"other": 1}, cache=tmp_path) is None


def test_claims_compare_with_the_best_peer_per_set_and_skip_claims_without_results(tmp_path):
    from benchmarks import claims

    rows = []
    for seed, (a, b, c) in enumerate([(0.50, 0.60, 0.40), (0.52, 0.61, 0.41), (0.49, 0.62, 0.42)]):
        for m, v in (("scRCL", a), ("B", b), ("C", c)):
            rows.append({"dataset": "x", "method": m, "seed": seed, "nmi": v})
            rows.append(
                {"dataset": "y", "method": m, "seed": seed, "nmi": v + (m == "scRCL") * 0.2}
            )
    df = pd.DataFrame(rows)
    v = claims.versus_best_peer(df, "scRCL").set_index("dataset")
    assert list(v["peer"]) == ["B", "B"]  # the peer of highest mean, never the method itself
    assert v.loc["x", "verdict"] == "loss" and v.loc["x", "mean"] == pytest.approx(
        -0.44 / 4, abs=0.01
    )
    assert v.loc["y", "verdict"] == "gain"
    res = tmp_path / "results"
    res.mkdir()
    # scRCL's label-free read-out is the same model, not a peer it must beat
    own = df[df["method"] == "scRCL"].assign(method="scRCL + Leiden", nmi=0.99)
    pd.concat([df, own]).to_csv(res / "benchmark_scrcl.csv", index=False)
    nb = tmp_path / "notebooks"
    nb.mkdir()
    (nb / "timings-full.tsv").write_text("07_identify_cell_types_scrcl.ipynb\t150\n")
    got = claims.rows(res)
    assert list(got["chapter"]) == ["07_identify_cell_types_scrcl"]  # the others have no results
    text = claims.table(got)
    assert "ahead on 1, tied on 0, behind on 1 of 2" in text and "x, B by 0.1" in text
    assert "[7](notebooks/07_identify_cell_types_scrcl.ipynb) (2 min)" in text


def test_sci2cl_fingerprint_covers_every_module_the_model_imports():
    """A change to any sci2cl module that the model's code imports re-runs scI2CL's units.

    scRCL's files are not among them: a change to scRCL keeps scI2CL's units.
    """
    import ast
    from pathlib import Path

    from benchmarks import clustering

    root = Path(clustering.ROOT)
    covered = set(clustering.source_files(clustering.FINGERPRINT_METHOD["scI2CL"]))

    def module_file(parts: list[str]) -> str | None:
        for cand in (
            root.joinpath(*parts).with_suffix(".py"),
            root.joinpath(*parts, "__init__.py"),
        ):
            if cand.is_file():
                return str(cand.relative_to(root))
        return None

    seen, todo = set(), ["sci2cl/model/_sci2cl.py"]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        pkg = list(Path(f).parent.parts)
        for node in ast.walk(ast.parse((root / f).read_text())):
            if isinstance(node, ast.ImportFrom) and node.level > 0:
                base = pkg[: len(pkg) - node.level + 1]
                if node.module:
                    targets = [module_file(base + node.module.split("."))]
                else:  # from . import name
                    targets = [module_file(base + [a.name]) for a in node.names]
                todo += [t for t in targets if t]
    missing = sorted(f for f in seen if f.startswith("sci2cl/") and f not in covered)
    assert not missing, f"scI2CL's fingerprint misses {missing}"
    assert "sci2cl/model/_scrcl.py" not in seen | covered
    assert "sci2cl/module/_scrcl.py" not in seen | covered


def test_one_thread_pins_every_library_even_after_numpy_loaded_under_more_threads():
    """A benchmark's numbers depend on the thread count: the runners pin it whatever the caller set."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import numpy, json, os\n"
        "from benchmarks.common import one_thread, thread_settings\n"
        "one_thread()\n"
        "import torch\n"
        "from threadpoolctl import threadpool_info\n"
        "print(json.dumps({'pools': [p['num_threads'] for p in threadpool_info()],"
        " 'torch': torch.get_num_threads(), 'env': os.environ['OPENBLAS_NUM_THREADS'],"
        " 'recorded': thread_settings()}))\n"
    )
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "OPENBLAS_NUM_THREADS": "2",
        "MKL_NUM_THREADS": "2",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["pools"] and set(got["pools"]) == {1}
    assert got["torch"] == 1 and got["env"] == "1"  # children inherit one thread
    # what a unit records as its thread counts is what it ran with
    rec = got["recorded"]
    assert rec["torch"] == 1 and rec["pools"] and set(rec["pools"].values()) == {1}
    assert rec["OPENBLAS_NUM_THREADS"] == "1"


@pytest.mark.parametrize("workers_started_before", [False, True])
def test_one_thread_holds_after_scanpy_starts_numbas_workers(workers_started_before):
    """numba's OpenMP layer sets the OpenMP thread count it shares with torch when its workers start.

    With numba imported (by scanpy) before :func:`one_thread`, scanpy's first parallel call used
    to put torch back at one thread per core: chapter 5 trained scI2CL at two threads after its
    annotation audit, a different embedding from chapters 4 and 6 for the same seed and data.
    """
    import json
    import os
    import subprocess
    import sys

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: one thread is the default, nothing to pin")
    code = (
        "import json\n"
        "import numpy as np, scipy.sparse as sp, anndata as ad, scanpy as sc, torch, numba\n"
        "a = ad.AnnData(sp.random(2000, 500, density=0.1, format='csr', dtype=np.float32,"
        " random_state=0) * 10)\n"
        + ("sc.pp.normalize_total(a.copy())\n" if workers_started_before else "")
        + "from benchmarks.common import one_thread\n"
        "one_thread()\n"
        "import sci2cl  # noqa: F401\n"
        "assert torch.get_num_threads() == 1\n"  # torch has computed before scanpy's call
        "sc.pp.normalize_total(a)\n"
        "numba.njit(lambda x: x + 1)(1)  # a fresh compile re-reads numba's environment\n"
        "print(json.dumps({'torch': torch.get_num_threads(), 'numba': numba.get_num_threads()}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got == {"torch": 1, "numba": 1}


def test_clustering_merge_reads_dataset_parts_only(tmp_path):
    """The per-dataset side tables (skipped methods, training curves) are not datasets."""
    from benchmarks import clustering

    parts = tmp_path / "benchmark_clustering"
    parts.mkdir()
    pd.DataFrame({"dataset": ["a"], "method": ["M"], "nmi": [0.5]}).to_csv(
        parts / "a.csv", index=False
    )
    pd.DataFrame(columns=["dataset", "method", "seed", "reason"]).to_csv(
        parts / "a_skipped.csv", index=False
    )
    pd.DataFrame({"epoch": [0], "loss": [1.0]}).to_csv(parts / "a_curves.csv", index=False)
    df = clustering.merge(tmp_path)
    assert list(df["dataset"]) == ["a"] and "epoch" not in df
    assert (tmp_path / "benchmark_curves.csv").exists()


def test_report_table_shows_whole_numbers_as_integers_and_gaps_as_missing():
    """Chapter tables: no ``4747.0`` for a count, no ``NaN`` for a method that did not run."""
    from benchmarks.report import table

    df = pd.DataFrame(
        {
            "cells": [4747.0, 12.5],
            "nmi": [0.12345, np.nan],
            "ok": [True, False],
            "name": ["a", None],
            "p": [3e-7, 0.0],
        }
    )
    html = table(df).to_html()
    cells = [c.split(">")[-1] for c in html.split("</td>")[:-1]]
    assert cells == ["4747", "0.123", "True", "a", "3.0e-07", "12.500", "n/a", "False", "n/a", "0"]
    assert df.loc[0, "cells"] == 4747.0  # the data are not changed


def test_batch_scores_tell_mixed_batches_from_separated_ones():
    """scib iLISI and batch silhouette: high when the batch is independent of the embedding,
    low when the embedding separates the batches within every type."""
    from benchmarks.batches import batch_scores

    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 150)
    batch = np.tile(["x", "y"], 150)
    types = np.where(y == "a", 0.0, 10.0)[:, None] * np.ones((1, 5))
    mixed = types + rng.normal(0, 1, (300, 5))
    apart = mixed + np.where(batch == "x", 0.0, 6.0)[:, None] * np.eye(5)[0]
    good, bad = batch_scores(mixed, y, batch, 0), batch_scores(apart, y, batch, 0)
    assert good["ilisi"] > 0.8 > 0.2 > bad["ilisi"]
    assert good["batch_silhouette"] > bad["batch_silhouette"] + 0.2
    assert good["graph_connectivity"] > 0.9


def test_prepare_thins_only_the_cells_of_the_named_batches():
    from benchmarks.common import prepare

    full = prepare("simulated_batches")
    part = prepare("simulated_batches", rna_fraction=0.3, thin_where=("batch", ["batch2"]))
    genes = full["rna"].var_names.intersection(part["rna"].var_names)
    cells = full.obs_names.intersection(part.obs_names)
    b = full.obs.loc[cells, "batch"].astype(str).values
    tot = {k: np.asarray(v["rna"][cells, genes].layers["counts"].sum(1)).ravel()
           for k, v in (("full", full), ("part", part))}  # fmt: skip
    np.testing.assert_array_equal(tot["part"][b == "batch1"], tot["full"][b == "batch1"])
    ratio = tot["part"][b == "batch2"].sum() / tot["full"][b == "batch2"].sum()
    assert 0.25 < ratio < 0.35


def test_batch_findings_name_the_best_trade_off_and_pair_scI2CL_with_it():
    from benchmarks import batches

    def row(method, seed, bio, batch, aware=False):
        return {"case": "c", "method": method, "seed": seed, "batch_aware": aware,
                "protocol": "kmeans", "nmi": bio, "scib_silhouette_label": bio, "scib_clisi": bio,
                "ilisi": batch, "batch_silhouette": batch, "graph_connectivity": batch}  # fmt: skip

    df = pd.DataFrame(
        [row("scI2CL", s, 0.80 + 0.01 * s, 0.10) for s in range(3)]
        + [row("MOFA+ (batches as groups)", s, 0.75, 0.60 + 0.01 * s, True) for s in range(3)]
        + [{**row("scI2CL", 0, 0.0, 0.0), "protocol": "leiden"}]  # another protocol: ignored
    )
    keyed = pd.DataFrame(
        [row("scI2CL (batch key)", s, 0.80, 0.50 + 0.02 * s, True) for s in range(3)]
    )
    s = batches.scores(df)
    assert len(s) == 6 and s["overall"].iloc[0] == pytest.approx(0.6 * 0.80 + 0.4 * 0.10)
    text = batches.findings(df)
    assert text.startswith("c: best overall MOFA+ (batches as groups) (0.694")
    assert "scI2CL without the batch 0.526 (iLISI 0.100), behind MOFA+" in text
    assert batches.summary(df).index[0] == ("c", "MOFA+ (batches as groups)")
    both = batches.findings(pd.concat([df, keyed]))
    assert "with its batch key, scI2CL's iLISI 0.520 against 0.100 (gain)" in both
    assert "bio-conservation 0.800 against 0.810 (tie)" in both
    assert (
        "(not yet run with every seed here: RNA PCA, PCA+LSI, WNN (muon), MOFA+, WNN (Harmony), "
        "MultiVI (batch key), GLUE (use_batch))" in both
    )
    # a collapsed VAE is left out of the tables and named; scI2CL's centring is tabled
    gone = [{**row("MultiVI (batch key)", s, 0.99, 0.99, True), "kl_local": 0.01} for s in range(3)]
    centring = {"mixing_all_rna": 0.2, "mixing_batch_rna": 0.9, "centred_rna": True}
    more = pd.concat([df, keyed.assign(**centring), pd.DataFrame(gone)])
    assert "MultiVI (batch key)" not in set(batches.scores(more)["method"])
    text = batches.findings(more)
    assert (
        "left out as collapsed (latent KL below the bar): MultiVI (batch key) on c, seed 0" in text
    )
    assert "MultiVI (batch key)," not in text  # it ran: not 'not yet run'
    assert "WNN (Harmony), GLUE (use_batch))" in text
    t = batches.centring_table(more)
    assert t.loc[("c", "rna")].tolist() == [0.2, 0.9, 1.0]
    import matplotlib

    matplotlib.use("Agg")
    from benchmarks.plots import batch_tradeoff

    fig = batch_tradeoff(s)
    (ax,) = fig.axes
    faces = {c.get_label(): c.lines[0].get_markerfacecolor() for c in ax.containers}
    assert faces["MOFA+ (batches as groups)"] == "white" and faces["scI2CL"] != "white"


def test_glue_use_batch_configures_each_modality_with_the_batch(tiny_mdata, monkeypatch):
    """GLUE (use_batch): both modalities configured with the batch column, as GLUE's tutorial does,
    and scglue's configure_dataset restored afterwards, also when the fit fails."""
    pytest.importorskip("scglue")
    import scglue

    from benchmarks.batches import BATCH, glue_use_batch

    m = tiny_mdata.copy()
    m.obs[BATCH] = np.where(np.arange(m.n_obs) % 2, "x", "y")
    seen = {}

    def fit(adatas, graph, **kw):  # stands in for GLUE's training: read what it was given
        for k, a in adatas.items():
            seen[k] = (a.uns["__scglue__"]["use_batch"], a.obs[BATCH].tolist())
        raise RuntimeError("stop here")

    original = scglue.models.configure_dataset
    monkeypatch.setattr(scglue.models, "fit_SCGLUE", fit)
    with pytest.raises(RuntimeError, match="stop here"):
        glue_use_batch(m, seed=0)
    assert scglue.models.configure_dataset is original
    for k in ("rna", "atac"):
        assert seen[k] == (BATCH, m.obs[BATCH].tolist())


def test_batch_benchmark_keeps_skipped_units_apart_with_their_reason(tmp_path, monkeypatch):
    import json

    from benchmarks import batches

    monkeypatch.setattr(batches, "OUT", tmp_path)
    row = {"case": "bmmc_a", "method": "RNA PCA", "seed": 0, "protocol": "kmeans", "nmi": 0.5}
    (tmp_path / "a.json").write_text(json.dumps([row]))
    reason = "GLUE needs a guidance graph: this dataset has no peak-to-gene table"
    skip = {"case": "bmmc_a", "method": "GLUE (use_batch)", "seed": 0, "reason": reason}
    (tmp_path / "b.json").write_text(json.dumps([skip]))
    monkeypatch.setattr(batches, "CSV", tmp_path / "table.csv")
    assert batches.collect()["method"].tolist() == ["RNA PCA"]
    assert batches.skipped().to_dict("records") == [skip]
    # the findings name the skipped case and the one-seed peer, and pair the rest over seeds
    rows = []
    for method, seeds, level in (("scI2CL", 3, 0.5), ("scI2CL (batch key)", 3, 0.7),
                                 ("GLUE (use_batch)", 1, 0.9), ("RNA PCA", 2, 0.4)):  # fmt: skip
        for seed in range(seeds):
            v = level + 0.01 * seed
            rows.append({"case": "sim", "method": method, "seed": seed, "protocol": "kmeans",
                         "batch_aware": "(" in method,
                         "nmi": v, "scib_silhouette_label": v, "scib_clisi": v, "ilisi": v,
                         "batch_silhouette": v, "graph_connectivity": v})  # fmt: skip
    text = batches.findings(pd.DataFrame(rows))
    assert "sim: best overall GLUE (use_batch)" in text
    assert "GLUE (use_batch) with one seed only" in text
    assert "not yet run with every seed here: RNA PCA" in text
    assert "GLUE (use_batch) cannot run on bmmc_a (GLUE needs a guidance graph)" in text
    assert "iLISI 0.710 against 0.510 (gain)" in text
    # the development log of the key: the default first, each against scI2CL without the key
    rows += [{**r, "method": "scI2CL (batch key, batch_correction=none)", "ilisi": r["ilisi"] - 0.2}
             for r in rows if r["method"] == "scI2CL (batch key)"]  # fmt: skip
    t = batches.key_table(pd.DataFrame(rows)).set_index("configuration")
    assert list(t.index) == ["scI2CL (batch key)", "scI2CL (batch key, batch_correction=none)"]
    assert t.loc["scI2CL (batch key)", "iLISI"] == "0.710 (+0.200 ± 0.000, gain)"
    assert t.loc["scI2CL (batch key, batch_correction=none)", "iLISI"].endswith("0.000, tie)")
