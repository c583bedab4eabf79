"""sci2cl: contrastive representation learning for single-cell (multi-)omics.

Models: :class:`SCI2CL` (paired scRNA + scATAC integration) and :class:`SCRCL`
(cell-type identification on scRNA-seq). Submodules: ``datasets`` (registry,
loading, simulator), ``pp`` (validation and preprocessing), ``metrics`` (scores
and clustering protocols), ``tl`` (analyses), ``pl`` (plots), ``model``,
``module`` (torch modules and losses), ``nn`` (layers), ``distributions``.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, distributions, metrics, model, module, nn, pl, pp, tl
from .model import SCI2CL, SCRCL
from .pp import DataValidationError

try:
    __version__ = version("sci2cl")
except PackageNotFoundError:  # pragma: no cover - run from a source tree without installing
    __version__ = "0.0.0+unknown"

__all__ = [
    "SCI2CL",
    "SCRCL",
    "DataValidationError",
    "datasets",
    "distributions",
    "metrics",
    "model",
    "module",
    "nn",
    "pl",
    "pp",
    "tl",
]
