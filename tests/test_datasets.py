import hashlib
import http.server
import threading
from functools import partial
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sci2cl import datasets as data
from sci2cl import pp
from sci2cl.datasets import DatasetUnavailableError, RemoteFile
from sci2cl.pp import DataValidationError


@pytest.fixture
def http_server(tmp_path):
    """Serve tmp_path/'srv' on 127.0.0.1 for the download tests."""
    root = tmp_path / "srv"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()


def test_download_good_hash_then_cached(http_server, tmp_path):
    root, url = http_server
    (root / "f.txt").write_bytes(b"hello counts\n")
    sha = hashlib.sha256(b"hello counts\n").hexdigest()
    cache = tmp_path / "cache"
    p = data.fetch_file(RemoteFile("f.txt", url + "f.txt", sha), cache)
    assert p.read_bytes() == b"hello counts\n"
    (root / "f.txt").unlink()  # second call must not download
    assert data.fetch_file(RemoteFile("f.txt", url + "f.txt", sha), cache) == p


def test_download_bad_hash_fails_clearly(http_server, tmp_path):
    root, url = http_server
    (root / "f.txt").write_bytes(b"tampered")
    with pytest.raises(ValueError, match="hash"):
        data.fetch_file(RemoteFile("f.txt", url + "f.txt", "0" * 64), tmp_path / "c")


def test_trust_on_first_use_sidecar(http_server, tmp_path):
    root, url = http_server
    (root / "g.txt").write_bytes(b"v1")
    cache = tmp_path / "c"
    p = data.fetch_file(RemoteFile("g.txt", url + "g.txt"), cache)
    assert (cache / "g.txt.sha256").read_text().strip() == hashlib.sha256(b"v1").hexdigest()
    p.write_bytes(b"corrupted")
    with pytest.raises(ValueError, match="SHA-256"):
        data.fetch_file(RemoteFile("g.txt", url + "g.txt"), cache)


def test_missing_file_message(http_server, tmp_path):
    _, url = http_server
    with pytest.raises(
        DatasetUnavailableError, match=r"missing\. Download it from .*missing\.h5ad and place it at"
    ):
        data.fetch_file(RemoteFile("missing.h5ad", url + "missing.h5ad"), tmp_path / "c")
    with pytest.raises(DatasetUnavailableError, match="place it at"):
        data.fetch_file(RemoteFile("x.h5ad", url + "x.h5ad"), tmp_path / "c", download=False)


def test_load_paper_dataset_from_local_copy(tmp_path):
    """A GLUE-style pair placed in <data_dir>/pbmc10k/ is read without any download."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "pbmc10k"
    folder.mkdir()
    obs = pd.DataFrame(
        {"cell_type": ["CD14 Mono", "B naive"] * 10}, index=[f"c{i}" for i in range(20)]
    )
    for mod, n in (("RNA", 15), ("ATAC", 25)):
        a = ad.AnnData(sp.csr_matrix(rng.poisson(1, (20, n)).astype(np.float32)), obs=obs)
        a.var_names = [f"{mod}{j}" for j in range(n)]
        a.write_h5ad(folder / f"10x-Multiome-Pbmc10k-{mod}.h5ad")
    m = data.load("pbmc10k", data_dir=tmp_path, download=False)
    assert isinstance(m, md.MuData) and m["rna"].shape == (20, 15) and m["atac"].shape == (20, 25)
    assert "counts" in m["rna"].layers and m.obs["cell_type"].nunique() == 2
    with pytest.raises(DatasetUnavailableError, match="Ma-2020-RNA.h5ad"):
        data.load("ma2020", data_dir=tmp_path, download=False)
    with pytest.raises(KeyError, match="unknown dataset"):
        data.load("nope")


def _pair(n=30, seed=0):
    rng = np.random.default_rng(seed)
    mods = {}
    for m, d in (("rna", 40), ("atac", 20)):
        mean = rng.gamma(1.0, 2.0, d)
        a = ad.AnnData(
            sp.csr_matrix(rng.poisson(rng.gamma(0.5, mean / 0.5, (n, d))).astype(np.float32))
        )
        a.obs_names = [f"c{i}" for i in range(n)]
        a.var_names = [f"{m}{j}" for j in range(d)]
        a.layers["counts"] = a.X.copy()
        mods[m] = a
    return md.MuData(mods)


def test_validation_errors():
    m = _pair()
    pp.validate(m, label_key=None)
    bad = _pair()
    bad["rna"].layers["counts"].data[0] = -1
    with pytest.raises(DataValidationError, match="negative"):
        pp.validate(bad)
    bad = _pair()
    bad["rna"].layers["counts"].data[0] = 1.5
    with pytest.raises(DataValidationError, match="non-integer"):
        pp.validate(bad)
    bad = _pair()
    bad["atac"].layers["counts"].data[0] = np.nan
    with pytest.raises(DataValidationError, match="NaN"):
        pp.validate(bad)
    with pytest.raises(DataValidationError, match="label column 'cell_type' not found"):
        pp.validate(m, label_key="cell_type")
    bad = _pair()
    bad["rna"].var_names = ["g"] * 40
    with pytest.raises(DataValidationError, match="duplicated feature names"):
        pp.validate(bad)
    bad = _pair()
    bad["rna"].layers["counts"] = sp.csr_matrix(bad["rna"].shape, dtype=np.float32)
    with pytest.raises(DataValidationError, match="empty cells"):
        pp.validate(bad, allow_empty=False)


def test_align_modalities():
    m = _pair()
    shuffled = md.MuData({"rna": m["rna"][::-1].copy(), "atac": m["atac"][5:].copy()})
    with pytest.raises(DataValidationError, match="differently ordered"):
        pp.validate(shuffled)
    al = pp.align_modalities(shuffled)
    assert al["rna"].obs_names.equals(al["atac"].obs_names) and al.n_obs == 25
    few = md.MuData({"rna": m["rna"][:10].copy(), "atac": m["atac"][10:].copy()})
    with pytest.raises(DataValidationError, match="only 0 cells are shared"):
        pp.align_modalities(few)


def test_preprocessing_reports():
    m = _pair(n=60)
    c = m["rna"].layers["counts"].toarray()
    c[:, 0] = 0
    m["rna"].layers["counts"] = sp.csr_matrix(c)
    m["rna"].X = m["rna"].layers["counts"].copy()
    zero_cols = int((np.asarray(m["rna"].layers["counts"].sum(0)).ravel() == 0).sum())
    rep = pp.qc_filter(m)
    assert zero_cols >= 1 and rep["rna"]["features_dropped"] == zero_cols
    kept = pp.select_features(m, n_top_genes=5, n_top_peaks=7)
    assert kept == {"rna": 5, "atac": 7} and m["rna"].n_vars == 5 and m["atac"].n_vars == 7


def test_simulator_reproducible_and_planted():
    a = data.simulate_multiome(n_cells=400, n_genes=100, n_peaks=300, seed=4)
    b = data.simulate_multiome(n_cells=400, n_genes=100, n_peaks=300, seed=4)
    assert (a["rna"].X != b["rna"].X).nnz == 0 and (a["atac"].X != b["atac"].X).nnz == 0
    obs = a.obs
    assert set(obs.loc[obs.true_cell_type == "CD14 Mono", "true_subtype"]) == {
        "Mono-1",
        "Mono-2",
        "Mono-3",
    }
    wrong = obs.cell_type != obs.true_cell_type
    assert wrong.any() and set(obs.true_cell_type[wrong]) == {"CD4 naive T"}
    path = obs.true_pseudotime.notna()
    assert set(obs.true_cell_type[path]) == {"HSPC", "B naive", "B intermediate", "B memory"}
    for m in ("rna", "atac"):
        X = a[m].layers["counts"]
        assert np.allclose(X.data, np.round(X.data))


def test_simulator_integration_beats_single_modality():
    """NK/ILC differ only in ATAC, CD8 naive/TEM only in RNA: each modality alone misses one pair."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    m = data.simulate_multiome(n_cells=2000, n_genes=300, n_peaks=800, seed=0)
    feats = {}
    for mod in ("rna", "atac"):
        X = m[mod].layers["counts"].toarray()
        feats[mod] = np.log1p(X / X.sum(1, keepdims=True) * 1e4)
    t = m.obs.true_cell_type.astype(str).values

    def acc(X, a, b):
        s = np.isin(t, [a, b])
        return cross_val_score(LogisticRegression(max_iter=500), X[s], t[s], cv=3).mean()

    assert acc(feats["rna"], "NK", "ILC") < 0.65 < 0.9 < acc(feats["atac"], "NK", "ILC")
    assert (
        acc(feats["atac"], "CD8 naive T", "CD8 TEM")
        < 0.65
        < 0.9
        < acc(feats["rna"], "CD8 naive T", "CD8 TEM")
    )


MIRROR = {
    "scicar_kidney": ((4747, 5000, 9998), 14),
    "snare_adbrain": ((5232, 1677, 25734), 15),
    "bmmc_a": ((500, 600, 600), 21),
    "bmmc_b": ((500, 600, 600), 21),
    "a549_dex": ((2641, 1185, 52761), 3),
    "pbmc10k_tiny": ((1000, 45, 174), 0),
    "baron_human": ((2142, 20125), 14),
    "ifnb_pbmc": ((2800, 14053), 13),
    "pbmc4k": ((4271, 2000), 8),
    "cbmc": ((8617, 2000), 15),
    "mouse_bladder": ((2746, 2003), 16),
    "cellmix_rna": ((1047, 18666), 4),
    "camp2015": ((220, 12694), 7),
}


@pytest.mark.parametrize("name", list(MIRROR))
def test_mirror_datasets_load(shared_data, name):
    d = data.load(name, data_dir=shared_data)
    shape, n_types = MIRROR[name]
    info = data.DATASETS[name]
    if isinstance(d, md.MuData):
        assert (d.n_obs, d["rna"].n_vars, d["atac"].n_vars) == shape
    else:
        assert d.shape == shape
    if info.label_key:
        assert d.obs[info.label_key].nunique() == n_types


def test_load_cellmix_from_local_geo_tables(tmp_path):
    """GEO-style feature x cell count tables plus the label table are read without any download."""
    rng = np.random.default_rng(0)
    cells = [f"BC{i:02d}" for i in range(12)]
    folder = tmp_path / "cellmix"
    folder.mkdir()
    for name, prefix in (("cDNA", "gene"), ("chromatin", "chr1:")):
        feats = [
            f"{prefix}{j}" if prefix == "gene" else f"chr1:{100 * j}-{100 * j + 50}"
            for j in range(8)
        ]
        df = pd.DataFrame(rng.poisson(2, (8, 12)), index=feats, columns=cells)
        df.to_csv(folder / f"GSE126074_CellLineMixture_SNAREseq_{name}_counts.tsv.gz", sep="\t")
    (tmp_path / "labels").mkdir()
    pd.DataFrame({"cell": cells[:10], "cell_line": ["H1", "BJ"] * 5}).to_csv(
        tmp_path / "labels" / "snare_cellmix_cell_metadata.txt", sep="\t", index=False
    )
    m = data.load("cellmix", data_dir=tmp_path, download=False)
    assert m.n_obs == 10 and m["rna"].n_vars == 8 and m["atac"].n_vars == 8
    assert set(m.obs["cell_type"]) == {"H1", "BJ"}


def test_tfidf_lsi_handles_empty_cells():
    m = _pair(n=40)
    c = m["atac"].layers["counts"].toarray()
    c[:3] = 0
    m["atac"].layers["counts"] = sp.csr_matrix(c)
    with pytest.warns(UserWarning, match="3 cells have no ATAC counts"):
        pp.tfidf_lsi(m["atac"], n_comps=5)
    lsi = m["atac"].obsm["X_lsi"]
    assert lsi.shape == (40, 5) and np.isfinite(lsi).all() and (lsi[:3] == 0).all()


def test_select_features_warns_about_cells_left_empty():
    """A cell whose only open peak is not selected is reported, and qc_filter drops it."""
    m = _pair(n=40)
    c = m["atac"].layers["counts"].toarray()
    c[:, 0] = 0
    c[0] = 0
    c[0, 0] = 1  # cell 0: one count, in the least open peak
    m["atac"].layers["counts"] = sp.csr_matrix(c)
    with pytest.warns(UserWarning, match="1 cells have no counts in the .* selected atac"):
        pp.select_features(m, n_top_genes=None, n_top_peaks=m["atac"].n_vars - 1)
    assert pp.qc_filter(m)["atac"]["cells_dropped"] == 1 and m.n_obs == 39


def test_disk_simulator_writes_chunks_that_read_back_backed(tmp_path):
    import mudata as md

    from sci2cl import metrics

    f = data.simulate_multiome_to_disk(
        tmp_path / "big.h5mu", 2500, 200, 300, chunk_size=1000, seed=3
    )
    g = data.simulate_multiome_to_disk(
        tmp_path / "again.h5mu", 2500, 200, 300, chunk_size=1000, seed=3
    )
    assert not list(tmp_path.glob("*.tmp"))
    m = md.read_h5mu(f, backed=True)
    assert m.n_obs == 2500 and m["rna"].shape == (2500, 200) and m["atac"].shape == (2500, 300)
    rows = np.arange(900, 1100)  # across a chunk border
    x = m["rna"].X[rows]
    assert sp.issparse(x) and np.allclose(x.data, np.round(x.data)) and x.nnz > 0
    m2 = md.read_h5mu(g, backed=True)
    assert (m2["atac"].X[rows] != m["atac"].X[rows]).nnz == 0  # reproducible
    assert m.obs["cell_type"].tolist() == m2.obs["cell_type"].tolist()
    # the types are in the counts: KMeans on the RNA's PCs finds them
    a = ad.AnnData(m["rna"].X[np.arange(2500)])
    X = pp.pca(a, 30, layer=None, seed=0)
    lab = metrics.kmeans_labels(X, 11, seed=0)
    assert metrics.nmi(m.obs["cell_type"].astype(str), lab) > 0.5


def test_paper_format_files_load_as_the_papers_datasets(tmp_path):
    """Files in the formats of PBMC-10K (GLUE pair) and PBMC-3K (10x ARC h5 + Azimuth) load."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "paper_format_files",
        Path(__file__).resolve().parents[1] / "scripts" / "paper_format_files.py",
    )
    pf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pf)
    pf.write(tmp_path, n_cells=300, seed=1)
    for name in ("pbmc10k", "pbmc3k"):
        m = data.load(name, data_dir=tmp_path, download=False)
        assert m.n_obs == 300 and set(m.mod) == {"rna", "atac"}
        assert {"VCAN", "HLA-DRA", "NPC2", "SELL", "CCR7", "ITGAL"} <= set(m["rna"].var_names)
        assert "CD14 Mono" in set(m.obs["cell_type"].astype(str))
        assert "counts" in m["rna"].layers and "counts" in m["atac"].layers
        pp.validate(m, label_key="cell_type")  # raw integer counts, unique names, same cells


def test_simulator_regimes_change_what_each_modality_carries():
    """``atac_types``: three pairs told apart by ATAC alone, none by RNA alone; ``balanced``: ATAC
    as deep as RNA; the book's regime is the default, draw for draw."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    kw = dict(n_cells=2000, n_genes=300, n_peaks=800, seed=0)
    book = data.simulate_multiome(**kw)
    same = data.simulate_multiome(**kw, regime="book")
    assert (book["atac"].X != same["atac"].X).nnz == 0
    m = data.simulate_multiome(**kw, regime="atac_types")
    assert m.uns["sci2cl_dataset"]["name"] == "simulated_atac_types"
    t = m.obs.true_cell_type.astype(str).values
    feats = {}
    for mod in ("rna", "atac"):
        X = m[mod].layers["counts"].toarray()
        feats[mod] = np.log1p(X / X.sum(1, keepdims=True) * 1e4)

    def acc(X, a, b):
        s = np.isin(t, [a, b])
        return cross_val_score(LogisticRegression(max_iter=500), X[s], t[s], cv=3).mean()

    for a, b in (("NK", "ILC"), ("CD4 naive T", "CD4 memory T"), ("CD8 naive T", "CD8 TEM")):
        assert acc(feats["rna"], a, b) < 0.65 < 0.9 < acc(feats["atac"], a, b)
    bal = data.simulate_multiome(**kw, regime="balanced")
    depth = {
        k: np.median(np.asarray(v["atac"].X.sum(1))) for k, v in (("book", book), ("bal", bal))
    }
    assert depth["bal"] > 2 * depth["book"]
    with pytest.raises(ValueError, match="regime"):
        data.simulate_multiome(n_cells=50, regime="atac")
    assert data.load("simulated_balanced").uns["simulation"]["regime"] == "balanced"


def test_simulator_batches_shift_one_batch_and_keep_the_books_cells():
    """``batches``: the book's cells and types, every type in both batches, and in ``batch2`` half
    the depth and genes whose mean moved by more than depth alone explains."""
    kw = dict(n_cells=2000, n_genes=300, n_peaks=800, seed=0)
    book = data.simulate_multiome(**kw)
    m = data.simulate_multiome(**kw, regime="batches")
    assert m.uns["sci2cl_dataset"]["name"] == "simulated_batches"
    assert (m.obs.true_cell_type.values == book.obs.true_cell_type.values).all()
    b = m.obs["batch"].astype(str).values
    assert set(b) == {"batch1", "batch2"} and (pd.crosstab(m.obs.true_cell_type, b) > 0).all().all()
    for mod in ("rna", "atac"):
        lib = np.asarray(m[mod].X.sum(1)).ravel()
        assert 0.35 < np.median(lib[b == "batch2"]) / np.median(lib[b == "batch1"]) < 0.65
    X = m["rna"].X.toarray()
    prop = {k: X[b == k].sum(0) / X[b == k].sum() for k in ("batch1", "batch2")}
    common = (prop["batch1"] > 1e-3) & (prop["batch2"] > 1e-3)
    ratio = np.log(prop["batch2"][common] / prop["batch1"][common])
    assert ratio.std() > 0.3  # per-gene shifts (SD 0.5), not a global depth factor
    assert "batch" not in book.obs
