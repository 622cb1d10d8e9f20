"""Weight averaging (reference §0.5): the element-wise mean of per-epoch state dicts.

AST and Whisper-AT save a state dict after every epoch and, after training, average epochs
``wa_start..wa_end`` (inclusive); Whisper-AT skips epochs whose file is missing (so do we, with a
warning).  Floating tensors are averaged in float64 and cast back; integer tensors (e.g. BatchNorm's
``num_batches_tracked``) are taken from the last state dict.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from whisper_flamingo.checkpoints.io import read_checkpoint_file
from whisper_flamingo.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["average_state_dicts", "epoch_state_path", "average_epochs"]


def average_state_dicts(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of ``states`` (same keys and shapes, else a CheckpointError)."""
    if not states:
        raise CheckpointError("weight averaging needs at least one state dict")
    keys = list(states[0])
    for i, s in enumerate(states[1:], start=1):
        if set(s) != set(keys):
            diff = sorted(set(s) ^ set(keys))
            raise CheckpointError(f"state dict {i} has other keys than state dict 0 (e.g. {diff[0]}); "
                                  "average checkpoints of one model only")
    out = {}
    for k in keys:
        first = states[0][k]
        if any(tuple(s[k].shape) != tuple(first.shape) for s in states):
            raise CheckpointError(f"tensor {k!r} changes shape between the averaged state dicts")
        if first.is_floating_point():
            acc = sum(s[k].detach().to(torch.float64) for s in states)
            out[k] = (acc / len(states)).to(first.dtype)
        else:
            out[k] = states[-1][k].clone()
    return out


def epoch_state_path(folder: str | Path, epoch: int) -> Path:
    """Where the training loop keeps epoch ``epoch``'s state dict (``<folder>/epoch-<n>.pt``)."""
    return Path(folder) / f"epoch-{int(epoch):03d}.pt"


def average_epochs(folder: str | Path, start: int, end: int) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Average the state dicts of epochs ``start..end`` found in ``folder``; returns ``(state, epochs used)``."""
    if start < 1 or end < start:
        raise CheckpointError(f"weight averaging range {start}..{end} is empty; set 1 <= wa_start <= wa_end")
    used, states = [], []
    for e in range(start, end + 1):
        p = epoch_state_path(folder, e)
        if not p.is_file():
            log.warning("weight averaging: %s is missing, skipped", p)
            continue
        states.append(read_checkpoint_file(p))
        used.append(e)
    if not states:
        raise CheckpointError(f"{folder}: no epoch state dicts in {start}..{end} to average")
    return average_state_dicts(states), used
