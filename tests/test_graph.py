"""Graph primitives (sci2cl._graph), compared with the libraries they stand in for."""

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
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


def _clustered(rng, labels, groups, sep, d=12):
    """Cells around the centre of their group ``groups[label]``, rows L2-normalised."""
    centres = rng.normal(0, sep, (max(groups) + 1, d))
    z = centres[np.asarray(groups)[labels]] + rng.normal(0, 1, (len(labels), d))
    return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_modularity_weight_mixes_complementary_modalities_and_drops_noise():
    from sklearn.metrics import normalized_mutual_info_score as nmi

    rng = np.random.default_rng(0)
    y = rng.integers(0, 8, 1200)
    grid = np.linspace(0, 1, 11)
    # RNA separates pairs of types that ATAC merges, and the other way round:
    # only a mix of the two separates all 8 types
    rna = _clustered(rng, y, [0, 0, 1, 1, 2, 2, 3, 3], 3)
    atac = _clustered(rng, y, [0, 1, 0, 1, 2, 3, 2, 3], 3)
    s = _graph.modularity_weight_scores(rna, atac, grid, n_components=12)
    assert list(s.columns) == ["w_rna", "modularity"] and len(s) == 11
    best = s.loc[s["modularity"].idxmax(), "w_rna"]
    assert 0 < best < 1
    assert s["modularity"].max() > s["modularity"].iloc[[0, -1]].max() + 0.05

    def leiden_nmi(w):
        Y = np.hstack([np.sqrt(w) * rna, np.sqrt(1 - w) * atac])
        return nmi(y, _graph.leiden_labels(Y))

    assert leiden_nmi(best) > max(leiden_nmi(0.0), leiden_nmi(1.0)) + 0.1
    # the margin rule keeps that mixture (its gain is far above the margin) ...
    assert _graph.choose_modality_weight(s, margin=0.01) == best
    assert _graph.choose_modality_weight(s, margin=1.0) in (0.0, 1.0)
    # an ATAC without structure scores far below the best on its own, and swapping the modalities mirrors the grid
    noise = _clustered(rng, y, [0] * 8, 0)
    s2 = _graph.modularity_weight_scores(rna, noise, grid, n_components=12)
    assert s2.loc[s2["modularity"].idxmax(), "w_rna"] >= 0.5
    assert s2["modularity"].iloc[0] < s2["modularity"].max() - 0.2
    # ... and reads one modality alone when a mixture gains less than the margin
    flat = pd.DataFrame({"w_rna": grid, "modularity": 0.5 + 0.02 * grid - 0.015 * grid**2})
    assert 0 < flat.loc[flat["modularity"].idxmax(), "w_rna"] < 1  # mixture best, by < 0.01
    assert _graph.choose_modality_weight(flat, margin=0.01) == 1.0
    assert (
        _graph.choose_modality_weight(flat, margin=0.0)
        == flat.loc[flat["modularity"].idxmax(), "w_rna"]
    )
    with pytest.raises(ValueError, match="single modalities"):
        _graph.choose_modality_weight(s2[(s2["w_rna"] > 0) & (s2["w_rna"] < 1)])
    s3 = _graph.modularity_weight_scores(noise, rna, grid, n_components=12)
    np.testing.assert_allclose(s3["modularity"].to_numpy()[::-1], s2["modularity"], atol=1e-6)
    with pytest.raises(ValueError, match="same cells"):
        _graph.modularity_weight_scores(rna, noise[:10], grid, 12)
    with pytest.raises(ValueError, match="grid"):
        _graph.modularity_weight_scores(rna, noise, [0.5, 1.5], 12)


def test_leiden_modularity_is_igraphs_score_of_leidens_partition():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    z = _clustered(rng, y, [0, 1, 2, 3], 4)
    q = _graph.leiden_modularity(z)
    noise = _graph.leiden_modularity(rng.normal(size=(300, 12)))
    assert 0 < noise < q <= 1
    # the partition found maximises modularity better than the true labels do, or ties them
    import igraph as ig
    import scipy.sparse as sp

    A = sp.triu(_graph.knn_adjacency(z), k=1).tocoo()
    g = ig.Graph(n=300, edges=np.column_stack([A.row, A.col]).tolist())
    assert q >= g.modularity(y.tolist()) - 1e-3


def test_agreement_weight_drops_a_noise_modality_and_mixes_complementary_ones():
    """Neighbours predict structure, not noise, when embedding and target carry independent noise
    (two halves of the counts): a modality of pure noise gets no weight; two modalities that each
    see half of the types are mixed."""
    rng = np.random.default_rng(0)
    n = 400
    y = np.repeat(np.arange(4), n // 4)
    centres = rng.normal(0, 4, (4, 6))

    def half(mean):  # one half of the data: the structure plus its own noise
        return mean + rng.normal(0, 1, mean.shape)

    signal, noise = centres[y], np.zeros((n, 6))
    s = _graph.agreement_weight_scores(
        half(signal), half(noise), {"rna": half(signal), "atac": half(noise)}, [0, 0.5, 1]
    )
    assert s.loc[s["score"].idxmax(), "w_rna"] == 1.0
    assert s["score_atac"].max() < 0.02  # noise: nothing for neighbours to predict
    # RNA separates types {0,1} from {2,3}; ATAC separates {0,2} from {1,3}
    a = np.c_[np.where(y < 2, 0.0, 6.0), np.zeros(n)]
    b = np.c_[np.zeros(n), np.where(y % 2 == 0, 0.0, 6.0)]
    t = _graph.agreement_weight_scores(
        half(a), half(b), {"rna": half(a), "atac": half(b)}, np.linspace(0, 1, 11)
    )
    assert 0.2 <= t.loc[t["score"].idxmax(), "w_rna"] <= 0.8
    assert t["score"].max() > t.loc[t["w_rna"].isin([0.0, 1.0]), "score"].max() + 0.05


def test_neighbour_agreement_tells_shared_from_unrelated_structure():
    rng = np.random.default_rng(0)
    y, other = rng.integers(0, 6, 900), rng.integers(0, 6, 900)
    rna = _clustered(rng, y, list(range(6)), 3)
    shared = _graph.neighbour_agreement(rna, _clustered(rng, y, list(range(6)), 3), seed=1)
    unrelated = _graph.neighbour_agreement(rna, _clustered(rng, other, list(range(6)), 3), seed=1)
    assert shared["z"] > 10 and shared["overlap"] > 3 * shared["null_mean"]
    assert abs(unrelated["z"]) < 3
    # the null is a random correspondence: about k / (n - 1) of the neighbours by chance
    assert abs(unrelated["null_mean"] - 15 / 899) < 0.005
    # the same cells twice share every neighbour; the order of the arguments does not matter
    assert _graph.neighbour_agreement(rna, rna)["overlap"] == 1.0
    back = _graph.neighbour_agreement(_clustered(rng, y, list(range(6)), 3), rna)
    assert back["z"] > 10
    with pytest.raises(ValueError, match="same cells"):
        _graph.neighbour_agreement(rna, rna[:10])
