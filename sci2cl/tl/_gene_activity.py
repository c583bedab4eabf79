"""ATAC gene activity: counts of a gene's peaks, from peak-gene links or genomic coordinates."""

from __future__ import annotations

import warnings

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import check_range, get_matrix

__all__ = ["gene_activity", "linked_gene_activity"]


def _parse_interval(name: str) -> tuple[str, int, int] | None:
    import re

    m = re.match(r"^(chr[\w]+|[\dXYM]+)[:\-_](\d+)[\-_](\d+)$", name)
    if not m:
        return None
    return m.group(1), int(m.group(2)), int(m.group(3))


def _chrom(c) -> str:
    """Chromosome name without a ``chr`` prefix (``"chr1"`` and ``"1"`` are the same)."""
    c = str(c)
    return c[3:] if c.lower().startswith("chr") else c


#: texts that mean "no gene" in a peak-to-gene column
MISSING_TEXT = ("nan", "none", "na", "n/a", "null", "<na>")
#: names of a gene's coordinates in ``var`` (GLUE's h5ad files use the BED names)
COORDINATE_COLUMNS = {"chromStart": "start", "chromEnd": "end"}


def gene_activity(
    data: md.MuData | ad.AnnData,
    genes: pd.DataFrame | None = None,
    upstream: int = 2000,
    layer: str | None = "counts",
    min_fraction: float = 0.05,
    gene_key: str = "gene",
) -> ad.AnnData:
    """Gene activity: ATAC counts summed over each gene's peaks, from whatever the data provide.

    The source is chosen in this order, and recorded in the result's
    ``uns["gene_activity"]["params"]["source"]``:

    1. ``genes`` given: gene coordinates (below);
    2. a peak-to-gene table, ``atac.var[gene_key]`` (e.g. SNARE-seq cortex):
       :func:`linked_gene_activity`;
    3. a MuData whose ``rna.var`` holds coordinates (``chrom``,
       ``start``/``chromStart``, ``end``/``chromEnd``, ``strand``; GLUE's
       h5ad files carry them).

    ``data`` is a MuData (its ``atac`` modality is used) or the ATAC AnnData.

    With coordinates, ``genes`` has columns ``chrom, start, end, strand``
    indexed by gene name (e.g. from the GTF the data were aligned to). A peak counts for a gene when it overlaps
    ``[start - upstream, end]`` (``+`` strand) or ``[start, end + upstream]``
    (``-`` strand). Chromosome names match with or without a ``chr`` prefix;
    strand may be ``"+"``/``"-"`` or ``1``/``-1``.

    Returns
    -------
    anndata.AnnData
        Cells x genes counts (also in ``layers["counts"]``).

    Raises
    ------
    ValueError
        No source of peak-gene pairs (neither ``genes``, nor a peak-to-gene
        table, nor coordinates in ``rna.var``); peaks without parseable
        coordinates (``chr1-100-200`` or ``chr1:100-200``); genes with
        duplicated names, non-numeric, missing or inverted coordinates or an
        unknown strand; or no peak overlapping any gene (e.g. other
        chromosome names or genome build).

    Warns
    -----
    UserWarning
        Fewer than ``min_fraction`` of the genes have any peak; the warning gives the count.
    """
    check_range("upstream", upstream, 0, integer=True)
    check_range("min_fraction", min_fraction, 0, 1)
    atac = data["atac"] if isinstance(data, md.MuData) else data
    if isinstance(data, md.MuData) and "atac" not in data.mod:
        raise ValueError(f"the MuData has no 'atac' modality; it has {list(data.mod)}")
    if genes is None:
        if gene_key in atac.var.columns:
            out = linked_gene_activity(atac, gene_key=gene_key, layer=layer)
            out.uns["gene_activity"] = {"params": {"source": "links", "gene_key": gene_key}}
            return out
        rna_var = data["rna"].var if isinstance(data, md.MuData) and "rna" in data.mod else None
        cols = None if rna_var is None else rna_var.rename(columns=COORDINATE_COLUMNS)
        if cols is None or not {"chrom", "start", "end", "strand"} <= set(cols.columns):
            raise ValueError(
                f"no peak-gene pairs to sum over: atac.var has no peak-to-gene column "
                f"{gene_key!r} and no rna.var with gene coordinates (chrom, start/chromStart, "
                "end/chromEnd, strand); pass genes= (coordinates from a GTF)"
            )
        genes = cols[["chrom", "start", "end", "strand"]].dropna()
    need = {"chrom", "start", "end", "strand"}
    if not isinstance(genes, pd.DataFrame):
        raise TypeError(f"genes must be a DataFrame of coordinates, got {type(genes).__name__}")
    if not need <= set(genes.columns):
        raise ValueError(f"genes needs columns {sorted(need)}; it has {list(genes.columns)}")
    coords = [_parse_interval(str(p)) for p in atac.var_names]
    if not any(c is not None for c in coords):
        raise ValueError("peak names carry no genomic coordinates (expected 'chr1-100-200')")
    pk = pd.DataFrame(
        [c if c else (None, -1, -1) for c in coords], columns=["chrom", "start", "end"]
    )
    pk["chrom"] = pk["chrom"].map(lambda c: None if c is None else _chrom(c))
    if genes.index.has_duplicates:
        dup = genes.index[genes.index.duplicated()].unique()[:3].tolist()
        raise ValueError(
            f"genes has duplicated names, e.g. {dup} (common in GTFs: one row per transcript); "
            "keep one row per gene, e.g. genes[~genes.index.duplicated()]"
        )
    g = genes.copy()
    for c in ("start", "end"):
        num = pd.to_numeric(g[c], errors="coerce")
        if (num.isna() & g[c].notna()).any():
            odd = g[c][num.isna() & g[c].notna()].astype(str).unique()[:3].tolist()
            raise ValueError(f"genes[{c!r}] must hold numbers (positions); found {odd}")
        g[c] = num
    bad = g[["chrom", "start", "end"]].isna().any(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} genes have missing coordinates (e.g. {g.index[bad][:3].tolist()}); "
            "drop them or fill them in before computing gene activity"
        )
    if (g["start"] > g["end"]).any():
        inv = g.index[g["start"] > g["end"]][:3].tolist()
        raise ValueError(f"genes with start > end, e.g. {inv}")
    strand = g["strand"].map({"+": "+", "-": "-", 1: "+", -1: "-", "1": "+", "-1": "-"})
    if strand.isna().any():
        odd = sorted(set(map(str, g["strand"][strand.isna()])))[:5]
        raise ValueError(f"strand must be '+'/'-' or 1/-1; found {odd}")
    g["chrom"] = g["chrom"].map(_chrom)
    g["lo"] = np.where(strand == "-", g["start"], g["start"] - upstream)
    g["hi"] = np.where(strand == "-", g["end"] + upstream, g["end"])
    rows, cols = [], []
    for chrom, gg in g.groupby("chrom"):
        p = pk[pk["chrom"] == chrom]
        if p.empty:
            continue
        order = np.argsort(p["start"].to_numpy())
        ps, pe, pidx = (
            p["start"].to_numpy()[order],
            p["end"].to_numpy()[order],
            p.index.to_numpy()[order],
        )
        for gi, (lo, hi) in zip(g.index.get_indexer(gg.index), gg[["lo", "hi"]].to_numpy()):
            j = np.searchsorted(ps, hi, side="right")
            hit = pidx[:j][pe[:j] >= lo]
            rows += hit.tolist()
            cols += [gi] * len(hit)
    if not rows:
        raise ValueError(
            "no peak overlaps any gene: check that peaks and genes use the same genome build "
            f"(peak chromosomes e.g. {sorted(pk['chrom'].dropna().unique())[:4]}, "
            f"gene chromosomes e.g. {sorted(g['chrom'].unique())[:4]})"
        )
    n_hit = len(set(cols))
    if n_hit < min_fraction * len(g):
        warnings.warn(
            f"only {n_hit} of {len(g)} genes overlap any peak; their gene activity is 0",
            UserWarning,
            stacklevel=2,
        )
    out = _summed_activity(atac, np.asarray(rows), np.asarray(cols), g.index, layer)
    out.uns["gene_activity"] = {"params": {"source": "coordinates", "upstream": int(upstream)}}
    return out


def _summed_activity(atac: ad.AnnData, peaks, genes, names: pd.Index, layer) -> ad.AnnData:
    """Cells x genes sums of the counts of the peaks assigned to each gene (``peaks[i] -> genes[i]``)."""
    M = sp.csr_matrix((np.ones(len(peaks)), (peaks, genes)), shape=(atac.n_vars, len(names)))
    X = get_matrix(atac, layer)
    out = ad.AnnData(
        sp.csr_matrix(X @ M, dtype=np.float32),
        obs=atac.obs[[]].copy(),
        var=pd.DataFrame(index=names),
    )
    out.layers["counts"] = out.X.copy()
    return out


def linked_gene_activity(
    atac: ad.AnnData, gene_key: str = "gene", layer: str | None = "counts"
) -> ad.AnnData:
    """Gene activity from a peak-to-gene table: ATAC counts summed over each gene's peaks.

    For data that ship each peak's gene (e.g. SNARE-seq cortex,
    ``atac.var["gene"]`` from its peak-gene links) instead of a genome
    annotation; :func:`gene_activity` builds the same from coordinates.
    Peaks without a gene (NaN, empty, or a text such as ``"nan"`` or
    ``"NA"``) count for none.

    Returns
    -------
    anndata.AnnData
        Cells x linked genes (sorted), counts in ``X`` and ``layers["counts"]``.

    Raises
    ------
    KeyError
        ``atac.var`` has no column ``gene_key``.
    ValueError
        No peak has a gene.
    """
    if gene_key not in atac.var.columns:
        raise KeyError(
            f"atac.var has no column {gene_key!r} (columns: {list(atac.var.columns)}); pass the "
            "column that names each peak's gene, or use gene_activity() with gene coordinates"
        )
    gene = atac.var[gene_key].astype("string").fillna("").str.strip()
    gene = gene.mask(gene.str.lower().isin(MISSING_TEXT), "").to_numpy()
    linked = np.flatnonzero(gene != "")
    if len(linked) == 0:
        raise ValueError(f"no peak has a gene in atac.var[{gene_key!r}]")
    names = pd.Index(np.unique(gene[linked]))
    return _summed_activity(atac, linked, names.get_indexer(gene[linked]), names, layer)
