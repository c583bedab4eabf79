"""Torch modules of scI2CL and scRCL, each owning its settings and ``loss(batch, stage)``.

Every loss term is a pure function of tensors (:mod:`sci2cl.module._losses`)
so that it can be tested on constructed cases; the modules wire them together.
"""

from ._losses import (
    info_nce,
    matching_loss,
    neighbourhood_contrastive,
    pairwise_symmetric_kl,
    reconstruction_nll,
    refinement_consistency,
    symmetric_kl,
)
from ._sci2cl import (
    COUNT_LIKELIHOODS,
    EMBEDDING_KINDS,
    LIKELIHOODS,
    SMOOTHING_NEIGHBORS,
    ModalityAE,
    SCI2CLModule,
    knn_mean,
)
from ._scrcl import SCRCLModule

__all__ = [
    "COUNT_LIKELIHOODS",
    "EMBEDDING_KINDS",
    "LIKELIHOODS",
    "SMOOTHING_NEIGHBORS",
    "knn_mean",
    "info_nce",
    "matching_loss",
    "reconstruction_nll",
    "ModalityAE",
    "SCI2CLModule",
    "symmetric_kl",
    "neighbourhood_contrastive",
    "refinement_consistency",
    "SCRCLModule",
    "pairwise_symmetric_kl",
]
