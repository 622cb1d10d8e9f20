"""Released Whisper-Flamingo checkpoints, and building a stage-2 model from a config.

A released file is ``{"state_dict": {"model.<key>": tensor}}``.  Once ``model.`` is stripped the keys
are those of :class:`~whisper_flamingo.models.flamingo.WhisperFlamingo`, plus AV-HuBERT's
pretraining-only tensors that the model does not hold (``mask_emb``, ``label_embs_concat``,
``final_proj.*`` under ``encoder.video_model.[w2v_model.]``): those are dropped (debug log), every
other key must match exactly (strict; a CheckpointError lists a few missing / unexpected / mis-shaped
keys).  Everything is inferred from the tensors: the Whisper size (64-dim heads), the video encoder
(AV-HuBERT under ``encoder.video_model.w2v_model.`` = fine-tuned path, under ``encoder.video_model.``
= self-supervised path, or the ResNet front end alone), its config (via
:func:`~whisper_flamingo.checkpoints.avhubert.config_from_state_dict`), the fusion
(``encoder.video_projection_blocks.*`` = lip-reader) and whether the decoder has gated layers.

The model is built on the meta device and the tensors are *assigned* (no second copy in memory).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from whisper_flamingo.checkpoints.avhubert import (
    avhubert_key,
    avhubert_state_from_whisper_flamingo,
    load_avhubert,
    load_resencoder,
)
from whisper_flamingo.checkpoints.io import load_state_strict, read_checkpoint_file, strip_prefix
from whisper_flamingo.checkpoints.names import load_whisper
from whisper_flamingo.checkpoints.openai import infer_dims, load_stage1_checkpoint
from whisper_flamingo.data.video import feature_dim
from whisper_flamingo.errors import CheckpointError, ConfigError
from whisper_flamingo.models.avhubert import AVHubertConfig
from whisper_flamingo.models.flamingo import WhisperFlamingo, fusion_from_config
from whisper_flamingo.models.resnet import ResEncoder
from whisper_flamingo.models.video_encoders import new_video_encoder
from whisper_flamingo.models.whisper import ModelDimensions, Whisper

log = logging.getLogger(__name__)

VIDEO_PREFIX = "encoder.video_model."
_WHAT = "Whisper-Flamingo model"
_HINT = "check that the checkpoint and the model config (size, video encoder, fusion) agree"
_NAMES = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}


@dataclass
class FlamingoLayout:
    """What a Whisper-Flamingo state dict holds."""

    dims: ModelDimensions
    video: str  # "avhubert" | "resnet"
    video_dim: int
    fusion: str  # "separate" | "lip-reader"
    gated: bool
    avhubert_config: AVHubertConfig | None = None
    avhubert_mode: str | None = None  # "finetuned" | "pretrained"
    avhubert_prefix: str = ""  # e.g. "encoder.video_model.w2v_model."

    def describe(self) -> str:
        size = _NAMES.get(self.dims.n_text_state, f"d={self.dims.n_text_state}")
        if self.video == "avhubert":
            c = self.avhubert_config
            video = f"AV-HuBERT {self.avhubert_mode} ({c.encoder_layers} layers, dim {c.encoder_embed_dim})"
        else:
            video = "ResNet-18 front end"
        return (f"Whisper {size} ({self.dims.n_text_layer}+{self.dims.n_audio_layer} layers) + {video}, "
                f"fusion {self.fusion}, {'gated' if self.gated else 'no gated'} cross-attention")


def is_whisper_flamingo_state(state: Mapping[str, Any]) -> bool:
    """True when a state dict carries Whisper-Flamingo's gated layers or video branch."""
    return any(".gated_x_attn" in k or "encoder.video_" in k for k in state)


def read_whisper_flamingo_state(path: str | Path, ckpt: Any = None) -> dict[str, Tensor]:
    """The state dict of a released (or our Lightning) Whisper-Flamingo file, ``model.`` stripped
    (``ckpt``: the file's object when the caller has read it already)."""
    if ckpt is None:
        ckpt = read_checkpoint_file(path, mmap=True)
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        keys = sorted(map(str, ckpt))[:5] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path}: no 'state_dict' entry (found {keys}); expected a Whisper-Flamingo "
                              "checkpoint {'state_dict': {'model.<key>': tensor}}")
    return strip_prefix(ckpt["state_dict"])


def infer_layout(state: Mapping[str, Tensor], source: str = "<state_dict>") -> FlamingoLayout:
    """Inspect a ``model.``-stripped Whisper-Flamingo state dict (see the module doc)."""
    if "encoder.video_projection.weight" not in state:
        raise CheckpointError(f"{source}: no 'encoder.video_projection.weight'; this is not an audio-visual "
                              "Whisper-Flamingo checkpoint (an audio-only one loads with load_whisper)")
    whisper_part = {k: v for k, v in state.items() if k.startswith(("encoder.", "decoder."))
                    and not k.startswith(("encoder.video_", "encoder.video_model."))}
    dims = infer_dims(whisper_part, where=source)
    video_dim = int(state["encoder.video_projection.weight"].shape[1])
    fusion = "lip-reader" if any(k.startswith("encoder.video_projection_blocks.") for k in state) else "separate"
    gated = "decoder.blocks.0.gated_x_attn.query.weight" in state
    if f"{VIDEO_PREFIX}frontend3D.0.weight" in state:
        return FlamingoLayout(dims, "resnet", video_dim, fusion, gated)
    if not any(k.startswith(VIDEO_PREFIX) for k in state):
        raise CheckpointError(f"{source}: no '{VIDEO_PREFIX}*' keys; the video encoder weights are missing")
    video_state = {k: v for k, v in state.items() if k.startswith(VIDEO_PREFIX)}
    _, cfg, mode, prefix = avhubert_state_from_whisper_flamingo(video_state, source=source)
    return FlamingoLayout(dims, "avhubert", video_dim, fusion, gated, cfg, mode, prefix)


def build_for_layout(layout: FlamingoLayout, device: str | torch.device = "cpu") -> WhisperFlamingo:
    """A (randomly initialised, or meta) :class:`WhisperFlamingo` with the layout's shapes and names."""
    with torch.device(device):
        return WhisperFlamingo.build(layout.dims, use_av_hubert_encoder=layout.video == "avhubert",
                                     av_fusion=layout.fusion, add_gated_x_attn=layout.gated,
                                     avhubert_config=layout.avhubert_config,
                                     video_mode=layout.avhubert_mode or "finetuned")


def model_state(state: Mapping[str, Tensor], layout: FlamingoLayout, source: str = "<state_dict>"
                ) -> dict[str, Tensor]:
    """The file's keys as the model names them: AV-HuBERT pretraining-only tensors dropped, newer
    weight-norm parametrisation names mapped to ``weight_g``/``weight_v``."""
    out: dict[str, Tensor] = {}
    prefix = layout.avhubert_prefix
    for key, value in state.items():
        if prefix and key.startswith(prefix):
            name = avhubert_key(key[len(prefix):])
            if name is None:
                log.debug("%s: dropping unused AV-HuBERT tensor '%s'", source, key)
                continue
            key = prefix + name
        out[key] = value
    return out


def load_whisper_flamingo(path: str | Path, device: str | torch.device = "cpu",
                          dtype: torch.dtype | None = torch.float32, ckpt: Any = None) -> WhisperFlamingo:
    """A released Whisper-Flamingo ``.pt`` as an eval-mode :class:`WhisperFlamingo` (strict load).

    ``dtype=None`` keeps the file's dtypes; ``ckpt``: the file's object when already read.
    """
    source = str(path)
    state = read_whisper_flamingo_state(path, ckpt)
    model, layout = load_whisper_flamingo_state(state, source)
    if dtype is not None:
        model = model.to(dtype)
    log.info("%s: loaded %s", source, layout.describe())
    return model.to(device).eval()


def load_whisper_flamingo_state(state: Mapping[str, Tensor], source: str = "<state_dict>"
                                ) -> tuple[WhisperFlamingo, FlamingoLayout]:
    """Build the matching model on the meta device and assign ``state`` (``model.`` stripped) strictly."""
    state = strip_prefix(state)
    layout = infer_layout(state, source)
    model = build_for_layout(layout, "meta")
    load_state_strict(model, model_state(state, layout, source), source, assign=True, what=_WHAT, hint=_HINT)
    saved = set(model.state_dict())
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers())
            if t.is_meta and n not in saved]
    if left:  # a non-persistent buffer would still be on the meta device
        raise CheckpointError(f"{source}: {len(left)} tensors were not set by the checkpoint (e.g. {left[0]})")
    return model, layout


def build_whisper_flamingo(cfg: Any, whisper: Whisper | None = None) -> WhisperFlamingo:
    """The stage-2 model of a config: Whisper (``model_name`` + ``pt_ckpt``, or the given one), the video
    encoder from ``video_model_ckpt`` (AV-HuBERT with ``use_av_hubert_encoder``, else the ResNet front
    end), fusion ``av_fusion``, gated layers with ``add_gated_x_attn``.

    With ``video_feature_dir`` set and no ``video_model_ckpt`` the model has no video encoder (features
    are read from disk; D_v = 1024 for AV-HuBERT Large, 512 for the ResNet).  The video encoder comes
    back in eval mode: the training task decides its train/eval mode and freezing.
    """
    fusion = fusion_from_config(getattr(cfg, "av_fusion", "separate"))
    if whisper is None:
        whisper = load_whisper(cfg.model_name, download_root=getattr(cfg, "whisper_download_root", None))
        if getattr(cfg, "pt_ckpt", ""):
            load_stage1_checkpoint(whisper, cfg.pt_ckpt)
    use_av = bool(getattr(cfg, "use_av_hubert_encoder", True))
    ckpt = getattr(cfg, "video_model_ckpt", "")
    encoder = None
    if ckpt:
        if use_av:
            mode = getattr(cfg, "video_model_mode", "auto")
            encoder = load_avhubert(ckpt, mode=None if mode in ("auto", "", None) else mode)
        else:
            encoder = load_resencoder(ckpt)
        encoder = encoder.to(whisper.encoder.conv1.weight.dtype)
    elif not getattr(cfg, "video_feature_dir", ""):
        raise ConfigError("video_model_ckpt: empty; set the AV-HuBERT checkpoint (or video_feature_dir with "
                          "features from `whisper-flamingo extract-video-features`)")
    dim = encoder.out_dim if encoder is not None else (1024 if use_av else ResEncoder.out_dim)
    model = WhisperFlamingo.from_whisper(whisper, encoder, dim, fusion, gated=bool(getattr(cfg, "add_gated_x_attn", 1)))
    return model.to(whisper.encoder.conv1.weight.device)


def _lip_reader_size(ckpt: Any) -> str | None:
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, Mapping) else None
    values = (hp or {}).get("config") or {} if isinstance(hp, Mapping) else {}
    if values.get("task") != "vsr":
        return None
    return str(values.get("video_model_config") or "")


def lip_reader_size(path: str | Path) -> str | None:
    """The ``video_model_config`` a ``vsr`` (lip reading) checkpoint was trained with; None for any other file."""
    return _lip_reader_size(read_checkpoint_file(path, mmap=True))


def load_lip_reader_encoder(encoder: torch.nn.Module, path: str | Path, size: str) -> None:
    """Load the video encoder of a lip reader into ``encoder`` (strict): a ``vsr`` task checkpoint
    (``model.encoder.*``; its ``video_model_config`` must be ``size``) or a plain state dict of a
    :class:`~whisper_flamingo.models.video_encoders.CTCLipReader` (``encoder.*``) or of the encoder."""
    ckpt = read_checkpoint_file(path, mmap=True)
    trained = _lip_reader_size(ckpt)
    if trained is not None and trained != size:
        raise ConfigError(f"video_model_ckpt: {path} is a lip reader of video_model_config {trained!r}, but the "
                          f"config says {size!r}; set video_model_config: {trained}")
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else ckpt
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{path}: not a state dict or Lightning checkpoint; pass a task: vsr checkpoint")
    for prefix in ("model.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in state):
            state = strip_prefix(state, prefix, keep_others=False)
            break
    load_state_strict(encoder, state, path, what=f"{size} video encoder",
                      hint="video_model_config must name the size the lip reader was trained with")
    log.info("video encoder (%s) loaded from the lip reader %s", size, path)


def build_stage2_model(cfg: Any, whisper: torch.nn.Module) -> WhisperFlamingo:
    """Wrap the (stage-1 initialised) ``whisper`` into the config's :class:`WhisperFlamingo` (module doc)."""
    fusion = fusion_from_config(cfg.av_fusion)
    gated = bool(cfg.add_gated_x_attn)
    if cfg.video_model_ckpt and not cfg.video_model_config:
        size = lip_reader_size(cfg.video_model_ckpt)
        if size is not None:
            raise ConfigError(f"video_model_ckpt: {cfg.video_model_ckpt} is a lip reader (task: vsr) of "
                              f"video_model_config {size!r}; set video_model_config: {size} as well")
        return build_whisper_flamingo(cfg, whisper)
    dtype = whisper.encoder.conv1.weight.dtype
    if cfg.video_model_config and cfg.video_model_ckpt:  # a named size with trained weights (a vsr checkpoint)
        encoder = new_video_encoder(cfg.video_model_config, cfg.use_av_hubert_encoder, cfg.video_model_mode)
        load_lip_reader_encoder(encoder, cfg.video_model_ckpt, cfg.video_model_config)
        model = WhisperFlamingo.from_whisper(whisper, encoder.to(dtype), None, fusion, gated)
    elif cfg.video_model_config:
        if cfg.freeze_video_model and not cfg.video_feature_dir:
            log.warning("video_model_config=%s builds a randomly initialised video encoder but "
                        "freeze_video_model is true: it will not learn (set freeze_video_model=false)",
                        cfg.video_model_config)
        encoder = new_video_encoder(cfg.video_model_config, cfg.use_av_hubert_encoder, cfg.video_model_mode)
        model = WhisperFlamingo.from_whisper(whisper, encoder.to(dtype), None, fusion, gated)
    elif cfg.video_feature_dir:
        dim = feature_dim(cfg.video_feature_dir) or (1024 if cfg.use_av_hubert_encoder else ResEncoder.out_dim)
        model = WhisperFlamingo.from_whisper(whisper, None, dim, fusion, gated)
    else:
        raise ConfigError("video_model_ckpt: empty; set an AV-HuBERT checkpoint, video_model_config "
                          "(tiny|base|large) to train a video encoder from scratch, or video_feature_dir")
    return model.to(whisper.encoder.conv1.weight.device)


def load_stage2_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                           dtype: torch.dtype | None = torch.float32, ckpt: Any = None) -> WhisperFlamingo:
    """An eval-mode :class:`WhisperFlamingo` from a stage-2 Lightning checkpoint written by this task.

    Models with a from-scratch video encoder (``video_model_config``, e.g. the demo's light front end) are
    rebuilt from the config saved in the checkpoint's hyper-parameters (on the meta device, tensors
    assigned); any other checkpoint goes through
    :func:`~whisper_flamingo.checkpoints.flamingo.load_whisper_flamingo` (layout inferred from shapes).
    ``ckpt``: the file's object when the caller has read it already.
    """
    from whisper_flamingo.config import KEYS, Config

    path = Path(path)
    if ckpt is None:
        ckpt = read_checkpoint_file(path, mmap=True)
    hp = (ckpt.get("hyper_parameters") or {}) if isinstance(ckpt, dict) else {}
    values = hp.get("config") or {}
    if not values.get("video_model_config") or not hp.get("dims"):
        return load_whisper_flamingo(path, device, dtype, ckpt)
    cfg = Config(**{k: v for k, v in values.items() if k in KEYS})
    cfg.video_model_ckpt, cfg.video_feature_dir = "", ""
    with torch.device("meta"):
        model = build_stage2_model(cfg, Whisper(ModelDimensions(**hp["dims"])))
    state = strip_prefix(ckpt["state_dict"], "model.", keep_others=False)  # not the task's CTC head
    load_state_strict(model, state, path, assign=True, what=_WHAT, hint=_HINT)
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise CheckpointError(f"{path}: {len(left)} tensors were not set by the checkpoint (e.g. {left[0]})")
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device).eval()


__all__ = ["FlamingoLayout", "VIDEO_PREFIX", "is_whisper_flamingo_state", "read_whisper_flamingo_state",
           "infer_layout", "build_for_layout", "model_state", "load_whisper_flamingo",
           "load_whisper_flamingo_state", "build_whisper_flamingo",
           "build_stage2_model", "load_stage2_checkpoint"]
