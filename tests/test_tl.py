import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sci2cl import metrics, tl


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 8, (4, 6))
    lab = np.repeat(np.arange(4), 60)
    return centers[lab] + rng.normal(0, 1, (240, 6)), lab


def test_kmeans_and_leiden_recover_blobs(blobs):
    X, y = blobs
    assert metrics.ari(y, metrics.kmeans_labels(X, 4, seed=0)) > 0.95
    lab, res, table = metrics.leiden_label_free(X, resolutions=(0.1, 0.5, 1.0, 2.0), seed=0)
    assert metrics.ari(y, lab) > 0.9 and set(table["resolution"]) == {0.1, 0.5, 1.0, 2.0}
    rows = {r["protocol"]: r for r in metrics.cluster_embedding(X, y, seed=0)}
    assert rows["kmeans"]["n_clusters"] == 4 and rows["kmeans"]["nmi"] > 0.95
    assert rows["leiden"]["nmi"] > 0.9 and rows["leiden"]["resolution"] == 1.0
    # scrambled labels: the same clusters score near 0 against them
    scrambled = np.random.default_rng(0).permutation(y)
    assert all(r["nmi"] < 0.1 for r in metrics.cluster_embedding(X, scrambled, seed=0))


def test_audit_flags_planted_mislabels(blobs):
    import anndata as ad

    X, y = blobs
    given = y.astype(str).copy()
    rng = np.random.default_rng(1)
    flip = rng.choice(np.flatnonzero(y == 0), 12, replace=False)
    given[flip] = "1"
    a = ad.AnnData(
        np.zeros((len(y), 1), dtype=np.float32),
        obs=pd.DataFrame({"label": given}, index=[f"c{i}" for i in range(len(y))]),
    )
    a.obsm["emb"] = X
    table = tl.audit_annotation(a, "label", use_rep="emb")
    flagged = set(a.obs_names.get_indexer(table.index))
    assert flagged == set(flip)
    assert (a.obs["audited_label"].astype(str).to_numpy()[flip] == "0").all()
    # random labels: nothing should be flagged above the permutation threshold
    a.obs["random"] = rng.permutation(given)
    assert len(tl.audit_annotation(a, "random", use_rep="emb", key_added="r")) < 0.1 * len(y)


def _two_type_counts(seed: int = 0):
    """Counts of 300 cells, two types (A, B) that differ in 20 of 60 genes and
    in markers 'SELL' (A) and 'ITGAL' (B); an embedding that follows the
    truth except for 30 cells of type A that it places among the B cells."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    truth = np.repeat(["A", "B"], 150)
    mu = np.full((300, 62), 5.0)
    mu[truth == "A", :10] = 25
    mu[truth == "B", 10:20] = 25
    mu[truth == "A", 60], mu[truth == "B", 61] = 30, 30
    counts = rng.poisson(mu).astype(np.float32)
    a = ad.AnnData(
        counts,
        obs=pd.DataFrame(index=[f"c{i}" for i in range(300)]),
        var=pd.DataFrame(index=[f"g{j}" for j in range(60)] + ["SELL", "ITGAL"]),
    )
    a.layers["counts"] = a.X.copy()
    emb = np.where(truth[:, None] == "A", 0.0, 10.0) + rng.normal(0, 1, (300, 5))
    misplaced = np.arange(30)  # type A, embedded with B
    emb[misplaced] += 10.0
    return a, truth, emb, misplaced


def test_audit_evidence_accepts_true_errors_and_rejects_embedding_errors():
    a, truth, emb, misplaced = _two_type_counts()
    a.obsm["emb"] = emb
    # (1) the 30 cells are mislabelled B but express A and sit with A cells in a
    # correct embedding: the neighbourhood flags them and the expression agrees
    wrong = np.arange(150, 180)
    given = truth.copy()
    given[wrong] = "A"
    a.obs["given"] = given
    a.obsm["good"] = np.where(truth[:, None] == "A", 0.0, 10.0) + np.random.default_rng(1).normal(
        0, 1, (300, 5)
    )
    t = tl.audit_annotation(a, "given", use_rep="good")
    bare = tl.audit_annotation(a, "given", use_rep="good", evidence=False, key_added="bare")
    assert set(t.index) == set(bare.index)  # nothing the neighbourhood found is dropped
    assert set(a.obs_names.get_indexer(t.index)) <= set(wrong) and len(t) >= 20
    sub = a.uns["audited_label"]["subgroups"].set_index(["label", "proposed"])
    assert sub.loc[("A", "B"), "accepted"] and sub.loc[("A", "B"), "rna_position"] > 0.8
    # (2) correct labels, but the embedding misplaces 30 A cells among B: the
    # neighbourhood alone would relabel them; the expression evidence refuses
    a.obs["truth"] = truth
    bare = tl.audit_annotation(a, "truth", use_rep="emb", evidence=False, key_added="bare")
    assert set(a.obs_names.get_indexer(bare.index)) <= set(misplaced) and len(bare) >= 20
    t = tl.audit_annotation(a, "truth", use_rep="emb")
    assert len(t) == 0
    sub = a.uns["audited_label"]["subgroups"].set_index(["label", "proposed"])
    assert not sub.loc[("A", "B"), "accepted"] and sub.loc[("A", "B"), "rna_position"] < 0.2
    assert (a.obs["audited_label"].astype(str) == truth).all()


def test_audit_marker_evidence_uses_given_markers():
    a, truth, emb, _ = _two_type_counts(1)
    wrong = np.arange(150, 180)
    given = truth.copy()
    given[wrong] = "A"
    a.obs["given"] = given
    a.obsm["good"] = np.where(truth[:, None] == "A", 0.0, 10.0)[:, :1] + np.random.default_rng(
        2
    ).normal(0, 1, (300, 3))
    tl.audit_annotation(a, "given", use_rep="good", markers={"A": ["SELL"], "B": ["ITGAL"]})
    sub = a.uns["audited_label"]["subgroups"].set_index(["label", "proposed"])
    assert sub.loc[("A", "B"), "markers_position"] > 0.8
    assert sub.loc[("A", "B"), "markers_weight"] > 1
    tl.audit_annotation(a, "given", use_rep="good", markers={}, key_added="x")
    assert "markers_position" not in a.uns["x"]["subgroups"]


def test_subpopulations_on_planted_simulator(tiny_mdata):
    m = tiny_mdata.copy()  # the session's fixture stays as other tests expect it
    m.obsm["truth_emb"] = np.c_[
        pd.get_dummies(m.obs["true_subtype"]).to_numpy(float) * 5,
        np.random.default_rng(0).normal(0, 0.3, (m.n_obs, 3)),
    ]
    r = tl.find_subpopulations(
        m, "cell_type", "CD14 Mono", use_rep="truth_emb", seed=0, key_added="sub"
    )
    cells = r["labels"].index
    assert r["n_subclusters"] == 3 and r["stable"]
    assert metrics.ari(m.obs.loc[cells, "true_subtype"].astype(str), r["labels"].astype(str)) > 0.95
    assert {"names", "pvals_adj", "logfoldchanges", "group"} <= set(r["de"].columns)


def test_plateau_rule_measures_stability_inside_the_resolution_plateau(tiny_mdata):
    """Cosine rows of well-separated subtypes: the silhouette rule's resolution is the edge where the
    three subclusters first appear and subsamples fall back to one; the plateau rule keeps the same
    subclusters and finds them stable."""
    m = tiny_mdata.copy()
    m.obsm["truth_emb"] = np.c_[
        pd.get_dummies(m.obs["true_subtype"]).to_numpy(float) * 5,
        np.random.default_rng(0).normal(0, 0.3, (m.n_obs, 3)),
    ]
    kw = dict(use_rep="truth_emb", seed=0, space="cosine", de=False, min_markers=0)
    edge = tl.find_subpopulations(m, "cell_type", "CD14 Mono", resolution_rule="silhouette", **kw)
    mid = tl.find_subpopulations(m, "cell_type", "CD14 Mono", resolution_rule="plateau", **kw)
    assert (mid["labels"] == edge["labels"]).all() and mid["n_subclusters"] == 3
    assert mid["resolution"] > edge["resolution"]
    assert mid["stable"] and not edge["stable"]


@pytest.mark.parametrize("space", ["raw", "zscore", "pca", "cosine"])
@pytest.mark.parametrize("rule", ["silhouette", "plateau", "stability"])
def test_subpopulation_rules_split_blobs_and_keep_noise_whole(space, rule, request):
    """Every space and resolution rule finds three planted blobs; the stability rule also keeps a
    population without structure whole (it has no stable split)."""
    import anndata as ad

    if (space, rule) == ("pca", "stability"):  # a known weakness of that option (not the default)
        request.applymarker(pytest.mark.xfail(reason="the stability rule halves 2-D blobs stably"))
    rng = np.random.default_rng(1)
    n = 150
    truth = np.repeat([0, 1, 2], n)
    centres = rng.normal(0, 1, (3, 10)) * 4
    X = np.r_[centres[truth] + rng.normal(0, 1, (3 * n, 10)), rng.normal(0, 1, (3 * n, 10))]
    X[:, 0] += 20  # away from the origin, so that cosine distances see the blobs too
    a = ad.AnnData(
        X=np.ones((6 * n, 2), np.float32),
        obs=pd.DataFrame(
            {"pop": np.repeat(["blobs", "noise"], 3 * n)}, index=[f"c{i}" for i in range(6 * n)]
        ),
    )
    a.obsm["e"] = X * 1e-3  # the rule must not depend on the embedding's scale
    kw = dict(use_rep="e", space=space, resolution_rule=rule, de=False, seed=0)
    kw["min_markers"] = 0  # the clustering rules alone (X holds no genes to test)
    r = tl.find_subpopulations(a, "pop", "blobs", **kw)
    assert r["stable"] and metrics.ari(truth, r["labels"].to_numpy()) > 0.9
    r = tl.find_subpopulations(a, "pop", "noise", **kw)
    if rule == "stability":
        assert r["n_subclusters"] == 1 and not r["stable"]
    assert a.uns["subpopulation"]["params"]["space"] == space


def test_population_space_properties():
    from sci2cl.tl._subpopulations import population_space

    rng = np.random.default_rng(0)
    X = rng.normal(0, 1, (200, 6)) @ np.diag([10, 5, 1, 1, 0.1, 0.0])  # one constant dimension
    Z = population_space(X, "zscore")
    assert Z.shape == (200, 5) and np.allclose(Z.std(0), 1) and np.allclose(Z.mean(0), 0)
    P = population_space(X, "pca")
    assert 2 <= P.shape[1] <= 5 and np.allclose(P.mean(0), 0, atol=1e-9)
    assert np.allclose(np.linalg.norm(population_space(X, "cosine"), axis=1), 1)
    # scale-free: the same space for the rows times a constant
    assert np.allclose(population_space(X * 1e3, "pca"), population_space(X, "pca"), atol=1e-6)


def test_stage_order_score():
    pt = np.r_[np.linspace(0, 1, 10), np.linspace(1, 2, 10), np.linspace(2, 3, 10)]
    lab = np.repeat(["a", "b", "c"], 10)
    assert metrics.stage_order_score(pt, lab, ["a", "b", "c"])["order_correct"]
    s = metrics.stage_order_score(pt, lab, ["c", "b", "a"])
    assert not s["order_correct"] and s["kendall_tau"] == -1


def test_trajectory_orders_a_simple_path():
    import anndata as ad

    rng = np.random.default_rng(0)
    t = rng.random(300)
    X = np.c_[np.cos(2 * t), np.sin(2 * t)] * 5 + rng.normal(0, 0.05, (300, 2))
    stage = np.array(["s0", "s1", "s2"])[np.minimum((t * 3).astype(int), 2)]
    a = ad.AnnData(
        np.zeros((300, 1), dtype=np.float32),
        obs=pd.DataFrame({"stage": stage}, index=[f"c{i}" for i in range(300)]),
    )
    a.obsm["emb"] = X
    fit = tl.trajectory(a, "stage", "s0", use_rep="emb", seed=0)
    from scipy.stats import spearmanr

    assert spearmanr(fit["pseudotime"], t).statistic > 0.9
    assert metrics.stage_order_score(fit["pseudotime"], stage, ["s0", "s1", "s2"])["order_correct"]
    per = a.obsm["pseudotime_lineages"]
    assert per.shape == (300, len(fit["lineages"])) and a.obs["pseudotime"].notna().all()
    # one lineage here: its pseudotime is the unified one
    np.testing.assert_allclose(per[:, 0], fit["pseudotime"])


def test_gene_activity_counts_overlapping_peaks():
    import anndata as ad
    import scipy.sparse as sp

    atac = ad.AnnData(sp.csr_matrix(np.array([[1, 2, 0], [0, 1, 5]], dtype=np.float32)))
    atac.var_names = ["chr1-1000-1200", "chr1-5000-5100", "chr2-100-200"]
    genes = pd.DataFrame(
        {
            "chrom": ["chr1", "chr2", "chr3"],
            "start": [2500, 150, 10],
            "end": [6000, 300, 20],
            "strand": ["+", "-", "+"],
        },
        index=["G1", "G2", "G3"],
    )
    ga = tl.gene_activity(atac, genes, upstream=2000, layer=None)
    np.testing.assert_array_equal(
        ga.X.toarray(), [[3, 0, 0], [1, 5, 0]]
    )  # G1: peaks 1 (promoter) + 2 (body)
    bad = atac.copy()
    bad.var_names = ["p1", "p2", "p3"]
    with pytest.raises(ValueError, match="coordinates"):
        tl.gene_activity(bad, genes, layer=None)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from(["Rorb", "Cux2", "Mog", "", None]), min_size=1, max_size=12))
def test_linked_gene_activity_sums_each_genes_peaks(genes):
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(len(genes))
    X = rng.poisson(1.0, (5, len(genes))).astype(np.float32)
    atac = ad.AnnData(sp.csr_matrix(X))
    atac.var["gene"] = pd.Series(genes, index=atac.var_names, dtype=object)
    named = [g for g in genes if g]
    if not named:
        with pytest.raises(ValueError, match="no peak has a gene"):
            tl.linked_gene_activity(atac, layer=None)
        return
    ga = tl.linked_gene_activity(atac, layer=None)
    assert list(ga.var_names) == sorted(set(named))
    for g in ga.var_names:  # brute force: the sum over that gene's peaks
        cols = [j for j, x in enumerate(genes) if x == g]
        np.testing.assert_allclose(ga[:, g].X.toarray().ravel(), X[:, cols].sum(1))
    with pytest.raises(KeyError, match="no column 'peak_gene'"):
        tl.linked_gene_activity(atac, gene_key="peak_gene", layer=None)


def test_gsea_prerank_local_gmt(tmp_path):
    genes = [f"G{i}" for i in range(200)]
    gmt = tmp_path / "sets.gmt"
    gmt.write_text(
        "UP\tna\t" + "\t".join(genes[:20]) + "\nRANDOM\tna\t" + "\t".join(genes[90:110]) + "\n"
    )
    de = pd.DataFrame({"group": "g", "names": genes, "scores": np.linspace(10, -10, 200)})
    res = tl.gsea_prerank(de, "g", str(gmt), permutation_num=100, min_size=5)
    top = res.set_index("Term")
    assert float(top.loc["UP", "NES"]) > 0 and float(top.loc["UP", "FDR q-val"]) < 0.05


def test_modality_weights_favour_the_modality_that_holds_the_structure():
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 4, (5, 10))
    labels = rng.integers(0, 5, 400)
    informative = centres[labels] + rng.normal(0, 1, (400, 10))
    noise = rng.normal(0, 1, (400, 10))
    w = tl.modality_weights({"rna": informative, "atac": noise})
    assert w.shape == (400, 2) and list(w.columns) == ["rna", "atac"]
    np.testing.assert_allclose(w.sum(1), 1.0)
    assert w["rna"].mean() > 0.8
    # swapping the modalities swaps the weights
    w2 = tl.modality_weights({"atac": noise, "rna": informative})
    np.testing.assert_allclose(w2["rna"], w["rna"])
    # the same embedding twice carries no preference
    same = tl.modality_weights({"rna": informative, "atac": informative.copy()})
    np.testing.assert_allclose(same.to_numpy(), 0.5)
    with pytest.raises(ValueError, match="same number of cells"):
        tl.modality_weights({"rna": informative, "atac": noise[:10]})


def _populations(counts: np.ndarray, pops: list[str], sizes: list[int], emb: np.ndarray):
    """AnnData of populations ``pops`` (``sizes`` cells each, in order): raw counts in ``X`` and
    ``layers["counts"]``, genes ``g0..``, the embedding in ``obsm["e"]``."""
    import anndata as ad

    a = ad.AnnData(
        X=np.asarray(counts, dtype=np.float32),
        obs=pd.DataFrame({"pop": np.repeat(pops, sizes)},
                         index=[f"c{i}" for i in range(sum(sizes))]),
    )  # fmt: skip
    a.var_names = [f"g{i}" for i in range(counts.shape[1])]
    a.layers["counts"] = a.X.copy()
    a.obsm["e"] = np.asarray(emb)
    return a


def test_marker_support_keeps_a_split_without_markers_whole():
    """Two blobs in the embedding: split when the blobs differ in expression (planted markers), kept
    whole when their counts come from one distribution (a split no gene supports)."""

    rng = np.random.default_rng(3)
    n, g = 150, 60
    truth = np.repeat([0, 1], n)
    X = np.r_[rng.normal(0, 1, (n, 8)), rng.normal(0, 1, (n, 8)) + 6]
    rate = np.full((2 * n, g), 2.0)
    rate[truth == 1, :15] *= 6  # 15 genes up in the second blob
    planted = rng.poisson(rate)
    flat = rng.poisson(np.full((2 * n, g), 2.0))
    a = _populations(np.r_[planted, flat], ["real", "flat"], [2 * n, 2 * n], np.r_[X, X])
    kw = dict(use_rep="e", seed=0, de=False, min_markers=5)
    r = tl.find_subpopulations(a, "pop", "real", **kw)
    assert r["stable"] and metrics.ari(truth, r["labels"].to_numpy()) > 0.9
    r = tl.find_subpopulations(a, "pop", "flat", **kw)
    assert r["n_subclusters"] == 1 and not r["stable"] and r["resolution"] == 0
    # without the gate the embedding alone splits it
    assert tl.find_subpopulations(a, "pop", "flat", use_rep="e", seed=0, de=False, min_markers=0)[
        "stable"
    ]
    # the default gates (one marker); the stability rule has no gate
    default = tl.find_subpopulations(a, "pop", "flat", use_rep="e", seed=0, de=False)
    assert default["n_subclusters"] == 1 and a.uns["subpopulation"]["params"]["min_markers"] == 1
    tl.find_subpopulations(
        a, "pop", "flat", use_rep="e", seed=0, de=False, resolution_rule="stability"
    )
    assert a.uns["subpopulation"]["params"]["min_markers"] == 0
    with pytest.raises(ValueError, match="min_markers"):
        tl.find_subpopulations(
            a, "pop", "flat", use_rep="e", min_markers=3, resolution_rule="stability"
        )


def test_marker_fold_change_gate():
    """A split whose genes differ 2.5-fold (log2 1.3) passes a log2 fold-change gate of 1, not of 2;
    a 6-fold difference (log2 2.6) passes both."""

    rng = np.random.default_rng(5)
    n, g = 150, 60
    truth = np.repeat([0, 1], n)
    X = np.r_[rng.normal(0, 1, (n, 8)), rng.normal(0, 1, (n, 8)) + 6]
    blocks = []
    for fold in (2.5, 6.0):
        rate = np.full((2 * n, g), 4.0)
        rate[truth == 1, :15] *= fold  # up in the second blob
        rate[truth == 0, 15:30] *= fold  # up in the first
        blocks.append(rng.poisson(rate))
    a = _populations(np.concatenate(blocks), ["weak", "strong"], [2 * n, 2 * n], np.r_[X, X])
    # the gate alone: the blobs are apart in the raw space
    kw = dict(use_rep="e", seed=0, de=False, space="raw")

    def splits_blobs(r):  # every subcluster inside one blob, both blobs found
        tab = pd.crosstab(r["labels"].to_numpy(), truth)
        return tab.shape == (tab.shape[0], 2) and ((tab > 0).sum(1) == 1).all() and len(tab) > 1

    for pop in ("weak", "strong"):
        assert splits_blobs(tl.find_subpopulations(a, "pop", pop, min_log2fc=1.0, **kw))
    assert tl.find_subpopulations(a, "pop", "weak", min_log2fc=2.0, **kw)["n_subclusters"] == 1
    assert splits_blobs(tl.find_subpopulations(a, "pop", "strong", min_log2fc=2.0, **kw))
    assert a.uns["subpopulation"]["params"]["min_log2fc"] == 2.0
    with pytest.raises(ValueError, match="min_log2fc"):
        tl.find_subpopulations(a, "pop", "weak", min_log2fc=-1.0, **kw)


def test_own_markers_ignore_genes_of_another_population():
    """A population split only by genes that another population expresses more (as ambient RNA or
    doublets bring in) stays whole under ``own_markers``; a split by its own genes does not."""

    rng = np.random.default_rng(7)
    n, g = 150, 60
    truth = np.repeat([0, 1], n)
    X = np.r_[rng.normal(0, 1, (n, 8)), rng.normal(0, 1, (n, 8)) + 6]
    borrowed = np.full((2 * n, g), 3.0)
    borrowed[truth == 1, :15] *= 6  # half the cells carry the other population's genes
    own = np.full((2 * n, g), 3.0)
    own[truth == 1, 30:45] *= 6  # genes no other population expresses
    own[truth == 0, 45:] *= 6
    other = np.full((n, g), 3.0)
    other[:, :15] *= 30  # the population whose genes leak
    counts = np.concatenate([rng.poisson(borrowed), rng.poisson(own), rng.poisson(other)])
    emb = np.r_[X, X, rng.normal(20, 1, (n, 8))]
    a = _populations(counts, ["leaky", "real", "neuron"], [2 * n, 2 * n, n], emb)
    kw = dict(use_rep="e", seed=0, de=False, space="raw")
    assert tl.find_subpopulations(a, "pop", "leaky", **kw)["n_subclusters"] > 1
    assert tl.find_subpopulations(a, "pop", "leaky", own_markers=True, **kw)["n_subclusters"] == 1
    r = tl.find_subpopulations(a, "pop", "real", own_markers=True, **kw)
    assert metrics.ari(truth, r["labels"].to_numpy()) > 0.9
