"""Masked-autoencoder pre-training of SAT's ViT backbone (stage 1 of the SAT paper).

The encoder is an offline :class:`~whisper_flamingo.models.sat.AudioTransformer` (``token`` pooling,
BatchNorm front end).  Per clip: patch tokens with positions → keep a random 25 % (``mask_ratio`` 0.75,
argsort of uniform noise) → CLS in front → encoder blocks and norm.  The decoder (Linear D→512, a
learned mask token, a learned positional table of ``patches + 1`` rows initialised to zero, 512-wide
blocks with 8 heads, LayerNorm, then LayerNorm → Linear 512→256) predicts every 16×16 patch; the CLS
output is dropped.  The target is the **un-normalised** dB log-mel (front end without BatchNorm) cut
into the same frequency-major patches, each normalised by its own mean and √(var + 1e-6); the loss is
the MSE over a patch's 256 values, averaged over the masked patches only.
:func:`whisper_flamingo.checkpoints.sat.load_vit_into_sat` moves the trained encoder into a SAT.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from whisper_flamingo.models.registry import register_model
from whisper_flamingo.models.sat import AudioTransformer, Block, SATConfig


@dataclass(frozen=True)
class MAEConfig:
    """Decoder and masking settings; the encoder is described by a :class:`SATConfig`."""

    decoder_dim: int = 512
    decoder_depth: int = 4
    decoder_heads: int = 8
    mask_ratio: float = 0.75


def patchify(logmel: Tensor, patch: int = 16) -> Tensor:
    """``[B, F, T]`` → ``[B, (F/p)·(T/p), p·p]`` non-overlapping patches, frequency-major (trailing frames
    that do not fill a patch are dropped, as the patch convolution does)."""
    b, f, t = logmel.shape
    rows, cols = f // patch, t // patch
    x = logmel[:, : rows * patch, : cols * patch].reshape(b, rows, patch, cols, patch)
    return x.permute(0, 1, 3, 2, 4).reshape(b, rows * cols, patch * patch)


def masked_patch_loss(pred: Tensor, target: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """MSE between ``pred`` and per-patch normalised ``target`` (``[B, L, p²]``), averaged over the
    patches where ``mask`` (``[B, L]``, 1 = masked) is set."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)
    target = (target - mean) / (var + eps) ** 0.5
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def random_keep(tokens: Tensor, mask_ratio: float,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Keep ``round((1 − mask_ratio)·L)`` random tokens of ``[B, L, D]`` per sample.

    Returns (kept tokens ``[B, K, D]``, mask ``[B, L]`` with 1 where dropped, indices restoring the order).
    """
    b, n, d = tokens.shape
    keep = int(n * (1 - mask_ratio))
    noise = torch.rand(b, n, device=tokens.device, generator=generator)
    shuffle = noise.argsort(dim=1)
    restore = shuffle.argsort(dim=1)
    kept = tokens.gather(1, shuffle[:, :keep, None].expand(-1, -1, d))
    mask = torch.ones(b, n, device=tokens.device)
    mask[:, :keep] = 0
    return kept, mask.gather(1, restore), restore


class MAEDecoder(nn.Module):
    """Linear D→width, mask tokens, a learned positional table (``patches + 1`` rows, zero-initialised),
    transformer blocks, LayerNorm, then a LayerNorm → Linear head to ``patch²`` values per patch."""

    def __init__(self, input_dim: int, patches: int, patch_values: int, cfg: MAEConfig) -> None:
        super().__init__()
        d = cfg.decoder_dim
        self.input_proj = nn.Linear(input_dim, d)
        self.mask_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.zeros(1, patches + 1, d))
        self.blocks = nn.ModuleList(Block(d, cfg.decoder_heads, 4.0, fused=True) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.outputlayer = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, patch_values))

    def forward(self, latent: Tensor, restore: Tensor) -> Tensor:
        """Predicted patches ``[B, L, p²]`` from the latent (CLS first) and the order-restoring indices."""
        x = self.input_proj(latent)
        b, n = restore.shape
        fill = self.mask_token.expand(b, n + 1 - x.shape[1], -1)
        patches = torch.cat([x[:, 1:], fill], dim=1)
        patches = patches.gather(1, restore[:, :, None].expand(-1, -1, x.shape[-1]))
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed[:, : n + 1]
        for block in self.blocks:
            x = block(x)
        return self.outputlayer(self.norm(x))[:, 1:]


class AudioMAE(nn.Module):
    """``model(waveform [B, N])`` → (loss, predictions ``[B, L, 256]``, mask ``[B, L]``).

    Parameter names follow the original (``encoder.*`` an AudioTransformer, ``decoder.*``)."""

    def __init__(self, encoder: SATConfig, mae: MAEConfig | None = None) -> None:
        super().__init__()
        if encoder.streaming or encoder.pooling != "token":
            raise ValueError("the MAE encoder is an offline AudioTransformer with token pooling")
        self.mae = mae = mae or MAEConfig()
        self.encoder = AudioTransformer(encoder)
        patches = encoder.freq_rows * encoder.time_positions
        self.decoder = MAEDecoder(encoder.embed_dim, patches, encoder.patch_size ** 2, mae)

    def forward_encoder(self, logmel: Tensor, generator: torch.Generator | None = None
                        ) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the kept patches of the dB log-mel ``[B, F, T]``: (latent ``[B, 1+K, D]``, mask, restore)."""
        enc = self.encoder
        tokens = enc.patch_tokens(enc._normalised(logmel))
        kept, mask, restore = random_keep(tokens, self.mae.mask_ratio, generator)
        x = enc.with_cls(kept)
        for block in enc.blocks:
            x = block(x)
        return enc.norm(x), mask, restore

    def forward(self, waveform: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        logmel = self.encoder.log_mel(waveform)
        latent, mask, restore = self.forward_encoder(logmel, generator)
        pred = self.decoder(latent, restore)
        target = patchify(logmel, self.encoder.cfg.patch_size)  # the same patches as the convolution's
        return masked_patch_loss(pred, target, mask), pred, mask


def build_sat_mae(decoder_dim: int = 512, decoder_depth: int = 4, decoder_heads: int = 8, mask_ratio: float = 0.75,
                  **encoder: Any) -> AudioMAE:
    """An :class:`AudioMAE` from the decoder settings and the encoder's :class:`SATConfig` fields."""
    return AudioMAE(SATConfig(**{"pooling": "token", "streaming": False, "cache_length": 0, **encoder}),
                    MAEConfig(decoder_dim, decoder_depth, decoder_heads, mask_ratio))


for _size, _dim, _heads, _depth, _target in (("t", 192, 3, 4, 1000), ("s", 384, 6, 8, 1000), ("b", 768, 12, 8, 1012)):
    register_model(f"sat-mae-{_size}", family="sat", builder=build_sat_mae, weights="random init only",
                   config={**asdict(MAEConfig(decoder_depth=_depth)),
                           **asdict(SATConfig(_dim, 12, _heads, pooling="token", target_length=_target,
                                              cache_length=0, streaming=False))},
                   description=f"MAE pre-training of SAT's ViT-{_size.upper()} (mask ratio 0.75; decoder 512 wide)")
del _size, _dim, _heads, _depth, _target

__all__ = ["AudioMAE", "MAEConfig", "MAEDecoder", "build_sat_mae", "masked_patch_loss", "patchify", "random_keep"]
