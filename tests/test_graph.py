"""Graph primitives (sci2cl._graph), compared with the libraries they stand in for."""

import anndata as ad
import mudata as md
import numpy as np
import pytest

from sci2cl import _graph, tl


def test_modality_weights_agree_with_muon_wnn():
    """Our exact-neighbour WNN weights follow muon's ``mod_weight`` on a small case.

    Half the cells have their structure in RNA, half in ATAC: both rules must
    give each half to its informative modality.
    """
    import muon as mu
    import scanpy as sc

    rng = np.random.default_rng(0)
    n = 300
    lab = rng.integers(0, 4, n)
    centres = rng.normal(0, 5, (4, 8))
    rna_side = np.arange(n) < n // 2
    rna = np.where(rna_side[:, None], centres[lab], 0) + rng.normal(0, 1, (n, 8))
    atac = np.where(~rna_side[:, None], centres[lab], 0) + rng.normal(0, 1, (n, 8))
    ours = tl.modality_weights({"rna": rna, "atac": atac})
    names = [f"c{i}" for i in range(n)]
    mods = {}
    for m, X in (("rna", rna), ("atac", atac)):
        a = ad.AnnData(np.zeros((n, 1), np.float32), obs={"_": np.zeros(n)})
        a.obs_names, a.var_names = names, [f"{m}_feature"]
        a.obsm["X_emb"] = X
        sc.pp.neighbors(a, use_rep="X_emb", n_neighbors=20, random_state=0)
        mods[m] = a
    mdata = md.MuData(mods)
    mu.pp.neighbors(mdata, n_neighbors=20, random_state=0)
    theirs = mdata.obs["rna:mod_weight"].to_numpy()
    assert np.corrcoef(ours["rna"], theirs)[0, 1] > 0.8
    for side in (rna_side, ~rna_side):
        assert abs(ours["rna"][side].mean() - theirs[side].mean()) < 0.1
    assert ours["rna"][rna_side].mean() > 0.7 and ours["rna"][~rna_side].mean() < 0.3


def test_knn_adjacency_is_symmetric_and_excludes_self():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, 3))
    X[1] = X[0]  # a duplicate: ties must not drop the cell's own neighbours
    A = _graph.knn_adjacency(X, 5)
    assert (A != A.T).nnz == 0 and A.diagonal().sum() == 0
    assert (np.asarray(A.sum(1)).ravel() >= 5).all()
    assert A[0, 1] == 1
    idx = _graph.knn_indices(X, 5)
    assert idx.shape == (50, 5) and not (idx == np.arange(50)[:, None]).any()
    with pytest.raises(ValueError, match="at least 2 rows"):
        _graph.knn_indices(X[:1], 5)


def test_normalised_adjacency_rows_of_a_regular_graph():
    """On a k-regular graph, D^-1/2 (A + I) D^-1/2 has rows summing to 1."""
    import scipy.sparse as sp

    n = 10
    A = sp.csr_matrix(np.roll(np.eye(n), 1, 1) + np.roll(np.eye(n), -1, 1))
    S = _graph.normalised_adjacency(A)
    np.testing.assert_allclose(np.asarray(S.sum(1)).ravel(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(S.toarray(), S.toarray().T)
