"""Build the Lightning trainer (loggers, callbacks, precision, DDP) and run a training job."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from whisper_flamingo.config import Config
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.tasks.registry import TaskSpec, resolve_sync_batchnorm, task_for
from whisper_flamingo.tasks.slurm import RequeueOnSignal, cluster_plugins

log = logging.getLogger(__name__)

LAST = "last.ckpt"


def _umask() -> int:
    """The process umask (read without changing it for longer than two calls)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file in the same folder, fsync, then rename over the target.

    A job killed while saving leaves the previous checkpoint intact, never a truncated one.  The
    file gets the mode a plain ``open`` would give it (``0o666`` less the umask: group-readable with
    the usual 022 or 002), not the ``0600`` of the temporary file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                torch.save(checkpoint, fh)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class BatchTrace(Callback):
    """Append the utterance ids of every training batch to ``<dir>/rank<k>.txt`` (data-order debugging)."""

    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / f"rank{trainer.global_rank}.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{trainer.current_epoch}\t{batch_idx}\t{' '.join(batch['ids'])}\n")


class LastCheckpoint(Callback):
    """The one full, resumable checkpoint: ``last.ckpt`` (weights, optimizer, scheduler, sampler, RNG).

    Rewritten (atomically) every ``every_n`` optimizer steps, right after the final optimizer step
    and when a stop is requested (:class:`StopOnSigterm`).  It is saved from the batch-end hook,
    while the loops are still mid-epoch, so a resumed run (or one continued with a larger
    ``num_train_steps``) trains on exactly the batches that would have followed.
    """

    def __init__(self, path: Path, every_n: int) -> None:
        self.path = path
        self.every_n = max(1, int(every_n))
        self.saved_step = -1

    def save(self, trainer: pl.Trainer) -> None:
        if self.saved_step != trainer.global_step:
            trainer.save_checkpoint(str(self.path))
            self.saved_step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.fit_loop._should_accumulate():
            return
        step = trainer.global_step
        if step >= trainer.max_steps or (step > 0 and step % self.every_n == 0):
            self.save(trainer)


class SigtermStop(Exception):
    """Raised at a batch end after SIGTERM, once ``last.ckpt`` is saved (ends ``fit`` without validating)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"stopped by SIGTERM at step {step}")
        self.step = step


class StopOnSigterm(Callback):
    """SIGTERM (``timeout``, a scheduler's pre-emption) ends training cleanly at the next batch end.

    The handler only sets a flag; at the end of the current optimizer step ``last.ckpt`` is saved
    (atomically, by ``last``) and :class:`SigtermStop` ends ``fit`` at once (``trainer.should_stop``
    would first run a validation, which a pre-emption's grace period may not allow).
    :func:`~whisper_flamingo.tasks.run.train` reports it in one line.  Under DDP the ranks agree
    (any rank's signal stops all).
    """

    def __init__(self, last: LastCheckpoint) -> None:
        self.last = last
        self.requested = False
        self.stopped_at: int | None = None
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def _restore(self) -> None:
        if self._previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.fit_loop._should_accumulate():
            return
        # Lightning's own handler holds a TERM that came between the start of fit and on_train_start
        stop = self.requested or bool(getattr(trainer, "received_sigterm", False))
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            self.requested = True
            self.last.save(trainer)
            self.stopped_at = trainer.global_step
            raise SigtermStop(trainer.global_step)


class StepLogger(TensorBoardLogger):
    """TensorBoard logger whose step is the trainer's ``global_step``: the number of optimizer steps done.

    Lightning logs training metrics of step *k* and the validation after it at *k - 1*, while the
    checkpoints of that validation are named *k*; with this logger every number means the same.
    """

    trainer: pl.Trainer | None = None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.trainer is not None:
            step = int(self.trainer.global_step)
        super().log_metrics(metrics, step)


def resolve_precision(cfg: Config) -> str:
    if cfg.precision != "auto":
        return {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true"}.get(cfg.precision, cfg.precision)
    return "16-mixed" if _use_gpu(cfg) else "32-true"


def _use_gpu(cfg: Config) -> bool:
    if cfg.accelerator in ("gpu", "cuda"):
        return True
    return cfg.accelerator == "auto" and torch.cuda.is_available()


def best_filename(cfg: Config) -> str:
    """File name template of the best checkpoints: ``step-000300-acc_av=0.8123`` (the monitored value)."""
    return f"step-{{step:06d}}-{cfg.monitor.split('/')[-1]}={{{cfg.monitor}:.4f}}"


def build_callbacks(cfg: Config) -> list[Callback]:
    """Checkpoints: ``last.ckpt`` (full, resumable) + the ``save_top_k`` best by ``monitor`` (weights only).

    A run's disk use is about ``(save_top_k + 1)`` models plus one optimizer state; a best file that
    drops out of the top k is deleted.
    """
    ckpt_dir = cfg.checkpoint_dir
    validates = cfg.validate_every_n_batches <= cfg.num_train_steps
    if cfg.monitor.rsplit("/", 1)[-1] in ("wer", "cer") and not cfg.val_decode and validates:
        raise ConfigError(f"key 'monitor' is {cfg.monitor!r}, but WER/CER are computed only with val_decode: "
                          "true; set val_decode=true or monitor a loss/acc metric (e.g. val/acc)")
    last = LastCheckpoint(ckpt_dir / LAST, cfg.checkpoint_every_n_steps)
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename=best_filename(cfg), monitor=cfg.monitor, mode=cfg.monitor_mode,
                        save_top_k=cfg.save_top_k, save_last=False, save_weights_only=True,
                        auto_insert_metric_name=False, enable_version_counter=False),
        last,
        StopOnSigterm(last),
        LearningRateMonitor(logging_interval="step"),
        TQDMProgressBar(refresh_rate=max(1, min(50, cfg.log_every_n_steps))),
    ]
    if cfg.trace_batches_dir:
        callbacks.append(BatchTrace(cfg.trace_batches_dir))
    callbacks.append(RequeueOnSignal(ckpt_dir / LAST))  # SLURM pre-emption (does nothing outside a job)
    return callbacks


def build_trainer(cfg: Config, spec: TaskSpec | None = None) -> pl.Trainer:
    """A Trainer configured from the config: devices, precision, DDP, logging and checkpoints.

    ``spec``: the task (default: the config's); it says whether DDP must allow unused parameters,
    and its ``sync_batchnorm`` applies when the key is null.
    """
    if spec is None:
        spec = task_for(cfg)
    # Lightning warns that a mid-epoch resume is unreliable unless the DataLoader itself is stateful;
    # ours is resumed exactly through the data module's state (the batch sampler), so the warning is wrong.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")
    devices = cfg.num_devices
    strategy: Any = "auto"
    if devices * cfg.num_nodes > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(find_unused_parameters=spec.find_unused_parameters)
    accelerator = {"cuda": "gpu"}.get(cfg.accelerator, cfg.accelerator)
    if accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("key 'accelerator' is 'gpu' but no GPU is visible; set accelerator=cpu or auto")
    sync_batchnorm = resolve_sync_batchnorm(cfg, spec, _use_gpu(cfg))
    logger = StepLogger(save_dir=cfg.log_output_dir, name=cfg.train_name, version=cfg.train_id,
                        default_hp_metric=False)
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        precision=resolve_precision(cfg),
        max_steps=cfg.num_train_steps,
        max_epochs=-1,
        accumulate_grad_batches=cfg.gradient_accumulation_steps,
        gradient_clip_val=cfg.gradient_clip_val or None,
        val_check_interval=cfg.validate_every_n_batches * cfg.gradient_accumulation_steps,
        check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches or None,
        num_sanity_val_steps=0,
        sync_batchnorm=sync_batchnorm,
        use_distributed_sampler=False,
        logger=logger,
        callbacks=build_callbacks(cfg),
        plugins=[AtomicCheckpointIO(), *cluster_plugins()],
        log_every_n_steps=cfg.log_every_n_steps,
        deterministic=False,
        enable_model_summary=False,
        default_root_dir=str(cfg.checkpoint_dir),
    )
    logger.trainer = trainer
    return trainer
