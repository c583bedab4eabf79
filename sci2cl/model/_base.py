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

import pandas as pd
import torch

from .._utils import check_range, file_sha256

__all__ = ["BaseModel", "CheckpointError", "TrainingError", "resolve_device"]

CHECKPOINT_FILES = ("model.json", "model.pt", "history.csv")
#: version of the checkpoint layout written by :meth:`BaseModel.save` (1: before it was recorded)
CHECKPOINT_FORMAT = 2


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sci2cl")
    except PackageNotFoundError:  # pragma: no cover - a source tree without installing
        return "0.0.0+unknown"


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

    # ------------------------------------------------------------------ persistence
    def _checkpoint_extra(self) -> dict:  # pragma: no cover - overridden
        return {}

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Save the trained model to the folder ``path``; only the checkpoint's own files are written.

        The checkpoint is three files, ``model.pt`` (weights), ``history.csv``
        and ``model.json`` (class, format version, init parameters, set-up,
        features, and a hash of the weights file). A new folder is written
        whole under a temporary name and then renamed, so a failure leaves
        nothing behind. In an existing folder each file is written under a
        temporary name and renamed over the old one, ``model.json`` last; other
        files in the folder are never touched, and a save that stopped half-way
        is detected at load time (the weights' hash does not match).

        Parameters
        ----------
        path
            Folder to write (a symbolic link to a folder writes into its target).
        overwrite
            Replace the checkpoint files already in ``path``, or add the
            checkpoint to an existing folder that holds other files. Without
            it, an existing checkpoint or a non-empty folder is refused.

        Raises
        ------
        RuntimeError
            The model is not trained.
        FileExistsError
            ``path`` is a file, or holds a checkpoint or other files and
            ``overwrite`` is False.
        OSError
            Writing failed (disk full, no permission); the message says what
            was left as it was.
        """
        if not self.is_trained:
            raise RuntimeError(
                f"this {type(self).__name__} is not trained: call .train() before .save()"
            )
        if not isinstance(path, str | os.PathLike) or str(path) == "":
            raise TypeError(f"path must be a folder path (str or os.PathLike), got {path!r}")
        path = Path(os.path.abspath(path))
        if path.is_symlink():
            path = path.resolve()
        if path.exists():
            if not path.is_dir():
                raise FileExistsError(f"{path} exists and is not a folder")
            if (path / "model.json").exists() and not overwrite:
                raise FileExistsError(
                    f"{path} holds a checkpoint; pass overwrite=True to replace its files"
                )
            others = sorted(p.name for p in path.iterdir() if p.name not in CHECKPOINT_FILES)
            if others and not overwrite and not (path / "model.json").exists():
                raise FileExistsError(
                    f"{path} is a folder that holds other files ({', '.join(others[:3])}"
                    f"{', ...' if len(others) > 3 else ''}); choose another path, or pass "
                    "overwrite=True to add the checkpoint's files to it (nothing else is touched)"
                )
        tag = uuid.uuid4().hex[:8]
        meta = {
            "class": type(self).__name__,
            "format_version": CHECKPOINT_FORMAT,
            "sci2cl_version": _package_version(),
            "init": self.init_params,
            "is_trained": True,
            **self._checkpoint_extra(),
        }
        fresh = not path.exists()
        target = path.with_name(f".{path.name}.tmp-{tag}") if fresh else path
        written: list[Path] = []
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                target.mkdir()
            tmp = {f: target / (f".{f}.tmp-{tag}" if not fresh else f) for f in CHECKPOINT_FILES}
            written += list(tmp.values())
            torch.save(self.module.state_dict(), tmp["model.pt"])
            meta["weights_sha256"] = file_sha256(tmp["model.pt"])
            self.history.to_csv(tmp["history.csv"], index=False)
            tmp["model.json"].write_text(json.dumps(meta, indent=2, default=str))
            for f in tmp.values():  # the data are on disk before anything is renamed
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            if fresh:
                target.rename(path)
            else:
                for f in ("model.pt", "history.csv", "model.json"):  # model.json last
                    os.replace(tmp[f], path / f)
        except BaseException as e:
            for f in written:
                if f.name.startswith(".") and f.exists():
                    f.unlink()
            if fresh and target.exists():
                shutil.rmtree(target, ignore_errors=True)
            kept = "nothing was written" if fresh else f"the files already in {path} are unchanged"
            if isinstance(e, Exception):  # torch reports a full disk as a RuntimeError
                raise OSError(f"could not save to {path} ({type(e).__name__}: {e}); {kept}") from e
            raise
        return path

    @staticmethod
    def _checkpoint_error(f: Path, meta: dict, why: str):
        raise CheckpointError(
            f"{f} cannot be loaded: {why}. It was written by sci2cl "
            f"{meta.get('sci2cl_version', 'older than 0.1')} (checkpoint format "
            f"{meta.get('format_version', 1)}); this is sci2cl {_package_version()} (format "
            f"{CHECKPOINT_FORMAT}). Load it with the version that wrote it, or train and save again."
        )

    @classmethod
    def _checkpoint_init(cls, f: Path, meta: dict) -> dict:
        """The checked init parameters of a checkpoint (errors name the file and its version)."""
        init = meta.get("init")
        if not isinstance(init, dict):
            cls._checkpoint_error(f, meta, "its 'init' entry is not a table of parameters")
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        unknown = sorted(set(init) - known)
        if unknown:
            cls._checkpoint_error(f, meta, f"it has init parameters this version lacks: {unknown}")
        return dict(init)

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
        if meta.get("format_version", 1) > CHECKPOINT_FORMAT:
            cls._checkpoint_error(
                path / "model.json", meta, "its format is newer than this version's"
            )
        sha = meta.get("weights_sha256")
        if sha is not None and file_sha256(path / "model.pt") != sha:
            raise CheckpointError(
                f"{path / 'model.pt'} is truncated or corrupted: it is not the weights that "
                f"{path / 'model.json'} describes (a damaged file, a save that stopped half-way, or "
                "a file copied from another checkpoint). Save the model again or restore the "
                "folder from a backup."
            )
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
