"""AV-HuBERT's lip-video front end: a 3D convolution stem and a per-frame ResNet (``ResEncoder``).

Parameter names follow AV-HuBERT's ``feature_extractor_video.resnet.*`` keys (``frontend3D.{0,1,2}``,
``trunk.layer{1-4}.{0,1}.{conv1,bn1,relu1,conv2,bn2,relu2,downsample}``) so checkpoints load strictly.
The shape is a :class:`FrontEndConfig`: :data:`RESNET18` (AV-HuBERT's, every released checkpoint) or
:data:`LIGHT_FRONT_END` (narrow, one block per stage, frames pooled x2 first: the CPU demo's).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

from torch import Tensor, nn
from torch.nn import functional as F

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.registry import register_model


def _activation(relu_type: str, channels: int) -> nn.Module:
    if relu_type == "prelu":
        return nn.PReLU(num_parameters=channels)
    if relu_type == "relu":
        return nn.ReLU()
    raise ValueError(f"resnet_relu_type must be 'prelu' or 'relu', got {relu_type!r}")


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm; the activation after the residual sum is ``relu2``."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, relu_type: str = "prelu") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = _activation(relu_type, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = _activation(relu_type, planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + residual)


@dataclass(frozen=True)
class FrontEndConfig:
    """Shape of a lip-video ResNet front end: stem channels, stage widths, blocks per stage (depth),
    and ``input_pool`` (> 1: frames average-pooled by that factor first).  ``out_dim = widths[-1]``."""

    stem: int = 64
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    input_pool: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if self.stem < 1 or not self.widths or min(self.widths) < 1 or len(self.widths) != len(self.blocks) \
                or min(self.blocks) < 1 or self.input_pool < 1:
            raise ConfigError(f"video front end: stem={self.stem}, widths={self.widths}, blocks={self.blocks}, "
                              f"input_pool={self.input_pool}: need positive sizes and one block count per width")

    @property
    def out_dim(self) -> int:
        return self.widths[-1]


#: AV-HuBERT's ResNet-18 front end (every released checkpoint)
RESNET18 = FrontEndConfig()
#: the CPU demo's light front end: at 88x88 crops ResNet-18 costs ~0.33 GMAC per frame; this one
#: ~16 MMAC, ~4 MMAC with the frames average-pooled to 44x44 first (``input_pool=2``)
LIGHT_FRONT_END = FrontEndConfig(stem=16, widths=(16, 32, 64, 128), blocks=(1, 1, 1, 1), input_pool=2)


class ResNetTrunk(nn.Module):
    """ResNet body without stem or classifier: one stage per width (ResNet-18: 4 stages x 2 blocks),
    then global average pooling.  ``inplanes``: the stem's channels (default ``widths[0]``)."""

    def __init__(self, relu_type: str = "prelu", widths: tuple[int, ...] = (64, 128, 256, 512),
                 blocks: tuple[int, ...] = (2, 2, 2, 2), inplanes: int | None = None) -> None:
        super().__init__()
        inplanes = widths[0] if inplanes is None else inplanes
        for i, (planes, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = [BasicBlock(inplanes if b == 0 else planes, planes, stride if b == 0 else 1, relu_type)
                      for b in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
            inplanes = planes
        self.num_stages = len(widths)
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.avgpool(x).flatten(1)


class ResEncoder(nn.Module):
    """Lip-video encoder: ``(B, 1, T, H, W)`` grayscale frames -> ``(B, T, out_dim)`` per-frame features.

    Built exactly as told: a 3D stem of ``stem`` channels, then one ResNet stage per entry of
    ``widths`` with ``blocks`` basic blocks each (defaults: AV-HuBERT's ResNet-18, ``out_dim`` 512;
    :meth:`from_config` takes a :class:`FrontEndConfig`).  ``input_pool`` > 1 average-pools the frames
    first.  The 3D stem keeps the frame rate (temporal kernel 5, stride 1); no padding mask is applied,
    so zero-padded frames bleed into the last two real frames, exactly as in AV-HuBERT.
    """

    #: ResNet-18's feature width (the default); an instance's own width is ``widths[-1]``
    out_dim: int = RESNET18.out_dim

    def __init__(self, relu_type: str = "prelu", input_pool: int = RESNET18.input_pool, stem: int = RESNET18.stem,
                 widths: tuple[int, ...] = RESNET18.widths, blocks: tuple[int, ...] = RESNET18.blocks) -> None:
        super().__init__()
        self.config = FrontEndConfig(int(stem), tuple(widths), tuple(blocks), int(input_pool))
        self.input_pool = self.config.input_pool
        self.out_dim = self.config.out_dim
        stem = self.config.stem
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, stem, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(stem),
            _activation(relu_type, stem),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.trunk = ResNetTrunk(relu_type, self.config.widths, self.config.blocks, inplanes=stem)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: FrontEndConfig = RESNET18, relu_type: str = "prelu") -> ResEncoder:
        """A randomly initialised front end of the given shape."""
        return cls(relu_type, **asdict(config))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> ResEncoder:
        """The ResNet-18 front end of an AV-HuBERT or Whisper-Flamingo checkpoint, in eval mode.
        See :func:`whisper_flamingo.checkpoints.avhubert.load_resencoder`."""
        from whisper_flamingo.checkpoints.avhubert import load_resencoder

        return load_resencoder(path)

    def reset_parameters(self) -> None:
        """He-normal (fan-out) convolutions, unit/zero batch norm, as in the original front end."""
        for m in self.modules():
            if any(p.is_meta for p in m.parameters(recurse=False)):
                continue  # nothing to initialise (and torch's meta normal_ is slow)
            if isinstance(m, (nn.Conv2d, nn.Conv3d)):
                fan_out = math.prod(m.kernel_size[-2:]) * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, video: Tensor) -> Tensor:
        """``video (B, 1, T, H, W)`` -> ``(B, T, 512)``."""
        if video.dim() != 5 or video.shape[1] != 1:
            raise ValueError(f"video must be (B, 1, T, H, W) grayscale frames, got shape {tuple(video.shape)}")
        b = video.shape[0]
        if self.input_pool > 1:
            video = F.avg_pool3d(video, (1, self.input_pool, self.input_pool))
        x = self.frontend3D(video)  # (B, 64, T, H', W')
        t = x.shape[2]
        x = x.transpose(1, 2).reshape(b * t, x.shape[1], x.shape[3], x.shape[4])
        return self.trunk(x).view(b, t, -1)


register_model("lip-resnet18", family="lip-frontend", builder=ResEncoder,
               config={"relu_type": "prelu", **asdict(RESNET18)},
               weights="local file (the front end of any AV-HuBERT / Whisper-Flamingo checkpoint)",
               description="AV-HuBERT's ResNet-18 lip front end (3D stem + 4x2 basic blocks, 512-d per frame)")
register_model("lip-resnet-light", family="lip-frontend", builder=ResEncoder,
               config={"relu_type": "prelu", **asdict(LIGHT_FRONT_END)}, weights="random init only",
               description="light lip front end of the CPU demo (16-128 channels, 1 block per stage, "
                           "frames pooled to 44x44; 128-d per frame)")

__all__ = ["ResEncoder", "BasicBlock", "ResNetTrunk", "FrontEndConfig", "RESNET18", "LIGHT_FRONT_END"]

