"""Simulators with planted ground truth: paired multiome, spatial tissue, and a large file on disk."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import check_range, new_mudata

#: simulated genome: gene bodies of GENE_LENGTH on a grid of GENE_SPACING, peaks of PEAK_WIDTH
GENE_SPACING, GENE_LENGTH, PEAK_WIDTH, N_CHROM = 200_000, 20_000, 500, 10


def _simulated_coordinates(
    gene_programs: np.ndarray, peak_programs: np.ndarray, seed: int, min_r: float = 0.5
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Coordinates of simulated genes and peaks from their programs ``(n_types, n_features)``.

    A peak whose program correlates (r > ``min_r`` over the types) with a
    gene's lies in that gene's body; the others lie between genes, farther
    than any promoter window. Uses its own random stream, so the counts of a
    seed do not depend on it.
    """
    rng = np.random.default_rng([seed, 1])
    n_genes, n_peaks = gene_programs.shape[1], peak_programs.shape[1]

    def z(a):
        a = a - a.mean(0)
        n = np.linalg.norm(a, axis=0)
        return np.divide(a, n, out=np.zeros_like(a), where=n > 0)

    r = z(peak_programs).T @ z(gene_programs)  # (n_peaks, n_genes)
    best = r.argmax(1)
    linked = r[np.arange(n_peaks), best] > min_r
    gene_names = np.array([f"gene{j:05d}" for j in range(n_genes)])
    chrom_idx = np.arange(n_genes) % N_CHROM
    start = (1 + np.arange(n_genes) // N_CHROM) * GENE_SPACING
    genes = pd.DataFrame(
        {
            "chrom": [f"chr{c + 1}" for c in chrom_idx],
            "chromStart": start,
            "chromEnd": start + GENE_LENGTH,
            "strand": "+",
        },
        index=gene_names,
    )
    anchor = np.where(linked, best, rng.integers(0, n_genes, n_peaks))
    offset = np.where(
        linked,
        rng.integers(0, GENE_LENGTH - PEAK_WIDTH, n_peaks),  # in the gene body
        rng.integers(GENE_LENGTH + 50_000, GENE_SPACING - 50_000, n_peaks),  # between genes
    )
    p_start = start[anchor] + offset
    peaks = pd.DataFrame(
        {
            "chrom": [f"chr{c + 1}" for c in chrom_idx[anchor]],
            "chromStart": p_start,
            "chromEnd": p_start + PEAK_WIDTH,
            "gene": np.where(linked, gene_names[best], ""),
        },
        index=[f"peak{j:05d}" for j in range(n_peaks)],
    )
    return genes, peaks


#: what each modality carries in :func:`simulate_multiome` (``regime=``)
SIM_REGIMES = ("book", "balanced", "atac_types", "batches")
SIM_TYPES = (
    "HSPC",
    "B naive",
    "B intermediate",
    "B memory",  # trajectory
    "CD14 Mono",  # hides three subtypes
    "CD4 naive T",
    "CD4 memory T",  # partly mislabelled pair
    "NK",
    "ILC",  # differ only in ATAC
    "CD8 naive T",
    "CD8 TEM",  # differ only in RNA
)


def simulate_multiome(
    n_cells: int = 3000,
    n_genes: int = 1000,
    n_peaks: int = 3000,
    mislabel_fraction: float = 0.2,
    seed: int = 0,
    regime: str = "book",
) -> md.MuData:
    """Paired RNA + ATAC counts with planted ground truth.

    Eleven cell types (``SIM_TYPES``) are drawn in equal proportions; each
    has a latent program that sets log-means of genes and accessibility of
    peaks. Planted structure:

    * ``CD14 Mono`` hides three subpopulations (``obs["true_subtype"]``) that
      differ in 8 genes and 30 peaks each;
    * a fraction ``mislabel_fraction`` of true ``CD4 naive T`` cells carry the
      label ``CD4 memory T`` in ``obs["cell_type"]``; the truth is in
      ``obs["true_cell_type"]``;
    * ``HSPC -> B naive -> B intermediate -> B memory`` is a continuous path
      with ``obs["true_pseudotime"]`` in [0, 1]; type = quarter of the path;
    * genomic coordinates (``var`` columns ``chrom``, ``chromStart``,
      ``chromEnd``, ``strand``) place a peak in the body of the gene whose
      cell-type program its own program follows (Pearson r > 0.5 over the
      types; its name in ``atac.var["gene"]``) and the other peaks between
      genes, so that tools that link peaks to genes by position (GLUE) find
      real regulatory links;
    * ``NK``/``ILC`` share their RNA program and differ only in ATAC;
      ``CD8 naive T``/``CD8 TEM`` share their ATAC program and differ only in
      RNA, so integration separates what neither modality alone can.

    Sparsity is calibrated on the mirror: RNA library sizes log-normal around
    a median of ~475 counts (sci-CAR kidney: 490, BMMC subsets: ~370; 73%
    zeros at the defaults); ATAC Poisson counts with a median of 200
    fragments in peaks per cell (BMMC subsets: ~190) over 3,000 peaks, i.e.
    93% zeros with 99% of non-zero entries at 1 or 2 (measured at seed 0).
    With 2,000 cells RNA PCA reaches NMI 0.55, ATAC LSI 0.50 and their
    concatenation 0.58 against ``true_cell_type`` (KMeans, true k, seed 0).

    ``regime`` changes what each modality carries (:data:`SIM_REGIMES`):
    ``"book"`` is the above; ``"balanced"`` gives ATAC as many fragments in
    peaks per cell as RNA has counts (median ~500), so that ATAC is about as
    informative as RNA; ``"atac_types"`` makes three pairs of types differ only
    in ATAC (``NK``/``ILC``, ``CD4 naive T``/``CD4 memory T`` and ``CD8 naive
    T``/``CD8 TEM``, which share their RNA program) and none only in RNA;
    ``"batches"`` is the book's parameterisation run as two batches
    (``obs["batch"]``, ``"batch1"``/``"batch2"``, cells assigned at random so
    that both hold every type): in ``batch2`` every gene's and every peak's
    log-mean is shifted (normal, SD 0.5, the same shift for every cell of the
    batch), RNA and ATAC libraries are halved, and 10 % more RNA counts drop
    out. The batch effects are drawn from their own random stream, so the
    cells, types and programs are those of ``"book"`` with the same ``seed``.

    Returns
    -------
    MuData
        ``rna`` ``(n_cells, n_genes)`` and ``atac`` ``(n_cells, n_peaks)``
        with raw counts in ``.X`` and ``.layers["counts"]``; truth in ``.obs``;
        ``.uns["simulation"]`` holds the parameters.
    """
    if regime not in SIM_REGIMES:
        raise ValueError(f"regime must be one of {list(SIM_REGIMES)}, got {regime!r}")
    rng = np.random.default_rng(seed)
    n_types = len(SIM_TYPES)
    t_idx = rng.integers(0, n_types, n_cells)
    true_type = np.array(SIM_TYPES, dtype=object)[t_idx]

    def programs(n_feat, n_prog, scale, frac):
        return rng.normal(0, scale, (n_prog, n_feat)) * (rng.random((n_prog, n_feat)) < frac)

    # program ids per type for each modality (shared ids = indistinguishable in that modality)
    rna_prog = {t: i for i, t in enumerate(SIM_TYPES)}
    atac_prog = {t: i for i, t in enumerate(SIM_TYPES)}
    rna_prog["ILC"] = rna_prog["NK"]
    if regime == "atac_types":  # three pairs told apart by ATAC alone, none by RNA alone
        rna_prog["CD4 memory T"] = rna_prog["CD4 naive T"]
        rna_prog["CD8 TEM"] = rna_prog["CD8 naive T"]
    else:
        atac_prog["CD8 TEM"] = atac_prog["CD8 naive T"]
    g_base = rng.normal(0, 1.0, n_genes)
    p_base = rng.normal(0.0, 0.5, n_peaks)
    G = programs(n_genes, n_types, 1.2, 0.08)
    P = programs(n_peaks, n_types, 1.2, 0.06)
    # related types share part of a program (T cells, B path, myeloid)
    for group in (("CD4 naive T", "CD4 memory T", "CD8 naive T", "CD8 TEM"), ("NK", "ILC")):
        ids = [rna_prog[t] for t in group]
        G[ids] = 0.7 * G[ids] + 0.3 * G[ids].mean(0)
        ids = [atac_prog[t] for t in group]
        P[ids] = 0.7 * P[ids] + 0.3 * P[ids].mean(0)

    g_logit = g_base + G[[rna_prog[t] for t in true_type]]
    p_logit = p_base + P[[atac_prog[t] for t in true_type]]

    # trajectory: interpolate along 4 anchors (use the programs of the 4 B-path types)
    path = list(SIM_TYPES[:4])
    on_path = np.isin(true_type, path)
    pt = np.full(n_cells, np.nan)
    pt[on_path] = rng.random(on_path.sum())
    seg = np.minimum((pt[on_path] * 3).astype(int), 2)
    frac = pt[on_path] * 3 - seg
    ga = np.stack([g_base + G[rna_prog[t]] for t in path])
    pa = np.stack([p_base + P[atac_prog[t]] for t in path])
    g_logit[on_path] = (1 - frac)[:, None] * ga[seg] + frac[:, None] * ga[seg + 1]
    p_logit[on_path] = (1 - frac)[:, None] * pa[seg] + frac[:, None] * pa[seg + 1]
    stage = np.minimum((pt[on_path] * 4).astype(int), 3)
    true_type[on_path] = np.array(path, dtype=object)[stage]

    # CD14 Mono subtypes
    subtype = np.array(["none"] * n_cells, dtype=object)
    mono = np.flatnonzero(true_type == "CD14 Mono")
    sub = rng.integers(0, 3, mono.size)
    for s in range(3):
        gi = rng.choice(n_genes, 8, replace=False)
        pi = rng.choice(n_peaks, 30, replace=False)
        cells = mono[sub == s]
        g_logit[np.ix_(cells, gi)] += 2.0
        p_logit[np.ix_(cells, pi)] += 2.5
        subtype[cells] = f"Mono-{s + 1}"

    batch = np.zeros(n_cells, dtype=np.int64)
    if regime == "batches":  # its own stream: the book's cells and programs, then the effects
        brng = np.random.default_rng([seed, 39])
        batch = brng.integers(0, 2, n_cells)
        g_logit[batch == 1] += brng.normal(0, 0.5, n_genes)
        p_logit[batch == 1] += brng.normal(0, 0.5, n_peaks)
    depth = np.where(batch == 1, 0.5, 1.0)

    # counts
    lib_rna = rng.lognormal(np.log(500), 0.4, n_cells) * depth
    mu = np.exp(g_logit - g_logit.max(1, keepdims=True))
    mu = mu / mu.sum(1, keepdims=True) * lib_rna[:, None]
    theta = 2.0
    rna = rng.negative_binomial(theta, theta / (theta + mu)).astype(np.float32)
    dropout = rng.random(rna.shape) < 0.1 * np.exp(-mu)
    rna[dropout] = 0
    if regime == "batches":
        rna[(batch == 1)[:, None] & (brng.random(rna.shape) < 0.1)] = 0
    lib_atac = rng.lognormal(np.log(500 if regime == "balanced" else 200), 0.5, n_cells) * depth
    acc = np.exp(p_logit - p_logit.max(1, keepdims=True))
    rate = acc / acc.sum(1, keepdims=True) * lib_atac[:, None]
    atac = rng.poisson(rate).astype(np.float32)

    given = true_type.copy()
    naive = np.flatnonzero(true_type == "CD4 naive T")
    flip = rng.choice(naive, int(round(mislabel_fraction * naive.size)), replace=False)
    given[flip] = "CD4 memory T"

    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(given),
            "true_cell_type": pd.Categorical(true_type),
            "true_subtype": pd.Categorical(subtype),
            "true_pseudotime": pt,
            "mislabelled": given != true_type,
            **(
                {"batch": pd.Categorical(np.array(["batch1", "batch2"])[batch])}
                if regime == "batches"
                else {}
            ),
        },
        index=[f"cell{i:05d}" for i in range(n_cells)],
    )
    gene_var, peak_var = _simulated_coordinates(
        np.stack([G[rna_prog[t]] for t in SIM_TYPES]),
        np.stack([P[atac_prog[t]] for t in SIM_TYPES]),
        seed,
    )
    mods = {}
    for m, X, var in (("rna", rna, gene_var), ("atac", atac, peak_var)):
        a = ad.AnnData(sp.csr_matrix(X), obs=obs.copy(), var=var)
        a.layers["counts"] = a.X.copy()
        mods[m] = a
    mdata = new_mudata(mods)
    for c in obs.columns:
        mdata.obs[c] = obs[c].values
    mdata.uns["simulation"] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_peaks": n_peaks,
        "seed": seed,
        "mislabel_fraction": mislabel_fraction,
        "regime": regime,
        "n_linked_peaks": int((peak_var["gene"] != "").sum()),
    }
    mdata.uns["sci2cl_dataset"] = {
        "name": "simulated" if regime == "book" else f"simulated_{regime}",
        "label_key": "cell_type",
        "count_modalities": ["rna", "atac"],
    }
    return mdata


def simulate_spatial(
    n_side: int = 40,
    n_genes: int = 60,
    n_domains: int = 4,
    n_types: int = 6,
    seed: int = 0,
) -> ad.AnnData:
    """A tissue slice with planted spatial domains and cell types, for tests and smoke runs.

    ``n_side x n_side`` spots on a grid (``obsm["spatial"]``). Domains are
    bands along the second coordinate with wavy borders, like cortical
    layers (``obs["domain"]``); each spot holds one cell type
    (``obs["cell_type"]``) drawn with domain-dependent proportions, so types
    mix within a domain. A spot's counts are Poisson around a type program
    (a quarter of the genes) plus a weaker domain program (another quarter,
    shared by every type in the domain): the domains show in expression only
    on average over neighbouring spots.

    Returns
    -------
    AnnData
        ``(n_side ** 2, n_genes)`` raw counts in ``.X`` and ``.layers["counts"]``.
    """
    check_range("n_side", n_side, 4, integer=True)
    check_range("n_genes", n_genes, 8, integer=True)
    check_range("n_domains", n_domains, 2, n_side, integer=True)
    check_range("n_types", n_types, 2, integer=True)
    rng = np.random.default_rng(seed)
    xy = np.stack(np.meshgrid(np.arange(n_side), np.arange(n_side)), -1).reshape(-1, 2)
    wave = 1.5 * np.sin(xy[:, 0] / n_side * 2 * np.pi)
    domain = np.clip(((xy[:, 1] + wave) / n_side * n_domains).astype(int), 0, n_domains - 1)
    props = rng.dirichlet(np.full(n_types, 0.7), n_domains)
    ctype = np.array([rng.choice(n_types, p=props[d]) for d in domain])
    q = max(n_genes // 4, 1)
    log_mu = np.full((len(xy), n_genes), np.log(0.5))
    type_prog = rng.normal(0, 1.2, (n_types, q))
    dom_prog = rng.normal(0, 0.6, (n_domains, q))
    log_mu[:, :q] += type_prog[ctype]
    log_mu[:, q : 2 * q] += dom_prog[domain]
    lib = rng.lognormal(0, 0.3, (len(xy), 1))
    X = rng.poisson(lib * np.exp(log_mu)).astype(np.float32)
    empty = X.sum(1) == 0
    X[empty, rng.integers(0, n_genes, empty.sum())] = 1  # every spot has a count
    a = ad.AnnData(
        sp.csr_matrix(X),
        obs=pd.DataFrame(
            {
                "domain": pd.Categorical([f"domain {d}" for d in domain]),
                "cell_type": pd.Categorical([f"type {t}" for t in ctype]),
            },
            index=[f"spot{i}" for i in range(len(xy))],
        ),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]),
    )
    a.obsm["spatial"] = xy.astype(float)
    a.layers["counts"] = a.X.copy()
    a.uns["sci2cl_dataset"] = {"name": "simulated_spatial", "label_key": "domain",
                               "count_modalities": ["rna"]}  # fmt: skip
    return a


#: values per HDF5 chunk of the count arrays written by :func:`simulate_multiome_to_disk`
FILE_CHUNK = 2**20


def simulate_multiome_to_disk(
    path: str | os.PathLike,
    n_cells: int,
    n_genes: int = 2000,
    n_peaks: int = 5000,
    chunk_size: int = 10_000,
    seed: int = 0,
) -> Path:
    """Write a large paired dataset to an ``.h5mu`` file chunk by chunk (for scaling runs).

    Memory stays at one chunk of dense counts (``chunk_size x max(n_genes,
    n_peaks)`` floats) plus the cell index, whatever ``n_cells``. The model is
    a lean version of :func:`simulate_multiome`: the eleven types of
    ``SIM_TYPES`` in equal proportions, each with a sparse RNA and ATAC
    programme; negative-binomial RNA counts around a median library of ~500
    and Poisson ATAC counts around ~200 fragments per cell. No planted
    subtypes, trajectory or label errors. The programmes come from ``seed``,
    chunk ``c``'s cells from the seed sequence ``[seed, c + 1]``: a file
    depends on ``seed`` and ``chunk_size``; keep both to reproduce it.

    Parameters
    ----------
    path
        Output file (``.h5mu``); written to a temporary name and renamed at the end.
    n_cells, n_genes, n_peaks
        Shape (>= 1 each).
    chunk_size
        Cells generated and appended at a time (>= 1).
    seed
        Seed of the programmes and the cells.

    Returns
    -------
    Path
        The file: raw counts in each modality's ``X`` (CSR, float32), the true
        type in ``obs["cell_type"]``. Open it with ``mudata.read_h5mu(path,
        backed=True)``.
    """
    import h5py
    from anndata.io import sparse_dataset, write_elem

    check_range("n_cells", n_cells, 1, integer=True)
    check_range("n_genes", n_genes, 1, integer=True)
    check_range("n_peaks", n_peaks, 1, integer=True)
    check_range("chunk_size", chunk_size, 1, integer=True)
    path = Path(path)
    rng = np.random.default_rng(seed)
    n_types = len(SIM_TYPES)
    G = rng.normal(0, 1.2, (n_types, n_genes)) * (rng.random((n_types, n_genes)) < 0.08)
    P = rng.normal(0, 1.2, (n_types, n_peaks)) * (rng.random((n_types, n_peaks)) < 0.06)
    G += rng.normal(0, 1.0, n_genes)
    P += rng.normal(0, 0.5, n_peaks)
    g_w = np.exp(G - G.max(1, keepdims=True))
    g_w /= g_w.sum(1, keepdims=True)
    p_w = np.exp(P - P.max(1, keepdims=True))
    p_w /= p_w.sum(1, keepdims=True)
    starts = range(0, n_cells, chunk_size)
    types = np.concatenate(
        [np.random.default_rng([seed, c + 1]).integers(0, n_types, min(chunk_size, n_cells - s))
         for c, s in enumerate(starts)]
    )  # fmt: skip
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical.from_codes(types, categories=list(SIM_TYPES))},
        index=pd.Index([f"cell{i:08d}" for i in range(n_cells)]),
    )
    mods = {
        m: ad.AnnData(
            sp.csr_matrix((n_cells, k), dtype=np.float32),
            obs=obs.copy(),
            var=pd.DataFrame(index=[f"{m[0]}{j:05d}" for j in range(k)]),
        )
        for m, k in (("rna", n_genes), ("atac", n_peaks))
    }
    mdata = new_mudata(mods)
    mdata.obs["cell_type"] = obs["cell_type"].values
    mdata.uns["sci2cl_dataset"] = {"name": "simulated_disk", "label_key": "cell_type",
                                   "count_modalities": ["rna", "atac"]}  # fmt: skip
    if path.is_dir():
        raise IsADirectoryError(f"path {str(path)!r} is a folder; name a file, e.g. 'atlas.h5mu'")
    # a name of our own beside the target (an existing file of the user's is never touched)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mdata.write_h5mu(tmp)
        del mdata, mods
        with h5py.File(tmp, "r+") as f:
            for m, k in (("rna", n_genes), ("atac", n_peaks)):
                del f[f"mod/{m}/X"]
                # large HDF5 chunks: with h5py's default for an empty resizable dataset (1,024
                # values) a reader's memory grows with the part of the file it has read
                write_elem(f[f"mod/{m}"], "X", sp.csr_matrix((0, k), dtype=np.float32),
                           dataset_kwargs={"chunks": (FILE_CHUNK,)})  # fmt: skip
            X = {m: sparse_dataset(f[f"mod/{m}/X"]) for m in ("rna", "atac")}
            for c, s in enumerate(starts):
                r = np.random.default_rng([seed, c + 1])
                t = r.integers(0, n_types, min(chunk_size, n_cells - s))  # the same draw as above
                lib = r.lognormal(np.log(500), 0.4, (len(t), 1))
                mu = g_w[t] * lib
                X["rna"].append(
                    sp.csr_matrix(r.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(np.float32))
                )
                del mu
                rate = p_w[t] * r.lognormal(np.log(200), 0.5, (len(t), 1))
                X["atac"].append(sp.csr_matrix(r.poisson(rate).astype(np.float32)))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
