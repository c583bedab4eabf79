"""Training on PyTorch Lightning: one training plan for both models, and its callbacks.

The losses stay in the torch modules (:mod:`sci2cl.module`); this module only
wires them into :class:`lightning.pytorch.Trainer`, which runs the epochs,
the progress bar, gradient clipping, devices and distributed strategies.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, TQDMProgressBar

from .._utils import as_int, check_flag, check_range
from ._base import TrainingError

__all__ = [
    "BestWeights",
    "History",
    "SmoothedLossStopping",
    "StageProgressBar",
    "TrainingReport",
    "TrainSettings",
    "TrainingPlan",
    "fit",
    "lightning_trainer",
    "train_module",
]

#: the metric early stopping and the best-weight restore watch; it is logged only in the
#: epochs allowed to stop training or be restored (joint stage, after ``min_epochs``)
MONITOR = "val_loss_eligible"


@dataclass(frozen=True)
class TrainSettings:
    """How one training run goes: what :meth:`SCI2CL.train` and :meth:`SCRCL.train` hand the plan.

    ``pretrain_epochs`` epochs of stage ``"pretrain"`` come first, then
    ``max_epochs`` epochs of ``main_stage``. The held-out loss is computed in
    the main stage (when there are held-out cells); from epoch
    ``first_eligible`` on (``None``: never) it is logged as :data:`MONITOR`,
    which early stopping and the best-weight restore watch.
    """

    max_epochs: int
    lr: float
    weight_decay: float
    pretrain_epochs: int = 0
    main_stage: str = "joint"
    first_eligible: int | None = None
    early_stopping: bool = False
    patience: int = 8
    val_seed: int = 1
    progress_bar: bool = True
    devices: int | list[int] | str | None = None
    strategy: str = "auto"
    gradient_clip_val: float | None = None


#: fewer cells than this train without early stopping (a held-out set would be a handful)
MIN_CELLS_EARLY_STOPPING = 50


def joint_settings(
    n_cells: int,
    seed: int,
    *,
    max_epochs,
    pretrain_epochs,
    lr,
    weight_decay,
    early_stopping,
    patience,
    min_epochs,
    validation_fraction,
    progress_bar,
    devices,
    strategy,
) -> tuple[TrainSettings, int]:
    """Check :meth:`SCI2CL.train`'s arguments; its :class:`TrainSettings` and held-out size.

    Numpy integers count as integers, flags must be bools. Early stopping
    needs :data:`MIN_CELLS_EARLY_STOPPING` cells and 2 held-out ones; with
    fewer it is turned off with a warning.
    """
    max_epochs = as_int("max_epochs", max_epochs, 1)
    pretrain_epochs = as_int("pretrain_epochs", pretrain_epochs, 0, optional=True)
    check_range("lr", lr, 0, lo_open=True)
    check_range("weight_decay", weight_decay, 0)
    patience = as_int("patience", patience, 1)
    min_epochs = as_int("min_epochs", min_epochs, 0, optional=True)
    check_range("validation_fraction", validation_fraction, 0, 1, hi_open=True)
    check_flag("early_stopping", early_stopping)
    check_flag("progress_bar", progress_bar)
    strategy = check_strategy(strategy, devices)
    n = n_cells
    n_val = int(round(validation_fraction * n)) if early_stopping else 0
    if early_stopping and (n < MIN_CELLS_EARLY_STOPPING or n_val < 2):
        warnings.warn(
            f"early stopping is off for this run: it holds out validation_fraction="
            f"{validation_fraction} of the cells and needs at least 2 held-out cells and "
            f"{MIN_CELLS_EARLY_STOPPING} cells in all (here {n_val} of {n}). Every cell "
            "trains for max_epochs; pass early_stopping=False to say so",
            UserWarning,
            stacklevel=3,
        )
        early_stopping, n_val = False, 0
    if n - n_val < 2:
        raise ValueError(
            f"validation_fraction={validation_fraction} leaves {n - n_val} of {n} cells for "
            "training; at least 2 are needed"
        )
    pretrain_epochs = max(1, max_epochs // 4) if pretrain_epochs is None else pretrain_epochs
    min_epochs = max_epochs // 2 if min_epochs is None else min_epochs
    settings = TrainSettings(
        max_epochs=max_epochs,
        lr=lr,
        weight_decay=weight_decay,
        pretrain_epochs=pretrain_epochs,
        first_eligible=pretrain_epochs + max(min_epochs - 1, 0) if early_stopping else None,
        early_stopping=bool(early_stopping),
        patience=patience,
        val_seed=seed + 1,
        progress_bar=progress_bar,
        devices=devices,
        strategy=strategy,
        gradient_clip_val=10.0,
    )
    return settings, n_val


class TrainingPlan(pl.LightningModule):
    """A torch module whose ``loss(batch, stage, generator)`` is trained, as a LightningModule.

    The plan calls ``module.loss`` on every mini-batch and logs each term
    (epoch means, see :class:`History`); validation scores the held-out
    batches with masks and negatives drawn from a generator seeded with
    ``settings.val_seed`` at every epoch, so every epoch scores the same draw.

    Parameters
    ----------
    module
        The model's torch module (its parameters are optimised).
    settings
        The run's :class:`TrainSettings`.
    train_data, val_data
        Datasets whose items are whole mini-batches (``None``: no validation).
        Each may have ``set_epoch(epoch)``, called at the start of every epoch.
    """

    def __init__(self, module: torch.nn.Module, settings: TrainSettings, train_data, val_data=None):
        super().__init__()
        self.module = module
        self.settings = settings
        self.train_data = train_data
        self.val_data = val_data
        self.n_steps = 0
        self.val_loss: float | None = None  # the held-out loss of the current epoch

    # -------------------------------------------------------------- data
    def _loader(self, data):
        return torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=0)

    def train_dataloader(self):  # noqa: D102
        return self._loader(self.train_data)

    def val_dataloader(self):  # noqa: D102
        return self._loader(self.val_data) if self.val_data is not None else []

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.AdamW(
            self.module.parameters(), lr=self.settings.lr, weight_decay=self.settings.weight_decay
        )

    # -------------------------------------------------------------- training
    @property
    def stage(self) -> str:
        """The stage of the current epoch."""
        s = self.settings
        return "pretrain" if self.current_epoch < s.pretrain_epochs else s.main_stage

    def on_train_epoch_start(self) -> None:  # noqa: D102
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(self.current_epoch)
        self.val_loss = None

    def training_step(self, batch, batch_idx):  # noqa: D102
        out = self.module.loss(batch, self.stage)
        if not out["loss"].requires_grad:  # nothing to learn in this batch
            return None
        terms = {
            k: (v.detach() if torch.is_tensor(v) else torch.tensor(float(v)))
            for k, v in out.items()
        }
        self.log_dict(terms, on_step=False, on_epoch=True, batch_size=1, logger=False)
        self.n_steps += 1
        return out["loss"]

    # -------------------------------------------------------------- validation
    def _validating(self) -> bool:
        return self.val_data is not None and self.stage == self.settings.main_stage

    def on_validation_epoch_start(self) -> None:  # noqa: D102
        self._vsum, self._vn = 0.0, 0
        self._gen = torch.Generator(device=self.device).manual_seed(self.settings.val_seed)

    def validation_step(self, batch, batch_idx):  # noqa: D102
        if self._validating():
            self._vsum += float(self.module.loss(batch, self.stage, generator=self._gen)["loss"])
            self._vn += 1

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        if not self._validating():
            return
        mean = torch.tensor(self._vsum / max(self._vn, 1), dtype=torch.float64)
        self.val_loss = float(self.trainer.strategy.reduce(mean.to(self.device), reduce_op="mean"))
        first = self.settings.first_eligible
        if first is not None and self.current_epoch >= first:
            self.log(MONITOR, self.val_loss, prog_bar=True, logger=False)


class History(Callback):
    """The per-epoch record of a run: stage, the epoch means of the loss terms, held-out loss, time.

    Raises :class:`TrainingError` at the end of an epoch whose training or
    held-out loss is not finite (the models' transactions then restore the
    weights). ``records`` is a list of dicts, one per epoch.
    """

    def __init__(self):
        self.records: list[dict] = []
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()

    def on_train_epoch_end(self, trainer, plan) -> None:  # noqa: D102
        epoch = trainer.current_epoch
        rec = {"epoch": epoch, "stage": plan.stage}
        metrics = trainer.callback_metrics
        rec.update(
            {k: float(v) for k, v in metrics.items() if k != MONITOR and not k.startswith("val")}
        )
        if plan.val_loss is not None:
            rec["val_loss"] = plan.val_loss
        rec["seconds"] = time.perf_counter() - self._t0  # wall time since the start
        rec["cpu_seconds"] = time.process_time() - self._c0  # this process's CPU time
        self.records.append(rec)
        for k in ("loss", "val_loss"):
            if k in rec and not np.isfinite(rec[k]):
                raise TrainingError(
                    f"training diverged at epoch {epoch} ({k} = {rec[k]}); the model was restored "
                    f"to its state before train(). Lower the learning rate "
                    f"(lr={plan.settings.lr})."
                )


class BestWeights(Callback):
    """Keep the weights of the epoch with the lowest :data:`MONITOR`; restore them at the end.

    Held in memory (a copy of the state dict), so nothing is written to disk.
    """

    def __init__(self, monitor: str = MONITOR):
        self.monitor = monitor
        self.best = np.inf
        self.best_epoch: int | None = None
        self.state: dict | None = None

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: D102
        v = trainer.callback_metrics.get(self.monitor)
        if v is None or trainer.sanity_checking:
            return
        v = float(v)
        if np.isfinite(v) and v < self.best:
            self.best, self.best_epoch = v, trainer.current_epoch
            self.state = {k: t.detach().clone() for k, t in pl_module.module.state_dict().items()}

    def on_fit_end(self, trainer, pl_module) -> None:  # noqa: D102
        if self.state is not None:
            pl_module.module.load_state_dict(self.state)


class SmoothedLossStopping(Callback):
    """Stop when the mean training loss of the last ``window`` epochs stops improving.

    Improvement means a relative decrease of more than ``tol``; training stops
    after ``patience`` epochs without one, once ``min_epochs`` epochs have run.
    """

    def __init__(
        self, history: History, patience: int, tol: float, min_epochs: int, window: int = 10
    ):
        self.history = history
        self.patience, self.tol, self.min_epochs, self.window = patience, tol, min_epochs, window
        self.best, self.bad = np.inf, 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        recs = self.history.records
        smooth = float(np.mean([r["loss"] for r in recs[-self.window :]]))
        if not np.isfinite(self.best) or smooth < self.best - self.tol * abs(self.best):
            self.best, self.bad = smooth, 0
        else:
            self.bad += 1
        stop = self.bad >= self.patience and trainer.current_epoch + 1 >= self.min_epochs
        trainer.should_stop = trainer.should_stop or trainer.strategy.reduce_boolean_decision(stop)


#: epochs between two log lines when no progress bar can be drawn (output not a terminal)
LOG_EVERY = 10
#: how the report names the stages of :attr:`TrainingPlan.stage`
STAGE_NAMES = {"pretrain": "per-modality stage", "joint": "joint stage", "train": "training"}


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def stage_epoch(settings: TrainSettings, epoch: int) -> tuple[str, int, int]:
    """``(stage name, epoch within the stage counted from 1, epochs of the stage)``."""
    if epoch < settings.pretrain_epochs:
        return STAGE_NAMES["pretrain"], epoch + 1, settings.pretrain_epochs
    name = STAGE_NAMES.get(settings.main_stage, settings.main_stage)
    return name, epoch - settings.pretrain_epochs + 1, settings.max_epochs


def interactive() -> bool:
    """Whether a progress bar can redraw: a terminal, or a Jupyter kernel."""
    return "ipykernel" in sys.modules or bool(getattr(sys.stderr, "isatty", lambda: False)())


class StageProgressBar(TQDMProgressBar):
    """Lightning's progress bar, described by the stage and its own epoch cap ("joint stage 3/60")."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: D102
        super().on_train_epoch_start(trainer, pl_module)
        name, e, n = stage_epoch(pl_module.settings, trainer.current_epoch)
        self.train_progress_bar.set_description(f"{name} {e}/{n}")


class TrainingReport(Callback):
    """What a run says without a progress bar, and how it ended, on ``stream`` (default stderr).

    With ``every``: one line per ``every`` epochs of a stage (and its last
    epoch) with the epoch's loss, held-out loss and time. At the end of the
    run, one line: the epochs run against the cap, and whether and why
    training stopped early (held-out loss, or the smoothed training loss for
    scRCL), and which epoch's weights were restored.
    """

    def __init__(self, history: History, best: BestWeights, every: int | None = None, stream=None):
        self.history, self.best, self.every, self.stream = history, best, every, stream

    def _say(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def on_train_epoch_end(self, trainer, plan) -> None:  # noqa: D102
        if not self.every or not self.history.records or not trainer.is_global_zero:
            return
        rec = self.history.records[-1]
        name, e, n = stage_epoch(plan.settings, rec["epoch"])
        if e % self.every and e != n:
            return
        val = f", held-out loss {rec['val_loss']:.4g}" if "val_loss" in rec else ""
        self._say(
            f"{name} epoch {e}/{n}: loss {rec.get('loss', float('nan')):.4g}{val} "
            f"({rec['seconds']:.0f} s)"
        )

    def on_fit_end(self, trainer, plan) -> None:  # noqa: D102
        if not trainer.is_global_zero or not self.history.records:
            return
        s = plan.settings
        ran = len(self.history.records)
        cap = s.pretrain_epochs + s.max_epochs
        name, e, n = stage_epoch(s, ran - 1)
        if ran < cap and not trainer.interrupted:
            why = "the held-out loss had not improved"
            for cb in trainer.callbacks:
                if isinstance(cb, EarlyStopping):
                    why += f" for {_epochs(cb.patience)}"
                elif isinstance(cb, SmoothedLossStopping):
                    why = f"the smoothed training loss had not improved for {_epochs(cb.patience)}"
            text = f"stopped early after {name} epoch {e} of {n}: {why}"
        elif s.pretrain_epochs:
            main = stage_epoch(s, cap - 1)[0]
            text = f"trained all {cap} epochs ({s.pretrain_epochs} in the per-modality stage, "
            text += f"{s.max_epochs} in the {main})"
        else:
            text = f"trained all {cap} epochs"
        if self.best.best_epoch is not None:
            bname, be, _ = stage_epoch(s, self.best.best_epoch)
            text += f"; kept the weights of {bname} epoch {be} (lowest held-out loss)"
        self._say(text + f" in {self.history.records[-1]['seconds']:.0f} s.")


def early_stopping(patience: int) -> EarlyStopping:
    """Lightning's early stopping on :data:`MONITOR`; epochs that do not log it are skipped."""
    return EarlyStopping(MONITOR, patience=patience, mode="min", min_delta=0.0, strict=False)


#: strategies the models train with, and what Lightning gets for them: the two stages train
#: different parts of the module, so DDP must look for unused parameters
STRATEGIES = ("auto", "ddp", "ddp_spawn", "ddp_fork", "ddp_notebook")


def check_strategy(strategy, devices) -> str:
    """Refuse a strategy the models do not support; ``devices`` is checked by Lightning."""
    if not isinstance(strategy, str) or strategy not in STRATEGIES:
        raise ValueError(
            f"strategy must be one of {list(STRATEGIES)} (DDP variants for several devices or "
            f"processes), got {strategy!r}"
        )
    return strategy


def _strategy(strategy: str, devices):
    """Lightning's strategy object: every DDP variant finds unused parameters."""
    from lightning.pytorch.strategies import DDPStrategy

    several = devices not in (None, 1, "1") and not (
        isinstance(devices, list) and len(devices) == 1
    )
    if strategy == "auto" and not several:
        return "auto"
    start = {"ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}.get(
        strategy, "popen"
    )
    return DDPStrategy(find_unused_parameters=True, start_method=start)


def _accelerator(device: torch.device) -> str:
    return {"cuda": "gpu", "mps": "mps"}.get(device.type, "cpu")


def lightning_trainer(
    device: torch.device,
    max_epochs: int,
    callbacks: list,
    *,
    devices: int | list[int] | str | None = None,
    strategy: str = "auto",
    progress_bar: bool = True,
    gradient_clip_val: float | None = None,
    **trainer_kwargs,
) -> pl.Trainer:
    """A :class:`lightning.pytorch.Trainer` on the model's device that writes nothing to disk.

    ``devices=None`` is the model's device (one); several devices (or a DDP
    strategy of :data:`STRATEGIES`) train with DDP that finds unused
    parameters, since scI2CL's two stages train different parts of the module.
    """
    if devices is None:
        devices = [device.index] if device.type == "cuda" and device.index is not None else 1
    strategy = _strategy(check_strategy(strategy, devices), devices)
    with _quiet():
        return pl.Trainer(
            accelerator=_accelerator(device),
            devices=devices,
            strategy=strategy,
            max_epochs=max_epochs,
            callbacks=callbacks,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=progress_bar,
            num_sanity_val_steps=0,
            gradient_clip_val=gradient_clip_val,
            gradient_clip_algorithm="norm",
            **trainer_kwargs,
        )


@contextlib.contextmanager
def _quiet():
    """Lightning's start-up notices and data-loader hints off; SIGINT handling kept."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGINT) if main else None
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            for msg in (".*does not have many workers.*", ".*GPU available but not used.*",
                        ".*sync_dist=True.*", ".*LeafSpec.*", ".*number of training batches.*",
                        ".*across ranks is zero.*"):  # fmt: skip
                warnings.filterwarnings("ignore", message=msg)
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        if main and handler is not None:  # Lightning ignores SIGINT after an interruption
            signal.signal(signal.SIGINT, handler)


def fit(trainer: pl.Trainer, plan: TrainingPlan) -> None:
    """``trainer.fit(plan)``; an interruption (Ctrl-C) comes back as :class:`KeyboardInterrupt`.

    Lightning turns Ctrl-C into a graceful stop and ``sys.exit(1)``; the
    models' training transactions need to see the interruption as one.
    """
    with _quiet():
        try:
            trainer.fit(plan)
        except SystemExit as e:
            if trainer.interrupted:
                raise KeyboardInterrupt from e
            raise
        if trainer.interrupted:
            raise KeyboardInterrupt


def train_module(
    module: torch.nn.Module,
    settings: TrainSettings,
    device: torch.device,
    train_data,
    val_data=None,
    callbacks: tuple = (),
) -> tuple[list[dict], int]:
    """Train ``module`` by its ``loss`` under ``settings``; returns ``(history records, steps)``.

    The callbacks: :class:`History`, :class:`BestWeights` (restores the best
    eligible epoch), Lightning's early stopping when ``settings.early_stopping``
    and there are held-out cells, then ``callbacks`` (which may take the
    history object as their first argument: pass a function of it).
    """
    history, best = History(), BestWeights()
    cbs = [history, best]
    if settings.early_stopping and val_data is not None:
        cbs.append(early_stopping(settings.patience))
    cbs += [c(history) if callable(c) and not isinstance(c, Callback) else c for c in callbacks]
    bar = settings.progress_bar and interactive()
    if settings.progress_bar:  # a bar where it can redraw, else a line per LOG_EVERY epochs
        cbs += [StageProgressBar()] if bar else []
        cbs.append(TrainingReport(history, best, every=None if bar else LOG_EVERY))
    module.train()  # a module left in eval mode (after an embedding) trains as it should
    plan = TrainingPlan(module, settings, train_data, val_data)
    trainer = lightning_trainer(
        device,
        settings.pretrain_epochs + settings.max_epochs,
        cbs,
        devices=settings.devices,
        strategy=settings.strategy,
        progress_bar=bar,
        gradient_clip_val=settings.gradient_clip_val,
    )
    fit(trainer, plan)
    module.to(device)  # Lightning leaves the module where its teardown puts it
    return history.records, plan.n_steps
