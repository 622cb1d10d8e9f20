"""Randomly initialised video encoders of the named sizes of ``video_model_config`` (stage 2 from scratch).

Each size is a pair of registered configurations (:mod:`whisper_flamingo.models.registry`): the AV-HuBERT
(``use_av_hubert_encoder: true``) and its lip front end alone (``false``).  ``large`` / ``base`` are
AV-HuBERT's released sizes with the ResNet-18 front end; ``tiny`` is the CPU-demo size with the light
front end (:data:`~whisper_flamingo.models.resnet.LIGHT_FRONT_END`).  ``lip2d`` is not an AV-HuBERT
but a per-frame 2D CNN with temporal convolutions (``lip-2d``,
:class:`~whisper_flamingo.models.lip_frontends.FrameConvEncoder`), the cheapest lip reader to train from
scratch on a CPU.
"""

from __future__ import annotations

from torch import Tensor, nn

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.registry import create
from whisper_flamingo.models.resnet import ResEncoder

#: ``video_model_config`` size -> (AV-HuBERT configuration, front-end-only configuration)
VIDEO_ENCODER_SIZES: dict[str, tuple[str, str]] = {
    "tiny": ("avhubert-tiny", "lip-resnet-light"),
    "base": ("avhubert-base", "lip-resnet18"),
    "large": ("avhubert-large", "lip-resnet18"),
}

#: ``video_model_config: lip2d`` -> this registered configuration
LIP2D = "lip-2d"


def new_video_encoder(name: str, use_av_hubert_encoder: bool = True, mode: str = "finetuned") -> nn.Module:
    """A randomly initialised video encoder of size ``name`` (``tiny``, ``base``, ``large``): the
    AV-HuBERT in ``mode`` (``pretrained`` or, for anything else, ``finetuned``), or without
    ``use_av_hubert_encoder`` its lip front end alone; ``lip2d``: the :data:`LIP2D` encoder whatever
    ``use_av_hubert_encoder`` says."""
    if name == "lip2d":  # the same module with or without use_av_hubert_encoder
        return create(LIP2D)
    if name not in VIDEO_ENCODER_SIZES:
        raise ConfigError(f"video_model_config: unknown size {name!r}; "
                          f"use {', '.join(VIDEO_ENCODER_SIZES)} or lip2d")
    avhubert, front_end = VIDEO_ENCODER_SIZES[name]
    if not use_av_hubert_encoder:
        return create(front_end)
    return create(avhubert, mode="pretrained" if mode == "pretrained" else "finetuned")


#: classes of a CTC lip reader's output: blank (0) + the 256 byte values of UTF-8 text
CTC_CLASSES = 257


class CTCLipReader(nn.Module):
    """A video encoder with a linear CTC head over bytes: the model of the ``vsr`` task (lip reading).

    ``encoder`` is any video encoder of :func:`new_video_encoder` (``out_dim`` features per frame);
    ``forward(video, padding_mask)`` gives per-frame logits ``(B, T, 257)`` (blank + bytes).  Its trained
    ``encoder`` is what stage 2 loads as a frozen, lip-reading video encoder (the original's English
    models use an AV-HuBERT fine-tuned for lip reading the same way, with its own labels).
    """

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.ctc_head = nn.Linear(encoder.out_dim, CTC_CLASSES)

    def features(self, video: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """The encoder's ``(B, T, D)`` features of ``video (B, 1, T, 88, 88)``."""
        if isinstance(self.encoder, ResEncoder):
            return self.encoder(video)  # the ResNet front end takes no padding mask
        return self.encoder(video, padding_mask)

    def forward(self, video: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.ctc_head(self.features(video, padding_mask))


def build_lip_reader(name: str, use_av_hubert_encoder: bool = True) -> CTCLipReader:
    """A randomly initialised :class:`CTCLipReader` over the video encoder of size ``name``."""
    return CTCLipReader(new_video_encoder(name, use_av_hubert_encoder))
