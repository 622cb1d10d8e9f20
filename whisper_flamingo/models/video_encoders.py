"""Randomly initialised video encoders of named sizes for stage-2 training from scratch.

``large`` / ``base`` are AV-HuBERT's released sizes; ``tiny`` is a CPU-demo size with a light ResNet
front end; ``lip2d`` is not an AV-HuBERT but a per-frame 2D CNN with temporal convolutions
(:class:`~whisper_flamingo.models.lip_frontends.FrameConvEncoder`), the cheapest lip reader to train
from scratch on a CPU.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig
from whisper_flamingo.models.lip_frontends import FrameConvEncoder
from whisper_flamingo.models.resnet import ResEncoder, ResNetTrunk

#: light ResNet front end of the ``tiny`` video encoder: stem channels, stage widths, blocks per stage
TINY_FRONT_END = {"stem": 16, "widths": (16, 32, 64, 128), "blocks": (1, 1, 1, 1), "input_pool": 2}

#: the ``lip2d`` encoder (:class:`FrameConvEncoder` arguments)
LIP2D = {"dim": 256, "pool": 4, "channels": (32, 64, 64), "layers": 2, "kernel": 9, "dropout": 0.1}


def video_model_config(name: str) -> AVHubertConfig:
    """AV-HuBERT hyper-parameters of a named size for from-scratch training.

    ``large`` / ``base`` are the released sizes (fine-tuning dropouts); ``tiny`` (2 layers, 256-d, 4
    heads of 64, FFN 1024) is for CPU demos.
    """
    if name == "large":
        return AVHubertConfig.large(finetuned=True)
    if name == "base":
        return AVHubertConfig.base(finetuned=True)
    if name == "tiny":
        return replace(AVHubertConfig.base(finetuned=True), encoder_layers=2, encoder_embed_dim=256,
                       encoder_ffn_embed_dim=1024, encoder_attention_heads=4, encoder_layerdrop=0.0,
                       dropout=0.1, attention_dropout=0.1, activation_dropout=0.0)
    raise ConfigError(f"video_model_config: unknown size {name!r}; use tiny, base, large or lip2d")


def light_front_end(relu_type: str = "prelu", stem: int = 16, widths: tuple[int, ...] = (16, 32, 64, 128),
                    blocks: tuple[int, ...] = (1, 1, 1, 1), input_pool: int = 1) -> ResEncoder:
    """A :class:`ResEncoder` with a narrow stem and trunk (same module names, smaller tensors).

    At 88x88 crops the full ResNet-18 costs ~0.33 GMAC per frame, far too much to train on a CPU;
    this one ~16 MMAC, or ~4 MMAC when the frames are first average-pooled by ``input_pool`` = 2
    (44x44; the tiny demo encoder).  ``out_dim`` = ``widths[-1]``.
    """
    from whisper_flamingo.models.resnet import _activation

    enc = ResEncoder(relu_type, input_pool)
    enc.frontend3D = nn.Sequential(
        nn.Conv3d(1, stem, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
        nn.BatchNorm3d(stem),
        _activation(relu_type, stem),
        nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
    )
    if stem != widths[0]:
        raise ValueError(f"the stem width ({stem}) must equal the first stage width ({widths[0]})")
    enc.trunk = ResNetTrunk(relu_type, tuple(widths), tuple(blocks))
    enc.out_dim = int(widths[-1])
    enc.reset_parameters()
    return enc


def new_video_encoder(name: str, use_av_hubert_encoder: bool = True, mode: str = "finetuned") -> nn.Module:
    """A randomly initialised video encoder of a named size (see :func:`video_model_config`).

    ``tiny`` also narrows the ResNet front end (:data:`TINY_FRONT_END`); without
    ``use_av_hubert_encoder`` it is the front end alone (ResNet-18, or the light one for ``tiny``).
    ``lip2d`` is a :class:`FrameConvEncoder` (:data:`LIP2D`) whatever ``use_av_hubert_encoder`` says.
    """
    if name == "lip2d":
        return FrameConvEncoder(**LIP2D)
    cfg = video_model_config(name)
    if not use_av_hubert_encoder:
        return light_front_end(cfg.resnet_relu_type, **TINY_FRONT_END) if name == "tiny" \
            else ResEncoder(cfg.resnet_relu_type)
    model = AVHubert(cfg, mode="pretrained" if mode == "pretrained" else "finetuned")
    if name == "tiny":
        front = light_front_end(cfg.resnet_relu_type, **TINY_FRONT_END)
        model.feature_extractor_video.resnet = front
        model.feature_extractor_video.proj = nn.Linear(front.out_dim, cfg.encoder_embed_dim)
    return model
