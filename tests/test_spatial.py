"""Spatial data: the majority vote, the spatial sets' missing labels, scRCL's spatial mode."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from sci2cl import SCRCL, datasets, tl


def _grid(labels, n_side=20, seed=0, X=None):
    """An AnnData of spots on a square grid with the given label per spot (and counts ``X``)."""
    rng = np.random.default_rng(seed)
    xy = (
        np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2).astype(float)
    )
    X = rng.poisson(1.0, (len(xy), 5)) if X is None else X
    a = ad.AnnData(sp.csr_matrix(X.astype(np.float32)))
    a.obsm["spatial"] = xy
    a.obs["lab"] = pd.Categorical(labels)
    return a


def test_vote_restores_noisy_domains():
    """Two half-plane domains with 20% of spots relabelled at random: the vote undoes most of it."""
    rng = np.random.default_rng(0)
    a = _grid(np.zeros(400, int))
    truth = np.where(a.obsm["spatial"][:, 0] < 10, "left", "right")
    noisy = truth.copy()
    flip = rng.random(400) < 0.2
    noisy[flip] = np.where(truth[flip] == "left", "right", "left")
    a.obs["lab"] = pd.Categorical(noisy)
    voted = tl.spatial_vote(a, "lab", n_neighbors=8).astype(str).to_numpy()
    assert (voted == truth).mean() > 0.95 > (noisy == truth).mean()
    assert "lab_voted" in a.obs


def test_vote_matches_a_brute_force_count():
    """Against a direct count with full distances (ties broken the documented way)."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(3)
    a = _grid(rng.choice(list("abc"), 400))
    a.obsm["spatial"] = a.obsm["spatial"] + rng.normal(0, 1e-3, (400, 2))  # no distance ties
    got = tl.spatial_vote(a, "lab", n_neighbors=6).astype(str).to_numpy()
    d = cdist(a.obsm["spatial"], a.obsm["spatial"])
    lab = a.obs["lab"].astype(str).to_numpy()
    cats = sorted(set(lab))
    for i in range(400):
        nb = np.argsort(d[i])[:7]  # itself and its 6 nearest
        counts = pd.Series(lab[nb]).value_counts()
        top = sorted(c for c in cats if counts.get(c, 0) == counts.max())
        assert got[i] == (lab[i] if lab[i] in top else top[0])


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(["x", "y", "z", None]), min_size=30, max_size=30), st.integers(1, 10)
)
def test_vote_keeps_missing_labels_missing(labels, k):
    if sum(v is not None for v in labels) < 2:
        return
    a = _grid(np.zeros(36, int), n_side=6)[:30].copy()
    a.obs["lab"] = pd.Categorical(labels)
    voted = tl.spatial_vote(a, "lab", n_neighbors=k)
    missing = a.obs["lab"].isna().to_numpy()
    assert voted.isna().to_numpy().tolist() == missing.tolist()
    assert set(voted.dropna().astype(str)) <= {v for v in labels if v is not None}


def test_vote_errors_name_the_input():
    a = _grid(np.zeros(400, int))
    with pytest.raises(KeyError, match="nope"):
        tl.spatial_vote(a, "nope")
    with pytest.raises(KeyError, match="obsm\\['xy'\\]"):
        tl.spatial_vote(a, "lab", spatial_key="xy")
    with pytest.raises(ValueError, match="n_neighbors"):
        tl.spatial_vote(a, "lab", n_neighbors=0)


def test_scrcl_spatial_graph_uses_the_coordinates():
    """Expression carries no signal, space carries two domains: only the spatial graph finds them."""
    rng = np.random.default_rng(0)
    left = np.tile(np.arange(20), 20) < 10  # x < 10 on the grid
    X = rng.poisson(2.0, (400, 30)).astype(np.float32)
    X[left, :3] += rng.poisson(1.0, (left.sum(), 3))  # a weak domain signal, lost per cell
    a = _grid(np.zeros(400, int), X=X)
    a.layers["counts"] = a.X.copy()
    from sci2cl import metrics

    SCRCL.setup_anndata(a, layer="counts")
    nmi = {}
    for key in (None, "spatial"):
        m = SCRCL(a, n_clusters=2, spatial_key=key, smoothing=(3, 0), n_neighbors=8, seed=0)
        m.train(max_epochs=30, progress_bar=False)
        nmi[key] = metrics.nmi(left, m.predict(key_added=None))
    assert nmi[None] < 0.05  # per cell the signal is lost in the noise
    assert nmi["spatial"] > nmi[None] + 0.25
    with pytest.raises(ValueError, match="n_clusters"):
        m.predict(key_added=None, n_clusters=1)


def test_augmented_features_are_own_and_neighbour_mean_with_their_weights():
    """``spatial_mode="augment"``: each cell's features are its own scaled row and the mean of its
    spatial neighbours' rows (BANKSY), weighted sqrt(1 - lambda) and sqrt(lambda); the model trains on
    the doubled features and, with most weight on the neighbours, finds the weak domain signal of the
    test above."""
    from sci2cl import metrics
    from sci2cl._graph import knn_adjacency
    from sci2cl.model._scrcl import _augment

    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    xy = rng.uniform(size=(50, 2))
    A = knn_adjacency(xy, 5)
    out = _augment(A, X, 0.36)
    i = 7
    nb = A[i].indices
    np.testing.assert_allclose(out[i, :4], 0.8 * X[i], rtol=1e-5)
    np.testing.assert_allclose(out[i, 4:], 0.6 * X[nb].mean(0), rtol=1e-5)
    np.testing.assert_allclose(_augment(A, X, 0.0)[:, 4:], 0)

    left = np.tile(np.arange(20), 20) < 10
    Xc = rng.poisson(2.0, (400, 30)).astype(np.float32)
    Xc[left, :3] += rng.poisson(1.0, (left.sum(), 3))
    a = _grid(np.zeros(400, int), X=Xc)
    a.layers["counts"] = a.X.copy()
    SCRCL.setup_anndata(a, layer="counts")
    m = SCRCL(a, n_clusters=2, spatial_key="spatial", spatial_mode="augment", spatial_lambda=0.95,
              smoothing=(3, 0), n_neighbors=8, n_spatial_neighbors=8, seed=0)  # fmt: skip
    assert m._x1.shape == (400, 2 * len(m.genes))
    m.train(max_epochs=30, progress_bar=False)
    assert metrics.nmi(left, m.predict(key_added=None)) > 0.25
    with pytest.raises(ValueError, match="spatial_lambda"):
        SCRCL(a, spatial_key="spatial", spatial_mode="augment", spatial_lambda=1.5)
    with pytest.raises(ValueError, match="target_sum"):
        SCRCL(a, target_sum=0)


def test_spatial_sets_keep_missing_labels_missing(shared_data):
    d = datasets.load("dlpfc_151510", data_dir=shared_data)
    assert d.obs["layer"].isna().sum() == 39
    assert "nan" not in set(d.obs["layer"].dropna().astype(str))
    assert d.obsm["spatial"].shape == (d.n_obs, 2)
    o = datasets.load("osmfish_sscortex", data_dir=shared_data)
    assert o.obs["cell_type"].nunique() == 31 and o.obs["region"].nunique() == 11


def test_spatial_benchmark_scores_labelled_spots_only(shared_data):
    from benchmarks import spatial

    a = spatial.load("dlpfc_151510", max_cells=400)
    n_missing = int(a.obs["layer"].isna().sum())
    rows = spatial.run_method(a, "PCA", 0, [("layer", "domains")])
    assert {r["protocol"] for r in rows} == {"kmeans", "leiden", "kmeans + vote"}
    assert all(r["n_unlabelled"] == n_missing for r in rows)
    y = pd.Series(["a", None, "b", "b"])
    s = spatial.score(y, np.array([0, 1, 1, 1]))
    assert s["n_unlabelled"] == 1 and s["nmi"] == pytest.approx(1.0)


def test_simulated_tissue_has_contiguous_domains_and_mixed_types():
    a = datasets.simulate_spatial(n_side=20, seed=0)
    assert a.shape == (400, 60) and (np.asarray(a.X.sum(1)).ravel() > 0).all()
    assert np.allclose(a.X.data, np.round(a.X.data))
    dom = a.obs["domain"].astype(str).to_numpy()
    voted = tl.spatial_vote(a, "domain", n_neighbors=8).astype(str).to_numpy()
    assert (voted == dom).mean() > 0.9  # domains are contiguous in space
    ct = pd.crosstab(a.obs["domain"], a.obs["cell_type"])
    assert ((ct > 0).sum(1) >= 2).all()  # each domain holds several types


def test_spatial_runs_of_different_methods_land_in_one_table(tmp_path):
    from benchmarks import spatial

    out = tmp_path / "benchmark_spatial.csv"
    kw = {"tasks": spatial.SIM_TASKS, "max_cells": 300, "out": out, "log": lambda *a: None}
    spatial.run([0], ["PCA"], **kw)
    spatial.run([0], ["scRCL (spatial graph)"], max_epochs=3, **kw)
    spatial.run([0], ["PCA"], **kw)  # a re-run replaces its own rows, keeps the others
    df = pd.read_csv(out)
    assert sorted(df.method.unique()) == ["PCA", "scRCL (spatial graph)"]
    assert len(df) == 2 * 2 * 3  # methods x tasks x protocols
    labs = pd.read_csv(tmp_path / "spatial_labels_simulated_spatial.csv.gz", index_col=0)
    assert len(labs) == 300 and len(labs.columns) == 2 * 2 * 3
