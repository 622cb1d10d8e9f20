"""Running under SLURM: pre-emption with a consistent checkpoint and a requeue, and resume after a restart.

The job asks Slurm for a warning signal (``#SBATCH --signal=USR1@120`` and ``--requeue``; see
``slurm/train_audio.sh``).  :class:`RequeueOnSignal` only records the signal; at the end of the
current optimizer step (never inside one) every rank agrees, ``last.ckpt`` is written atomically
(weights, optimizer, scheduler, the sampler's position in the epoch, loop counters), rank 0 runs
``scontrol requeue $SLURM_JOB_ID`` and the process exits.  The restarted job
(``SLURM_RESTART_COUNT`` >= 1) resumes from ``last.ckpt`` by itself (:func:`restarted`), without
``resume_training``.  The random draws (noise, SNR, SpecAugment, modality) are functions of the seed,
the epoch, the sample and the step, so the resumed run trains on exactly the batches, and ends with
exactly the weights, of an uninterrupted one.

Lightning's own SLURM auto-requeue is switched off (:func:`cluster_plugins`): its handler saves
``hpc_ckpt_N.ckpt`` from inside the signal handler, i.e. wherever the main thread happens to be (in
the middle of ``optimizer.step`` or between a step and the loop's progress counters), keeps
training until Slurm kills the job, and leaves one full checkpoint per pre-emption behind.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)

REQUEUE_SIGNAL = signal.SIGUSR1


def job_id() -> str | None:
    """The job to requeue: ``ARRAYJOB_TASK`` for an array task, else ``SLURM_JOB_ID`` (None outside a job)."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or None


def restart_count() -> int:
    """``SLURM_RESTART_COUNT``: how often this job was requeued and started again (0 outside Slurm)."""
    try:
        return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0)
    except ValueError:
        return 0


def restarted() -> bool:
    """True in a requeued SLURM job: it continues from its ``last.ckpt`` even without ``resume_training``."""
    return job_id() is not None and restart_count() > 0


def cluster_plugins() -> list[Any]:
    """Lightning's SLURM environment without its own requeue handler (ours is :class:`RequeueOnSignal`)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if SLURMEnvironment.detect():
        return [SLURMEnvironment(auto_requeue=False)]
    return []


_requested = threading.Event()  # set by the signal handler; acted upon at the next step boundary


def _record(signum: int, frame: Any) -> None:
    _requested.set()  # a handler must not save: it may run in the middle of an optimizer step


def watch_requeue_signal(sig: int = REQUEUE_SIGNAL) -> Any:
    """In a SLURM job, record ``sig`` from now on (its default action would end the process); returns the
    previous handler, or None when nothing was installed (outside a job, or not the main thread)."""
    if job_id() is None or threading.current_thread() is not threading.main_thread():
        return None
    previous = signal.getsignal(sig)
    if previous is not _record:
        signal.signal(sig, _record)
    return previous


class Requeued(SystemExit):
    """Ends the process after the pre-emption checkpoint (exit status 0; Slurm starts the job again)."""


def requeue(job: str) -> tuple[bool, str]:
    """``scontrol requeue JOB``; returns (done, what scontrol said)."""
    if not re.fullmatch(r"[0-9]+(_[0-9]+)?", job):
        return False, f"not a job id: {job!r}"
    try:
        out = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, str(err)
    return out.returncode == 0, (out.stderr or out.stdout).strip()


class RequeueOnSignal(Callback):
    """In a SLURM job: on ``SIGUSR1`` save ``last.ckpt`` at the next optimizer-step boundary, requeue, exit.

    ``last``: where the full checkpoint goes (the file a restarted job resumes from).  Outside a
    SLURM job the callback does nothing and leaves ``SIGUSR1`` alone; in one, the signal is recorded
    from the start of :func:`~whisper_flamingo.tasks.run.train` (:func:`watch_requeue_signal`).
    """

    def __init__(self, last: Path, sig: int = REQUEUE_SIGNAL) -> None:
        self.last = Path(last)
        self.sig = sig
        self._installed = False

    @property
    def requested(self) -> bool:
        return _requested.is_set()

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # the handler stays until the process ends: a late warning (after the last step) is then
        # only recorded, where the default action would end a finished job as failed
        if not self._installed and watch_requeue_signal(self.sig) is not None:
            self._installed = True
            log.info("SLURM job %s (restart %d): %s saves %s and requeues the job", job_id(), restart_count(),
                     signal.Signals(self.sig).name, self.last)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._installed or trainer.fit_loop._should_accumulate():
            return
        stop = self.requested
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)  # any rank's signal stops all
        if not stop:
            return
        step = trainer.global_step
        _requested.clear()
        trainer.save_checkpoint(str(self.last))  # every rank takes part; rank 0 writes; a barrier ends it
        # the requeue makes Slurm TERM the job's processes: all is saved, so exit in our own time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if not trainer.is_global_zero:
            raise Requeued(0)
        job = job_id()
        assert job is not None
        done, said = requeue(job)
        if done:
            log.info("pre-empted at step %d: %s saved; job %s requeued (it resumes from there)", step, self.last,
                     job)
            raise Requeued(0)
        log.error("pre-empted at step %d: %s saved, but 'scontrol requeue %s' failed (%s); submit the job "
                  "again with resume_training=true to continue", step, self.last, job, said)
        raise Requeued(3)
