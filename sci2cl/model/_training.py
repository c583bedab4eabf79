"""Training on PyTorch Lightning: one training plan for both models, and its callbacks.

The losses stay in the torch modules (:mod:`sci2cl.module`); this module only
wires them into :class:`lightning.pytorch.Trainer`, which runs the epochs,
the progress bar, gradient clipping, devices and distributed strategies.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
import warnings

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

__all__ = ["BestWeights", "SmoothedLossStopping", "TrainingPlan", "fit", "lightning_trainer"]

#: the metric early stopping and the best-weight restore watch; it is logged only in the
#: epochs allowed to stop training or be restored (joint stage, after ``min_epochs``)
MONITOR = "val_loss_eligible"


class TrainingPlan(pl.LightningModule):
    """A torch module and its loss as a :class:`~lightning.pytorch.LightningModule`.

    Parameters
    ----------
    module
        The model's torch module (its parameters are optimised).
    loss_fn
        ``loss_fn(batch, stage) -> {"loss": tensor, other terms...}``.
    train_data, val_data
        Datasets whose items are whole mini-batches (``None``: no validation).
        Each may have ``set_epoch(epoch)``, called at the start of every epoch.
    lr, weight_decay
        AdamW settings.
    stage_fn
        ``epoch -> stage name`` (default: always ``"train"``).
    val_stages
        Stages in which the held-out loss is computed.
    eligible_fn
        ``epoch -> bool``: epochs whose held-out loss may stop training and
        be restored (logged as :data:`MONITOR`).
    val_seed
        Seed of the held-out loss's random parts (masks, negatives), fixed so
        that every epoch scores the same draw.
    check_fn
        ``check_fn(record, epoch)`` raises on a bad epoch (e.g. a non-finite loss).
    """

    def __init__(
        self,
        module: torch.nn.Module,
        loss_fn,
        train_data,
        val_data=None,
        *,
        lr: float,
        weight_decay: float,
        stage_fn=None,
        val_stages: tuple[str, ...] = (),
        eligible_fn=None,
        val_seed: int = 1,
        check_fn=None,
    ):
        super().__init__()
        self.module = module
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.val_data = val_data
        self.lr, self.weight_decay = lr, weight_decay
        self.stage_fn = stage_fn or (lambda epoch: "train")
        self.val_stages = tuple(val_stages)
        self.eligible_fn = eligible_fn or (lambda epoch: False)
        self.val_seed = int(val_seed)
        self.check_fn = check_fn
        self.records: list[dict] = []
        self.n_steps = 0
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()
        self._rng_ctx = None

    # -------------------------------------------------------------- data
    def _loader(self, data):
        return torch.utils.data.DataLoader(data, batch_size=None, shuffle=False, num_workers=0)

    def train_dataloader(self):  # noqa: D102
        return self._loader(self.train_data)

    def val_dataloader(self):  # noqa: D102
        return self._loader(self.val_data) if self.val_data is not None else []

    def configure_optimizers(self):  # noqa: D102
        return torch.optim.AdamW(
            self.module.parameters(), lr=self.lr, weight_decay=self.weight_decay
        )

    # -------------------------------------------------------------- training
    @property
    def stage(self) -> str:
        """The stage of the current epoch."""
        return self.stage_fn(self.current_epoch)

    def on_train_epoch_start(self) -> None:  # noqa: D102
        if hasattr(self.train_data, "set_epoch"):
            self.train_data.set_epoch(self.current_epoch)
        self._sums: dict[str, float] = {}
        self._nb = 0
        self._val = None

    def training_step(self, batch, batch_idx):  # noqa: D102
        out = self.loss_fn(batch, self.stage)
        if not out["loss"].requires_grad:  # nothing to learn in this batch
            return None
        for k, v in out.items():
            self._sums[k] = self._sums.get(k, 0.0) + float(v.detach() if torch.is_tensor(v) else v)
        self._nb += 1
        self.n_steps += 1
        return out["loss"]

    def on_train_epoch_end(self) -> None:  # noqa: D102
        epoch = self.current_epoch
        rec = {"epoch": epoch, "stage": self.stage}
        rec.update({k: v / max(self._nb, 1) for k, v in self._sums.items()})
        if self._val is not None:
            rec["val_loss"] = self._val
        rec["seconds"] = time.perf_counter() - self._t0  # wall time since the start
        rec["cpu_seconds"] = time.process_time() - self._c0  # this process's CPU time, all threads
        self.records.append(rec)
        if self.check_fn is not None:
            self.check_fn(rec, epoch)

    # -------------------------------------------------------------- validation
    def _validating(self) -> bool:
        return self.val_data is not None and self.stage in self.val_stages

    def on_validation_epoch_start(self) -> None:  # noqa: D102
        self._vsum, self._vn = 0.0, 0
        if self._validating():  # the same masks and negatives every epoch
            devices = [self.device] if self.device.type == "cuda" else []
            self._rng_ctx = torch.random.fork_rng(devices=devices)
            self._rng_ctx.__enter__()
            torch.manual_seed(self.val_seed)

    def validation_step(self, batch, batch_idx):  # noqa: D102
        if self._validating():
            self._vsum += float(self.loss_fn(batch, self.stage)["loss"])
            self._vn += 1

    def on_validation_epoch_end(self) -> None:  # noqa: D102
        if self._rng_ctx is not None:
            self._rng_ctx.__exit__(None, None, None)
            self._rng_ctx = None
        if not self._validating():
            return
        mean = torch.tensor(self._vsum / max(self._vn, 1), dtype=torch.float64)
        mean = float(self.trainer.strategy.reduce(mean.to(self.device), reduce_op="mean"))
        self._val = mean
        if self.eligible_fn(self.current_epoch):
            self.log(MONITOR, mean, prog_bar=True, logger=False)


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

    def __init__(self, patience: int, tol: float, min_epochs: int, window: int = 10):
        self.patience, self.tol, self.min_epochs, self.window = patience, tol, min_epochs, window
        self.best, self.bad = np.inf, 0

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: D102
        recs = pl_module.records
        smooth = float(np.mean([r["loss"] for r in recs[-self.window :]]))
        if not np.isfinite(self.best) or smooth < self.best - self.tol * abs(self.best):
            self.best, self.bad = smooth, 0
        else:
            self.bad += 1
        stop = self.bad >= self.patience and trainer.current_epoch + 1 >= self.min_epochs
        trainer.should_stop = trainer.should_stop or trainer.strategy.reduce_boolean_decision(stop)


def early_stopping(patience: int) -> EarlyStopping:
    """Lightning's early stopping on :data:`MONITOR`; epochs that do not log it are skipped."""
    return EarlyStopping(MONITOR, patience=patience, mode="min", min_delta=0.0, strict=False)


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

    ``devices=None`` is the model's device (one); ``strategy="ddp"`` becomes
    ``"ddp_find_unused_parameters_true"``, since scI2CL's two stages train
    different parts of the module.
    """
    if devices is None:
        devices = [device.index] if device.type == "cuda" and device.index is not None else 1
    if strategy == "ddp":
        strategy = "ddp_find_unused_parameters_true"
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
                        ".*sync_dist=True.*", ".*LeafSpec.*", ".*number of training batches.*"):  # fmt: skip
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
