"""AST, the Audio Spectrogram Transformer (Gong et al., Interspeech 2021): a DeiT-distilled ViT over
overlapping 16×16 patches of a Kaldi log-mel fbank.

Input ``[B, T, 128]`` (time first, normalised as :func:`whisper_flamingo.data.fbank.ast_input` does) is
viewed as a 1-channel image ``[128 (freq), T (time)]``; a 16×16 convolution with strides
``(fstride, tstride)`` gives an ``f × t`` grid flattened frequency-major; the CLS and distillation
tokens are prepended, a learned positional table added, pre-LN blocks (qkv with bias, LayerNorm eps
1e-6, exact GELU) and a final LayerNorm follow; the mean of the two special tokens goes through
LayerNorm (eps 1e-5) + Linear to raw logits ``[B, label_dim]``.

Module names follow the original ``ASTModel`` (``v.blocks.0.attn.qkv``, ``mlp_head.1``...), so the
released key layout maps one to one.  DeiT's unused ImageNet heads (``v.head``, ``v.head_dist``) are not
modelled: loaders drop them (see :mod:`whisper_flamingo.checkpoints.ast`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whisper_flamingo.models.registry import register_model

log = logging.getLogger(__name__)

PATCH = 16
#: model_size → (width, depth, heads, ImageNet image side of the DeiT it starts from)
MODEL_SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny224": (192, 12, 3, 224),
    "small224": (384, 12, 6, 224),
    "base224": (768, 12, 12, 224),
    "base384": (768, 12, 12, 384),
}
BACKBONE_EPS = 1e-6
HEAD_EPS = 1e-5


def grid_size(fstride: int, tstride: int, input_fdim: int = 128, input_tdim: int = 1024) -> tuple[int, int]:
    """Patch grid ``(f, t)`` of a ``[input_fdim, input_tdim]`` spectrogram: ⌊(n − 16)/stride⌋ + 1 each."""
    if input_fdim < PATCH or input_tdim < PATCH:
        raise ValueError(f"AST needs at least {PATCH} mel bins and frames, got {input_fdim} x {input_tdim}")
    return (input_fdim - PATCH) // fstride + 1, (input_tdim - PATCH) // tstride + 1


@dataclass(frozen=True)
class ASTConfig:
    """The original ``ASTModel`` constructor's architecture arguments (the pretraining flags are loaders here)."""

    label_dim: int = 527
    fstride: int = 10
    tstride: int = 10
    input_fdim: int = 128
    input_tdim: int = 1024
    model_size: str = "base384"

    def __post_init__(self) -> None:
        if self.model_size not in MODEL_SIZES:
            raise ValueError(f"unknown AST model_size {self.model_size!r}; use one of {', '.join(MODEL_SIZES)}")
        if not (1 <= self.fstride <= PATCH and 1 <= self.tstride <= PATCH):
            raise ValueError(f"AST strides must be in 1..{PATCH}, got fstride={self.fstride}, tstride={self.tstride}")
        grid_size(self.fstride, self.tstride, self.input_fdim, self.input_tdim)

    @property
    def width(self) -> int:
        return MODEL_SIZES[self.model_size][0]

    @property
    def depth(self) -> int:
        return MODEL_SIZES[self.model_size][1]

    @property
    def heads(self) -> int:
        return MODEL_SIZES[self.model_size][2]

    @property
    def grid(self) -> tuple[int, int]:
        return grid_size(self.fstride, self.tstride, self.input_fdim, self.input_tdim)


class Attention(nn.Module):
    """Multi-head self-attention with one fused ``qkv`` projection (rows: q, then k, then v)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=BACKBONE_EPS)
        self.attn = Attention(width, heads)
        self.norm2 = nn.LayerNorm(width, eps=BACKBONE_EPS)
        self.mlp = Mlp(width, 4 * width)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, width: int, fstride: int, tstride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, width, kernel_size=PATCH, stride=(fstride, tstride))

    def forward(self, image: Tensor) -> Tensor:
        """``[B, 1, F, T]`` → ``[B, f·t, width]``, frequency-major."""
        return self.proj(image).flatten(2).transpose(1, 2)


class DistilledViT(nn.Module):
    """The DeiT-distilled backbone (``v`` in the original): tokens, positions, blocks, final norm."""

    def __init__(self, cfg: ASTConfig) -> None:
        super().__init__()
        f, t = cfg.grid
        self.patch_embed = PatchEmbed(cfg.width, cfg.fstride, cfg.tstride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, f * t + 2, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=BACKBONE_EPS)

    def forward(self, image: Tensor) -> Tensor:
        x = self.patch_embed(image)
        special = torch.cat([self.cls_token, self.dist_token], dim=1).expand(x.shape[0], -1, -1)
        x = torch.cat([special, x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class AST(nn.Module):
    """Audio Spectrogram Transformer: ``model(fbank [B, T, input_fdim])`` → logits ``[B, label_dim]``."""

    def __init__(self, cfg: ASTConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ASTConfig(**kwargs)
        self.v = DistilledViT(cfg)
        self.mlp_head = nn.Sequential(nn.LayerNorm(cfg.width, eps=HEAD_EPS), nn.Linear(cfg.width, cfg.label_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random init as the original without pretraining: timm ViT init, positions trunc-normal(0.02)."""
        for name, p in self.named_parameters():
            if p.is_meta:
                return
            if name.endswith("pos_embed") or name.endswith(("cls_token", "dist_token")):
                nn.init.trunc_normal_(p, std=0.02)
        for m in self.v.blocks.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def features(self, fbank: Tensor) -> Tensor:
        """The pooled embedding ``[B, width]``: (CLS + DIST)/2 after the final norm (the author's
        recommended clip embedding, ast #101)."""
        if fbank.dim() != 3 or fbank.shape[2] != self.cfg.input_fdim:
            raise ValueError(f"AST takes [batch, frames, {self.cfg.input_fdim}] fbank, got {tuple(fbank.shape)}")
        cfg = self.cfg
        if fbank.shape[1] < PATCH or grid_size(cfg.fstride, cfg.tstride, cfg.input_fdim, fbank.shape[1]) != cfg.grid:
            raise ValueError(f"AST built for input_tdim={cfg.input_tdim} ({cfg.grid[1]} time patches) got "
                             f"{fbank.shape[1]} frames; pad or cut to {cfg.input_tdim} (ast_input(target_length=...)) "
                             f"or load the model with input_tdim={fbank.shape[1]}")
        x = self.v(fbank.transpose(1, 2).unsqueeze(1))
        return (x[:, 0] + x[:, 1]) / 2

    def patch_tokens(self, fbank: Tensor) -> Tensor:
        """``v.patch_embed`` output ``[B, f·t, width]`` (before the special tokens and positions)."""
        return self.v.patch_embed(fbank.transpose(1, 2).unsqueeze(1))

    def forward(self, fbank: Tensor) -> Tensor:
        return self.mlp_head(self.features(fbank))

    @classmethod
    def from_checkpoint(cls, path: str | Path, **overrides: Any) -> AST:
        """Load the fixture form ``{"cfg", "model"}``, a released (``module.``-prefixed) AST file, a Hugging
        Face ``ASTForAudioClassification`` directory/state dict, or initialise from a DeiT ImageNet checkpoint;
        ``overrides`` use the original constructor's names (``fstride``, ``tstride``, ``input_fdim``,
        ``input_tdim``, ``label_dim``, ``model_size``).  See :func:`whisper_flamingo.checkpoints.ast.load_ast`."""
        from whisper_flamingo.checkpoints.ast import load_ast
        return load_ast(path, **overrides)


def build_ast(**config: Any) -> AST:
    """A randomly initialised :class:`AST` from :class:`ASTConfig` fields (registry builder)."""
    return AST(ASTConfig(**config))


_DEIT = "local file (DeiT ImageNet checkpoint {}; AST.from_checkpoint)"
for _size, _deit, _what in (
        ("tiny224", "deit_tiny_distilled_patch16_224", "AST on DeiT-Ti (192 wide, 3 heads)"),
        ("small224", "deit_small_distilled_patch16_224", "AST on DeiT-S (384 wide, 6 heads)"),
        ("base224", "deit_base_distilled_patch16_224", "AST on DeiT-B/224 (768 wide, 12 heads)"),
        ("base384", "deit_base_distilled_patch16_384", "AST on DeiT-B/384, the AudioSet-released size")):
    register_model(f"ast-{_size}", family="ast", builder=build_ast,
                   weights=("download (AST release: audioset_10_10_0.4593.pth; AST.from_checkpoint)"
                            if _size == "base384" else _DEIT.format(_deit)),
                   description=f"{_what}; stride 10, 1024 frames, 527 AudioSet classes",
                   config={"label_dim": 527, "fstride": 10, "tstride": 10, "input_fdim": 128, "input_tdim": 1024,
                           "model_size": _size})


__all__ = ["AST", "ASTConfig", "MODEL_SIZES", "grid_size", "build_ast"]
