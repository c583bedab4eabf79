"""No silent failure: each public function does what it says or raises an error that names the
argument or the data at fault (the nine groups of issue 19, in order)."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import sci2cl
from sci2cl import datasets, pp, tl
from sci2cl.model import CheckpointError, TrainingError
from sci2cl.pp import DataValidationError

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(n_latent=8, n_hidden=16, n_views=2)


@pytest.fixture(scope="module")
def small():
    m = datasets.simulate_multiome(n_cells=200, n_genes=60, n_peaks=120, seed=5)
    sci2cl.SCI2CL.setup_mudata(m)
    return m


@pytest.fixture(scope="module")
def trained(small):
    model = sci2cl.SCI2CL(small, seed=0, **SMALL)
    return model.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)


# ----------------------------------------------------------- 1. training that takes no step
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 1}, r"batch_size must be in \[2, inf\]"),
        ({"batch_size": -5}, r"batch_size must be in \[2, inf\]"),
        ({"pretrain_epochs": -1}, r"pretrain_epochs must be in \[0, inf\]"),
        ({"max_epochs": 0}, r"max_epochs must be in \[1, inf\]"),
    ],
)
def test_train_refuses_settings_that_take_no_step(small, kwargs, match):
    model = sci2cl.SCI2CL(small, seed=0, **SMALL)
    with pytest.raises(ValueError, match=match):
        model.train(progress_bar=False, **kwargs)
    assert not model.is_trained and model.history.empty


def test_all_zero_loss_weights_are_refused(small):
    with pytest.raises(ValueError, match="all loss weights are 0"):
        sci2cl.SCI2CL(small, weights=dict.fromkeys(("rec", "mse", "moc", "mom"), 0.0), **SMALL)
    # only joint-stage terms: the pretraining stage would have no loss
    with pytest.raises(ValueError, match="nothing to learn"):
        sci2cl.SCI2CL(small, weights={"rec": 0.0, "mse": 0.0, "moc": 1.0}, **SMALL)


def test_scrcl_train_refuses_zero_epochs(small):
    a = small["rna"].copy()
    sci2cl.SCRCL.setup_anndata(a)
    model = sci2cl.SCRCL(a, n_clusters=3, n_hidden=16, n_latent=8)
    with pytest.raises(ValueError, match=r"max_epochs must be in \[1, inf\]"):
        model.train(max_epochs=0)
    assert not model.is_trained


# ----------------------------------------------------------- 2. checkpoints survive a failed save
def _run(code: str, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


PRELUDE = """
    import json, os, resource, signal, sys, time
    import numpy as np, torch
    torch.set_num_threads(1)
    import sci2cl
    m = sci2cl.datasets.simulate_multiome(n_cells=200, n_genes=60, n_peaks=120, seed=5)
    sci2cl.SCI2CL.setup_mudata(m)
    model = sci2cl.SCI2CL(m, seed=0, n_latent=8, n_hidden=16, n_views=2)
    model.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    z0 = model.get_latent_representation(key_added=None)
"""


def test_checkpoint_survives_a_failed_overwrite(tmp_path):
    """A save that hits the file-size limit leaves the previous checkpoint whole, nothing partial."""
    code = (
        PRELUDE
        + f"""
    path = {str(tmp_path / "ckpt")!r}
    model.save(path)
    before = {{f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}}
    model.train(max_epochs=1, pretrain_epochs=0, progress_bar=False)  # new weights to write
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (2000, resource.RLIM_INFINITY))
    try:
        model.save(path, overwrite=True)
        outcome = "saved"
    except OSError as e:
        outcome = type(e).__name__
    try:
        model.save({str(tmp_path / "fresh")!r})
        fresh = "saved"
    except OSError as e:
        fresh = type(e).__name__
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    after = {{f: os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)}}
    old = sci2cl.SCI2CL.load(path, m)
    same = bool(np.allclose(old.get_latent_representation(key_added=None), z0, atol=1e-6))
    print(json.dumps({{"outcome": outcome, "fresh": fresh, "same_files": before == after,
                       "same_embedding": same, "dir": sorted(os.listdir({str(tmp_path)!r}))}}))
    """
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["outcome"] == "OSError" and out["fresh"] == "OSError"
    assert out["same_files"] and out["same_embedding"]
    assert out["dir"] == ["ckpt"]  # no temporary folder and no partial fresh checkpoint


def test_interrupted_retrain_restores_the_model(tmp_path):
    """SIGINT during a re-train: the model is as before the call (weights, read-out, history)."""
    code = (
        PRELUDE
        + """
    h0, w0 = model.history.copy(), dict(model.modality_weights_)
    # Python's own Ctrl-C handling, also when pytest runs in the background (where SIGINT
    # starts ignored and the child inherits that: the signal would never arrive)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    print("TRAINING", flush=True)
    try:
        model.train(max_epochs=10000, pretrain_epochs=0, early_stopping=False, progress_bar=False)
        outcome = "finished"
    except KeyboardInterrupt:
        outcome = "interrupted"
    z1 = model.get_latent_representation(key_added=None)
    print(json.dumps({"outcome": outcome, "same_embedding": bool(np.array_equal(z0, z1)),
                      "same_history": bool(model.history.equals(h0)),
                      "same_weights": model.modality_weights_ == w0,
                      "trained": model.is_trained}), flush=True)
    """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.time() + 240
    line = ""
    while "TRAINING" not in line and time.time() < deadline:
        line = p.stdout.readline()
        if not line and p.poll() is not None:
            break
    assert "TRAINING" in line, p.stderr.read()[-2000:]
    time.sleep(3)  # a few epochs into the re-train
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err[-2000:]
    res = json.loads(out.strip().splitlines()[-1])
    assert res == {
        "outcome": "interrupted",
        "same_embedding": True,
        "same_history": True,
        "same_weights": True,
        "trained": True,
    }
    assert "restored to its state before the call" in err


def test_untrained_model_refuses_to_save(small, tmp_path):
    with pytest.raises(RuntimeError, match="not trained"):
        sci2cl.SCI2CL(small, **SMALL).save(tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_save_never_touches_files_it_did_not_write(trained, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="holds other files"):
        trained.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    trained.save(tmp_path, overwrite=True)  # told: the checkpoint is added beside the notes
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "model.pt").exists()


# ----------------------------------------------------------- 3. divergence restores the model
def test_diverging_retrain_restores_weights_readout_and_history(trained):
    z0 = trained.get_latent_representation(key_added=None)
    h0, w0 = trained.history.copy(), dict(trained.modality_weights_)
    with pytest.raises(TrainingError, match="diverged") as e:
        trained.train(
            max_epochs=3, pretrain_epochs=0, lr=1e12, early_stopping=False, progress_bar=False
        )
    assert "restored" in str(e.value)
    np.testing.assert_array_equal(trained.get_latent_representation(key_added=None), z0)
    assert trained.history.equals(h0) and trained.modality_weights_ == w0 and trained.is_trained


# ----------------------------------------------------------- 4. inference checks new data
def test_inference_checks_new_data(trained, small):
    z = small.copy()
    X = z["rna"].layers["counts"].toarray()
    z["rna"].layers["counts"] = (X - X.mean(0)) / (X.std(0) + 1e-6)  # z-scored
    with pytest.raises(DataValidationError, match="negative values"):
        trained.get_latent_representation(z)
    logn = small.copy()
    logn["rna"].layers["counts"] = np.log1p(logn["rna"].layers["counts"].toarray())
    with pytest.raises(DataValidationError, match="non-integer"):
        trained.get_latent_representation(logn)
    nan = small.copy()
    c = nan["atac"].layers["counts"].toarray()
    c[3, 4] = np.nan
    nan["atac"].layers["counts"] = c
    with pytest.raises(DataValidationError, match="NaN or infinite"):
        trained.get_latent_representation(nan)
    fewer = small[:, :].copy()
    fewer.mod["rna"] = fewer["rna"][:, 5:].copy()
    fewer.update()
    with pytest.raises(DataValidationError, match="not the 60 features"):
        trained.get_latent_representation(fewer)
    assert "X_sci2cl" not in z.obsm and "X_sci2cl" not in logn.obsm


# ----------------------------------------------------------- 5. missing labels are never labels
def _labelled_blobs(seed=0, n=240):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 8, (4, 5))
    y = np.repeat(np.arange(4), n // 4)
    a = ad.AnnData(
        np.zeros((n, 1), np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(n)])
    )
    a.obsm["emb"] = centres[y] + rng.normal(0, 1, (n, 5))
    lab = pd.Series(np.array(list("abcd"))[y], index=a.obs_names, dtype=object)
    return a, y, lab


def test_audit_leaves_unlabelled_cells_out(tmp_path):
    a, y, lab = _labelled_blobs()
    lab.iloc[::3] = np.nan  # a third of the cells unlabelled, in every group
    a.obs["label"] = pd.Categorical(lab)
    table = tl.audit_annotation(a, "label", use_rep="emb", evidence=False)
    out = a.obs["audited_label"]
    assert out.isna().sum() == lab.isna().sum() and out[lab.isna()].isna().all()
    assert "nan" not in set(out.dropna().astype(str)) and "nan" not in set(table["proposed"])
    assert table.attrs["n_unlabelled"] == int(lab.isna().sum())


def test_subpopulations_refuse_a_missing_or_unknown_group(tiny_mdata):
    m = tiny_mdata.copy()
    m.obsm["emb"] = np.random.default_rng(0).normal(size=(m.n_obs, 4))
    lab = m.obs["cell_type"].astype(object)
    lab.iloc[:50] = np.nan
    m.obs["lab"] = lab
    with pytest.raises(ValueError, match="'nan' is not a label"):
        tl.find_subpopulations(m, "lab", "nan", use_rep="emb")
    with pytest.raises(ValueError, match="labels: \\['B intermediate'"):
        tl.find_subpopulations(m, "lab", "Platelet", use_rep="emb")
    with pytest.raises(KeyError, match="not in obs; available"):
        tl.find_subpopulations(m, "typo", "NK", use_rep="emb")


def test_trajectory_never_builds_a_lineage_through_missing_labels():
    rng = np.random.default_rng(0)
    t = rng.random(300)
    a = ad.AnnData(
        np.zeros((300, 1), np.float32), obs=pd.DataFrame(index=[f"c{i}" for i in range(300)])
    )
    a.obsm["emb"] = np.c_[np.cos(2 * t), np.sin(2 * t)] * 5 + rng.normal(0, 0.05, (300, 2))
    stage = np.array(["s0", "s1", "s2"], dtype=object)[np.minimum((t * 3).astype(int), 2)]
    stage[rng.choice(300, 40, replace=False)] = np.nan
    a.obs["stage"] = stage
    fit = tl.trajectory(a, "stage", "s0", use_rep="emb", seed=0)
    assert all("nan" not in lin for lin in fit["lineages"]) and fit["n_unlabelled"] == 40
    assert a.obs["pseudotime"][pd.isna(stage)].isna().all()
    with pytest.raises(ValueError, match="not among the clusters used"):
        tl.trajectory(a, "stage", "nan", use_rep="emb")
    with pytest.raises(KeyError, match="not in obs; available"):
        tl.trajectory(a, "stages", "s0", use_rep="emb")
    with pytest.raises(KeyError, match="compute the embedding first"):
        tl.trajectory(a, "stage", "s0", use_rep="X_missing")


# ----------------------------------------------------------- 6. gene activity
GENES = pd.DataFrame(
    {"chrom": ["chr1", "chr1"], "start": [2500, 9000], "end": [6000, 9500], "strand": ["+", "-"]},
    index=["G1", "G2"],
)


def _peaks(names):
    a = ad.AnnData(sp.csr_matrix(np.array([[1, 2, 4], [0, 1, 5]], dtype=np.float32)))
    a.var_names = names
    a.layers["counts"] = a.X.copy()
    return a


def test_gene_activity_matches_chromosome_names_and_numeric_strand():
    ucsc = tl.gene_activity(_peaks(["chr1-1000-1200", "chr1-5000-5100", "chr1-10500-10600"]), GENES)
    ensembl = tl.gene_activity(_peaks(["1-1000-1200", "1-5000-5100", "1-10500-10600"]), GENES)
    np.testing.assert_array_equal(ucsc.X.toarray(), ensembl.X.toarray())
    # G2 is on the minus strand: its promoter lies downstream (9500 .. 11500), peak 3 counts
    np.testing.assert_array_equal(ucsc.X.toarray(), [[3, 4], [1, 5]])
    numeric = GENES.assign(strand=[1, -1])
    np.testing.assert_array_equal(
        tl.gene_activity(
            _peaks(["chr1-1000-1200", "chr1-5000-5100", "chr1-10500-10600"]), numeric
        ).X.toarray(),
        ucsc.X.toarray(),
    )


def test_gene_activity_refuses_bad_coordinates_and_no_overlap():
    peaks = _peaks(["chr1-1000-1200", "chr1-5000-5100", "chr1-10500-10600"])
    with pytest.raises(ValueError, match="1 genes have missing coordinates"):
        tl.gene_activity(peaks, GENES.assign(start=[2500, np.nan]))
    with pytest.raises(ValueError, match="strand must be"):
        tl.gene_activity(peaks, GENES.assign(strand=["+", "?"]))
    with pytest.raises(ValueError, match="no peak overlaps any gene"):
        tl.gene_activity(_peaks(["chr2-1000-1200", "chr2-5000-5100", "chr2-10500-10600"]), GENES)
    many = pd.concat(
        [GENES] + [GENES.assign(chrom="chr9").rename(lambda g, i=i: f"{g}_{i}") for i in range(30)]
    )
    with pytest.warns(UserWarning, match="only 2 of 62 genes overlap any peak"):
        tl.gene_activity(peaks, many)


# ----------------------------------------------------------- 7. GSEA
def test_gsea_prerank_refuses_the_wrong_table_and_the_network(tmp_path):
    genes = [f"G{i}" for i in range(60)]
    gmt = tmp_path / "s.gmt"
    gmt.write_text("UP\tna\t" + "\t".join(genes[:15]) + "\n")
    de = pd.DataFrame({"names": genes, "scores": np.linspace(5, -5, 60)})
    with pytest.raises(
        ValueError, match="no 'group' column, so it cannot be the table of group 'NK'"
    ):
        tl.gsea_prerank(de, "NK", str(gmt))
    with pytest.raises(
        ValueError, match=r"group 'NK' is not in the DE table; its groups: \['B', 'T'\]"
    ):
        tl.gsea_prerank(pd.concat([de.assign(group="B"), de.assign(group="T")]), "NK", str(gmt))
    t = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="not a local file"):
        tl.gsea_prerank(de.assign(group="B"), "B", "KEGG_2021_Human")
    assert time.perf_counter() - t < 1  # refused at once, no network wait


# ----------------------------------------------------------- 8. degenerate settings
@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"n_hidden": 1}, ValueError, r"n_hidden must be in \[4, inf\]"),
        ({"n_hidden": 3}, ValueError, r"n_hidden must be in \[4, inf\]"),
        ({"n_views": -1}, ValueError, r"n_views must be in \[0, inf\]"),
        ({"n_negatives": -2}, ValueError, r"n_negatives must be in \[0, inf\]"),
        ({"weights": {"moc": -1.0}}, ValueError, r"weights\['moc'\] must be in \[0, inf\]"),
        ({"weights": {"contrast": 1.0}}, ValueError, "unknown loss weights"),
        ({"n_heads": 0}, ValueError, r"n_heads must be in \[1, inf\]"),
        ({"n_latent": 0}, ValueError, r"n_latent must be in \[2, inf\]"),
        ({"temperature": 0.0}, ValueError, r"temperature must be in \(0, inf\]"),
        ({"mask_rate": 1.0}, ValueError, r"mask_rate must be in \[0, 1\)"),
        ({"n_latent": 8.5}, TypeError, "n_latent must be an integer"),
        ({"seed": -1}, ValueError, r"seed must be in \[0, inf\]"),
        ({"device": "cuda"}, ValueError, "finds no CUDA GPU"),
        ({"device": "tpu"}, ValueError, "is not a torch device"),
    ],
)
def test_degenerate_or_invalid_settings_are_refused(small, kwargs, err, match, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a machine without GPU
    with pytest.raises(err, match=match):
        sci2cl.SCI2CL(small, **{**SMALL, **kwargs})


def test_validation_fraction_and_likelihood_keys(small):
    model = sci2cl.SCI2CL(small, **SMALL)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        model.train(validation_fraction=1.0, progress_bar=False)
    with pytest.raises(ValueError, match=r"validation_fraction must be in \[0, 1\)"):
        model.train(validation_fraction=-0.1, progress_bar=False)
    with pytest.raises(ValueError, match="likelihood keys must be among"):
        sci2cl.SCI2CL(small, likelihood={"rna": "zinb", "protein": "nb"})
    with pytest.raises(ValueError, match=r"likelihood\['atac'\] must be one of"):
        sci2cl.SCI2CL(small, likelihood={"atac": "poisson"})
    with pytest.raises(TypeError, match="pass it to the model"):
        sci2cl.SCI2CL.setup_mudata(small.copy(), likelihood="nb")


# ----------------------------------------------------------- 9. unhelpful errors made helpful
def test_corrupted_checkpoints_name_the_file(trained, small, tmp_path):
    path = trained.save(tmp_path / "m")
    data = (path / "model.pt").read_bytes()
    (path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="model.pt is truncated or corrupted") as e:
        sci2cl.SCI2CL.load(path, small)
    assert "weights_only" not in str(e.value)
    (path / "model.pt").write_bytes(data)
    (path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="model.json is truncated or corrupted"):
        sci2cl.SCI2CL.load(path, small)
    (path / "model.json").unlink()
    with pytest.raises(CheckpointError, match="model.json is missing"):
        sci2cl.SCI2CL.load(path, small)


def test_corrupted_cached_dataset_names_the_path(tmp_path):
    (tmp_path / "multiome").mkdir()
    (tmp_path / "multiome" / "bmmc_multiome_500a.h5mu").write_bytes(
        b"\x89HDF\r\n\x1a\n" + b"0" * 100
    )
    with pytest.raises(
        datasets.DatasetUnavailableError, match="bmmc_multiome_500a.h5mu: the file is truncated"
    ):
        datasets.load("bmmc_a", data_dir=tmp_path)


def test_data_problems_are_found_before_training(small):
    tiny = small[:5].copy()
    with pytest.raises(DataValidationError, match="at least 10 cells"):
        sci2cl.SCI2CL(tiny, **SMALL)
    m = small.copy()
    model = sci2cl.SCI2CL(m, **SMALL)
    pp.select_features(m, n_top_genes=30, n_top_peaks=50)
    with pytest.raises(DataValidationError, match="build the model again after select_features"):
        model.train(max_epochs=1, progress_bar=False)


def test_scrcl_refuses_invalid_settings(small):
    a = small["rna"].copy()
    with pytest.raises(DataValidationError, match="not set up"):
        sci2cl.SCRCL(a)
    sci2cl.SCRCL.setup_anndata(a)
    for kwargs, match in (
        ({"n_clusters": 1}, "n_clusters must be in"),
        ({"smoothing": (-1, 0)}, r"smoothing\[0\] must be in"),
        ({"temperature": 0}, "temperature must be in"),
        ({"spatial_key": "spatial"}, r"obsm\['spatial'\] not found"),
        ({"weights": {"lambda1": 1.0}}, "unknown loss weights"),
        ({"weights": {"refine": -1.0}}, r"weights\['refine'\] must be in"),
        ({"weights": dict.fromkeys(("align", "neighbour", "refine"), 0)}, "all loss weights are 0"),
    ):
        with pytest.raises((ValueError, DataValidationError), match=match):
            sci2cl.SCRCL(a, **kwargs)


# ----------------------------------------------------------- property-based: validators and loaders
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@st.composite
def count_matrices(draw):
    n = draw(st.integers(2, 12))
    d = draw(st.integers(1, 8))
    seed = draw(st.integers(0, 2**16))
    X = (
        np.random.default_rng(seed)
        .poisson(1.0, (n, d))
        .astype(draw(st.sampled_from([np.float32, np.float64, np.int32, np.int64])))
    )
    return X, draw(st.booleans())


def _adata(X, sparse):
    a = ad.AnnData(sp.csr_matrix(X) if sparse else X)
    a.obs_names = [f"c{i}" for i in range(X.shape[0])]
    a.var_names = [f"f{j}" for j in range(X.shape[1])]
    a.layers["counts"] = a.X.copy()
    return a


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count_matrices(),
    st.sampled_from(["nan", "inf", "-inf", "negative", "fraction", None]),
    st.data(),
)
def test_validate_finds_every_bad_value(mat, fault, data):
    X, sparse = mat
    X = X.astype(np.float64)
    if fault is not None:
        i = data.draw(st.integers(0, X.shape[0] - 1))
        j = data.draw(st.integers(0, X.shape[1] - 1))
        X[i, j] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf, "negative": -3, "fraction": 0.5}[
            fault
        ]
    a = _adata(X, sparse)
    expected = {
        "nan": "NaN",
        "inf": "NaN or infinite",
        "-inf": "NaN or infinite",
        "negative": "negative",
        "fraction": "non-integer",
    }
    if fault is None:
        pp.validate(a, count_modalities=("rna",))
    else:
        with pytest.raises(DataValidationError, match=expected[fault]):
            pp.validate(a, count_modalities=("rna",))


@settings(max_examples=40, deadline=None)
@given(count_matrices(), count_matrices(), st.randoms(use_true_random=False))
def test_align_modalities_pairs_cells_by_barcode(m1, m2, rnd):
    (X, s1), (Y, s2) = m1, m2
    n = min(X.shape[0], Y.shape[0])
    rna, atac = _adata(X[:n], s1), _adata(Y[:n], s2)
    order = list(range(n))
    rnd.shuffle(order)
    mdata = md.MuData({"rna": rna, "atac": atac[order].copy()})
    if order != sorted(order):
        with pytest.raises(DataValidationError, match="differently ordered"):
            pp.validate(mdata)
    pp.align_modalities(mdata)
    pp.validate(mdata)
    assert mdata["atac"].obs_names.equals(mdata["rna"].obs_names)
    Ya = mdata["atac"].X.toarray() if sp.issparse(mdata["atac"].X) else mdata["atac"].X
    np.testing.assert_array_equal(Ya, Y[:n])  # each barcode kept its own row


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(count_matrices(), count_matrices(), st.booleans())
def test_load_reads_back_what_a_user_places(tmp_path, m1, m2, same_order):
    """A GLUE-style pair in <data_dir>/pbmc10k/ loads with the same counts, cells paired by barcode."""
    (X, _), (Y, _) = m1, m2
    n = min(X.shape[0], Y.shape[0])
    folder = tmp_path / f"d{X.size}{Y.size}{same_order}" / "pbmc10k"
    folder.mkdir(parents=True, exist_ok=True)
    obs = pd.DataFrame({"cell_type": (["A", "B"] * n)[:n]}, index=[f"c{i}" for i in range(n)])
    rna = ad.AnnData(sp.csr_matrix(X[:n].astype(np.float32)), obs=obs)
    atac = ad.AnnData(sp.csr_matrix(Y[:n].astype(np.float32)), obs=obs)
    rna.var_names = [f"g{j}" for j in range(X.shape[1])]
    atac.var_names = [f"chr1-{100 * j}-{100 * j + 50}" for j in range(Y.shape[1])]
    if not same_order:
        atac = atac[::-1].copy()
    rna.write_h5ad(folder / "10x-Multiome-Pbmc10k-RNA.h5ad")
    atac.write_h5ad(folder / "10x-Multiome-Pbmc10k-ATAC.h5ad")
    m = datasets.load("pbmc10k", data_dir=folder.parent, download=False)
    np.testing.assert_array_equal(m["rna"].layers["counts"].toarray(), X[:n])
    np.testing.assert_array_equal(m["atac"].layers["counts"].toarray(), Y[:n])
    assert list(m.obs["cell_type"]) == list(obs["cell_type"])
