"""sci2cl: contrastive representation learning for single-cell (multi-)omics.

Models: :class:`SCI2CL` (paired scRNA + scATAC integration) and :class:`SCRCL`
(cell-type identification on scRNA-seq). Submodules: ``data``, ``metrics``,
``tl`` (analyses), ``pl`` (plots), ``distributions``, ``nn``, ``module``.
"""

from . import data, distributions, metrics, module, nn, pl, tl
from .model import SCI2CL, SCRCL

__version__ = "0.1.0"
__all__ = ["SCI2CL", "SCRCL", "data", "distributions", "metrics", "module", "nn", "pl", "tl"]
