"""Several samples: ``setup_mudata(batch_key=...)`` (issue 39)."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

import sci2cl
from sci2cl import metrics
from sci2cl.datasets import simulate_multiome
from sci2cl.pp import DataValidationError

SMALL = dict(n_latent=8, n_hidden=32, n_views=2, device="cpu", seed=0)


@pytest.fixture(scope="module")
def two_batches():
    """The simulator's batches regime: batch2 shifted per gene and peak, at half the depth."""
    return simulate_multiome(n_cells=800, n_genes=300, n_peaks=600, seed=1, regime="batches")


def _other_batch_share(z, b):
    idx = NearestNeighbors(n_neighbors=16).fit(z).kneighbors(z, return_distance=False)[:, 1:]
    return float((b[idx] != b[:, None]).mean())


@pytest.fixture(scope="module")
def models(two_batches):
    torch.set_num_threads(1)
    out = {}
    for key in (None, "batch"):
        m = two_batches.copy()
        sci2cl.SCI2CL.setup_mudata(m, batch_key=key)
        model = sci2cl.SCI2CL(m, **SMALL).train(max_epochs=12, progress_bar=False)
        out[key] = (model, m)
    return out


def test_batch_key_mixes_the_batches_and_keeps_the_types(models, two_batches):
    b = two_batches.obs["batch"].astype(str).to_numpy()
    y = two_batches.obs["true_cell_type"].astype(str).to_numpy()
    share, nmi = {}, {}
    for key, (model, _m) in models.items():
        z = model.get_latent_representation(key_added=None)
        share[key] = _other_batch_share(z, b)
        nmi[key] = metrics.cluster_embedding(z, y, seed=0)[0]["nmi"]
    assert share[None] < 0.1 and share["batch"] > 0.3  # a half-half mix is 0.5
    assert nmi["batch"] > nmi[None] - 0.02
    model = models["batch"][0]
    assert model.batches_ == ["batch1", "batch2"]
    assert model.module.ae["rna"].input_mean.shape == (2, 300)


def test_batch_key_errors_name_the_column_and_the_unseen_batch(models, two_batches, tmp_path):
    m = two_batches.copy()
    with pytest.raises(DataValidationError, match="'donor' is not a column"):
        sci2cl.SCI2CL.setup_mudata(m, batch_key="donor")
    m.obs["gap"] = m.obs["batch"].astype(object)
    m.obs.loc[m.obs_names[:3], "gap"] = None
    with pytest.raises(DataValidationError, match="3 cells without a batch"):
        sci2cl.SCI2CL.setup_mudata(m, batch_key="gap")
    model, data = models["batch"]
    new = data.copy()
    new.obs["batch"] = new.obs["batch"].astype(str).replace({"batch2": "batch3"})
    with pytest.raises(DataValidationError, match=r"not trained on: \['batch3'\]"):
        model.get_latent_representation(new, key_added=None)
    # one of the trained batches only: embedded as in the full data before Harmony (which has
    # nothing to correct in one batch), also after a reload
    one = data[data.obs["batch"] == "batch2"].copy()
    full = model.get_latent_representation(key_added=None, correct_batches=False)
    want = full[(data.obs["batch"] == "batch2").values]
    np.testing.assert_allclose(
        model.get_latent_representation(one, key_added=None), want, atol=1e-5
    )
    model.save(tmp_path / "m")
    again = sci2cl.SCI2CL.load(tmp_path / "m", one)
    assert again.batches_ == ["batch1", "batch2"]
    # the centring decided on the training cells, not recomputed on the one batch loaded
    pd.testing.assert_frame_equal(
        again.input_batch_mixing_, model.input_batch_mixing_, check_dtype=False
    )
    np.testing.assert_allclose(
        again.get_latent_representation(one, key_added=None), want, atol=1e-5
    )
    # the corrected embedding of every cell is the same after a reload (Harmony seeded)
    back = sci2cl.SCI2CL.load(tmp_path / "m", data.copy())
    np.testing.assert_allclose(
        back.get_latent_representation(key_added=None),
        model.get_latent_representation(key_added=None),
        atol=1e-4,
    )


def test_batch_key_trains_from_disk(two_batches, tmp_path):
    import mudata as md

    path = tmp_path / "two.h5mu"
    two_batches.write(path)
    m = md.read_h5mu(path, backed=True)
    sci2cl.SCI2CL.setup_mudata(m, batch_key="batch")
    model = sci2cl.SCI2CL(m, **SMALL).train(max_epochs=3, progress_bar=False)
    z = model.get_latent_representation(key_added=None)
    assert z.shape[0] == two_batches.n_obs and np.isfinite(z).all()
    assert model.batches_ == ["batch1", "batch2"]


def test_batch_mixing_is_one_when_shuffled_and_zero_when_apart():
    from sci2cl.model._inputs import batch_mixing

    rng = np.random.default_rng(0)
    S = rng.normal(size=(400, 20))
    b = rng.integers(0, 3, 400)
    assert 0.85 < batch_mixing(S, b, 0) < 1.15
    apart = S + 20 * np.eye(20)[b]  # each batch its own blob
    assert batch_mixing(apart, b, 0) < 0.05
    assert np.isnan(batch_mixing(S, np.zeros(400, dtype=int), 0))


def test_auto_centring_leaves_batches_that_differ_only_in_composition(two_batches):
    torch.set_num_threads(1)
    # a batch effect (the simulator's batches regime): centred per batch in both modalities
    m = two_batches.copy()
    sci2cl.SCI2CL.setup_mudata(m, batch_key="batch")
    mix = sci2cl.SCI2CL(m, **SMALL).input_batch_mixing_
    assert mix["centred"].tolist() == [True, True]
    assert (mix["per batch"] > mix["over all cells"]).all()
    # no batch effect, types in very different proportions: left as they are
    m = simulate_multiome(n_cells=800, n_genes=300, n_peaks=600, seed=1)
    y = m.obs["true_cell_type"].astype("category").cat.codes.to_numpy()
    rng = np.random.default_rng(0)
    m.obs["donor"] = np.where(rng.random(m.n_obs) < np.where(y % 2 == 0, 0.85, 0.15), "a", "b")
    sci2cl.SCI2CL.setup_mudata(m, batch_key="donor")
    model = sci2cl.SCI2CL(m, **SMALL)
    assert model.input_batch_mixing_["centred"].tolist() == [False, False]
    for r in ("rna", "atac"):
        mean = model.module.ae[r].input_mean
        assert torch.equal(mean[0], mean[1])
    forced = sci2cl.SCI2CL(m, batch_centring="cells", **SMALL).module.ae["rna"].input_mean
    assert not torch.equal(forced[0], forced[1])
    assert forced.shape == (2, 300)


def test_batch_centring_is_checked_and_changes_nothing_without_a_batch_key(two_batches):
    m = two_batches.copy()
    sci2cl.SCI2CL.setup_mudata(m)
    with pytest.raises(ValueError, match="batch_centring"):
        sci2cl.SCI2CL(m, batch_centring="donor", **SMALL)
    a, b = (sci2cl.SCI2CL(m, batch_centring=c, **SMALL) for c in ("cells", "auto"))
    assert a.input_batch_mixing_.empty
    for r in ("rna", "atac"):
        for name in ("input_mean", "input_std", "input_axes"):
            assert torch.equal(getattr(a.module.ae[r], name), getattr(b.module.ae[r], name))


def _composition_donors(seed: int = 1):
    """No batch effect in the counts, one embedding shifted by donor, types in other proportions."""
    m = simulate_multiome(n_cells=800, n_genes=300, n_peaks=600, seed=seed)
    y = m.obs["true_cell_type"].astype("category").cat.codes.to_numpy()
    rng = np.random.default_rng(seed)
    donor = np.where(rng.random(m.n_obs) < np.where(y % 2 == 0, 0.8, 0.2), "a", "b")
    return m, y, donor


def test_harmony_mixes_shifted_donors_and_keeps_types_of_other_proportions():
    from sci2cl.model._harmony import harmony

    _, y, donor = _composition_donors()
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(y.max() + 1, 10))
    z = centres[y] + rng.normal(size=(len(y), 10)) + 3.0 * (donor == "b")[:, None]
    out = harmony(z.astype(np.float32), donor, seed=0)
    assert out.shape == z.shape and out.dtype == np.float32
    assert _other_batch_share(out, donor) > 2 * _other_batch_share(z, donor)
    nmi = [metrics.cluster_embedding(e, y.astype(str), seed=0)[0]["nmi"] for e in (z, out)]
    assert nmi[1] > nmi[0] - 0.02
    np.testing.assert_array_equal(harmony(z, np.zeros(len(y)), seed=0), z)  # one batch


def test_batch_correction_is_checked_and_needs_harmonypy(models, two_batches, monkeypatch):
    m = two_batches.copy()
    sci2cl.SCI2CL.setup_mudata(m, batch_key="batch")
    with pytest.raises(ValueError, match="batch_correction"):
        sci2cl.SCI2CL(m, batch_correction="scvi", **SMALL)
    with pytest.raises(TypeError, match="correct_batches"):
        models["batch"][0].get_latent_representation(key_added=None, correct_batches="no")
    monkeypatch.setitem(__import__("sys").modules, "harmonypy", None)  # not installed
    with pytest.raises(ImportError, match=r"sci2cl\[batch\].*batch_correction='none'"):
        sci2cl.SCI2CL(m, **SMALL)
    sci2cl.SCI2CL(m, batch_correction="none", **SMALL)  # needs no harmonypy
    plain = two_batches.copy()
    sci2cl.SCI2CL.setup_mudata(plain)  # without a batch key there is nothing to correct
    sci2cl.SCI2CL(plain, **SMALL)


def test_models_saved_before_batch_correction_load_uncorrected(models, tmp_path):
    import json

    model, data = models["batch"]
    model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["init"].pop("batch_correction") == "harmony"
    (tmp_path / "m" / "model.json").write_text(json.dumps(meta))
    old = sci2cl.SCI2CL.load(tmp_path / "m", data.copy())
    np.testing.assert_allclose(
        old.get_latent_representation(key_added=None),
        model.get_latent_representation(key_added=None, correct_batches=False),
        atol=1e-5,
    )
