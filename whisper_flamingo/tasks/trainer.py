"""Build the Lightning trainer (loggers, callbacks, precision, DDP) and run a training job."""

from __future__ import annotations

import logging
import os
import tempfile
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file in the same folder, fsync, then rename over the target.

    A job killed while saving leaves the previous checkpoint intact, never a truncated one.
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


class FinalCheckpoint(Callback):
    """Write ``last.ckpt`` right after the final optimizer step, while the loops are still mid-epoch.

    Saved there (rather than after ``fit`` returns, when Lightning has already closed the epoch), a
    run continued later with a larger ``num_train_steps`` resumes with exactly the batches that
    would have followed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if trainer.global_step >= trainer.max_steps and not trainer.fit_loop._should_accumulate():
            trainer.save_checkpoint(str(self.path))


def swapped_monitor(name: str) -> str:
    """``val...`` <-> ``test...`` (the original also kept the best checkpoint by the other split)."""
    if name.startswith("val"):
        return "test" + name[3:]
    if name.startswith("test"):
        return "val" + name[4:]
    return name


def resolve_precision(cfg: Config) -> str:
    if cfg.precision != "auto":
        return {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true"}.get(cfg.precision, cfg.precision)
    return "16-mixed" if _use_gpu(cfg) else "32-true"


def _use_gpu(cfg: Config) -> bool:
    if cfg.accelerator in ("gpu", "cuda"):
        return True
    return cfg.accelerator == "auto" and torch.cuda.is_available()


def build_callbacks(cfg: Config) -> list[Callback]:
    ckpt_dir = cfg.checkpoint_dir
    # the best checkpoint's name carries the monitored value (e.g. step-000300-acc_av=0.8123.ckpt)
    template = f"step-{{step:06d}}-{cfg.monitor.split('/')[-1]}={{{cfg.monitor}:.4f}}"
    callbacks: list[Callback] = [
        ModelCheckpoint(dirpath=ckpt_dir, filename=template, monitor=cfg.monitor, mode=cfg.monitor_mode,
                        save_top_k=1, save_last=False, auto_insert_metric_name=False,
                        enable_version_counter=False),
        ModelCheckpoint(dirpath=ckpt_dir, filename="best-" + swapped_monitor(cfg.monitor).replace("/", "-")
                        + "-step-{step:06d}", monitor=swapped_monitor(cfg.monitor), mode=cfg.monitor_mode,
                        save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False),
        # every N optimizer steps: a 'latest' checkpoint and a fresh last.ckpt to resume from
        ModelCheckpoint(dirpath=ckpt_dir, filename="latest-step-{step:06d}", monitor="step", mode="max",
                        every_n_train_steps=cfg.checkpoint_every_n_steps, save_top_k=1, save_last=True,
                        auto_insert_metric_name=False, enable_version_counter=False),
        FinalCheckpoint(ckpt_dir / LAST),
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
    logger = TensorBoardLogger(save_dir=cfg.log_output_dir, name=cfg.train_name, version=cfg.train_id,
                               default_hp_metric=False)
    return pl.Trainer(
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
