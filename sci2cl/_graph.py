"""Graph primitives of the models and analyses: kNN graphs, normalised adjacency, Leiden, WNN weights.

Private: the public entry points are :func:`sci2cl.tl.leiden` and
:func:`sci2cl.tl.modality_weights`.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def knn_indices(X: np.ndarray, n_neighbors: int, metric: str = "euclidean") -> np.ndarray:
    """Indices ``(n, k)`` of each row's ``k = min(n_neighbors, n - 1)`` nearest other rows (sklearn)."""
    from sklearn.neighbors import NearestNeighbors

    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 2:
        raise ValueError(f"need a 2-D array of at least 2 rows, got shape {X.shape}")
    k = min(n_neighbors, X.shape[0] - 1)
    idx = (
        NearestNeighbors(n_neighbors=k + 1, metric=metric)
        .fit(X)
        .kneighbors(X, return_distance=False)
    )
    # a row is its own nearest neighbour unless duplicates tie with it: drop itself, keep k others
    keep = idx != np.arange(len(idx))[:, None]
    keep[keep.sum(1) == k + 1, -1] = False
    return idx[keep].reshape(len(idx), k)


def knn_adjacency(X: np.ndarray, n_neighbors: int = 15, metric: str = "euclidean") -> sp.csr_matrix:
    """Symmetric binary kNN adjacency ``(n, n)`` of the rows of ``X`` (no self loops)."""
    idx = knn_indices(X, n_neighbors, metric)
    n, k = idx.shape
    A = sp.csr_matrix(
        (np.ones(n * k, np.float32), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n)
    )
    return ((A + A.T) > 0).astype(np.float32).tocsr()


def neighbour_agreement(
    X: np.ndarray, Y: np.ndarray, n_neighbors: int = 15, n_permutations: int = 20, seed: int = 0
) -> dict:
    """How many kNN neighbours two embeddings of the same cells share, against chance.

    ``overlap``: the mean fraction of a cell's ``n_neighbors`` nearest rows of
    ``X`` ``(n, d1)`` that are also among its nearest rows of ``Y`` ``(n, d2)``.
    The null keeps both graphs and draws a random correspondence between the
    cells of ``Y`` and those of ``X`` (``n_permutations`` seeded permutations):
    ``null_mean``, ``null_sd`` and ``z = (overlap - null_mean) / null_sd``. A
    ``z`` near 0 says that the two embeddings share no cell neighbourhoods: their
    structures are unrelated. No labels are used.
    """
    X, Y = np.asarray(X), np.asarray(Y)
    if len(X) != len(Y):
        raise ValueError(f"X and Y must hold the same cells, got {len(X)} and {len(Y)} rows")
    n = len(X)
    a, b = knn_indices(X, n_neighbors), knn_indices(Y, n_neighbors)
    k, rows = a.shape[1], np.repeat(np.arange(n), a.shape[1])

    def graph(nb: np.ndarray) -> sp.csr_matrix:  # directed kNN graph, row i: i's neighbours
        return sp.csr_matrix((np.ones(n * k), (rows, nb.ravel())), shape=(n, n))

    A = graph(a)

    def shared(nb: np.ndarray) -> float:
        return float(A.multiply(graph(nb)).sum()) / (n * k)

    rng = np.random.default_rng(seed)
    null = []
    for _ in range(n_permutations):
        p = rng.permutation(n)  # cell i of X is matched with cell p[i] of Y
        inv = np.argsort(p)
        null.append(shared(inv[b[p]]))
    overlap, mu, sd = shared(b), float(np.mean(null)), float(np.std(null, ddof=1))
    return {
        "overlap": overlap, "null_mean": mu, "null_sd": sd,
        "z": (overlap - mu) / max(sd, 1e-12),
    }  # fmt: skip


def normalised_adjacency(A: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 (A + I) D^-1/2`` of a symmetric 0/1 graph (the GCN propagation matrix)."""
    A = A + sp.eye(A.shape[0], format="csr")
    d = np.asarray(A.sum(1)).ravel()
    dinv = sp.diags(1.0 / np.sqrt(d))
    return (dinv @ A @ dinv).tocsr().astype(np.float32)


def leiden_labels(
    X: np.ndarray | None = None,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    seed: int = 0,
    adjacency: sp.spmatrix | None = None,
) -> np.ndarray:
    """Leiden clusters (scanpy/leidenalg) on the kNN graph of ``X`` or a given adjacency."""
    import scanpy as sc

    if X is None and adjacency is None:
        raise ValueError("pass an embedding X or an adjacency")
    A = knn_adjacency(X, n_neighbors) if adjacency is None else adjacency
    tmp = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(A.shape[0])]))
    sc.tl.leiden(
        tmp,
        resolution=resolution,
        adjacency=A,
        random_state=seed,
        key_added="c",
        flavor="igraph",
        n_iterations=2,
        directed=False,
    )
    return tmp.obs["c"].astype(int).to_numpy()


def leiden_modularity(
    X: np.ndarray, n_neighbors: int = 15, resolution: float = 1.0, seed: int = 0
) -> float:
    """Modularity of the Leiden partition of the kNN graph of ``X`` ``(n_cells, d)``.

    A label-free measure of how strongly the embedding's neighbourhood graph
    falls into communities: the Leiden clusters of :func:`leiden_labels`
    (``resolution``, ``seed``) scored by igraph's Newman-Girvan modularity at
    the same resolution, in ``[-1/2, 1]``.
    """
    import igraph as ig

    A = knn_adjacency(X, n_neighbors)
    labels = leiden_labels(resolution=resolution, seed=seed, adjacency=A)
    up = sp.triu(A, k=1).tocoo()
    g = ig.Graph(n=A.shape[0], edges=np.column_stack([up.row, up.col]).tolist())
    return float(g.modularity(labels.tolist(), resolution=resolution))


def _weight_inputs(z_rna, z_atac, grid) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two embeddings of the same cells and a grid of RNA weights in ``[0, 1]``, checked."""
    z_rna, z_atac = np.asarray(z_rna, np.float64), np.asarray(z_atac, np.float64)
    if z_rna.ndim != 2 or z_atac.ndim != 2 or len(z_rna) != len(z_atac):
        raise ValueError(
            f"need two 2-D embeddings of the same cells, got shapes {z_rna.shape} and {z_atac.shape}"
        )
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or not len(grid) or grid.min() < 0 or grid.max() > 1:
        raise ValueError(f"grid must be a non-empty list of weights in [0, 1], got {grid}")
    return z_rna, z_atac, grid


def modularity_weight_scores(
    z_rna: np.ndarray,
    z_atac: np.ndarray,
    grid,
    n_components: int,
    seed: int = 0,
    n_neighbors: int = 15,
) -> pd.DataFrame:
    """Leiden modularity of the joint embedding for each RNA weight ``w`` of ``grid``.

    For each ``w`` in ``[0, 1]``: ``[sqrt(w) z_rna, sqrt(1 - w) z_atac]``
    (``(n_cells, d_rna + d_atac)``; pass each modality on a common scale, e.g.
    divided by its mean row norm, so that squared distances are the weighted
    sum of the modalities' squared distances),
    projected on its first ``n_components`` principal axes, scored by
    :func:`leiden_modularity` of its ``n_neighbors``-NN graph. No labels are
    used. A weight that mixes in a modality without neighbourhood structure
    lowers the score; a mix of modalities whose structures complement each
    other raises it above either alone.

    Returns
    -------
    pandas.DataFrame
        Columns ``w_rna`` and ``modularity``, one row per grid value.
    """
    from sklearn.decomposition import PCA

    z_rna, z_atac, grid = _weight_inputs(z_rna, z_atac, grid)
    rows = []
    for w in grid:
        Y = np.hstack([np.sqrt(w) * z_rna, np.sqrt(1 - w) * z_atac])
        Y = PCA(n_components=min(n_components, *Y.shape), svd_solver="full").fit_transform(Y)
        rows.append({"w_rna": float(w), "modularity": leiden_modularity(Y, n_neighbors, seed=seed)})
    return pd.DataFrame(rows)


def agreement_weight_scores(
    z_rna: np.ndarray,
    z_atac: np.ndarray,
    features: dict[str, np.ndarray],
    grid,
    n_neighbors: int = 15,
) -> pd.DataFrame:
    """How well each joint embedding's neighbours predict every modality's own data (no labels).

    For each RNA weight ``w`` of ``grid``, the joint embedding
    ``[sqrt(w) z_rna, sqrt(1 - w) z_atac]`` gives each cell its
    ``n_neighbors`` nearest other cells. Each modality's features
    (``features[m]``, ``(n_cells, d_m)``) are predicted by the mean of the
    neighbours' features, the cell itself left out. The embeddings and the
    features must carry independent noise, e.g. the two halves of each cell's
    counts split binomially (count splitting, Neufeld et al. 2023,
    Biostatistics; the idea of Noise2Self, Batson & Royer 2019): then noise
    cannot be predicted by neighbours, only structure can, whereas features
    that share the embedding's noise reward neighbours chosen by that noise.
    ``score_<m>`` is the fraction of the features'
    variance so predicted (``1 - error / error of the overall mean``);
    ``score`` is their mean over the modalities, so a modality whose
    neighbourhoods carry nothing about the other lowers it, and one that
    sharpens both raises it.

    Returns
    -------
    pandas.DataFrame
        Columns ``w_rna``, ``score`` and ``score_<m>`` per modality, one row per grid value.
    """
    from sklearn.neighbors import NearestNeighbors

    z_rna, z_atac, grid = _weight_inputs(z_rna, z_atac, grid)
    feats = {m: np.asarray(f, np.float64) for m, f in features.items()}
    base = {m: float(((f - f.mean(0)) ** 2).sum(1).mean()) for m, f in feats.items()}
    k = min(n_neighbors, len(z_rna) - 1)
    rows = []
    for w in grid:
        Y = np.hstack([np.sqrt(w) * z_rna, np.sqrt(1 - w) * z_atac])
        idx = NearestNeighbors(n_neighbors=k + 1).fit(Y).kneighbors(Y, return_distance=False)
        nbr = np.array([r[r != i][:k] for i, r in enumerate(idx)])  # the cell itself left out
        row = {"w_rna": float(w)}
        for m, f in feats.items():
            err = float(((f - f[nbr].mean(1)) ** 2).sum(1).mean())
            row[f"score_{m}"] = 1.0 - err / base[m] if base[m] > 0 else 0.0
        row["score"] = float(np.mean([row[f"score_{m}"] for m in feats]))
        rows.append(row)
    return pd.DataFrame(rows)


def choose_modality_weight(scores: pd.DataFrame, margin: float = 0.0) -> float:
    """The RNA weight of the most modular joint graph in ``scores``.

    A mixture (``0 < w < 1``) is chosen only when its modularity beats the
    better single modality (``w = 0`` or ``w = 1``, which must be on the grid)
    by more than ``margin``; otherwise that single modality's weight. No labels
    are used.

    Parameters
    ----------
    scores
        Output of :func:`modularity_weight_scores` (columns ``w_rna``, ``modularity``).
    margin
        Modularity a mixture must gain over the better single modality (>= 0).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    ends = scores[scores["w_rna"].isin([0.0, 1.0])]
    if len(ends) == 0:
        raise ValueError("scores must include the single modalities, w_rna = 0 and w_rna = 1")
    best = scores.loc[scores["modularity"].idxmax()]
    end = ends.loc[ends["modularity"].idxmax()]
    return float(best["w_rna"] if best["modularity"] > end["modularity"] + margin else end["w_rna"])


def modality_weights(
    embeddings: dict[str, np.ndarray],
    n_neighbors: int = 20,
    n_bandwidth_neighbors: int = 20,
    eps: float = 1e-4,
) -> pd.DataFrame:
    """Per-cell modality weights of weighted nearest neighbours (WNN; Hao et al. 2021).

    For each cell and modality ``m``, the embedding of the cell in ``m`` is
    predicted by averaging it over the cell's nearest neighbours in ``m``
    (within-modality) and over its nearest neighbours in each other modality
    (cross-modality). Each prediction error becomes an affinity
    ``exp(-max(d - d_1, 0) / (sigma - d_1))`` with ``d_1`` the distance to the
    nearest neighbour and ``sigma`` the mean distance to the
    ``n_bandwidth_neighbors`` cells that share the fewest neighbours with the
    cell among those sharing any (smallest non-zero Jaccard index, ties broken
    by larger distance), as in Seurat and muon. The weights are the softmax over
    modalities of ``within / (max cross + eps)``. No labels are used: a
    modality gets weight where its neighbours describe the cell better than
    the other modality's neighbours do.

    This is the rule of :func:`muon.pp.neighbors` computed with exact
    neighbours and without building the WNN graph (``tests/test_graph.py``
    compares the two); it is deterministic.

    Parameters
    ----------
    embeddings
        ``{modality: (n_cells, d_m)}``, the same cells in the same order.
    n_neighbors
        Neighbourhood size (the cell itself included, as in scanpy).
    n_bandwidth_neighbors
        Cells averaged for the kernel bandwidth ``sigma``.
    eps
        Added to the cross-modality affinity in the ratio.

    Returns
    -------
    pandas.DataFrame
        ``(n_cells, n_modalities)``, rows sum to 1.
    """
    from scipy.special import softmax
    from sklearn.neighbors import NearestNeighbors

    names = list(embeddings)
    Z = {m: np.asarray(embeddings[m], dtype=np.float64) for m in names}
    n = {Z[m].shape[0] for m in names}
    if len(names) < 2 or len(n) != 1:
        raise ValueError("need two or more modalities with the same number of cells")
    n = n.pop()
    k = min(n_neighbors, n) - 1  # neighbours besides the cell itself
    if k < 1:
        raise ValueError(f"need at least 2 cells, got {n}")
    nbrs, d1, sigma = {}, {}, {}
    for m in names:
        X = Z[m]
        dist, idx = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X)
        nbrs[m], d1[m] = idx[:, 1:], dist[:, 1]
        G = sp.csr_matrix(
            (np.ones(n * k), idx[:, 1:].ravel(), np.arange(0, n * k + 1, k)), shape=(n, n)
        )
        shared = (G @ G.T).tocsr()
        shared.setdiag(0)
        shared.eliminate_zeros()
        sig = np.empty(n)
        for i in range(n):
            lo, hi = shared.indptr[i], shared.indptr[i + 1]
            j, s = shared.indices[lo:hi], shared.data[lo:hi]
            e = np.linalg.norm(X[j] - X[i], axis=1)
            pick = np.lexsort((-e, s / (2 * k - s)))[:n_bandwidth_neighbors]
            sig[i] = e[pick].mean() if len(pick) else d1[m][i]
        sigma[m] = sig
    ratios = []
    for m in names:
        width = np.maximum(sigma[m] - d1[m], 1e-12)
        theta = {
            src: np.exp(
                -np.maximum(np.linalg.norm(Z[m] - Z[m][nbrs[src]].mean(1), axis=1) - d1[m], 0)
                / width
            )
            for src in names
        }
        cross = np.max([theta[src] for src in names if src != m], axis=0)
        ratios.append(theta[m] / (cross + eps))
    return pd.DataFrame(softmax(np.stack(ratios, 1), axis=1), columns=names)
