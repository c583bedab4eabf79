"""What both models share.

Device and seed, init parameters, the set-up record, training transactions,
checkpoints and history.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .._utils import check_range

__all__ = ["BaseModel", "CheckpointError", "TrainingError", "resolve_device"]

CHECKPOINT_FILES = ("model.json", "model.pt", "history.csv")


class TrainingError(RuntimeError):
    """Training failed (diverged, or took no optimisation step); the model was restored."""


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be read, with the file at fault."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else Apple MPS, else CPU; other names are checked.

    Raises
    ------
    ValueError
        The name is not a torch device, or names a device this machine does not have.
    """
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(
            f"device={device!r} is not a torch device; use 'auto', 'cpu', 'cuda' or 'mps'"
        ) from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was asked for, but torch finds no CUDA GPU here; "
                "use device='auto' (GPU when present, else CPU) or device='cpu'"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: only {torch.cuda.device_count()} CUDA device(s) are present"
            )
    if dev.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device={device!r} was asked for, but MPS is not available here")
    return dev


class BaseModel:
    """Shared plumbing of :class:`~sci2cl.SCI2CL` and :class:`~sci2cl.SCRCL`.

    Subclasses set ``module`` (a :class:`torch.nn.Module`), call
    :meth:`_init_common` first in ``__init__`` and implement
    ``_checkpoint_extra`` / ``_from_checkpoint``.
    """

    #: attributes (besides the module's weights) that training may change and a
    #: failed training restores
    _train_state: tuple[str, ...] = ("history", "is_trained")

    def _init_common(self, frame: dict, data_arg: str, seed, device) -> None:
        """Capture the ``__init__`` arguments (minus the data), the seed and the device."""
        sig = inspect.signature(type(self).__init__)
        self.init_params = {
            k: copy.deepcopy(frame[k]) for k in sig.parameters if k not in ("self", data_arg)
        }
        check_range("seed", seed, 0, integer=True)
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.history = pd.DataFrame()
        self.is_trained = False

    # ------------------------------------------------------------------ transactions
    def _snapshot(self) -> dict:
        state = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        return {"module": state, **{a: copy.deepcopy(getattr(self, a)) for a in self._train_state}}

    def _restore(self, snap: dict) -> None:
        self.module.load_state_dict(snap["module"])
        for a in self._train_state:
            setattr(self, a, snap[a])

    @contextlib.contextmanager
    def _transaction(self, what: str = "train()"):
        """Run a block that changes the model; on any error or interruption, undo it.

        The weights (and buffers), the history, ``is_trained`` and the other
        attributes named in ``_train_state`` return to their values before
        the block; the exception is re-raised with a note saying so.
        """
        snap = self._snapshot()
        try:
            yield
        except KeyboardInterrupt:
            self._restore(snap)
            warnings.warn(
                f"{what} was interrupted; the model was restored to its state before the call",
                RuntimeWarning,
                stacklevel=3,
            )
            raise
        except BaseException as e:
            self._restore(snap)
            if hasattr(e, "add_note"):
                e.add_note(
                    f"{type(self).__name__}: the model was restored to its state before {what}"
                )
            raise

    @staticmethod
    def _check_finite_epoch(rec: dict, epoch: int, lr: float) -> None:
        for k in ("loss", "val_loss"):
            if k in rec and not np.isfinite(rec[k]):
                raise TrainingError(
                    f"training diverged at epoch {epoch} ({k} = {rec[k]}); the model was restored "
                    f"to its state before train(). Lower the learning rate (lr={lr})."
                )

    # ------------------------------------------------------------------ persistence
    def _checkpoint_extra(self) -> dict:  # pragma: no cover - overridden
        return {}

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save the trained model to the folder ``path`` (atomically).

        The checkpoint (``model.json``: class, init parameters, set-up, features;
        ``model.pt``: weights; ``history.csv``) is written into a temporary
        sibling folder that then replaces ``path``, so that a failure at any
        point (a full disk, an interruption) leaves the previous checkpoint
        whole and no partial one behind.

        Parameters
        ----------
        path
            Folder to create.
        overwrite
            Replace an existing checkpoint at ``path``. A non-empty folder that
            is not a checkpoint is never replaced.

        Raises
        ------
        RuntimeError
            The model is not trained.
        OSError
            Writing failed (disk full, no permission); the message says that
            the previous checkpoint is unchanged, or that nothing was written.
        FileExistsError
            ``path`` exists and ``overwrite`` is False, or it is a non-empty
            folder that holds no checkpoint.
        """
        if not self.is_trained:
            raise RuntimeError(
                f"this {type(self).__name__} is not trained: call .train() before .save()"
            )
        path = Path(path)
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(f"{path} exists and is not a folder")
            if any(path.iterdir()):
                if not (path / "model.json").exists():
                    raise FileExistsError(
                        f"{path} is a non-empty folder that holds no checkpoint; choose another path"
                    )
                if not overwrite:
                    raise FileExistsError(f"{path} holds a checkpoint; pass overwrite=True")
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = uuid.uuid4().hex[:8]
        tmp = path.with_name(f".{path.name}.tmp-{tag}")
        old = path.with_name(f".{path.name}.old-{tag}")
        meta = {
            "class": type(self).__name__,
            "init": self.init_params,
            "is_trained": True,
            **self._checkpoint_extra(),
        }
        try:
            tmp.mkdir()
            torch.save(self.module.state_dict(), tmp / "model.pt")
            (tmp / "model.json").write_text(json.dumps(meta, indent=2, default=str))
            self.history.to_csv(tmp / "history.csv", index=False)
            for f in tmp.iterdir():  # the data are on disk before the folder is swapped in
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if path.exists():
                path.rename(old)
            try:
                tmp.rename(path)
            except BaseException:
                if old.exists() and not path.exists():
                    old.rename(path)
                raise
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            kept = (
                f"the checkpoint already at {path} is unchanged"
                if path.exists()
                else "nothing was written"
            )
            if isinstance(e, Exception):  # torch reports a full disk as a RuntimeError
                raise OSError(f"could not save to {path} ({type(e).__name__}: {e}); {kept}") from e
            raise
        shutil.rmtree(old, ignore_errors=True)
        return path

    @classmethod
    def _read_checkpoint(cls, path: str | os.PathLike, device: torch.device) -> tuple[dict, dict]:
        """``(meta, state_dict)`` of a checkpoint folder, with errors that name the file."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a folder holding a saved {cls.__name__}")
        for f in ("model.json", "model.pt"):
            if not (path / f).exists():
                raise CheckpointError(f"{path / f} is missing: {path} is not a complete checkpoint")
        try:
            meta = json.loads((path / "model.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(
                f"{path / 'model.json'} is truncated or corrupted (not valid JSON: {e})"
            ) from None
        if not isinstance(meta, dict) or "init" not in meta or "class" not in meta:
            raise CheckpointError(f"{path / 'model.json'} is not a sci2cl checkpoint description")
        if meta["class"] != cls.__name__:
            raise CheckpointError(f"{path} holds a {meta['class']}, not a {cls.__name__}")
        try:
            state = torch.load(path / "model.pt", map_location=device, weights_only=True)
        except Exception as e:  # torch raises several types for damaged files
            raise CheckpointError(
                f"{path / 'model.pt'} is truncated or corrupted: torch could not read the weights "
                f"({type(e).__name__}). Save the model again or restore the file from a backup."
            ) from None
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise CheckpointError(f"{path / 'model.pt'} does not hold a state dict of tensors")
        return meta, state

    def _load_weights(self, state: dict, path: Path) -> None:
        try:
            missing, unexpected = self.module.load_state_dict(state, strict=False)
        except RuntimeError as e:  # tensors of the wrong shape
            raise CheckpointError(
                f"{path / 'model.pt'} does not match this model's architecture ({e})"
            ) from None
        if missing or unexpected:
            raise CheckpointError(
                f"{path / 'model.pt'} does not match this version of {type(self).__name__} "
                f"(missing {missing}, unexpected {unexpected})"
            )

    @staticmethod
    def _read_history(path: Path) -> pd.DataFrame:
        f = path / "history.csv"
        if not f.exists() or f.stat().st_size == 0:
            return pd.DataFrame()
        try:
            return pd.read_csv(f)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise CheckpointError(f"{f} is truncated or corrupted ({type(e).__name__})") from None
