"""No silent failure, round 2: hostile inputs of a careless or unlucky user (issue 35's groups, in
order). Each case ends in the correct result or in an error of ours that names what is at fault."""

import json
import os
import warnings
from pathlib import Path

import anndata as ad
import matplotlib
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import sci2cl
from sci2cl import datasets, pl, pp, tl
from sci2cl.model import CheckpointError
from sci2cl.model._training import _strategy, check_strategy
from sci2cl.pp import DataValidationError

matplotlib.use("Agg")
SMALL = dict(n_latent=4, n_hidden=8, n_views=2)
FAST = dict(max_epochs=1, pretrain_epochs=0, progress_bar=False)
HYP = settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck))


def _sim(n=120, seed=3):
    m = datasets.simulate_multiome(n_cells=n, n_genes=40, n_peaks=60, seed=seed)
    pp.qc_filter(m)
    return m


@pytest.fixture(scope="module")
def data():
    m = _sim()
    sci2cl.SCI2CL.setup_mudata(m, layer="counts")
    return m


@pytest.fixture(scope="module")
def model(data):
    return sci2cl.SCI2CL(data, seed=0, **SMALL).train(**FAST)


# ------------------------------------------------------------------ 1. embeddings on the right cells
@HYP
@given(st.randoms(use_true_random=False))
def test_embeddings_follow_the_cells_whatever_their_order(model, data, rnd):
    ref = pd.DataFrame(model.get_latent_representation(data, key_added=None), index=data.obs_names)
    m = data.copy()
    order = list(range(m.n_obs))
    rnd.shuffle(order)
    assume(order != sorted(order))
    m.mod["rna"] = m["rna"][order].copy()  # one modality re-sorted, no update()
    with pytest.raises(DataValidationError, match="align_modalities"):
        model.get_latent_representation(m)
    pp.align_modalities(m)  # the fix the error names
    assert m.obs_names.equals(m["rna"].obs_names) and m.obs_names.equals(m["atac"].obs_names)
    z = model.get_latent_representation(m, key_added="X_sci2cl")
    np.testing.assert_allclose(z, ref.loc[m.obs_names].to_numpy(), atol=1e-5)
    np.testing.assert_allclose(m.obsm["X_sci2cl"], ref.loc[m.obs_names].to_numpy(), atol=1e-5)


def test_align_keeps_the_mudata_order(data):
    m = data.copy()
    m.mod["atac"] = m["atac"][::-1].copy()
    pp.align_modalities(m)
    assert m.obs_names.equals(data.obs_names) and m["atac"].obs_names.equals(data.obs_names)


@pytest.mark.parametrize("size", [80, 200])
def test_modality_replaced_without_update_is_refused(data, size):
    m = data.copy()
    other = _sim(size, seed=9)
    m.mod["rna"] = other["rna"][:, m["rna"].var_names].copy()
    with pytest.raises(DataValidationError, match="cells"):
        sci2cl.SCI2CL(m, **SMALL)


# ------------------------------------------------------------------ 2. user files are never deleted
@HYP
@given(
    st.lists(
        st.sampled_from(["notes.txt", "figures/umap.png", "a/b/c.csv", ".hidden"]), unique=True
    )
)
def test_save_keeps_every_file_of_the_user(model, tmp_path_factory, files):
    folder = tmp_path_factory.mktemp("m")
    (folder / "m").mkdir()
    for f in files:
        (folder / "m" / f).parent.mkdir(parents=True, exist_ok=True)
        (folder / "m" / f).write_text(f)
    if files:
        with pytest.raises(FileExistsError, match="other files"):
            model.save(folder / "m")
    model.save(folder / "m", overwrite=True)  # added beside the user's files
    with pytest.raises(FileExistsError, match="holds a checkpoint"):
        model.save(folder / "m")
    model.save(folder / "m", overwrite=True)  # replaced: only the checkpoint's own files
    for f in files:
        assert (folder / "m" / f).read_text() == f
    assert sorted(p.name for p in folder.iterdir()) == ["m"]  # no temporary left behind
    assert not [p for p in (folder / "m").iterdir() if ".tmp" in p.name]


def test_save_through_a_symlink_and_to_the_working_folder(model, data, tmp_path):
    (tmp_path / "real").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "link")
    model.save(tmp_path / "link", overwrite=True)
    assert (tmp_path / "link").is_symlink() and (tmp_path / "real" / "model.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]
    (tmp_path / "here").mkdir()
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path / "here")
        model.save(".", overwrite=True)
    finally:
        os.chdir(cwd)
    assert (tmp_path / "here" / "model.json").exists()
    sci2cl.SCI2CL.load(tmp_path / "here", data)


def test_disk_simulator_never_touches_a_users_tmp_file(tmp_path):
    mine = tmp_path / "atlas.h5mu.tmp"
    mine.write_text("mine")
    datasets.simulate_multiome_to_disk(tmp_path / "atlas.h5mu", n_cells=30, n_genes=5, n_peaks=6)
    assert mine.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atlas.h5mu", "atlas.h5mu.tmp"]


# ------------------------------------------------------------------ 3. an embedding lost on write
@pytest.mark.parametrize(
    ("key", "err", "match"),
    [("rna", ValueError, "name of a modality"), (123, TypeError, "key_added must be")],
)
def test_key_added_that_would_be_lost_is_refused(model, data, key, err, match):
    with pytest.raises(err, match=match):
        model.get_latent_representation(data, key_added=key)


# ------------------------------------------------------------------ 4. the disk workflow joins up
def test_model_trained_in_memory_embeds_and_loads_a_backed_atlas(model, data, tmp_path):
    disk = md.MuData({m: ad.AnnData(data[m].layers["counts"].astype(np.float32), obs=data[m].obs,
                                    var=data[m].var) for m in ("rna", "atac")})  # fmt: skip
    disk.write_h5mu(tmp_path / "atlas.h5mu")
    b = md.read_h5mu(tmp_path / "atlas.h5mu", backed=True)
    with pytest.raises(DataValidationError, match="layer"):
        model.get_latent_representation(b, key_added=None)  # counts are in X there
    z = model.get_latent_representation(b, key_added=None, layer=None)
    np.testing.assert_allclose(z, model.get_latent_representation(data, key_added=None), atol=1e-5)
    model.save(tmp_path / "m")
    again = sci2cl.SCI2CL.load(tmp_path / "m", b, layer=None)
    np.testing.assert_allclose(again.get_latent_representation(b, key_added=None), z, atol=1e-5)


def test_preprocessing_on_backed_data_works_or_says_how(tmp_path):
    p = datasets.simulate_multiome_to_disk(tmp_path / "a.h5mu", n_cells=90, n_genes=30, n_peaks=40)
    b = md.read_h5mu(p, backed=True)
    with pytest.raises(ValueError, match="to_memory"):
        pp.select_features(b, 10, 10, layer=None)
    report = pp.qc_filter(b, min_features=0, min_cells=0, layer=None)  # nothing to drop: a report
    assert report == {m: {"cells_dropped": 0, "features_dropped": 0} for m in ("rna", "atac")}
    with pytest.raises(ValueError, match="cannot do in place"):
        pp.qc_filter(b, min_features=10**6, layer=None)
    assert pp.align_modalities(b) is b  # already aligned: nothing read
    with pytest.raises(ValueError, match="view of a backed MuData"):
        sci2cl.SCI2CL.setup_mudata(b[:50], layer=None)
    b.file.close()


# ------------------------------------------------------------------ 5. training arguments
@HYP
@given(
    st.sampled_from([np.int64(1), np.int32(1), 1]),
    st.sampled_from([np.int64(0), np.uint8(0), 0]),
)
def test_numpy_integers_are_epochs(data, epochs, pre):
    m = sci2cl.SCI2CL(data, seed=0, **SMALL)
    m.train(max_epochs=epochs, pretrain_epochs=pre, progress_bar=False)
    assert m.is_trained


@pytest.mark.parametrize("flag", ["no", 1, None, np.array([True])])
def test_flags_must_be_bools(data, flag):
    with pytest.raises(TypeError, match="early_stopping"):
        sci2cl.SCI2CL(data, **SMALL).train(early_stopping=flag, **FAST)


@pytest.mark.parametrize("name", ["ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"])
def test_every_ddp_strategy_finds_unused_parameters(name):
    s = _strategy(check_strategy(name, devices=2), devices=2)
    assert s._ddp_kwargs.get("find_unused_parameters") is True
    assert _strategy("auto", devices=2)._ddp_kwargs.get("find_unused_parameters") is True
    with pytest.raises(ValueError, match="strategy"):
        check_strategy("fsdp_unknown", devices=2)


def test_early_stopping_off_only_with_a_warning():
    few = _sim(40, seed=1)
    sci2cl.SCI2CL.setup_mudata(few)
    with pytest.warns(UserWarning, match="early stopping"):
        sci2cl.SCI2CL(few, **SMALL).train(max_epochs=2, pretrain_epochs=0, progress_bar=False)


def test_modality_weights_of_an_untrained_model_raise(data):
    with pytest.raises(RuntimeError, match="not trained"):
        _ = sci2cl.SCI2CL(data, **SMALL).modality_weights_


# ------------------------------------------------------------------ 6. set-up and data
@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"modalities": {"rna": "rna", "atac": "rna"}}, ValueError, "same modality"),
        ({"modalities": ["rna", "atac"]}, TypeError, "modalities must be a dict"),
        ({"likelihood": "zinb"}, TypeError, "likelihood"),
    ],
)
def test_setup_refuses_what_it_cannot_use(kwargs, err, match):
    with pytest.raises(err, match=match):
        sci2cl.SCI2CL.setup_mudata(_sim(60), **kwargs)


def _with(m, mod, row, value):
    X = m[mod].layers["counts"].astype(np.float64).toarray()
    X[row] = value
    m[mod].layers["counts"] = sp.csr_matrix(X)
    return m


@pytest.mark.parametrize(
    ("mod", "value", "likelihood", "match"),
    [
        ("atac", -1.0, {"atac": "bernoulli"}, "negative values"),
        ("rna", 3e38, "zinb", "above 16,777,216"),
    ],
)
def test_values_a_likelihood_cannot_take_are_refused(mod, value, likelihood, match):
    m = _with(_sim(60), mod, 0, value)
    sci2cl.SCI2CL.setup_mudata(m)
    with pytest.raises(DataValidationError, match=match):
        sci2cl.SCI2CL(m, likelihood=likelihood, **SMALL)
    with pytest.raises(TypeError, match="likelihood"):
        sci2cl.SCI2CL(m, likelihood=None, **SMALL)


def test_cells_without_counts_are_warned_about():
    m = _with(_with(_sim(60), "rna", slice(0, 3), 0), "atac", slice(0, 3), 0)
    sci2cl.SCI2CL.setup_mudata(m)
    with pytest.warns(UserWarning, match="3 cells have no value in modality 'rna'.*qc_filter"):
        sci2cl.SCI2CL(m, **SMALL)


# ------------------------------------------------------------------ 7. checkpoints
def _edit_checkpoint(path: Path, fn) -> None:
    meta = json.loads((path / "model.json").read_text())
    fn(meta)
    (path / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d["init"].update(new_option=1), "new_option.*format 2"),
        (lambda d: d.pop("feature_names"), "no feature names"),
        (lambda d: d.update(init=[1, 2]), "not a table of parameters"),
    ],
)
def test_damaged_or_newer_checkpoints_name_the_file(model, data, tmp_path, edit, match):
    model.save(tmp_path / "m")
    _edit_checkpoint(tmp_path / "m", edit)
    with pytest.raises(CheckpointError, match=match) as e:
        sci2cl.SCI2CL.load(tmp_path / "m", data)
    assert "model.json" in str(e.value)


def test_new_data_with_other_modality_names_loads(model, data, tmp_path):
    model.save(tmp_path / "m")
    other = md.MuData({"gex": data["rna"].copy(), "peaks": data["atac"].copy()})
    sci2cl.SCI2CL.setup_mudata(other, modalities={"rna": "gex", "atac": "peaks"})
    z = sci2cl.SCI2CL.load(tmp_path / "m", other).get_latent_representation(other, key_added=None)
    np.testing.assert_allclose(z, model.get_latent_representation(data, key_added=None), atol=1e-5)


# ------------------------------------------------------------------ 8. analyses
def _blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(list("ab")), n // 2)
    a = ad.AnnData(
        sp.csr_matrix(rng.poisson(2, (n, 20)).astype(np.float32)),
        obs=pd.DataFrame({"lab": y}, index=[f"c{i}" for i in range(n)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(20)]),
    )
    a.layers["counts"] = a.X.copy()
    a.obsm["emb"] = np.where(y[:, None] == "a", 0.0, 8.0) + rng.normal(0, 1, (n, 3))
    return a


def test_audit_table_prints_and_concatenates():
    a = _blobs()
    t = tl.audit_annotation(a, "lab", use_rep="emb", evidence=False)
    repr(t), pd.concat([t, t])
    assert all(np.ndim(v) == 0 for v in t.attrs.values())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_neighbors": 0}, "n_neighbors"),
        ({"alpha": 5}, "alpha"),
        ({"threshold": -1}, "threshold"),
    ],
)
def test_audit_settings_out_of_range_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tl.audit_annotation(_blobs(), "lab", use_rep="emb", **kwargs)


def test_trajectory_refuses_one_cluster_and_warns_about_far_jumps():
    a = _blobs()
    with pytest.raises(ValueError, match="cannot also be an end cluster"):
        tl.trajectory(a, "lab", "a", end=["a"], use_rep="emb")
    one = a[a.obs["lab"] == "a"].copy()
    with pytest.raises(ValueError, match="two"):
        tl.trajectory(one, "lab", "a", use_rep="emb")
    rng = np.random.default_rng(0)
    n = 300
    stage = np.repeat(np.array(list("vwxyz")), n // 5)
    far = np.where(stage == "z", 1000.0, 0.0)  # the last stage far from the four on a line
    pos = np.repeat(np.arange(5.0), n // 5)
    b = ad.AnnData(
        np.zeros((n, 1)), obs=pd.DataFrame({"stage": stage}, index=[f"c{i}" for i in range(n)])
    )
    b.obsm["emb"] = np.c_[pos + far + rng.normal(0, 0.2, n), rng.normal(0, 0.2, n)]
    with pytest.warns(UserWarning, match="times the median step"):
        tl.trajectory(b, "stage", "v", use_rep="emb")


def test_duplicated_names_and_bad_settings_in_subpopulations():
    a = _blobs()
    a.obs_names = ["c0"] + list(a.obs_names[1:-1]) + ["c0"]
    with pytest.raises(ValueError, match="duplicated"):
        tl.find_subpopulations(a, "lab", "a", use_rep="emb")
    b = _blobs()
    for sub in (0, 1.5):
        with pytest.raises(ValueError, match="subsample"):
            tl.find_subpopulations(b, "lab", "a", use_rep="emb", subsample=sub)
    m = md.MuData({"rna": b})
    m.obs["lab"], m.obsm["emb"] = b.obs["lab"].to_numpy(), b.obsm["emb"]
    with pytest.raises(ValueError, match="de_modality='protein'"):
        tl.find_subpopulations(m, "lab", "a", use_rep="emb", de_modality="protein")


def _peaks_and_genes():
    atac = ad.AnnData(
        sp.csr_matrix(np.ones((4, 3), np.float32)),
        var=pd.DataFrame(index=["chr1-100-200", "chr1-5000-5100", "chr2-100-200"]),
    )
    atac.layers["counts"] = atac.X.copy()
    genes = pd.DataFrame(
        {"chrom": ["chr1", "chr2"], "start": [150, 150], "end": [1000, 900], "strand": ["+", "-"]},
        index=["A", "B"],
    )
    return atac, genes


def test_gene_activity_refuses_what_it_cannot_read():
    atac, genes = _peaks_and_genes()
    dup = pd.concat([genes, genes.iloc[:1]])
    with pytest.raises(ValueError, match="duplicated names"):
        tl.gene_activity(atac, dup)
    text = genes.assign(start=["x", "150"])
    with pytest.raises(ValueError, match="must hold numbers"):
        tl.gene_activity(atac, text)
    with pytest.raises(ValueError, match="upstream"):
        tl.gene_activity(atac, genes, upstream=-(10**9))
    atac.var["gene"] = ["A", "nan", "NA"]  # texts that mean "no gene"
    out = tl.gene_activity(atac)
    assert list(out.var_names) == ["A"]


def test_gsea_refuses_tables_it_cannot_rank(tmp_path):
    de = pd.DataFrame(
        {"group": "g", "names": [f"G{i}" for i in range(30)], "scores": np.arange(30.0)}
    )
    gmt = tmp_path / "s.gmt"
    gmt.write_text("SET\tna\t" + "\t".join(f"G{i}" for i in range(15)) + "\n")
    cases = [
        (de.iloc[:0], {}, "not in the DE table"),
        (de.assign(scores=np.nan), {}, "NaN"),
        (de, {"min_size": 20, "max_size": 10}, "min_size"),
    ]
    for table, kw, match in cases:
        with pytest.raises(ValueError, match=match):
            tl.gsea_prerank(table, "g", str(gmt), **kw)
    with pytest.raises(ValueError, match="no set with any gene"):
        tl.gsea_prerank(de, "g", {})
    binary = tmp_path / "b.gmt"
    binary.write_bytes(b"\x00\xff\xfe" * 50)
    with pytest.raises(ValueError, match=str(binary.name)):
        tl.gsea_prerank(de, "g", str(binary))
    lower = de.assign(names=de["names"].str.lower())
    with pytest.raises(LookupError, match="to_human"):
        tl.gsea_prerank(lower, "g", str(gmt))


# ------------------------------------------------------------------ 9. datasets and plots
def _registered_mirror(tmp_path, name="snare_adbrain"):
    info = datasets.DATASETS[name]
    p = tmp_path / info.path
    p.parent.mkdir(parents=True, exist_ok=True)
    return p


def test_a_file_of_the_wrong_kind_names_its_path(tmp_path):
    p = _registered_mirror(tmp_path)
    p.write_text("peak,gene\n")
    with pytest.raises(datasets.DatasetUnavailableError, match=str(p)):
        datasets.load("snare_adbrain", data_dir=tmp_path)


def test_a_paired_file_with_one_modality_is_refused(tmp_path):
    p = _registered_mirror(tmp_path)
    m = _sim(30)
    kind = p.suffix
    if kind == ".h5mu":
        md.MuData({"rna": m["rna"].copy()}).write_h5mu(p)
    else:
        m["rna"].write_h5ad(p)
    with pytest.raises(DataValidationError, match="'rna' and 'atac'"):
        datasets.load("snare_adbrain", data_dir=tmp_path)


def test_download_false_creates_no_folder(tmp_path):
    with pytest.raises(datasets.DatasetUnavailableError):
        datasets.load("pbmc10k", data_dir=tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("plot", ["scatter", "embedding_grid", "spatial_map"])
def test_plots_grey_out_missing_labels_and_check_shapes(plot):
    xy = np.random.default_rng(0).normal(size=(30, 2))
    lab = np.array(["a"] * 10 + ["b"] * 10 + [None] * 5 + [np.nan] * 5, dtype=object)
    draw = {
        "scatter": lambda x, y: pl.scatter(x, y).figure,
        "embedding_grid": lambda x, y: pl.embedding_grid({"m": x}, y),
        "spatial_map": lambda x, y: pl.spatial_map(x, y).figure,
    }[plot]
    fig = draw(xy, lab)
    texts = {t.get_text() for ax in fig.axes for leg in [ax.get_legend()] if leg for t in leg.texts}
    texts |= {t.get_text() for leg in fig.legends for t in leg.texts}
    assert texts == {"a", "b", "unlabelled (10)"}
    with pytest.raises(ValueError, match="one label per cell"):
        draw(xy, lab[:12])
    with pytest.raises(ValueError, match="no cells"):
        draw(np.zeros((0, 2)), lab[:0])
    matplotlib.pyplot.close("all")


# ------------------------------------------------------------------ 10. scRCL
def _scrcl_data(coords):
    a = _sim(80)["rna"].copy()
    a.obsm["spatial"] = coords
    sci2cl.SCRCL.setup_anndata(a)
    return a


@pytest.mark.parametrize(
    ("coords", "err", "match"),
    [
        (np.zeros((80, 2)), DataValidationError, "same point"),
        (np.c_[np.arange(80.0), np.array(["x"] * 80, dtype=object)], DataValidationError, "text"),
    ],
)
def test_scrcl_refuses_coordinates_that_make_no_graph(coords, err, match):
    with pytest.raises(err, match=match):
        sci2cl.SCRCL(_scrcl_data(coords), spatial_key="spatial")


def test_scrcl_refuses_counts_without_variation():
    a = _sim(80)["rna"].copy()
    a.layers["counts"] = sp.csr_matrix(np.ones(a.shape, np.float32))
    a.X = a.layers["counts"].copy()
    sci2cl.SCRCL.setup_anndata(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataValidationError, match="vari"):
            sci2cl.SCRCL(a)


def test_preprocessing_after_muons_filters_on_named_cell_indices():
    """Modalities whose cell index is named (as in files written by other tools), filtered by muon
    first: our pp functions still update the MuData (mudata cannot join differently named ones)."""
    import muon as mu

    m = _sim(100)
    for a in m.mod.values():
        a.obs.index.name = "barcode"
    mu.pp.filter_obs(m, m.obs_names[:80])
    pp.qc_filter(m)
    assert m.n_obs == m["rna"].n_obs == m["atac"].n_obs <= 80
    assert m.obs_names.equals(m["rna"].obs_names)
