"""One training job from a resolved config: the task's model, data and LightningModule, the trainer, resume.

Everything task-specific comes from the task registry (:mod:`whisper_flamingo.tasks.registry`,
the config's ``task`` key); this module knows no task by name.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl

from whisper_flamingo.config import Config, save_config
from whisper_flamingo.errors import WFError
from whisper_flamingo.logs import route_library_logs
from whisper_flamingo.models.params import count_parameters, human
from whisper_flamingo.tasks import slurm
from whisper_flamingo.tasks.registry import task_for
from whisper_flamingo.tasks.trainer import LAST, SigtermStop, StopOnSigterm, build_trainer

log = logging.getLogger(__name__)


class TrainingStopped(WFError):
    """Training ended early on SIGTERM; the message says where ``last.ckpt`` is and how to resume."""


def _stopped_message(cfg: Config, step: int | None, last: Path) -> str:
    at = f"at step {step}" if step is not None else "before the current step ended"
    saved = f"{last} saved" if step is not None else f"{last} holds the last periodic save"
    return (f"stopped by SIGTERM {at}; {saved}; resume with the same command plus resume_training=true")


def train(cfg: Config) -> Path:
    """Train the config's task (``task``; ``auto``: flamingo for an audio-visual config, else asr);
    return the checkpoint folder."""
    route_library_logs()
    slurm.watch_requeue_signal()  # a pre-emption warning during set-up is acted upon once training runs
    spec = task_for(cfg)
    cfg.task = spec.name  # the saved config names the task it trained

    cfg.check_paths()  # every missing input path in one error, before anything is loaded
    pl.seed_everything(cfg.seed, workers=True)
    ckpt_dir = cfg.checkpoint_dir
    last = ckpt_dir / LAST
    resume = bool((cfg.resume_training or slurm.restarted()) and last.is_file())
    if slurm.restarted():
        log.info("SLURM job %s, restart %d: %s", slurm.job_id(), slurm.restart_count(),
                 f"resuming from {last}" if resume else f"no {last} yet, starting again")
    if cfg.resume_training and not resume:
        log.info("resume_training is set but %s does not exist yet: starting a new run", last)
    elif not resume and last.is_file():
        log.warning("%s exists and resume_training is false: starting a new run that will overwrite it "
                    "(set resume_training=true to continue it)", last)

    model = spec.model_builder(cfg)
    total, trainable = count_parameters(model), count_parameters(model, trainable=True)
    log.info("task %s, model %s: %s parameters (%s trainable)", spec.name, cfg.model_name, human(total),
             human(trainable))
    datamodule = spec.datamodule(cfg, model)
    datamodule.setup("fit")
    task = spec.module(cfg, model, val_names=datamodule.val_names)
    trainer = build_trainer(cfg, spec)
    if trainer.is_global_zero:
        save_config(cfg, ckpt_dir)
        log.info("resolved config saved to %s", ckpt_dir / "config.yaml")
    stopper = next(c for c in trainer.callbacks if isinstance(c, StopOnSigterm))
    try:
        if resume:
            log.info("resuming from %s", last)
            trainer.fit(task, datamodule=datamodule, ckpt_path=str(last))
        else:
            if cfg.validate_before_training and datamodule.val_names:
                trainer.validate(task, datamodule=datamodule, verbose=False)
            trainer.fit(task, datamodule=datamodule)
    except SigtermStop as stop:
        raise TrainingStopped(_stopped_message(cfg, stop.step, last)) from None
    except Exception as err:
        if not stopper.requested:
            raise
        # SIGTERM also reached a component that could not finish the step (e.g. a data loader worker)
        log.debug("after SIGTERM: %r", err)
        raise TrainingStopped(_stopped_message(cfg, None, last)) from None
    if trainer.is_global_zero:
        log.info("training finished at step %d; checkpoints in %s", trainer.global_step, ckpt_dir)
    return ckpt_dir
