"""Which tagging family a checkpoint holds, from its keys alone (``whisper-flamingo tag`` dispatches on it).

:func:`tagging_family` reads the file once (memory-mapped, weights-only) and answers ``"ast"`` (a released
AST file, our ``{"cfg", "model"}`` form, a training checkpoint, a DeiT ImageNet file or a Hugging Face
``ASTForAudioClassification`` directory), ``"sat"`` (SAT or its offline ViT), ``"whisper-at"`` (a TL-TR
head, alone or inside a released Whisper-AT file), ``"whisper"`` (an openai-whisper checkpoint) or None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from whisper_flamingo.checkpoints.io import read_checkpoint_file, strip_prefix

__all__ = ["FAMILY_NAMES", "tagging_family", "state_keys"]

#: family -> how messages name it
FAMILY_NAMES = {"ast": "an AST", "sat": "a SAT / SAT ViT", "whisper-at": "a Whisper-AT head",
                "whisper": "a Whisper model"}
_TLTR_ROOTS = ("time_tr.", "layer_tr.", "mlp_layer.", "down_layer.", "layer_weight")


def state_keys(obj: Any) -> list[str]:
    """The keys of the state dict inside a loaded checkpoint object (``model``/``state_dict``/
    ``model_state_dict`` or the top level), wrapper prefixes (``module.``, ``model.``) removed."""
    if not isinstance(obj, Mapping):
        return []
    state = obj
    for key in ("model", "state_dict", "model_state_dict"):
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    return list(strip_prefix({str(k): None for k in state}, ("module.", "model.")))


def tagging_family(path: str | Path) -> str | None:
    """``"ast"``, ``"sat"``, ``"whisper-at"``, ``"whisper"`` or None for an existing checkpoint path."""
    path = Path(path)
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return "ast" if config.get("model_type") == "audio-spectrogram-transformer" else None
    obj = read_checkpoint_file(path, mmap=True)
    keys = set(state_keys(obj))
    if any(k.startswith("at_model.") or k.startswith(_TLTR_ROOTS) for k in keys):
        return "whisper-at"
    if "v.pos_embed" in keys or any(k.startswith("audio_spectrogram_transformer.") for k in keys) \
            or {"pos_embed", "dist_token"} <= keys:
        return "ast"
    if {"time_pos_embed", "patch_embed.proj.weight"} <= keys:
        return "sat"
    if "encoder.conv1.weight" in keys or (isinstance(obj, Mapping) and "dims" in obj):
        return "whisper"
    return None
