"""User-facing models: :class:`SCI2CL` (paired RNA + ATAC) and :class:`SCRCL` (scRNA-seq)."""

from ._base import BaseModel, CheckpointError, TrainingError, resolve_device
from ._sci2cl import SCI2CL
from ._scrcl import SCRCL

__all__ = ["SCI2CL", "SCRCL", "BaseModel", "CheckpointError", "TrainingError", "resolve_device"]
