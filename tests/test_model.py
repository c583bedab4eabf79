import numpy as np
import pytest

import sci2cl
from sci2cl.data import DataValidationError


@pytest.fixture(scope="module")
def trained(tiny_mdata):
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=16, n_hidden=64, n_views=2, seed=3)
    m.train(max_epochs=2, pretrain_epochs=1, batch_size=128, progress_bar=False)
    return m


def test_end_to_end_and_latent(trained, tiny_mdata):
    z = trained.get_latent_representation()
    assert z.shape == (tiny_mdata.n_obs, 16)
    assert np.isfinite(z).all()
    assert tiny_mdata.obsm["X_sci2cl"] is z
    assert {"rec", "mse", "moc", "mom", "loss"} <= set(trained.history.columns)
    assert list(trained.history["stage"]) == ["pretrain", "joint", "joint"][: len(trained.history)]
    for kind in ("rna", "atac", "fused"):
        assert trained.get_latent_representation(kind=kind, key_added=None).shape == z.shape
    w = trained.modality_weights_
    assert set(w) == {"rna", "atac"} and abs(sum(w.values()) - 1) < 1e-5
    assert min(w.values()) > 0


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


def test_early_stopping_respects_min_epochs(tiny_mdata):
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=0, seed=2)
    m.train(max_epochs=10, pretrain_epochs=1, patience=1, min_epochs=4, lr=5e-2, progress_bar=False)
    h = m.history
    joint = h[h.stage == "joint"]
    assert len(joint) >= 5 and "val_loss" in joint  # the first eligible epoch sets the best
    # stops only once the held-out loss stalls (relative tolerance 1e-4) after the warm-up
    prev_best = joint.val_loss.iloc[3:-1].min()
    assert len(joint) == 10 or joint.val_loss.iloc[-1] >= prev_best * (1 - 1e-4)
    # min_epochs >= max_epochs: early stopping never acts
    m2 = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=32, n_views=0, seed=2)
    m2.train(max_epochs=4, pretrain_epochs=1, patience=1, min_epochs=10, progress_bar=False)
    assert (m2.history.stage == "joint").sum() == 4


def test_embedding_independent_of_batch_size(trained):
    a = trained.get_latent_representation(batch_size=7, key_added=None)
    b = trained.get_latent_representation(batch_size=1000, key_added=None)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_save_load_roundtrip(trained, tiny_mdata, tmp_path):
    trained.save(tmp_path / "m")
    with pytest.raises(FileExistsError):
        trained.save(tmp_path / "m")
    m2 = sci2cl.SCI2CL.load(tmp_path / "m", tiny_mdata)
    np.testing.assert_allclose(
        m2.get_latent_representation(key_added=None),
        trained.get_latent_representation(key_added=None),
        atol=1e-6,
    )
    assert len(m2.history) == len(trained.history)


def test_bad_inputs_give_clear_errors(tiny_mdata):
    import mudata as md

    with pytest.raises(TypeError, match="MuData"):
        sci2cl.SCI2CL(tiny_mdata["rna"])
    with pytest.raises(DataValidationError, match="lacks modalities"):
        sci2cl.SCI2CL(
            md.MuData({"rna": tiny_mdata["rna"].copy(), "chrom": tiny_mdata["atac"].copy()})
        )
    bad = md.MuData({m: tiny_mdata[m].copy() for m in ("rna", "atac")})
    bad["atac"].layers["counts"] = bad["atac"].layers["counts"] * 0.5
    with pytest.raises(DataValidationError, match="non-integer"):
        sci2cl.SCI2CL(bad)
    # the same data is accepted when the modality is declared non-count
    sci2cl.SCI2CL(bad, likelihood={"rna": "zinb", "atac": "gaussian"}, n_latent=8, n_hidden=16)
    with pytest.raises(ValueError, match="n_heads"):
        sci2cl.SCI2CL(tiny_mdata, n_latent=10, n_heads=4)
    m = sci2cl.SCI2CL(tiny_mdata, n_latent=8, n_hidden=16)
    with pytest.raises(RuntimeError, match="not trained"):
        m.get_latent_representation()


def test_scrcl_end_to_end(tiny_mdata, tmp_path):
    a = tiny_mdata["rna"].copy()
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
    m = sci2cl.data.load("bmmc_a", data_dir=shared_data)
    sci2cl.data.select_features(m, n_top_genes=300, n_top_peaks=300)
    model = sci2cl.SCI2CL(m, n_latent=16, n_hidden=64, seed=0)
    model.train(max_epochs=2, pretrain_epochs=1, progress_bar=False)
    z = model.get_latent_representation()
    assert z.shape == (500, 16) and np.isfinite(z).all()
    assert m.obsm["X_sci2cl"].shape == (500, 16)
