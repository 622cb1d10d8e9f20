"""Whisper-AT checkpoints: the TL-TR head's key map and loaders.

Three layouts hold a head (keys as inside the original ``ATModel``/``TLTR``: ``time_tr.attn.query.weight``
... ``mlp_layer.1.bias``, ``down_layer.*`` for TL-TR-512):

* the fixture / our saved form ``{"cfg": {...}, "model": {unprefixed keys}}``;
* the released package file: an openai-whisper checkpoint ``{"dims", "model_state_dict"}`` whose state
  dict also holds the head under ``at_model.`` (or a bare state dict with those keys);
* the original training checkpoint (``nn.DataParallel``): every key prefixed ``module.``.

Without a ``cfg`` the dimensions come from the shapes: D from ``time_tr``'s (or ``down_layer.1``'s)
input, d from ``time_tr``, the 527 classes from the classifier, L from the Whisper part when there is
one, else from D (each Whisper width has one depth).  Head counts are not in the shapes: 1 and 8 (the
only ones released) unless ``cfg`` says otherwise.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from whisper_flamingo.checkpoints.io import StateDict, load_state_strict, read_checkpoint_file, strip_prefix
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.whisper import Whisper
from whisper_flamingo.models.whisper_at import TLTR, TLTRConfig, encoder_layers_for_width, parse_mode

log = logging.getLogger(__name__)

__all__ = ["AT_PREFIX", "TRAIN_PREFIX", "read_whisper_at", "split_released", "tltr_config_from_state",
           "load_tltr", "load_tltr_state", "released_whisper_part", "load_released", "save_tltr"]

#: prefix of the head's keys in the released package checkpoints
AT_PREFIX = "at_model."
#: prefix of the original training checkpoints (DataParallel)
TRAIN_PREFIX = "module."
_HEAD_ROOTS = ("time_tr.", "layer_tr.", "mlp_layer.", "down_layer.", "layer_weight")


def _floats(state: Mapping[str, Any]) -> StateDict:
    """Floating tensors as float32 (the fixtures store float16); others unchanged."""
    return {k: v.float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in state.items()}


def split_released(state: Mapping[str, Any]) -> tuple[StateDict, StateDict]:
    """``(head, whisper)``: the ``at_model.`` keys (prefix removed) and all the others."""
    head = {k[len(AT_PREFIX):]: v for k, v in state.items() if k.startswith(AT_PREFIX)}
    rest = {k: v for k, v in state.items() if not k.startswith(AT_PREFIX)}
    return head, rest


def read_whisper_at(path: str | Path, obj: Any = None) -> tuple[StateDict, dict[str, Any], dict[str, Any] | None]:
    """``(head state, cfg, whisper part)`` of any of the three layouts; ``whisper part`` is an
    openai-whisper checkpoint dict ``{"dims", "model_state_dict"}`` for a released file, else None."""
    path = Path(path)
    obj = read_checkpoint_file(path) if obj is None else obj
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not a Whisper-AT checkpoint (holds a {type(obj).__name__}); expected a "
                              "dict (fixture {cfg, model}, a released Whisper-AT file or a training state dict)")
    cfg: dict[str, Any] = dict(obj["cfg"]) if isinstance(obj.get("cfg"), dict) else {}
    whisper: dict[str, Any] | None = None
    if isinstance(obj.get("model"), dict):
        state = dict(obj["model"])
    elif isinstance(obj.get("model_state_dict"), dict):
        state = dict(obj["model_state_dict"])
    elif isinstance(obj.get("state_dict"), dict):
        state = dict(obj["state_dict"])
    else:
        state = obj
    if any(k.startswith(AT_PREFIX) for k in state):
        state, rest = split_released(state)
        if rest:
            whisper = {"dims": obj.get("dims"), "model_state_dict": rest}
    state = strip_prefix(state, (TRAIN_PREFIX, "model."))
    if not any(k.startswith(_HEAD_ROOTS) for k in state):
        raise CheckpointError(f"{path}: holds no Whisper-AT head (no time_tr./mlp_layer. keys, e.g. "
                              f"{', '.join(list(state)[:3])}); expected a TL-TR checkpoint")
    return _floats(state), cfg, whisper


def tltr_config_from_state(state: Mapping[str, Any], cfg: Mapping[str, Any] | None = None,
                           n_layer: int | None = None, where: str | Path = "state_dict") -> TLTRConfig:
    """The head's :class:`TLTRConfig`: from ``cfg`` where it says (fixture keys ``n_layer``, ``rep_dim``,
    ``inter_rep_dim``, ``time_heads``, ``layer_heads``, ``label_dim``, ``package_mode``/``train_mode``),
    the rest from the tensor shapes."""
    cfg = dict(cfg or {})
    try:
        classifier = state["mlp_layer.1.weight"]
    except KeyError:
        raise CheckpointError(f"{where}: no 'mlp_layer.1.weight' (the classifier); not a Whisper-AT head") from None
    width = int(classifier.shape[1])
    label_dim = int(classifier.shape[0])
    if "down_layer.1.weight" in state:
        rep_dim = int(state["down_layer.1.weight"].shape[1])
    elif "time_tr.attn.key.weight" in state:
        rep_dim = int(state["time_tr.attn.key.weight"].shape[1])
    else:
        rep_dim = int(cfg.get("rep_dim", width))
    mode = cfg.get("package_mode") or cfg.get("train_mode") or cfg.get("mode")
    settings: dict[str, Any] = parse_mode(str(mode)) if mode else {}
    if "head" not in settings:
        has_tr, has_layer = "time_tr.attn.key.weight" in state, "layer_tr.attn.key.weight" in state
        settings["head"] = "tl_tr" if has_layer else ("wa_tr" if has_tr and "layer_weight" in state else
                                                     "wa_mlp" if "layer_weight" in state else
                                                     "mean_tr" if has_tr else "mean_mlp")
        if settings["head"] in ("mean_tr", "mean_mlp"):
            log.info("%s: the shapes do not tell mean_* from last_* heads; assuming %s", where, settings["head"])
    if "layer_weight" in state:
        n_layer = int(state["layer_weight"].shape[0])
    n_layer = int(cfg.get("n_layer") or n_layer or _layers_for(rep_dim, where))
    return TLTRConfig(n_layer=n_layer, rep_dim=rep_dim, inter_dim=0 if width == rep_dim else width,
                      time_heads=int(cfg.get("time_heads", settings.get("time_heads", 1))),
                      layer_heads=int(cfg.get("layer_heads", settings.get("layer_heads", 8))),
                      label_dim=label_dim, head=str(settings["head"]))


def _layers_for(rep_dim: int, where: str | Path) -> int:
    try:
        return encoder_layers_for_width(rep_dim)
    except ValueError:
        raise CheckpointError(f"{where}: head width {rep_dim} is no Whisper size's; save it with a 'cfg' holding "
                              "n_layer") from None


def load_tltr_state(state: Mapping[str, Any], cfg: Mapping[str, Any] | None = None, n_layer: int | None = None,
                    where: str | Path = "state_dict") -> TLTR:
    """A :class:`TLTR` (eval mode) from an unprefixed head state dict (strict)."""
    config = tltr_config_from_state(state, cfg, n_layer, where)
    with torch.device("meta"):
        head = TLTR(config)
    load_state_strict(head, _floats(state), where, what=f"Whisper-AT {config.head} head", assign=True,
                      hint="check the head kind/width the checkpoint was trained with")
    return head.eval()


def load_tltr(path: str | Path) -> TLTR:
    """The tagging head of a Whisper-AT checkpoint in any of the three layouts (eval mode, strict)."""
    state, cfg, whisper = read_whisper_at(path)
    n_layer = None
    if whisper is not None:
        n_layer = len({k.split(".")[2] for k in whisper["model_state_dict"] if k.startswith("encoder.blocks.")}) or None
    return load_tltr_state(state, cfg, n_layer, path)


def released_whisper_part(path: str | Path) -> dict[str, Any]:
    """The Whisper part of a released Whisper-AT file, as an openai-whisper checkpoint dict
    ``{"dims", "model_state_dict"}`` (save it with ``torch.save`` and any Whisper loader reads it)."""
    _state, _cfg, whisper = read_whisper_at(path)
    if whisper is None or not isinstance(whisper.get("dims"), dict):
        raise CheckpointError(f"{path}: holds no Whisper weights with 'dims' next to the head; expected a released "
                              "Whisper-AT file ({dims, model_state_dict} with at_model. keys)")
    return whisper


def load_released(path: str | Path) -> tuple[Whisper, TLTR]:
    """``(whisper, head)`` from one released Whisper-AT file, both strict and in eval mode."""
    from whisper_flamingo.checkpoints.openai import read_openai_checkpoint

    path = Path(path)
    obj = read_checkpoint_file(path)
    state, cfg, whisper = read_whisper_at(path, obj)
    if whisper is None or not isinstance(whisper.get("dims"), dict):
        raise CheckpointError(f"{path}: holds no Whisper weights with 'dims' next to the head; pass the Whisper model "
                              "separately and load the head with TLTR.from_checkpoint")
    dims, sd, _ = read_openai_checkpoint(path, whisper)
    with torch.device("meta"):
        model = Whisper(dims)
    load_state_strict(model, sd, path, what="Whisper part of the Whisper-AT file", assign=True)
    head = load_tltr_state(state, cfg, dims.n_audio_layer, path)
    return model.eval(), head


def save_tltr(head: TLTR, path: str | Path, **extra: Any) -> Path:
    """Write ``{"cfg", "model"}`` (our saved form; ``cfg`` holds the :class:`TLTRConfig` fields)."""
    from dataclasses import asdict

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    cfg = {**asdict(head.cfg), "mode": head.cfg.head}
    torch.save({"cfg": cfg, "model": state, **extra}, path)
    return path
