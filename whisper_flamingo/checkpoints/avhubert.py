"""AV-HuBERT weights: original fairseq checkpoints and the copies inside Whisper-Flamingo checkpoints.

Layouts understood (all read with the restricted unpickler of :mod:`.safe_pickle`, no fairseq needed):

* pretraining (self-supervised) file: ``{"cfg": {"model": {...}, ...} | {model cfg}, "model": {key: tensor}}``
  with unprefixed keys; ``mode="pretrained"``;
* fine-tuned seq2seq file: ``model`` keys ``encoder.w2v_model.<key>`` (+ ``decoder.*``), encoder config at
  ``cfg["model"]["w2v_args"]["model"]``; ``mode="finetuned"``;
* old-style files with an ``args`` Namespace (or a pickled omegaconf ``DictConfig``) instead of ``cfg``;
* Whisper-Flamingo / Lightning checkpoints ``{"state_dict": {...}}`` holding the encoder under
  ``[model.]encoder.video_model.w2v_model.`` (fine-tuned path) or ``[model.]encoder.video_model.``
  (self-supervised path); the config is inferred from tensor shapes;
* a bare AV-HuBERT state dict.

Pretraining-only tensors (``mask_emb``, ``label_embs_concat``, ``final_proj.*``) and everything outside
the encoder (seq2seq decoder, Whisper) are dropped with a debug log.  A missing, unexpected or
mis-shaped encoder tensor raises CheckpointError naming the file and the key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from torch import Tensor

from whisper_flamingo.checkpoints.io import load_state_strict, read_checkpoint_file, strip_prefix
from whisper_flamingo.checkpoints.safe_pickle import to_plain
from whisper_flamingo.errors import CheckpointError, ConfigError
from whisper_flamingo.models.avhubert import MODES, AVHubert, AVHubertConfig
from whisper_flamingo.models.resnet import ResEncoder

log = logging.getLogger(__name__)

FINETUNED_PREFIX = "encoder.w2v_model."
# Tensors of the original model that inference (and this implementation) never uses.
UNUSED_KEYS = ("mask_emb", "label_embs_concat")
UNUSED_PREFIXES = ("final_proj.",)
_HINT = "the checkpoint does not match the model config, or is truncated"


def avhubert_key(name: str) -> str | None:
    """Our name for an AV-HuBERT tensor name (relative to its prefix), or None for a tensor we drop.

    Newer torch weight-norm parametrisation names map to the ``weight_g``/``weight_v`` names used here.
    """
    if name in UNUSED_KEYS or name.startswith(UNUSED_PREFIXES):
        return None
    name = name.replace("parametrizations.weight.original0", "weight_g")
    return name.replace("parametrizations.weight.original1", "weight_v")
_ANCHOR = "post_extract_proj.weight"  # present in every concat-fusion AV-HuBERT
_ANCHORS = (_ANCHOR, "encoder.pos_conv.0.weight_v", "encoder.pos_conv.0.parametrizations.weight.original1")


def load_avhubert(path: str | Path, mode: str | None = None, config: AVHubertConfig | None = None) -> AVHubert:
    """Build an eval-mode :class:`AVHubert` from any supported checkpoint file (see module doc).

    ``mode``: ``"finetuned"`` / ``"pretrained"``; None detects it from the key layout and logs it.
    ``config`` overrides the stored (or inferred) configuration.
    """
    state, cfg, mode, prefix = load_avhubert_state(path, mode=mode)
    return _build(state, config or cfg, mode, str(path), prefix)


def load_avhubert_state(path: str | Path, mode: str | None = None
                        ) -> tuple[dict[str, Tensor], AVHubertConfig, str, str]:
    """Read a checkpoint file; return ``(encoder state dict, config, mode, key prefix in the file)``."""
    _check_mode(mode)
    ckpt = read_checkpoint_file(path)
    source = str(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if isinstance(ckpt.get("model"), Mapping):
        return _from_fairseq(ckpt, source, mode)
    if isinstance(ckpt.get("state_dict"), Mapping):
        return avhubert_state_from_whisper_flamingo(ckpt["state_dict"], source=source, mode=mode)
    if ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        return avhubert_state_from_whisper_flamingo(ckpt, source=source, mode=mode)
    raise CheckpointError(f"{source}: no 'model' or 'state_dict' entry (top-level keys: "
                          f"{sorted(map(str, ckpt))[:8]}); not an AV-HuBERT or Whisper-Flamingo checkpoint")


def load_avhubert_from_whisper_flamingo(checkpoint: str | Path | Mapping[str, Tensor], mode: str | None = None,
                                        config: AVHubertConfig | None = None) -> AVHubert:
    """Build an eval-mode :class:`AVHubert` from the AV-HuBERT copy inside a Whisper-Flamingo checkpoint.

    ``checkpoint`` is a file (``{"state_dict": ...}``) or an already loaded state dict, with or without
    Lightning's ``model.`` prefix.  Its batch-norm statistics are the ones Whisper-Flamingo trained with.
    """
    if isinstance(checkpoint, Mapping):
        state, cfg, mode, prefix = avhubert_state_from_whisper_flamingo(checkpoint, mode=mode)
        return _build(state, config or cfg, mode, "<state_dict>", prefix)
    return load_avhubert(checkpoint, mode=mode, config=config)


def avhubert_state_from_whisper_flamingo(state_dict: Mapping[str, Any], source: str = "<state_dict>",
                                         mode: str | None = None
                                         ) -> tuple[dict[str, Tensor], AVHubertConfig, str, str]:
    """Extract the AV-HuBERT tensors of a Whisper-Flamingo state dict.

    Returns ``(state, config inferred from shapes, mode, prefix)``.  The mode is detected from the prefix
    when not given: ``...video_model.w2v_model.`` is the fine-tuned path, ``...video_model.`` the
    self-supervised one.
    """
    _check_mode(mode)
    prefix = _find_prefix(state_dict, _ANCHORS, source, "AV-HuBERT")
    detected = "finetuned" if prefix.endswith("w2v_model.") else "pretrained"
    if mode is None:
        mode = detected
        log.info("%s: AV-HuBERT under '%s' -> mode '%s' (auto-detected from the key prefix)", source, prefix, mode)
    elif mode != detected:
        log.warning("%s: AV-HuBERT keys under '%s' look like mode '%s' but mode '%s' was requested; using '%s'",
                    source, prefix, detected, mode, mode)
    state = _strip(state_dict, prefix, source)
    cfg = config_from_state_dict(state, source, finetuned=mode == "finetuned")
    return state, cfg, mode, prefix


def config_from_state_dict(state: Mapping[str, Tensor], source: str = "<state_dict>",
                           finetuned: bool = True) -> AVHubertConfig:
    """Infer an :class:`AVHubertConfig` from tensor shapes (head dim 64, pre-LN layers assumed).

    Training-time settings (dropouts, ``feature_grad_mult``...) come from :meth:`AVHubertConfig.large`
    (``finetuned`` picks the fine-tune values), since a Whisper-Flamingo checkpoint stores no config.
    """
    def need(key: str) -> Tensor:
        if key not in state:
            raise CheckpointError(f"{source}: missing AV-HuBERT key '{key}'; cannot infer the model size")
        return state[key]

    width = need("encoder.layer_norm.weight").shape[0]
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.layers\.(\d+)\.", k))}
    if not layers:
        raise CheckpointError(f"{source}: missing AV-HuBERT key 'encoder.layers.0.*'; no transformer layers")
    weight_v = need("encoder.pos_conv.0.weight_v")
    fused = need("layer_norm.weight").shape[0]
    heads = max(1, width // 64)
    cfg = replace(AVHubertConfig.large(finetuned=finetuned), encoder_layers=max(layers) + 1,
                  encoder_embed_dim=width, encoder_ffn_embed_dim=need("encoder.layers.0.fc1.weight").shape[0],
                  encoder_attention_heads=heads, conv_pos=weight_v.shape[2],
                  conv_pos_groups=width // weight_v.shape[1],
                  audio_feat_dim=need("feature_extractor_audio.proj.weight").shape[1],
                  modality_fuse="concat" if fused == 2 * width else "add",
                  resnet_relu_type="prelu" if "feature_extractor_video.resnet.frontend3D.2.weight" in state
                  else "relu")
    log.info("%s: AV-HuBERT config inferred from shapes: %d layers, dim %d, ffn %d, %d heads (head dim 64 "
             "assumed), pre-LN assumed", source, cfg.encoder_layers, width, cfg.encoder_ffn_embed_dim, heads)
    return cfg


def load_resencoder(checkpoint: str | Path | Mapping[str, Any]) -> ResEncoder:
    """Build an eval-mode :class:`ResEncoder` (the video front end alone, ``use_av_hubert_encoder: false``).

    Accepts any AV-HuBERT / Whisper-Flamingo checkpoint or state dict holding ``...frontend3D.0.weight``:
    the front end's tensors are taken from under that prefix (e.g. ``feature_extractor_video.resnet.``,
    ``encoder.w2v_model.feature_extractor_video.resnet.`` or Whisper-Flamingo's ``encoder.video_model.``).
    """
    source = "<state_dict>" if isinstance(checkpoint, Mapping) else str(checkpoint)
    ckpt: Any = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint_file(checkpoint)
    state = ckpt.get("model", ckpt.get("state_dict", ckpt)) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{source}: expected a dict checkpoint with a state dict")
    prefix = _find_prefix(state, ("frontend3D.0.weight",), source, "ResNet front-end")
    sub = {k: v for k, v in strip_prefix(state, prefix, keep_others=False).items()
           if k.startswith(("frontend3D.", "trunk."))}
    model = ResEncoder("prelu" if "frontend3D.2.weight" in sub else "relu")
    load_state_strict(model, sub, source, what="ResNet video front end", key_prefix=prefix, hint=_HINT)
    log.info("%s: loaded the ResNet video front end from '%s*'", source, prefix)
    return model.eval()


# ----------------------------------------------------------------------------------------------------------


def _check_mode(mode: str | None) -> None:
    if mode is not None and mode not in MODES:
        raise ConfigError(f"AV-HuBERT mode must be one of {MODES} or None, got {mode!r}")


def _from_fairseq(ckpt: Mapping[str, Any], source: str, mode: str | None
                  ) -> tuple[dict[str, Tensor], AVHubertConfig, str, str]:
    model_state: Mapping[str, Any] = ckpt["model"]
    detected = "finetuned" if any(k.startswith(FINETUNED_PREFIX) for k in model_state) else "pretrained"
    if mode is None:
        mode = detected
        log.info("%s: mode '%s' (auto-detected: %s)", source, mode,
                 f"'{FINETUNED_PREFIX}*' keys" if mode == "finetuned" else "unprefixed encoder keys")
    elif mode != detected:
        hint = (f"no '{FINETUNED_PREFIX}*' keys, this is a pretraining-style file" if mode == "finetuned"
                else f"its encoder is under '{FINETUNED_PREFIX}', this is a fine-tuned file")
        raise CheckpointError(f"{source}: mode '{mode}' requested but {hint}; pass mode='{detected}' or None")
    prefix = FINETUNED_PREFIX if mode == "finetuned" else ""
    model_cfg = _model_section(ckpt, source)
    if mode == "finetuned" and model_cfg is not None:
        w2v = model_cfg.get("w2v_args")
        if isinstance(w2v, Mapping) and isinstance(w2v.get("model"), Mapping):
            model_cfg = w2v["model"]
        elif isinstance(w2v, Mapping) and w2v:  # old-style flat Namespace
            model_cfg = w2v
        else:
            log.warning("%s: fine-tuned checkpoint without 'w2v_args'; inferring the encoder config from shapes",
                        source)
            model_cfg = None
    state = _strip(model_state, prefix, source)
    if model_cfg is None:
        cfg = config_from_state_dict(state, source, finetuned=mode == "finetuned")
    else:
        try:
            cfg = AVHubertConfig.from_dict(dict(model_cfg), source)
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
    return state, cfg, mode, prefix


def _model_section(ckpt: Mapping[str, Any], source: str) -> Mapping[str, Any] | None:
    """The model config: ``cfg["model"]``, a bare model cfg, or the old ``args`` Namespace."""
    cfg = to_plain(ckpt.get("cfg"))
    if isinstance(cfg, Mapping):
        if isinstance(cfg.get("model"), Mapping):
            return cfg["model"]
        if "_name" in cfg or "encoder_layers" in cfg or "w2v_args" in cfg:
            return cfg
    args = to_plain(ckpt.get("args"))
    if isinstance(args, Mapping) and args:
        return args
    log.warning("%s: no model config ('cfg' / 'args') found; inferring it from tensor shapes", source)
    return None


def _find_prefix(state: Mapping[str, Any], anchors: tuple[str, ...], source: str, what: str) -> str:
    prefixes = sorted({k[: -len(a)] for k in state for a in anchors
                       if isinstance(k, str) and k.endswith(a) and (len(k) == len(a) or k[-len(a) - 1] == ".")})
    if not prefixes:
        raise CheckpointError(f"{source}: no {what} weights found (no key ending in '{anchors[0]}'); "
                              "not an AV-HuBERT / Whisper-Flamingo video checkpoint")
    if len(prefixes) > 1:
        raise CheckpointError(f"{source}: several {what} copies found under {prefixes}; extract one state dict "
                              "first")
    return prefixes[0]


def _strip(state: Mapping[str, Any], prefix: str, source: str) -> dict[str, Tensor]:
    """Keys under ``prefix`` without it; pretraining-only tensors and other keys are dropped (debug log)."""
    sub: dict[str, Tensor] = {}
    inside = strip_prefix(state, prefix, keep_others=False)
    for key, value in inside.items():
        name = avhubert_key(key)
        if name is None:
            log.debug("%s: dropping unused AV-HuBERT tensor '%s%s'", source, prefix, key)
            continue
        sub[name] = value
    if len(inside) < len(state):
        log.debug("%s: ignoring %d keys outside '%s' (decoder, Whisper, ...)", source, len(state) - len(inside),
                  prefix)
    return sub


def _build(state: dict[str, Tensor], cfg: AVHubertConfig, mode: str, source: str, prefix: str) -> AVHubert:
    try:
        cfg.validate(source)
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    model = AVHubert(cfg, mode=mode)
    load_state_strict(model, state, source, what="AV-HuBERT model", key_prefix=prefix, hint=_HINT)
    log.info("%s: loaded AV-HuBERT (%s, %d layers, dim %d) from '%s*'", source, mode, cfg.encoder_layers,
             cfg.encoder_embed_dim, prefix)
    return model.eval()


__all__ = ["load_avhubert", "load_avhubert_state", "load_avhubert_from_whisper_flamingo",
           "avhubert_state_from_whisper_flamingo", "config_from_state_dict", "load_resencoder",
           "FINETUNED_PREFIX", "UNUSED_KEYS", "UNUSED_PREFIXES"]
