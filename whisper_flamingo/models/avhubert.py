"""AV-HuBERT (audio-visual HuBERT) encoder in plain PyTorch, as Whisper-Flamingo uses it.

Data flow (video only, the Whisper-Flamingo use): ``(B, 1, T, 88, 88)`` mouth crops -> ResNet-18 front
end (512-d per frame) -> ``Linear(512, D)`` -> concatenate ``[audio, video]`` where the audio half is
*zeros after projection* -> ``LayerNorm(2D)`` -> ``Linear(2D, D)`` -> zero padded steps -> weight-normed
convolutional positional embedding (residual) -> pre-LN transformer layers -> final ``LayerNorm(D)``
-> ``(B, T, D)``.  No temporal downsampling.

Parameter names equal AV-HuBERT's state-dict keys (``feature_extractor_video.resnet.*``,
``encoder.pos_conv.0.weight_g`` ...), so checkpoints load strictly; key maps and file formats live
in :mod:`whisper_flamingo.checkpoints.avhubert`.  The pretraining-only tensors (``mask_emb``,
``label_embs_concat``, ``final_proj``) are not modelled.

``mode`` picks which original code path is reproduced, which only matters in training mode:
``"finetuned"`` (``extract_finetune`` of a fine-tuned encoder) never drops a modality;
``"pretrained"`` (the self-supervised model called with ``features_only=True``) applies AV-HuBERT's
per-batch modality dropout (``modality_dropout`` / ``audio_dropout``) while training.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.registry import register_model
from whisper_flamingo.models.resnet import LIGHT_FRONT_END, RESNET18, FrontEndConfig, ResEncoder

log = logging.getLogger(__name__)

MODES = ("finetuned", "pretrained")


@dataclass
class AVHubertConfig:
    """AV-HuBERT model hyper-parameters, named as in the original ``cfg.model`` section.

    Field defaults are the original code's defaults (used for keys a checkpoint config lacks);
    :meth:`base` and :meth:`large` give the released model sizes.
    """

    encoder_layers: int = 12
    encoder_embed_dim: int = 768
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    activation_fn: str = "gelu"
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    audio_feat_dim: int = 104
    modality_fuse: str = "concat"
    resnet_relu_type: str = "prelu"
    sub_encoder_layers: int = 0
    layer_type: str = "transformer"
    # training-time behaviour
    dropout: float = 0.1
    attention_dropout: float = 0.1
    activation_dropout: float = 0.0
    encoder_layerdrop: float = 0.0
    dropout_input: float = 0.0
    feature_grad_mult: float = 1.0
    modality_dropout: float = 0.0
    audio_dropout: float = 0.0

    @classmethod
    def base(cls, finetuned: bool = False) -> AVHubertConfig:
        """AV-HuBERT Base (12 layers, 768-d); pretraining dropouts, or the 433h fine-tune ones."""
        cfg = cls(layer_norm_first=True, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0,
                  encoder_layerdrop=0.05, dropout_input=0.1, feature_grad_mult=0.1, modality_dropout=0.5,
                  audio_dropout=0.5)
        if finetuned:
            cfg = replace(cfg, dropout=0.0, attention_dropout=0.0, activation_dropout=0.1, encoder_layerdrop=0.1,
                          dropout_input=0.0, feature_grad_mult=1.0)
        return cfg

    @classmethod
    def large(cls, finetuned: bool = False) -> AVHubertConfig:
        """AV-HuBERT Large (24 layers, 1024-d, 16 heads, FFN 4096), as used by Whisper-Flamingo."""
        return replace(cls.base(finetuned), encoder_layers=24, encoder_embed_dim=1024,
                       encoder_ffn_embed_dim=4096, encoder_attention_heads=16)

    @classmethod
    def tiny(cls) -> AVHubertConfig:
        """The CPU-demo size: 2 layers, 256-d, 4 heads of 64, FFN 1024 (Base's fine-tune settings, no
        layer drop, dropout 0.1); pair it with :data:`~whisper_flamingo.models.resnet.LIGHT_FRONT_END`."""
        return replace(cls.base(finetuned=True), encoder_layers=2, encoder_embed_dim=256, encoder_ffn_embed_dim=1024,
                       encoder_attention_heads=4, encoder_layerdrop=0.0, dropout=0.1, attention_dropout=0.1,
                       activation_dropout=0.0)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> AVHubertConfig:
        """Build from an original-style config dict; unknown keys (decoder, masking...) are ignored."""
        kwargs: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in values or values[f.name] is None:
                continue
            value = values[f.name]
            kind = type(getattr(cls(), f.name))
            try:
                if kind is bool and isinstance(value, str):
                    value = value.lower() in ("1", "true", "yes")
                kwargs[f.name] = kind(value)
            except (TypeError, ValueError):
                raise ConfigError(f"{source}: AV-HuBERT config key '{f.name}' = {value!r} is not a "
                                  f"{kind.__name__}; fix the checkpoint config") from None
        cfg = cls(**kwargs)
        cfg.validate(source)
        return cfg

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, source: str = "config") -> None:
        """Raise ConfigError for settings this implementation does not reproduce."""
        problems = []
        if self.sub_encoder_layers != 0:
            problems.append(f"sub_encoder_layers={self.sub_encoder_layers} (only 0 is supported)")
        if self.modality_fuse not in ("concat", "add"):
            problems.append(f"modality_fuse={self.modality_fuse!r} (expected 'concat' or 'add')")
        if self.layer_type != "transformer":
            problems.append(f"layer_type={self.layer_type!r} (only 'transformer' is supported)")
        if self.activation_fn not in _ACTIVATIONS:
            problems.append(f"activation_fn={self.activation_fn!r} (expected one of {sorted(_ACTIVATIONS)})")
        if self.resnet_relu_type not in ("prelu", "relu"):
            problems.append(f"resnet_relu_type={self.resnet_relu_type!r} (expected 'prelu' or 'relu')")
        if self.encoder_embed_dim % self.encoder_attention_heads:
            problems.append("encoder_embed_dim is not a multiple of encoder_attention_heads")
        if self.encoder_embed_dim % self.conv_pos_groups:
            problems.append("encoder_embed_dim is not a multiple of conv_pos_groups")
        if problems:
            raise ConfigError(f"{source}: unsupported AV-HuBERT config: {'; '.join(problems)}")


def _gelu(x: Tensor) -> Tensor:
    return F.gelu(x.float()).type_as(x)  # exact erf GELU in fp32, as the original


def _gelu_tanh(x: Tensor) -> Tensor:
    return F.gelu(x.float(), approximate="tanh").type_as(x)


_ACTIVATIONS = {"gelu": _gelu, "gelu_accurate": _gelu_tanh, "gelu_fast": _gelu_tanh, "relu": F.relu,
                "tanh": torch.tanh, "linear": lambda x: x}


class GradMultiply(torch.autograd.Function):
    """Identity forward; gradient multiplied by ``scale`` (the original ``feature_grad_mult``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad * ctx.scale, None


class SubModel(nn.Module):
    """One modality's feature extractor: optional ResNet, then ``proj`` to the model width."""

    def __init__(self, resnet: ResEncoder | None, input_dim: int, output_dim: int) -> None:
        super().__init__()
        self.resnet = resnet
        self.proj = nn.Linear(input_dim, output_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Video ``(B, 1, T, H, W)`` or audio features ``(B, T, F)`` -> ``(B, T, D)``."""
        if self.resnet is not None:
            x = self.resnet(x)
        return self.proj(x)


class WeightNormConv1d(nn.Module):
    """Conv1d whose weight is ``weight_g * weight_v / ||weight_v||`` with the norm taken, per kernel tap,
    over all output and input channels (``weight_norm(dim=2)``); stores ``weight_g``/``weight_v``."""

    def __init__(self, channels: int, kernel_size: int, groups: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels))
        std = math.sqrt(4 * (1.0 - dropout) / (kernel_size * channels))
        if self.weight_v.is_meta:  # shapes only (parameter counting); torch's meta normal_ is slow
            return
        with torch.no_grad():
            nn.init.normal_(self.weight_v, 0.0, std)
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))
            nn.init.zeros_(self.bias)

    def weight(self) -> Tensor:
        return self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class SamePad(nn.Module):
    """Drop the extra last step an even-kernel 'same' convolution produces."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        return x[..., : x.shape[-1] - self.remove] if self.remove else x


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (all with bias)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_padding_mask: Tensor | None = None) -> Tensor:
        b, t, d = x.shape
        q, k, v = (proj(x).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """Transformer layer; pre-LN when ``layer_norm_first`` (every released AV-HuBERT), else post-LN."""

    def __init__(self, cfg: AVHubertConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.activation = _ACTIVATIONS[cfg.activation_fn]
        self.self_attn = SelfAttention(d, cfg.encoder_attention_heads, cfg.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(cfg.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.activation_dropout = nn.Dropout(cfg.activation_dropout)

    def _ffn(self, x: Tensor) -> Tensor:
        return self.dropout(self.fc2(self.activation_dropout(self.activation(self.fc1(x)))))

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        if self.layer_norm_first:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), padding_mask))
            return x + self._ffn(self.final_layer_norm(x))
        x = self.self_attn_layer_norm(x + self.dropout(self.self_attn(x, padding_mask)))
        return self.final_layer_norm(x + self._ffn(x))


class TransformerEncoder(nn.Module):
    """Convolutional positional embedding, transformer layers (with layer drop), final LayerNorm."""

    def __init__(self, cfg: AVHubertConfig) -> None:
        super().__init__()
        d = cfg.encoder_embed_dim
        self.layer_norm_first = cfg.layer_norm_first
        self.layerdrop = cfg.encoder_layerdrop
        self.pos_conv = nn.Sequential(WeightNormConv1d(d, cfg.conv_pos, cfg.conv_pos_groups, cfg.dropout),
                                      SamePad(cfg.conv_pos), nn.GELU())
        self.layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.apply(_init_bert_params)

    def forward(self, x: Tensor, padding_mask: Tensor | None = None, output_layer: int | None = None) -> Tensor:
        """``x (B, T, D)``; ``output_layer`` (1-based) stops early and skips the final LayerNorm."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        last = len(self.layers) if output_layer is None else output_layer
        if not 1 <= last <= len(self.layers):
            raise ValueError(f"output_layer must be in 1..{len(self.layers)}, got {output_layer}")
        for i, layer in enumerate(self.layers[:last]):
            if self.training and self.layerdrop > 0 and i + 1 != output_layer \
                    and float(torch.rand(())) < self.layerdrop:
                continue
            x = layer(x, padding_mask)
        if self.layer_norm_first and output_layer is None:
            x = self.layer_norm(x)
        return x


def _init_bert_params(module: nn.Module) -> None:
    """BERT-style init of the transformer (normal(0, 0.02) Linear weights, zero biases)."""
    if isinstance(module, nn.Linear) and not module.weight.is_meta:
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class AVHubert(nn.Module):
    """AV-HuBERT encoder.  ``forward(video (B,1,T,88,88), padding_mask (B,T) True=pad) -> (B,T,D)``.

    The output is the last layer after the encoder's final LayerNorm (the feature Whisper-Flamingo
    feeds its gated cross-attention).  ``audio (B, audio_feat_dim, T)`` stacked log filterbanks are
    optional; without them the audio stream is zeros after projection, as in the original.
    ``front_end``: the shape of the video feature extractor's ResNet (default AV-HuBERT's ResNet-18).
    """

    def __init__(self, config: AVHubertConfig | None = None, mode: str = "finetuned",
                 front_end: FrontEndConfig = RESNET18) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"AV-HuBERT mode must be one of {MODES}, got {mode!r}")
        cfg = config if config is not None else AVHubertConfig.large(finetuned=mode == "finetuned")
        cfg.validate()
        self.config = cfg
        self.mode = mode
        self.front_end = front_end
        d = cfg.encoder_embed_dim
        self.feature_extractor_audio = SubModel(None, cfg.audio_feat_dim, d)
        self.feature_extractor_video = SubModel(ResEncoder.from_config(front_end, cfg.resnet_relu_type),
                                                front_end.out_dim, d)
        fused = 2 * d if cfg.modality_fuse == "concat" else d
        self.layer_norm = nn.LayerNorm(fused)
        self.post_extract_proj = nn.Linear(fused, d) if fused != d else None
        self.dropout_input = nn.Dropout(cfg.dropout_input)
        self.encoder = TransformerEncoder(cfg)

    @property
    def out_dim(self) -> int:
        """Feature width D (1024 for Large)."""
        return self.config.encoder_embed_dim

    @classmethod
    def from_checkpoint(cls, path: str | Path, mode: str | None = None) -> AVHubert:
        """Load an AV-HuBERT (pretraining or fine-tuned fairseq file) or Whisper-Flamingo checkpoint.

        ``mode`` is ``"finetuned"``, ``"pretrained"`` or None (detected from the keys and logged).
        Returns the model in eval mode.  See :func:`whisper_flamingo.checkpoints.avhubert.load_avhubert`.
        """
        from whisper_flamingo.checkpoints.avhubert import load_avhubert

        return load_avhubert(path, mode=mode)

    def _extract(self, extractor: SubModel, x: Tensor) -> Tensor:
        mult = self.config.feature_grad_mult
        if mult <= 0:
            with torch.no_grad():
                return extractor(x)
        feats = extractor(x)
        return GradMultiply.apply(feats, mult) if mult != 1.0 and torch.is_grad_enabled() else feats

    def forward(self, video: Tensor | None, padding_mask: Tensor | None = None, audio: Tensor | None = None,
                output_layer: int | None = None) -> Tensor:
        """Encode lip video (and optionally audio features) to ``(B, T, D)``.

        ``padding_mask`` is ``(B, T)`` bool, True at padded frames.  ``output_layer`` (1-based) returns
        that layer's output without the final LayerNorm, as the original ``output_layer`` argument.
        """
        feats_v = None if video is None else self._extract(self.feature_extractor_video, video)
        feats_a = None if audio is None else self._extract(self.feature_extractor_audio, audio.transpose(1, 2))
        if feats_v is None and feats_a is None:
            raise ValueError("AVHubert.forward needs video or audio")
        if feats_a is None:
            feats_a = torch.zeros_like(feats_v)
        elif feats_v is None:
            feats_v = torch.zeros_like(feats_a)
        elif feats_a.shape[1] != feats_v.shape[1]:
            raise ValueError(f"audio has {feats_a.shape[1]} frames but video has {feats_v.shape[1]}")
        if self.training and self.mode == "pretrained" and self.config.modality_dropout > 0:
            drop_modality, drop_audio = torch.rand(2).tolist()
            if drop_modality < self.config.modality_dropout:
                if drop_audio < self.config.audio_dropout:
                    feats_a = feats_a * 0
                else:
                    feats_v = feats_v * 0
        if self.config.modality_fuse == "concat":
            x = torch.cat([feats_a, feats_v], dim=-1)
        else:
            x = feats_a + feats_v
        x = self.layer_norm(x)
        if padding_mask is not None:
            padding_mask = _frame_padding_mask(padding_mask, x.shape[1])
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        x = self.dropout_input(x)
        return self.encoder(x, padding_mask, output_layer)


def _frame_padding_mask(padding_mask: Tensor, frames: int) -> Tensor:
    """Reduce an input-rate mask to the feature rate (a frame is padding if all its inputs are)."""
    padding_mask = padding_mask.bool()
    extra = padding_mask.shape[1] % frames
    if extra:
        padding_mask = padding_mask[:, :-extra]
    return padding_mask.view(padding_mask.shape[0], frames, -1).all(-1)


def build_avhubert(mode: str = "finetuned", front_end: FrontEndConfig = RESNET18, **config: Any) -> AVHubert:
    """A randomly initialised :class:`AVHubert` from :class:`AVHubertConfig` fields (registry builder)."""
    return AVHubert(AVHubertConfig(**config), mode=mode, front_end=front_end)


_RELEASE = "local file (AV-HuBERT release"
for _name, _cfg, _mode, _front, _weights, _what in (
        ("avhubert-tiny", AVHubertConfig.tiny(), "finetuned", LIGHT_FRONT_END, "random init only",
         "AV-HuBERT of the CPU demo: 2 layers, 256-d, light lip front end"),
        ("avhubert-base", AVHubertConfig.base(finetuned=True), "finetuned", RESNET18,
         f"{_RELEASE}, e.g. base_vox_433h.pt)", "AV-HuBERT Base (12 layers, 768-d), fine-tuned encoder path"),
        ("avhubert-base-pretrained", AVHubertConfig.base(), "pretrained", RESNET18,
         f"{_RELEASE}, e.g. base_vox_iter5.pt)", "AV-HuBERT Base, self-supervised (pretraining) path"),
        ("avhubert-large", AVHubertConfig.large(finetuned=True), "finetuned", RESNET18,
         f"{_RELEASE}: large_noise_pt_noise_ft_433h_only_weights.pt)",
         "AV-HuBERT Large (24 layers, 1024-d), fine-tuned encoder path"),
        ("avhubert-large-pretrained", AVHubertConfig.large(), "pretrained", RESNET18,
         f"{_RELEASE}: mavhubert_only_weights.pt)",
         "AV-HuBERT Large, self-supervised path (multilingual mAV-HuBERT)")):
    register_model(_name, family="avhubert", builder=build_avhubert, weights=_weights, description=_what,
                   config={"mode": _mode, "front_end": _front, **asdict(_cfg)})


__all__ = ["AVHubert", "AVHubertConfig", "MODES", "ResEncoder", "build_avhubert"]
