"""AV-HuBERT's lip-video front end: a 3D convolution stem and a per-frame ResNet-18 (``ResEncoder``).

Parameter names follow AV-HuBERT's ``feature_extractor_video.resnet.*`` keys (``frontend3D.{0,1,2}``,
``trunk.layer{1-4}.{0,1}.{conv1,bn1,relu1,conv2,bn2,relu2,downsample}``) so checkpoints load strictly.
"""

from __future__ import annotations

import math

from torch import Tensor, nn
from torch.nn import functional as F


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


class ResNetTrunk(nn.Module):
    """ResNet-18 body without stem or classifier: 4 stages x 2 blocks, then global average pooling."""

    def __init__(self, relu_type: str = "prelu", widths: tuple[int, ...] = (64, 128, 256, 512),
                 blocks: tuple[int, ...] = (2, 2, 2, 2)) -> None:
        super().__init__()
        inplanes = widths[0]
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
    """Lip-video encoder: ``(B, 1, T, H, W)`` grayscale frames -> ``(B, T, 512)`` per-frame features.

    The 3D stem keeps the frame rate (temporal kernel 5, stride 1); no padding mask is applied, so
    zero-padded frames bleed into the last two real frames, exactly as in AV-HuBERT.
    """

    out_dim = 512

    def __init__(self, relu_type: str = "prelu", input_pool: int = 1) -> None:
        super().__init__()
        self.input_pool = int(input_pool)  # > 1: frames average-pooled first (light CPU front ends)
        stem = 64
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, stem, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(stem),
            _activation(relu_type, stem),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.trunk = ResNetTrunk(relu_type)
        self.reset_parameters()

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


def num_params(module: nn.Module) -> int:
    """Number of parameter elements (works on the meta device)."""
    return sum(p.numel() for p in module.parameters())


__all__ = ["ResEncoder", "BasicBlock", "ResNetTrunk", "num_params"]

