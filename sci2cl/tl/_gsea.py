"""Pre-ranked GSEA (gseapy) of a differential-expression table on local gene sets."""

from __future__ import annotations

import contextlib
import io
import os
import warnings

import pandas as pd

from .._utils import check_range

__all__ = ["gsea_prerank"]


def gsea_prerank(
    de: pd.DataFrame,
    group: str | None,
    gene_sets: str | os.PathLike | dict,
    seed: int = 0,
    permutation_num: int = 200,
    min_size: int = 10,
    max_size: int = 500,
    to_human: bool = False,
) -> pd.DataFrame:
    """``gseapy.prerank`` of one group's genes (ranked by Wilcoxon score) on local gene sets.

    Parameters
    ----------
    de
        Tidy DE table with ``names`` and ``scores`` (``sc.get.rank_genes_groups_df``);
        with several groups it also has a ``group`` column.
    group
        The group to rank; ``None`` uses the whole table, which must then hold
        one group only.
    gene_sets
        A local GMT file or a dict ``{set: genes}``. No network is used: a
        string that is not an existing file (e.g. an Enrichr library name) is
        refused.
    to_human
        Map mouse symbols to human by upper-casing (the usual approximation
        for 1:1 orthologs).

    Returns
    -------
    pandas.DataFrame
        gseapy's ``res2d`` with a ``group`` column.
    """
    from pathlib import Path

    import gseapy as gp

    check_range("permutation_num", permutation_num, 1, integer=True)
    check_range("min_size", min_size, 1, integer=True)
    check_range("max_size", max_size, 1, integer=True)
    if min_size > max_size:
        raise ValueError(f"min_size={min_size} is larger than max_size={max_size}")
    if not isinstance(de, pd.DataFrame):
        raise TypeError(f"de must be a DataFrame (a DE table), got {type(de).__name__}")
    missing = {"names", "scores"} - set(de.columns)
    if missing:
        raise ValueError(f"de lacks columns {sorted(missing)}; it has {list(de.columns)}")
    if isinstance(gene_sets, str | os.PathLike):
        if not Path(gene_sets).is_file():
            raise FileNotFoundError(
                f"gene_sets={str(gene_sets)!r} is not a local file; pass a GMT path or a dict "
                "(library names would need the network, which gsea_prerank never uses)"
            )
        gene_sets = _read_gmt(Path(gene_sets))
    elif not isinstance(gene_sets, dict):
        raise TypeError(f"gene_sets must be a GMT path or a dict, got {type(gene_sets).__name__}")
    gene_sets = {str(k): [str(g) for g in v] for k, v in gene_sets.items() if len(v)}
    if not gene_sets:
        raise ValueError("gene_sets holds no set with any gene")
    if "group" in de.columns:
        groups = sorted(de["group"].astype(str).unique())
        if group is None:
            if len(groups) > 1:
                raise ValueError(f"de holds several groups {groups}; choose one with group=")
            d = de
            group = groups[0] if groups else None
        elif str(group) not in groups:
            raise ValueError(f"group {group!r} is not in the DE table; its groups: {groups}")
        else:
            d = de[de["group"].astype(str) == str(group)]
    elif group is not None:
        raise ValueError(
            f"de has no 'group' column, so it cannot be the table of group {group!r}; "
            "pass the table of that group with group=None, or a table with a 'group' column"
        )
    else:
        d = de
    rnk = d[["names", "scores"]].dropna().copy()
    if rnk.empty:
        raise ValueError(
            "the DE table has no gene with a score (empty, or every score NaN); nothing to rank"
        )
    if to_human:
        rnk["names"] = rnk["names"].str.upper()
    rnk = rnk.drop_duplicates("names").set_index("names")["scores"].sort_values(ascending=False)
    tied = float(rnk.duplicated(keep=False).mean())
    if tied > 0.1:  # said once, as a Python warning, instead of gseapy's log line per call
        warnings.warn(
            f"{tied:.0%} of the ranked genes share their score with another gene; their order "
            "is arbitrary, which weakens the test (typical of sparse data: rank on a finer "
            "statistic, or filter genes detected in few cells)",
            UserWarning,
            stacklevel=2,
        )
    universe = {g for genes in gene_sets.values() for g in genes}
    if not universe & set(rnk.index):
        example = list(rnk.index[:3])
        raise LookupError(
            f"no ranked gene (e.g. {example}) is in any gene set (e.g. "
            f"{sorted(universe)[:3]}): check the species and symbol type; for mouse genes "
            "against human sets pass to_human=True"
        )
    with contextlib.redirect_stderr(io.StringIO()):  # gseapy's logger writes the same to stderr
        res = gp.prerank(
            rnk=rnk,
            gene_sets=gene_sets,
            permutation_num=permutation_num,
            min_size=min_size,
            max_size=max_size,
            seed=seed,
            threads=1,
            outdir=None,
            verbose=False,
        )
    out = res.res2d.copy()
    out["group"] = group
    out.attrs["tied_fraction"] = tied
    return out


def _read_gmt(path) -> dict[str, list[str]]:
    """A GMT file as ``{set: genes}`` (name, description, genes, tab-separated)."""
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not a text GMT file (it is binary or not UTF-8)") from None
    sets = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("\t")]
        if len(parts) >= 3 and parts[0]:
            sets[parts[0]] = [g for g in parts[2:] if g]
    if not sets:
        raise ValueError(
            f"{path} holds no gene set: a GMT line is name<TAB>description<TAB>gene<TAB>gene..."
        )
    return sets
