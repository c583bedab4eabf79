import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import sci2cl
from sci2cl.pp import DataValidationError


@pytest.fixture(scope="module")
def trained(tiny_mdata):
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=16, n_hidden=64, n_views=2, seed=3)
    m.train(max_epochs=2, pretrain_epochs=1, batch_size=128, progress_bar=False)
    return m


def test_end_to_end_and_latent(trained, tiny_mdata):
    z = trained.get_latent_representation()
    assert z.shape == (tiny_mdata.n_obs, 16 + 16)  # n_latent + shared_variates
    assert np.isfinite(z).all()
    assert tiny_mdata.obsm["X_sci2cl"] is z
    assert {"rec", "mse", "moc", "mom", "loss"} <= set(trained.history.columns)
    assert list(trained.history["stage"]) == ["pretrain", "joint", "joint"]
    for kind in ("rna", "atac", "fused"):
        assert trained.get_latent_representation(kind=kind, key_added=None).shape == (600, 16)
    # "concat": both encoder outputs, each L2-normalised, side by side
    c = trained.get_latent_representation(kind="concat", key_added=None)
    assert c.shape == (tiny_mdata.n_obs, 32)
    np.testing.assert_allclose(np.linalg.norm(c[:, :16], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(c[:, 16:], axis=1), 1, atol=1e-5)
    r = trained.get_latent_representation(kind="rna", key_added=None)
    np.testing.assert_allclose(c[:, :16], r / np.linalg.norm(r, axis=1, keepdims=True), atol=1e-5)
    w = trained.modality_weights_
    assert set(w) == {"rna", "atac"} and abs(sum(w.values()) - 1) < 1e-5
    assert min(w.values()) >= 0
    # the read-out weight is one of the scored grid values, kept with its scores
    sc = trained.readout_scores_
    assert list(sc.columns) == [
        "w_rna", "modularity", "shared_neighbours_z", "smoothing", "shared_rho1"
    ]  # fmt: skip
    assert len(sc) == 11 and (sc["smoothing"] == trained.cross_smoothing_).all()
    assert np.isclose(sc["w_rna"], w["rna"]).any()


def test_single_modality_readout_keeps_that_modalitys_geometry(tiny_mdata, monkeypatch):
    """With the mixture margin out of reach, the joint embedding is one encoder, rotated and scaled."""
    from scipy.spatial.distance import pdist

    monkeypatch.setattr(sci2cl.model._readout, "MIXTURE_MARGIN", np.inf)
    kw = {"n_latent": 8, "n_hidden": 32, "n_views": 0, "seed": 0, "cross_smoothing": 0}
    kw["shared_variates"] = 0  # the weighted read-out alone
    m = sci2cl.SCI2CL(tiny_mdata, **kw)
    m.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    w = m.modality_weights_
    mod = max(w, key=w.get)
    assert w[mod] == 1.0
    d_joint = pdist(m.get_latent_representation(key_added=None).astype(np.float64))
    d_mod = pdist(m.get_latent_representation(kind=mod, key_added=None).astype(np.float64))
    ratio = d_joint / d_mod
    np.testing.assert_allclose(ratio, ratio.mean(), rtol=1e-3)
    # per-cell scaling (the former read-out) does not keep it: the same training (the scaling
    # acts after it), another read-out
    c = sci2cl.SCI2CL(tiny_mdata, **kw, readout_scaling="cell")
    c.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    np.testing.assert_array_equal(
        c.get_latent_representation(kind=mod, key_added=None),
        m.get_latent_representation(kind=mod, key_added=None),
    )
    ratio = pdist(c.get_latent_representation(key_added=None).astype(np.float64)) / d_mod
    assert ratio.std() / ratio.mean() > 0.01


def test_readout_keeps_rna_when_the_modalities_share_no_neighbourhoods(trained):
    """An ATAC embedding with a structure of its own, unrelated to RNA's, more modular than RNA's:
    the modularity rule alone would read ATAC; the shared-neighbour guard keeps RNA and warns.
    Embeddings that share their structure are mixed as the rule says."""
    import copy

    from sci2cl.model._readout import fit_readout

    rng = np.random.default_rng(0)
    n, e = 800, 16  # the fixture's n_latent
    y_rna, y_atac = rng.integers(0, 4, n), rng.integers(0, 6, n)  # independent structures
    c_rna, c_atac = rng.normal(0, 3, (4, e)), rng.normal(0, 8, (6, e))
    z = {"rna": c_rna[y_rna] + rng.normal(0, 1, (n, e)),
         "atac": c_atac[y_atac] + rng.normal(0, 1, (n, e))}  # fmt: skip
    mod = copy.deepcopy(trained.module)
    zt = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in z.items()}
    with pytest.warns(UserWarning, match="share no more kNN neighbours than chance"):
        sc, _ = fit_readout(
            mod, zt, np.arange(n), "modularity", seed=0, smoothing=0.5, shared_weight=1.0
        )
    assert sc["modularity"].iloc[0] > sc["modularity"].iloc[-1]  # ATAC alone is more modular
    assert mod.readout_weights.tolist() == [1.0, 0.0] and (sc["shared_neighbours_z"] < 3).all()
    assert float(mod.readout_smoothing) == 0  # nor is RNA smoothed over unrelated neighbours
    assert not mod.readout_shared.any()  # nor is a shared block added
    # the same ATAC structure, now shared with RNA: no guard, no warning
    z["atac"] = c_atac[y_rna] + rng.normal(0, 1, (n, e))
    zt = {k: torch.as_tensor(v, dtype=torch.float32) for k, v in z.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sc, _ = fit_readout(
            mod, zt, np.arange(n), "modularity", seed=0, smoothing=0.5, shared_weight=1.0
        )
    assert (sc["shared_neighbours_z"] > 3).all() and mod.readout_weights[1] > 0
    assert float(mod.readout_smoothing) == 0.5
    assert mod.readout_shared.any() and sc["shared_rho1"].iloc[0] > 0.9


def test_shared_projection_agrees_with_sklearn_cca_and_weighs_by_correlation():
    """The canonical correlations are sklearn's; the block's size follows them (nothing shared,
    nothing added; all shared, about ``weight`` in mean row norm); and it is linear per cell."""
    from sklearn.cross_decomposition import CCA

    from sci2cl.model._readout import shared_projection

    rng = np.random.default_rng(0)
    n, k = 3000, 4
    s = rng.normal(size=(n, 2))  # two factors both embeddings carry, at different strengths
    R = np.hstack([s * [2.0, 1.0], rng.normal(size=(n, 6))]) @ rng.normal(size=(8, 8))
    A = np.hstack([s * [1.5, 0.4], rng.normal(size=(n, 4))]) @ rng.normal(size=(6, 6))
    mean, proj, rho = shared_projection(R, A, k, weight=1.0)
    assert proj.shape == (14, k) and rho.shape == (k,)
    assert np.all(np.diff(rho) <= 1e-12) and 0.5 < rho[0] < 1
    cca = CCA(n_components=1, max_iter=2000, tol=1e-10).fit(R, A)
    u, v = cca.transform(R, A)
    assert rho[0] == pytest.approx(abs(np.corrcoef(u[:, 0], v[:, 0])[0, 1]), abs=5e-3)
    block = (np.hstack([R, A]) - mean) @ proj
    # the first column is the mean of the first pair of variates, which tracks the strong factor
    assert abs(np.corrcoef(block[:, 0], s[:, 0])[0, 1]) > 0.9
    # one embedding twice: every correlation is 1, the block has about unit mean row norm
    _, p1, r1 = shared_projection(R, R, k, weight=2.0)
    b1 = (R - R.mean(0)) @ (p1[:8] + p1[8:])
    assert r1 == pytest.approx(1.0, abs=2e-3)  # 1 but for the ridge
    assert 0.9 * 2.0 < np.linalg.norm(b1, axis=1).mean() <= 2.0
    # unrelated embeddings: small correlations, a small block
    _, p0, r0 = shared_projection(R, rng.normal(size=(n, 6)), k, weight=2.0)
    b0 = np.hstack([R, rng.normal(size=(n, 6))]) @ p0
    assert r0[0] < 0.1 and np.linalg.norm(b0 - b0.mean(0), axis=1).mean() < 0.1
    # an embedding without variance (ATAC replaced by zeros) shares nothing
    _, pz, rz = shared_projection(R, np.zeros((n, 6)), k, weight=1.0)
    assert not pz.any() and not rz.any()


def test_joint_readout_is_the_weighted_readout_beside_the_shared_block(tiny_mdata):
    """The same training with and without the block: the first ``n_latent`` columns are the
    weighted read-out at unit mean row norm, the rest the encoders' shared variates."""
    kw = {"n_latent": 8, "n_hidden": 32, "n_views": 0, "seed": 4, "cross_smoothing": 0}
    plain = sci2cl.SCI2CL(tiny_mdata, shared_variates=0, **kw)
    plain.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    m = sci2cl.SCI2CL(tiny_mdata, shared_variates=4, shared_weight=0.5, **kw)
    m.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    j0 = plain.get_latent_representation(key_added=None).astype(np.float64)
    z = m.get_latent_representation(key_added=None).astype(np.float64)
    assert j0.shape == (600, 8) and z.shape == (600, 12)
    np.testing.assert_allclose(z[:, :8], j0 / np.linalg.norm(j0, axis=1).mean(), atol=1e-4)
    assert np.linalg.norm(z[:, :8], axis=1).mean() == pytest.approx(1.0, abs=1e-4)
    from sci2cl.model._readout import shared_projection

    r, a = (m.get_latent_representation(kind=k, key_added=None) for k in ("rna", "atac"))
    mean, proj, rho = shared_projection(r.astype(np.float64), a.astype(np.float64), 4, 0.5)
    np.testing.assert_allclose(z[:, 8:], (np.hstack([r, a]) - mean) @ proj, atol=1e-4)
    assert m.readout_scores_["shared_rho1"].iloc[0] == pytest.approx(rho[0], abs=1e-6)
    # per cell: a subset of the cells gets the same rows
    sub = m.get_latent_representation(tiny_mdata[:50].copy(), key_added=None)
    np.testing.assert_allclose(sub, z[:50], atol=1e-5)


def test_refit_readout_switches_weighting_without_touching_the_encoders(trained):
    z = trained.get_latent_representation(key_added=None)
    r = trained.get_latent_representation(kind="rna", key_added=None)
    # no smoothing, so that the weights are those of the encoders' own embeddings
    w_wnn = trained.refit_readout("wnn", cross_smoothing=0).modality_weights_
    assert trained.modality_weighting_ == "wnn"
    # WNN scores no grid
    assert list(trained.readout_scores_.columns) == [
        "shared_neighbours_z", "smoothing", "shared_rho1"
    ]  # fmt: skip
    assert trained.init_params["modality_weighting"] == "modularity"  # a fitted attribute only
    zs = {}
    for m in ("rna", "atac"):
        e = trained.get_latent_representation(kind=m, key_added=None).astype(np.float64)
        zs[m] = e / np.linalg.norm(e, axis=1).mean()  # readout_scaling="global"
    expect = sci2cl.tl.modality_weights(zs).mean()
    assert w_wnn == pytest.approx(expect.to_dict(), abs=1e-4)
    assert 0 < w_wnn["rna"] < 1
    np.testing.assert_array_equal(trained.get_latent_representation(kind="rna", key_added=None), r)
    # back to the default: the same embedding as after training, bit for bit
    trained.refit_readout("modularity")
    np.testing.assert_array_equal(trained.get_latent_representation(key_added=None), z)
    with pytest.raises(ValueError, match="modality_weighting"):
        trained.refit_readout("median")
    assert trained.modality_weighting_ == "modularity"


def test_knn_mean_matches_sklearn():
    from sklearn.neighbors import NearestNeighbors

    from sci2cl.module import knn_mean

    rng = np.random.default_rng(0)
    ref, q, v = rng.normal(size=(300, 5)), rng.normal(size=(70, 5)), rng.normal(size=(300, 3))
    idx = NearestNeighbors(n_neighbors=7).fit(ref).kneighbors(q, return_distance=False)
    got = knn_mean(*(torch.as_tensor(a) for a in (q, ref, v)), k=7, chunk=16).numpy()
    np.testing.assert_allclose(got, v[idx].mean(1), atol=1e-10)
    # a reference row finds itself; k above the reference caps at all rows
    got = knn_mean(torch.as_tensor(ref[:4]), torch.as_tensor(ref[:4]), torch.eye(4), k=1)
    np.testing.assert_array_equal(got.numpy(), np.eye(4))
    assert torch.allclose(
        knn_mean(torch.zeros(2, 5), torch.zeros(3, 5), torch.ones(3, 1), 9), torch.ones(2, 1)
    )


def test_smoothing_share_follows_the_noise_of_rna():
    """Count splitting picks a share > 0 when RNA is noisy and ATAC has the same types sharply,
    and 0 when RNA is sharp and ATAC's neighbours mix the types."""
    from sci2cl.model._readout import SMOOTHING_GRID, smoothing_scores

    rng = np.random.default_rng(1)
    n, e = 900, 8
    y = rng.integers(0, 6, n)
    c = rng.normal(0, 2, (6, e))

    def share(rna_sd, atac_sd):
        za_rna = c[y] + rng.normal(0, rna_sd, (n, e))  # one half's embedding
        xb_rna = c[y] + rng.normal(0, rna_sd, (n, e))  # the other half, independent noise
        za_atac = c[y] + rng.normal(0, atac_sd, (n, e))
        sc = smoothing_scores(za_rna, za_atac, xb_rna, SMOOTHING_GRID)
        assert list(sc["smoothing"]) == list(SMOOTHING_GRID)
        return float(sc.loc[sc["score"].idxmax(), "smoothing"])

    assert share(rna_sd=4.0, atac_sd=0.5) >= 0.3
    assert share(rna_sd=0.3, atac_sd=4.0) == 0.0


def test_cross_smoothed_readout_is_per_cell_and_saved(tiny_mdata, tmp_path):
    import muon as mu

    m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=0, seed=2, cross_smoothing=0.5)
    m.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    assert m.cross_smoothing_ == 0.5 and m.smoothing_scores_.empty  # a fixed share scores nothing
    full = m.get_latent_representation(key_added=None)
    new = tiny_mdata[tiny_mdata.obs_names[::5]].copy()
    mu.pp.filter_obs(new, new.obs_names[::-1])
    pos = tiny_mdata.obs_names.get_indexer(new.obs_names)
    np.testing.assert_allclose(
        m.get_latent_representation(new, key_added=None), full[pos], atol=1e-5
    )
    # the smoothing changes the read-out, not the encoders
    r = m.get_latent_representation(kind="rna", key_added=None)
    m.refit_readout(cross_smoothing=0)
    assert m.cross_smoothing_ == 0 and m.module.readout_ref_rna.shape[0] == 0
    np.testing.assert_array_equal(m.get_latent_representation(kind="rna", key_added=None), r)
    assert not np.allclose(m.get_latent_representation(key_added=None), full, atol=1e-3)
    m.refit_readout(cross_smoothing=0.5)
    np.testing.assert_allclose(m.get_latent_representation(key_added=None), full, atol=1e-6)
    # the reference cells travel with the checkpoint
    m.save(tmp_path / "m")
    m2 = sci2cl.SCI2CL.load(tmp_path / "m", tiny_mdata)
    assert m2.module.readout_ref_rna.shape == (tiny_mdata.n_obs, 8)
    np.testing.assert_allclose(m2.get_latent_representation(key_added=None), full, atol=1e-6)
    for bad in (1.0, -0.1, "yes", True):
        with pytest.raises(ValueError, match="cross_smoothing"):
            sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=16, cross_smoothing=bad)
    with pytest.raises(ValueError, match="cross_smoothing"):
        m.refit_readout(cross_smoothing=2)


def test_reproducible_with_seed(tiny_mdata):
    zs = []
    for _ in range(2):
        m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=2, seed=11)
        m.train(max_epochs=1, pretrain_epochs=1, progress_bar=False)
        zs.append(m.get_latent_representation(key_added=None))
    np.testing.assert_array_equal(zs[0], zs[1])
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=2, seed=12)
    m.train(max_epochs=1, pretrain_epochs=1, progress_bar=False)
    assert not np.allclose(m.get_latent_representation(key_added=None), zs[0])


def test_early_stopping_restores_the_best_epoch(tiny_mdata):
    """After early stopping the weights are those of the best eligible held-out epoch."""
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=0, seed=2)
    m.train(max_epochs=12, pretrain_epochs=1, patience=2, min_epochs=3, lr=5e-2, progress_bar=False)
    joint = m.history[m.history.stage == "joint"]
    assert len(joint) >= 4 and joint.val_loss.notna().all()
    eligible = joint.val_loss.iloc[2:]  # joint epochs 3, 4, ... may be picked
    # the held-out loss of the restored weights, as validation computes it (same draws)
    from sci2cl.model._data import CellBatches

    m.module.eval()
    gen = torch.Generator().manual_seed(m.seed + 1)
    with torch.no_grad():
        restored = float(
            np.mean(
                [
                    float(m.module.loss(b, "joint", generator=gen)["loss"])
                    for b in CellBatches(
                        m._matrices(m.mdata), m.validation_indices_, 256, shuffle=False
                    )
                ]
            )
        )
    assert restored == pytest.approx(eligible.min(), rel=1e-5)
    if eligible.idxmin() != eligible.index[-1]:  # the last epoch was worse: it was undone
        assert restored < eligible.iloc[-1]
    assert len(m.validation_indices_) == 60  # 10% of 600 cells, never used for training
    # min_epochs >= max_epochs: early stopping never acts
    m2 = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=0, seed=2)
    m2.train(max_epochs=4, pretrain_epochs=1, patience=1, min_epochs=10, progress_bar=False)
    assert (m2.history.stage == "joint").sum() == 4


def test_embedding_new_cells_matches_training_cells(trained, tiny_mdata):
    """New data with the model's features are embedded cell by cell, as the training cells."""
    import muon as mu

    full = trained.get_latent_representation(key_added=None)
    new = tiny_mdata[tiny_mdata.obs_names[::7]].copy()
    mu.pp.filter_obs(new, new.obs_names[::-1])  # another order, a subset
    z = trained.get_latent_representation(new)
    pos = tiny_mdata.obs_names.get_indexer(new.obs_names)
    np.testing.assert_allclose(z, full[pos], atol=1e-5)
    assert new.obsm["X_sci2cl"] is z and "X_sci2cl" in tiny_mdata.obsm


def test_embedding_independent_of_batch_size(trained):
    a = trained.get_latent_representation(batch_size=7, key_added=None)
    b = trained.get_latent_representation(batch_size=1000, key_added=None)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_save_load_roundtrip(trained, tiny_mdata, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        trained.save(tmp_path / "m")
    m2 = sci2cl.SCI2CL.load(tmp_path / "m", tiny_mdata)
    # the read-out (modality weights, axes) comes back with the weights, not refitted
    assert m2.modality_weights_ == pytest.approx(trained.modality_weights_, abs=0)
    for kind in ("joint", "fused", "atac"):
        np.testing.assert_allclose(
            m2.get_latent_representation(key_added=None, kind=kind),
            trained.get_latent_representation(key_added=None, kind=kind),
            atol=1e-6,
        )
    assert len(m2.history) == len(trained.history) and m2.init_params == trained.init_params
    pd.testing.assert_frame_equal(m2.readout_scores_, trained.readout_scores_)


def test_bad_inputs_give_clear_errors(tiny_mdata):
    import mudata as md

    with pytest.raises(TypeError, match="MuData"):
        sci2cl.SCI2CL(tiny_mdata["rna"])
    other = md.MuData({"rna": tiny_mdata["rna"].copy(), "chrom": tiny_mdata["atac"].copy()})
    with pytest.raises(DataValidationError, match="lacks modalities"):
        sci2cl.SCI2CL.setup_mudata(other)
    with pytest.raises(DataValidationError, match="not set up"):
        sci2cl.SCI2CL(other)
    # other modality names are mapped explicitly
    sci2cl.SCI2CL.setup_mudata(other, modalities={"rna": "rna", "atac": "chrom"})
    assert sci2cl.SCI2CL(other, n_latent=8, n_hidden=16).n_features == {"rna": 200, "atac": 400}
    bad = md.MuData({m: tiny_mdata[m].copy() for m in ("rna", "atac")})
    bad["atac"].layers["counts"] = bad["atac"].layers["counts"] * 0.5
    sci2cl.SCI2CL.setup_mudata(bad)  # a fact about the data, not an error: the likelihood decides
    with pytest.raises(DataValidationError, match=r"'atac' \(atac\) does not hold raw counts"):
        sci2cl.SCI2CL(bad, n_latent=8, n_hidden=16)
    # the same data is accepted when the modality is declared non-count
    sci2cl.SCI2CL(bad, likelihood={"atac": "gaussian"}, n_latent=8, n_hidden=16)
    # a layer that is not there is an error, never a fall-back to .X
    with pytest.raises(DataValidationError, match="layer 'raw' not found"):
        sci2cl.SCI2CL.setup_mudata(bad, layer="raw")
    with pytest.raises(ValueError, match="n_heads"):
        sci2cl.SCI2CL(tiny_mdata, n_latent=10, n_heads=4)
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=16)
    with pytest.raises(RuntimeError, match="not trained"):
        m.get_latent_representation()


def test_scrcl_end_to_end(tiny_mdata, tmp_path):
    a = tiny_mdata["rna"].copy()
    sci2cl.SCRCL.setup_anndata(a)
    m = sci2cl.SCRCL(a, n_clusters=5, n_top_genes=150, n_hidden=64, n_latent=16, seed=0)
    m.train(max_epochs=5, progress_bar=False)
    z = m.get_latent_representation()
    assert z.shape == (a.n_obs, 32) and "X_scrcl" in a.obsm
    lab = m.predict()
    assert len(np.unique(lab)) == 5 and "scrcl" in a.obs
    for use in ("cell", "both"):  # the other read-outs: same cells, k clusters, obs untouched
        other = m.predict(key_added=None, use=use)
        assert other.shape == lab.shape and len(np.unique(other)) == 5
    np.testing.assert_array_equal(a.obs["scrcl"].astype(int).to_numpy(), lab)
    with pytest.raises(ValueError, match="use must be"):
        m.predict(use="genes")
    m.save(tmp_path / "s")
    m2 = sci2cl.SCRCL.load(tmp_path / "s", a)
    np.testing.assert_allclose(m2.get_latent_representation(key_added=None), z, atol=1e-5)
    m3 = sci2cl.SCRCL(a, n_clusters=5, n_top_genes=150, n_hidden=64, n_latent=16, seed=0)
    m3.train(max_epochs=5, progress_bar=False)
    np.testing.assert_array_equal(m3.get_latent_representation(key_added=None), z)
    with pytest.raises(TypeError):
        sci2cl.SCRCL(tiny_mdata)


def test_scrcl_stopping_rule_stops_on_plateau_and_not_before(tiny_mdata):
    a = tiny_mdata["rna"].copy()
    sci2cl.SCRCL.setup_anndata(a)
    kw = dict(n_clusters=5, n_top_genes=150, n_hidden=64, n_latent=16, seed=0)
    # a tolerance no epoch can meet: stops as soon as patience and min_epochs allow
    m = sci2cl.SCRCL(a, **kw).train(
        max_epochs=40, patience=3, min_epochs=6, tol=10.0, progress_bar=False
    )
    assert len(m.history) == 6
    # any improvement counts: the falling loss keeps it training to max_epochs
    m = sci2cl.SCRCL(a, **kw).train(
        max_epochs=30, patience=10, min_epochs=2, tol=0.0, progress_bar=False
    )
    assert len(m.history) == 30
    assert m.history["loss"].iloc[-10:].mean() < m.history["loss"].iloc[:10].mean()


def test_end_to_end_on_real_bmmc(shared_data):
    """One short training on a real paired file (500 BMMC cells) when the mirror is present."""
    m = sci2cl.datasets.load("bmmc_a", data_dir=shared_data)
    sci2cl.pp.select_features(m, n_top_genes=300, n_top_peaks=300)
    sci2cl.SCI2CL.setup_mudata(m, layer="counts")
    model = sci2cl.SCI2CL(m, n_latent=16, n_hidden=64, seed=0)
    model.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    z = model.get_latent_representation()
    assert z.shape == (500, 32) and np.isfinite(z).all()
    assert m.obsm["X_sci2cl"].shape == (500, 32)


def _rna_counts_and_scanpy_pcs(model, n_comps: int):
    """The model's RNA counts as a tensor, and scanpy's normalise-log-scale-PCA scores of them."""
    import scanpy as sc
    import torch

    rna = model.mdata["rna"]
    X = torch.from_numpy(np.asarray(rna.layers["counts"].toarray(), np.float32))
    a = rna.copy()
    a.X = a.layers["counts"].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.scale(a, max_value=10)
    sc.pp.pca(a, n_comps=n_comps, random_state=0)
    return X, a.obsm["X_pca"]


def test_pca_inputs_match_scanpy_and_survive_save_load(tiny_mdata, tmp_path):
    """``n_input_pcs``: the RNA encoder reads scanpy's normalise-log-scale-PCA scores."""
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=2, n_input_pcs=5, seed=0)
    X, pcs = _rna_counts_and_scanpy_pcs(m, 5)
    ours = m.module.ae["rna"].transform_input(X).numpy()
    assert ours.shape == (tiny_mdata.n_obs, 5)
    # the same axes up to sign and scale where the spectrum has gaps (variances 6.4, 3.1,
    # 2.6; the 4th and 5th, 2.41 and 2.34, are noise of near-equal variance and may rotate)
    for j in range(3):
        assert abs(np.corrcoef(ours[:, j], pcs[:, j])[0, 1]) > 0.98
    np.testing.assert_allclose(ours.var(0).mean(), 1, rtol=0.05)  # unit variance on average
    m.train(max_epochs=1, pretrain_epochs=1, progress_bar=False)
    z = m.get_latent_representation(key_added=None)
    m.save(tmp_path / "pcs")
    m2 = sci2cl.SCI2CL.load(tmp_path / "pcs", tiny_mdata)
    np.testing.assert_allclose(m2.get_latent_representation(key_added=None), z, atol=1e-5)
    with pytest.raises(ValueError, match="n_input_pcs must be in"):
        sci2cl.SCI2CL(tiny_mdata, n_input_pcs=1)


def test_input_skip_starts_from_the_leading_pcs(tiny_mdata):
    """``input_skip``: before training, the linear path gives scanpy's leading PC scores."""
    import torch

    m = sci2cl.SCI2CL(tiny_mdata, n_latent=4, n_hidden=32, n_input_pcs=6, input_skip=True)
    X, pcs = _rna_counts_and_scanpy_pcs(m, 4)
    ae = m.module.ae["rna"]
    with torch.no_grad():
        lin = ae.skip(ae.transform_input(X)).numpy()
    assert lin.shape == (tiny_mdata.n_obs, 4)
    for j in range(3):  # the components with a spectral gap (see the test above)
        assert abs(np.corrcoef(lin[:, j], pcs[:, j])[0, 1]) > 0.98
    m.train(max_epochs=1, pretrain_epochs=1, progress_bar=False)
    assert np.isfinite(m.get_latent_representation(key_added=None)).all()
    with pytest.raises(ValueError, match="input_skip=True needs n_input_pcs"):
        sci2cl.SCI2CL(tiny_mdata, n_input_pcs=None, input_skip=True)


def test_drop_first_pc_leaves_the_depth_axis_out_of_the_atac_input(tiny_mdata):
    from sklearn.decomposition import PCA

    kept = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_input_pcs=10, seed=0)
    dropped = sci2cl.SCI2CL(
        tiny_mdata, n_latent=8, n_hidden=32, n_input_pcs=10, drop_first_pc=["atac"], seed=0
    )
    ae = dropped.module.ae["atac"]
    x = torch.from_numpy(np.asarray(tiny_mdata["atac"].layers["counts"].todense(), np.float32))
    s = ae.standardise(ae.normalise(x)).numpy()
    pcs = PCA(11, svd_solver="full").fit(s).components_
    depth = np.log(x.sum(1).numpy())
    u_kept = kept.module.ae["atac"].transform_input(x).numpy()
    u_drop = ae.transform_input(x).numpy()
    # the first axis of the full input tracks depth; the dropped model's axes are PCs 2..11
    assert abs(np.corrcoef(u_kept[:, 0], depth)[0, 1]) > 0.8
    assert max(abs(np.corrcoef(u_drop[:, j], depth)[0, 1]) for j in range(10)) < 0.5
    axes = ae.input_axes.numpy() / np.linalg.norm(ae.input_axes.numpy(), axis=0)
    assert np.abs(pcs[0] @ axes).max() < 0.05  # orthogonal to the first PC
    assert np.abs(np.diag(axes.T @ pcs[1:].T))[:3].min() > 0.95  # the next ones, in order
    # RNA is untouched
    torch.testing.assert_close(
        kept.module.ae["rna"].input_axes, dropped.module.ae["rna"].input_axes
    )
    with pytest.raises(ValueError, match="drop_first_pc must be a list"):
        sci2cl.SCI2CL(tiny_mdata, drop_first_pc="atac")
    with pytest.raises(ValueError, match="drop_first_pc needs n_input_pcs"):
        sci2cl.SCI2CL(tiny_mdata, n_input_pcs=None, input_skip=False, drop_first_pc=["atac"])
