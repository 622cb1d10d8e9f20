"""The one checkpoint file reader, the one strict loader and the one key-prefix stripper of the package.

* :func:`read_checkpoint_file`: ``torch.load(weights_only=True)``; a file that pickles more than tensors
  and plain types (Lightning hyper-parameters, fairseq configs) goes through the restricted unpickler of
  :mod:`.safe_pickle` (never ``weights_only=False``), in one pass when the zip file's pickle globals say so
  up front.  Each way a file can be unusable has its own
  one-line :class:`~whisper_flamingo.errors.CheckpointError` naming the file: missing, a directory,
  empty, not written by ``torch.save``, truncated, corrupt, or holding a refused pickle global.
* :func:`load_state_strict`: ``load_state_dict(strict=True)`` whose error lists a few missing,
  unexpected and mis-shaped keys in one line.
* :func:`strip_prefix`: Lightning's ``model.``, DDP's ``module.``, or any sub-module prefix.
"""

from __future__ import annotations

import logging
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from whisper_flamingo.checkpoints.safe_pickle import safe_load
from whisper_flamingo.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["StateDict", "WRAPPER_PREFIXES", "read_checkpoint_file", "load_state_strict", "strip_prefix"]

StateDict = dict[str, Tensor]
V = TypeVar("V")

# Prefixes that wrappers put in front of a model's own keys: DDP's module, then Lightning's model attribute.
WRAPPER_PREFIXES = ("module.", "model.")
_ZIP_MAGIC = b"PK\x03\x04"
_REDO = "fetch or save it again"


def read_checkpoint_file(path: str | Path, mmap: bool = False) -> Any:
    """The object stored in a ``torch.save`` file, without executing pickled code.

    ``mmap=True`` maps a zip-format file's tensors instead of reading them (large released checkpoints).
    """
    path = Path(path)
    zip_format = _check_container(path)
    unsafe = _unsafe_globals(path) if zip_format else []
    if unsafe:  # known before any tensor is read: one pass, through the restricted unpickler
        log.debug("%s: pickles %s (not weights-only); using the restricted unpickler", path, ", ".join(unsafe[:3]))
        return safe_load(path, mmap=mmap)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zip_format)
    except pickle.UnpicklingError as err:  # weights_only refused a global (or an opcode): next way below
        reason = _weights_only_reason(err)
    except (EOFError, OSError, RuntimeError, struct.error, ValueError, IndexError, KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: truncated or corrupt torch.save file ({_short_cause(err)}); {_REDO}") from None
    log.debug("%s: not loadable with weights_only=True (%s); using the restricted unpickler", path, reason)
    return safe_load(path, mmap=mmap and zip_format)


def _check_container(path: Path) -> bool:
    """CheckpointError unless ``path`` is a plausible ``torch.save`` file; True for the zip format."""
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found; check the path")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file; pass the .pt/.ckpt file (CTranslate2 "
                              "and Hugging Face directories load with load_whisper / whisper-flamingo convert)")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: empty file (0 bytes); the download or save did not finish: {_REDO}")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 and _ZIP_MAGIC.startswith(head):
        raise CheckpointError(f"{path}: truncated ({size} bytes); the download or save did not finish: {_REDO}")
    if head == _ZIP_MAGIC:
        if not zipfile.is_zipfile(path):  # the central directory at the end of the file is missing
            raise CheckpointError(f"{path}: truncated ({size} bytes; the zip archive torch.save writes has no end "
                                  f"record): the download or save did not finish; {_REDO}")
        return True
    if head[:1] == b"\x80" and (len(head) < 2 or 2 <= head[1] <= 5):  # a legacy (non-zip) pickle
        return False
    raise CheckpointError(f"{path}: not a file written by torch.save (starts with {head!r}); expected an "
                          "openai-whisper .pt, a Lightning .ckpt or a released checkpoint")


def _unsafe_globals(path: Path) -> list[str]:
    """The globals of a zip-format file that ``weights_only`` refuses, read from its pickle alone (torch >= 2.5;
    empty when unknown: the weights-only load then finds out)."""
    probe = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    if probe is None:
        return []
    try:
        return list(probe(path))
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, EOFError, IndexError) as err:
        log.debug("%s: cannot list its pickle globals (%s)", path, _first_line(err))  # the load below reports it
        return []


def _weights_only_reason(err: BaseException) -> str:
    for line in str(err).splitlines():
        if "Unsupported global" in line or "Unsupported operand" in line:
            return line.strip()
    return _first_line(err)


def _short_cause(err: BaseException, limit: int = 80) -> str:
    """The first sentence of a library error, without PyTorch's ``[enforce fail at ...]`` prefix and its
    advice paragraph, cut to ``limit`` characters."""
    text = re.sub(r"^\[enforce fail at [^\]]*\]\s*\.?\s*", "", _first_line(err))
    text = re.split(r"(?<=[.:;])\s", text, maxsplit=1)[0].rstrip(" .:;")
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def strip_prefix(state: Mapping[str, V], prefix: str | tuple[str, ...] = WRAPPER_PREFIXES,
                 keep_others: bool = True) -> dict[str, V]:
    """``state`` with a leading ``prefix`` removed from every key that has it.

    A tuple of prefixes is stripped in order, each at most once (``module.model.x`` → ``x``).
    ``keep_others=False`` keeps only the keys that had a prefix (a sub-module's tensors).
    """
    prefixes = (prefix,) if isinstance(prefix, str) else prefix
    out: dict[str, V] = {}
    for key, value in state.items():
        name, found = key, False
        for p in prefixes:
            if name.startswith(p):
                name, found = name[len(p):], True
        if found or keep_others:
            out[name] = value
    return out


def load_state_strict(model: nn.Module, state: Mapping[str, Any], source: str | Path = "<state_dict>", *,
                      what: str = "model", key_prefix: str = "", allow_missing: bool = False,
                      assign: bool = False, hint: str = "check that the checkpoint and the model config agree",
                      ) -> list[str]:
    """``model.load_state_dict(state, strict=True)`` with a one-line CheckpointError listing a few
    unexpected, missing and mis-shaped keys (named as in the file: ``key_prefix`` + key).

    ``allow_missing``: model keys absent from ``state`` keep their values (returned); unexpected and
    mis-shaped keys are still errors.  ``assign=True`` is for a meta-device model (the tensors become the
    parameters).  Returns the missing keys.
    """
    expected = model.state_dict()
    state = dict(state)
    for key in expected:  # very old BatchNorm checkpoints have the running statistics but not the counter
        stats = key[: -len("num_batches_tracked")] + "running_mean"
        if key not in state and key.endswith("num_batches_tracked") and stats in state:
            state[key] = torch.zeros((), dtype=torch.long)
    unexpected = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    shapes = [f"{key_prefix}{k} {_shape(state[k])} vs model {tuple(expected[k].shape)}" for k in expected
              if k in state and _shape(state[k]) != tuple(expected[k].shape)]

    def some(keys: list[str]) -> str:
        return ", ".join(key_prefix + k for k in keys[:3])

    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {some(unexpected)})")
    if missing and not allow_missing:
        problems.append(f"{len(missing)} missing keys (e.g. {some(missing)})")
    if shapes:
        problems.append(f"{len(shapes)} mis-shaped keys (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise CheckpointError(f"{source}: does not match the {what}: {'; '.join(problems)}; {hint}")
    model.load_state_dict(state, strict=not missing, assign=assign)
    return missing


def _shape(value: Any) -> tuple[int, ...] | str:
    return tuple(value.shape) if isinstance(value, Tensor) else f"(not a tensor: {type(value).__name__})"
