"""openai-whisper ``.pt`` files and Lightning stage-1 checkpoints (ours and the original project's),
and the Whisper dimensions every format is turned into.

* openai-whisper ``.pt``: ``{"dims": {...}, "model_state_dict": {...}}`` (extra top-level keys such as
  ``source``/``note`` are allowed; ``whisper.load_model`` ignores them);
* Lightning checkpoints: ``state_dict`` with a ``model.`` prefix, ``hyper_parameters`` maybe holding ``dims``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from whisper.model import ModelDimensions

from whisper_flamingo.checkpoints.io import StateDict, load_state_strict, read_checkpoint_file, strip_prefix
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.whisper import Whisper

log = logging.getLogger(__name__)

__all__ = ["dims_from_dict", "infer_dims", "count_layers", "python_dims", "expected_whisper_keys",
           "check_audio_only_keys", "read_openai_checkpoint", "save_openai_checkpoint", "read_state_dict_file",
           "load_stage1_checkpoint"]


# ------------------------------------------------------------------------------------------------
# dimensions


def dims_from_dict(d: dict[str, Any], where: str | Path = "checkpoint") -> ModelDimensions:
    """``ModelDimensions`` from a dict; CheckpointError naming ``where`` when keys are missing."""
    names = [f.name for f in fields(ModelDimensions)]
    missing = [n for n in names if n not in d]
    if missing:
        raise CheckpointError(f"{where}: 'dims' lacks {', '.join(missing)}; expected the ModelDimensions fields")
    return ModelDimensions(**{n: int(d[n]) for n in names})


def infer_dims(sd: StateDict, n_head: int | None = None, where: str | Path = "state_dict") -> ModelDimensions:
    """Dimensions from tensor shapes; head counts are not stored, so ``d // 64`` unless given."""
    try:
        d_audio = sd["encoder.conv1.weight"].shape[0]
        d_text = sd["decoder.token_embedding.weight"].shape[1]
        dims = ModelDimensions(
            n_mels=sd["encoder.conv1.weight"].shape[1],
            n_audio_ctx=sd["encoder.positional_embedding"].shape[0],
            n_audio_state=d_audio,
            n_audio_head=n_head or d_audio // 64,
            n_audio_layer=count_layers(sd, "encoder.blocks."),
            n_vocab=sd["decoder.token_embedding.weight"].shape[0],
            n_text_ctx=sd["decoder.positional_embedding"].shape[0],
            n_text_state=d_text,
            n_text_head=n_head or d_text // 64,
            n_text_layer=count_layers(sd, "decoder.blocks."),
        )
    except KeyError as err:
        raise CheckpointError(f"{where}: not a Whisper state_dict (no {err.args[0]!r})") from None
    if n_head is None:
        log.info("%s: head counts are not stored in a state_dict; assuming 64-dim heads (%d heads)",
                 where, dims.n_audio_head)
    return dims


def count_layers(sd: StateDict | dict[str, Any], prefix: str) -> int:
    """Number of numbered blocks under ``prefix`` (``encoder.blocks.`` or CTranslate2's ``encoder/layer_``)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)[./]")
    found = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def python_dims(dims: ModelDimensions) -> dict[str, int]:
    """``dims`` as a dict of Python ints (what openai-whisper pickles)."""
    return {k: int(v) for k, v in asdict(dims).items()}


def expected_whisper_keys(dims: ModelDimensions) -> list[str]:
    """The state-dict keys of an audio-only :class:`Whisper` of ``dims`` (built on the meta device)."""
    with torch.device("meta"):
        return list(Whisper(dims).state_dict())


def check_audio_only_keys(dims: ModelDimensions, sd: StateDict, where: str | Path) -> None:
    """CheckpointError unless ``sd`` has exactly the keys of an audio-only Whisper of ``dims``."""
    expected = expected_whisper_keys(dims)
    unexpected = [k for k in sd if k not in set(expected)]
    missing = [k for k in expected if k not in sd]
    if unexpected or missing:
        raise CheckpointError(f"{where}: not an audio-only Whisper checkpoint: {len(unexpected)} unexpected keys "
                              f"(e.g. {', '.join(unexpected[:3])}), {len(missing)} missing (e.g. "
                              f"{', '.join(missing[:3])}); audio-visual checkpoints cannot be converted")


# ------------------------------------------------------------------------------------------------
# openai-whisper .pt and Lightning checkpoints


def read_openai_checkpoint(path: str | Path, ckpt: Any = None
                           ) -> tuple[ModelDimensions, StateDict, dict[str, Any]]:
    """``(dims, state_dict, extra top-level entries)`` of an openai-whisper ``.pt`` (``ckpt``: already loaded)."""
    path = Path(path)
    ckpt = read_checkpoint_file(path) if ckpt is None else ckpt
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an openai-whisper checkpoint (found {keys}); expected a dict "
                              "with 'dims' and 'model_state_dict'")
    extra = {k: v for k, v in ckpt.items() if k not in ("dims", "model_state_dict")}
    return dims_from_dict(ckpt["dims"], path), dict(ckpt["model_state_dict"]), extra


def save_openai_checkpoint(path: str | Path, dims: ModelDimensions, sd: StateDict, **extra: Any) -> Path:
    """Write ``{"dims", "model_state_dict", **extra}`` that ``whisper.load_model`` loads strictly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    torch.save({"dims": python_dims(dims), "model_state_dict": state, **extra}, path)
    return path


def read_state_dict_file(path: str | Path, ckpt: Any = None) -> tuple[StateDict, dict[str, Any]]:
    """The ``state_dict`` of a Lightning checkpoint (ours or the original project's) with the wrapper
    prefixes (``model.``, ``module.``) stripped, and the checkpoint's ``hyper_parameters`` (empty if none)."""
    path = Path(path)
    ckpt = read_checkpoint_file(path) if ckpt is None else ckpt
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: no 'state_dict' entry; expected a Lightning checkpoint "
                              "(e.g. a whisper-flamingo stage-1 .ckpt/.pt)")
    hp = ckpt.get("hyper_parameters") or {}
    return strip_prefix(ckpt["state_dict"]), hp if isinstance(hp, dict) else {}


def load_stage1_checkpoint(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load a stage-1 Lightning checkpoint into ``model`` (strict unless ``strict=False``).

    With ``strict=False`` (stage 2 starting from an audio-only checkpoint) only keys absent from the
    checkpoint may be missing; unexpected keys and shape mismatches are always errors.
    """
    path = Path(path)
    sd, _ = read_state_dict_file(path)
    missing = load_state_strict(model, sd, path, allow_missing=not strict,
                                hint="check the model size/config the checkpoint was trained with")
    if missing:
        log.info("%s: loaded; %d model keys not in the checkpoint keep their init (e.g. %s)", path,
                 len(missing), ", ".join(missing[:3]))
    else:
        log.info("%s: loaded, all %d keys matched", path, len(sd))
