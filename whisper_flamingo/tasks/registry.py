"""The task registry: the config's ``task`` key -> (LightningModule, DataModule, model builder).

A task module registers itself when imported::

    register_task("asr", module=WhisperASRTask, datamodule=asr_datamodule, model_builder=build_asr_model)

:func:`get_task` imports the built-in task modules on first use (:data:`BUILTIN_TASKS`), so a new
task is one module under ``whisper_flamingo/tasks/`` plus one line in :data:`BUILTIN_TASKS` (or an
import of the module before :func:`get_task` is called).  :func:`~whisper_flamingo.tasks.run.train`
builds everything of a job through the spec; nothing there knows the task by name.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from whisper_flamingo.errors import ConfigError

if TYPE_CHECKING:
    import lightning.pytorch as pl
    from torch import nn

    from whisper_flamingo.config import Config

log = logging.getLogger(__name__)

#: task name -> the module that registers it (imported by :func:`get_task` when needed)
BUILTIN_TASKS: dict[str, str] = {
    "asr": "whisper_flamingo.tasks.asr",
    "flamingo": "whisper_flamingo.tasks.flamingo",
    "tagging": "whisper_flamingo.tasks.tagging",
    "mae": "whisper_flamingo.tasks.mae",
    "vsr": "whisper_flamingo.tasks.vsr",
}


@dataclass(frozen=True)
class TaskSpec:
    """Everything :func:`~whisper_flamingo.tasks.run.train` needs to know about a task.

    ``module(cfg, model, tokenizer, val_names=...)`` is the LightningModule; ``datamodule(cfg, model)``
    the LightningDataModule (it reads what it needs from the model, e.g. mel bins, vocabulary);
    ``model_builder(cfg)`` the plain ``nn.Module`` (weights loaded).  ``find_unused_parameters``
    goes to DDP (a task whose steps may leave parameters without gradients needs it);
    ``sync_batchnorm`` is the default of the config key of that name.
    """

    name: str
    module: type[pl.LightningModule]
    datamodule: Callable[[Config, nn.Module], pl.LightningDataModule]
    model_builder: Callable[[Config], nn.Module]
    find_unused_parameters: bool = False
    sync_batchnorm: bool = False
    description: str = ""


_REGISTRY: dict[str, TaskSpec] = {}


def register_task(name: str, *, module: type[pl.LightningModule],
                  datamodule: Callable[[Config, nn.Module], pl.LightningDataModule],
                  model_builder: Callable[[Config], nn.Module], find_unused_parameters: bool = False,
                  sync_batchnorm: bool = False, description: str = "") -> TaskSpec:
    """Register (or replace, with a warning) the task ``name``; return its spec."""
    if name == "auto":
        raise ValueError("'auto' is reserved (the task inferred from the audio-visual keys)")
    spec = TaskSpec(name, module, datamodule, model_builder, find_unused_parameters, sync_batchnorm, description)
    old = _REGISTRY.get(name)
    if old is not None and old != spec:
        log.warning("task %r registered again (%s replaces %s)", name, module.__qualname__, old.module.__qualname__)
    _REGISTRY[name] = spec
    return spec


def task_names() -> list[str]:
    """Every known task name (built-in and registered), sorted; imports nothing."""
    return sorted(set(BUILTIN_TASKS) | set(_REGISTRY))


def check_task_name(name: str) -> str:
    """``name`` when it is a known task, else a one-line :class:`ConfigError` naming the key and the choices."""
    if name not in BUILTIN_TASKS and name not in _REGISTRY:
        raise ConfigError(f"key 'task': unknown task {name!r}; use one of {', '.join(task_names())} "
                          "(or auto: inferred from the audio-visual keys)")
    return name


def get_task(name: str) -> TaskSpec:
    """The spec of task ``name`` (its module is imported on first use)."""
    check_task_name(name)
    if name not in _REGISTRY:
        importlib.import_module(BUILTIN_TASKS[name])
    if name not in _REGISTRY:
        raise RuntimeError(f"{BUILTIN_TASKS[name]} did not register task {name!r}")
    return _REGISTRY[name]


def task_for(cfg: Config) -> TaskSpec:
    """The spec of the config's task (``cfg.task_name``: ``task``, or inferred for ``auto``)."""
    return get_task(cfg.task_name)


def resolve_sync_batchnorm(cfg: Config, spec: TaskSpec, gpu: bool) -> bool:
    """The ``sync_batchnorm`` given to the Trainer: the key, or the task's default when it is null.

    torch's SyncBatchNorm runs on GPUs only: the task default is off elsewhere, and an explicit
    ``sync_batchnorm: true`` for a multi-process CPU run is refused.
    """
    world = cfg.num_devices * cfg.num_nodes
    if cfg.sync_batchnorm is None:
        if spec.sync_batchnorm and world > 1 and not gpu:
            log.info("sync_batchnorm: the %s task's default (on) needs GPUs; off for this CPU run", spec.name)
        return bool(spec.sync_batchnorm and gpu)
    if cfg.sync_batchnorm and world > 1 and not gpu:
        raise ConfigError("key 'sync_batchnorm' is true but SyncBatchNorm needs GPUs (torch supports no CPU "
                          "version); set sync_batchnorm=false or null for a CPU run")
    return bool(cfg.sync_batchnorm)


__all__ = ["BUILTIN_TASKS", "TaskSpec", "register_task", "get_task", "task_for", "task_names", "check_task_name",
           "resolve_sync_batchnorm"]
