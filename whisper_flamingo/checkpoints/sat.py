"""SAT / AudioTransformer checkpoints: the fixture form ``{"cfg", "model"}``, the released files
(zenodo 7964975: a state dict at the top level or under ``model``), and the transfer of a ViT encoder
(an MAE encoder or a released AudioTransformer) into a SAT.

Released files carry no configuration: width and depth come from the tensor shapes, the head count is
D/64 (as in all released sizes), ``token`` pooling is recognised by ``cls_token``, the SAT lengths by the
time table ((target + cache)/16 positions, target = cache).  Anything else can be passed as a keyword
(``SATConfig`` field names).  Loading is strict: a missing or extra tensor is an error.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whisper_flamingo.checkpoints.io import StateDict, load_state_strict, read_checkpoint_file, strip_prefix
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.sat import SAT, AudioTransformer, SATConfig, build_sat

log = logging.getLogger(__name__)

__all__ = ["load_sat", "sat_state_from_file", "infer_sat_config", "vit_to_sat_state", "load_vit_into_sat",
           "resize_time_positions"]

_FIELDS = {f.name for f in dataclasses.fields(SATConfig)}


def sat_state_from_file(path: str | Path) -> tuple[StateDict, dict[str, Any]]:
    """(state dict, stored cfg or {}) of a SAT/ViT file: top-level tensors, or under ``model``."""
    obj = read_checkpoint_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a SAT state dict; pass a SAT/ViT .pt file")
    cfg = obj.get("cfg") if isinstance(obj.get("cfg"), Mapping) else {}
    state = obj.get("model", obj)
    if not isinstance(state, Mapping) or not any(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: no tensors at the top level or under 'model'; pass a SAT/ViT checkpoint")
    state = {k: v for k, v in strip_prefix(state, ("module.",)).items() if isinstance(v, Tensor)}
    if "patch_embed.proj.weight" not in state:
        raise CheckpointError(f"{path}: no 'patch_embed.proj.weight': not a SAT/AudioTransformer checkpoint")
    return state, dict(cfg)


def infer_sat_config(state: Mapping[str, Tensor], cfg: Mapping[str, Any] | None = None,
                     **overrides: Any) -> SATConfig:
    """The :class:`SATConfig` of ``state``: stored ``cfg`` values, then shapes, then ``overrides``."""
    dim = state["patch_embed.proj.weight"].shape[0]
    depth = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    streaming = "blocks.0.attn.to_q.weight" in state
    time_positions = state["time_pos_embed"].shape[-1]
    values: dict[str, Any] = {"embed_dim": dim, "depth": depth, "num_heads": max(dim // 64, 1),
                              "streaming": streaming, "pooling": "token" if "cls_token" in state else "mean",
                              "outputdim": state["outputlayer.1.weight"].shape[0],
                              "mlp_ratio": state["blocks.0.mlp.fc1.weight"].shape[0] / dim}
    if "front_end.0.mel_scale.fb" in state:
        values["n_mels"] = state["front_end.0.mel_scale.fb"].shape[1]
    if streaming:
        values.update(target_length=time_positions * 8, cache_length=time_positions * 8, pad_last=False)
    else:
        values.update(target_length=1012 if time_positions == 63 else time_positions * 16, cache_length=0,
                      pad_last=True)
    values.update({k: v for k, v in (cfg or {}).items() if k in _FIELDS})
    values.update(overrides)
    unknown = [k for k in values if k not in _FIELDS]
    if unknown:
        raise CheckpointError(f"unknown SAT setting '{unknown[0]}' (settings: {', '.join(sorted(_FIELDS))})")
    return SATConfig(**values)


def load_sat(path: str | Path, streaming: bool | None = None, **overrides: Any) -> AudioTransformer:
    """A :class:`SAT` or :class:`AudioTransformer` loaded strictly from ``path`` (eval mode, float32).

    ``streaming`` (True: SAT.from_checkpoint, False: AudioTransformer.from_checkpoint, None: whichever the
    file holds) must match the file; ``overrides`` are :class:`SATConfig` fields (e.g. ``pooling="logit"``).
    """
    state, cfg = sat_state_from_file(path)
    config = infer_sat_config(state, cfg, **overrides)
    if streaming is not None and config.streaming != streaming:
        holds, other = ("a streaming SAT", "SAT.from_checkpoint") if config.streaming else \
            ("an offline AudioTransformer (ViT)", "AudioTransformer.from_checkpoint, or load_vit_into_sat")
        raise CheckpointError(f"{path}: holds {holds}; load it with {other}")
    model = build_sat(**dataclasses.asdict(config))
    state = {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()}
    load_state_strict(model, state, path, what="SAT model",
                      hint="pass the SATConfig settings that differ (e.g. target_length=..., num_heads=...)")
    return model.eval()


def resize_time_positions(table: Tensor, length: int) -> Tensor:
    """A time table ``[1, D, 1, T]`` to ``length`` entries: the first ones when shorter, bilinear when longer."""
    if table.shape[-1] >= length:
        return table[..., :length].clone()
    return F.interpolate(table, size=(table.shape[-2], length), mode="bilinear", align_corners=False)


def vit_to_sat_state(vit_state: Mapping[str, Tensor], sat: nn.Module, include_head: bool = False) -> StateDict:
    """The tensors of a ViT (AudioTransformer) state dict renamed and shaped for ``sat``.

    The fused ``attn.qkv`` splits into ``attn.to_q`` (rows 0..D−1) and ``attn.to_kv`` (keys then values);
    the time table is cut or interpolated to the SAT's length; ``cls_token``/``token_pos_embed`` only
    when the SAT has them; the output head only with ``include_head`` (an MAE encoder's head is untrained).
    """
    target = sat.state_dict()
    out: StateDict = {}
    for key, value in vit_state.items():
        if key.startswith("outputlayer.") and not include_head:
            continue
        if ".attn.qkv." in key:
            d = value.shape[0] // 3
            out[key.replace(".attn.qkv.", ".attn.to_q.")] = value[:d]
            out[key.replace(".attn.qkv.", ".attn.to_kv.")] = value[d:]
        elif key == "time_pos_embed":
            out[key] = resize_time_positions(value, target[key].shape[-1])
        elif key in target:
            out[key] = value
        elif key not in ("cls_token", "token_pos_embed"):
            raise CheckpointError(f"ViT tensor '{key}' has no place in the SAT; is it an AudioTransformer state?")
    return out


def load_vit_into_sat(sat: SAT, source: str | Path | nn.Module | Mapping[str, Tensor],
                      include_head: bool = False) -> list[str]:
    """Give ``sat`` the weights of a ViT encoder (in place): an MAE model (its ``encoder``), an
    :class:`AudioTransformer`, a state dict, or a file (its tensors at the top level, under ``model`` or a
    Lightning ``state_dict``; ``module.``/``model.`` prefixes stripped; an MAE's under ``encoder.``).

    Upstream's SAT training never loads its MAE weights; this is how ours does.  Every transferred tensor
    must fit the SAT's shape (widths and depth must match).  Returns the SAT keys left as they were.
    """
    where = str(source) if isinstance(source, (str, Path)) else type(source).__name__
    if isinstance(source, (str, Path)):
        obj = read_checkpoint_file(source)
        state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, Mapping) else obj
        if not isinstance(state, Mapping):
            raise CheckpointError(f"{source}: no state dict at the top level or under 'model'")
        state = strip_prefix(state, ("module.", "model."))
    elif isinstance(source, nn.Module):
        state = getattr(source, "encoder", source).state_dict()
    else:
        state = dict(source)
    if any(k.startswith("encoder.") for k in state):
        state = strip_prefix(state, "encoder.", keep_others=False)
    mapped = vit_to_sat_state(state, sat, include_head)
    expected = sat.state_dict()
    mapped = {k: v.to(expected[k].dtype) if v.is_floating_point() else v for k, v in mapped.items()}
    left = load_state_strict(sat, mapped, where, what="SAT model", allow_missing=True,
                             hint="the ViT's width/depth must equal the SAT's")
    log.info("loaded %d ViT tensors from %s into the SAT; %d kept their values (%s)", len(mapped), where, len(left),
             ", ".join(left[:4]))
    return left
