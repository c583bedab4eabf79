"""Analyses on embeddings: subpopulations, annotation audit, trajectories, gene activity and GSEA.

Functions take the data first and write their result to ``obs``/``obsm``/``uns``
under ``key_added``, with their parameters in ``uns[key_added]["params"]`` (as
scanpy records its analyses). Missing labels (NaN) are never a label: the
cells that carry none are left out of an analysis and counted in its result.
"""

from .._graph import leiden_labels as leiden
from .._graph import modality_weights
from ._annotation import audit_annotation
from ._gene_activity import gene_activity, linked_gene_activity
from ._gsea import gsea_prerank
from ._spatial import spatial_vote
from ._subpopulations import find_subpopulations
from ._trajectory import trajectory

__all__ = [
    "leiden",
    "modality_weights",
    "find_subpopulations",
    "audit_annotation",
    "trajectory",
    "gene_activity",
    "linked_gene_activity",
    "gsea_prerank",
    "spatial_vote",
]
