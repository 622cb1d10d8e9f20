"""Light lip encoders for CPU-sized stage-2 training from scratch.

:class:`FrameConvEncoder`: each frame is average-pooled (88x88 -> 22x22 by default), read by a small
2D CNN (no 3D stem, no ResNet trunk), projected to ``dim`` and mixed over time by residual temporal
convolutions.  Per-frame mouth shape is what carries the visemes, so a per-frame encoder learns them
much faster than a 3D ResNet stem on a CPU budget; the temporal convolutions give each frame a
context of ``layers * (kernel - 1) + 1`` frames (default 17, ~0.7 s at 25 fps).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from whisper_flamingo.models.registry import register_model


class TemporalBlock(nn.Module):
    """Pre-LN residual block: LayerNorm -> Conv1d over time -> GELU -> Linear."""

    def __init__(self, dim: int, kernel: int, dropout: float) -> None:
        super().__init__()
        if kernel % 2 != 1:
            raise ValueError(f"the temporal kernel must be odd, got {kernel}")
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2)
        self.proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        h = self.norm(x)
        if keep is not None:
            h = h * keep
        h = F.gelu(self.conv(h.transpose(1, 2)).transpose(1, 2))
        return x + self.dropout(self.proj(h))


class FrameConvEncoder(nn.Module):
    """``forward(video (B, 1, T, H, W), padding_mask (B, T) True=pad) -> (B, T, dim)``.

    ``pool``: average pooling of each frame first; ``channels``: widths of the 3x3 conv stages (each
    followed by BatchNorm, ReLU and a 2x2 max pool but the last); ``layers`` temporal blocks of
    ``kernel`` frames.  ~3.5 MMAC per frame with the defaults on 88x88 crops.
    """

    def __init__(self, dim: int = 256, pool: int = 4, channels: tuple[int, ...] = (32, 64, 64),
                 layers: int = 2, kernel: int = 9, dropout: float = 0.1, crop: int = 88) -> None:
        super().__init__()
        self.pool = int(pool)
        convs: list[nn.Module] = []
        c_in, side = 1, crop // self.pool
        for i, c in enumerate(channels):
            convs += [nn.Conv2d(c_in, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
            if i < len(channels) - 1:
                convs.append(nn.MaxPool2d(2))
                side //= 2
            c_in = c
        self.frame_cnn = nn.Sequential(*convs)
        self.frame_proj = nn.Linear(c_in * side * side, dim)
        self.blocks = nn.ModuleList(TemporalBlock(dim, kernel, dropout) for _ in range(layers))
        self.layer_norm = nn.LayerNorm(dim)
        self.dim = int(dim)

    @property
    def out_dim(self) -> int:
        """Feature width D."""
        return self.dim

    def forward(self, video: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        b, _, t, h, w = video.shape
        x = video.transpose(1, 2).reshape(b * t, 1, h, w)
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        x = self.frame_proj(self.frame_cnn(x).flatten(1)).view(b, t, -1)
        keep = None
        if padding_mask is not None and padding_mask.shape[1] == t:
            keep = (~padding_mask.bool())[..., None].to(x.dtype)
            x = x * keep
        for block in self.blocks:
            x = block(x, keep)
        return self.layer_norm(x)



register_model("lip-2d", family="lip-frontend", builder=FrameConvEncoder,
               config={"dim": 256, "pool": 4, "channels": (32, 64, 64), "layers": 2, "kernel": 9, "dropout": 0.1},
               weights="random init only",
               description="per-frame 2D CNN on 22x22 pooled frames + 2 temporal conv blocks (video_model_config: "
                           "lip2d; 256-d per frame)")

__all__ = ["FrameConvEncoder", "TemporalBlock"]
