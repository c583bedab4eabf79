"""The benchmark's peer plumbing (benchmarks/peers.py)."""

import numpy as np
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


def test_run_peer_reports_time_and_memory(tiny_mdata):
    r = peers.run_peer("RNA PCA", tiny_mdata, seed=0)
    assert r["embedding"].shape == (tiny_mdata.n_obs, 30) and r["adjacency"] is None
    assert r["seconds"] > 0 and r["peak_mb"] >= 0


def test_check_graph_rejects_non_finite_weights():
    g = sp.random(30, 30, density=0.2, random_state=0, format="csr")
    peers.check_graph(g)  # finite: silent
    g.data[[0, 1]] = np.nan
    rows = len(np.unique(np.repeat(np.arange(30), np.diff(g.indptr))[[0, 1]]))
    with pytest.raises(ValueError, match=f"2 non-finite weights in the rows of {rows} cells"):
        peers.check_graph(g, "test graph")
