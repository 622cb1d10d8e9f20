"""Whisper-AT's tagging head, TL-TR (time- and layer-wise transformer), in plain PyTorch.

A frozen Whisper's encoder gives the output of every block before ``ln_post``; mean-pooled by 20
along time (one step = 40 mel frames = 0.4 s) that is ``[L, T, D]`` per clip.  TL-TR
(Gong et al., Interspeech 2023; ``../shared/reference/audio_tagging.md`` §1.3):

1. TL-TR-512 only: ``down_layer`` = LayerNorm(D) -> Linear(D -> 512) on every vector;
2. ``time_tr``: one Whisper block with 1 head over each layer's T steps (the L layers share it);
3. mean over time -> ``[L, d]``; 4. ``layer_tr``: one block with 8 heads over the L layer vectors;
5. mean over layers -> ``[d]``; 6. ``mlp_layer`` = LayerNorm(d) -> Linear(d -> 527) logits.

The blocks are :class:`~whisper_flamingo.models.whisper.ResidualAttentionBlock` (pre-LN, key without
bias, scaled dot-product attention, which equals scaling q and k by head_dim^-1/4 each; exact GELU;
LayerNorm in float32).  No positional embedding anywhere.  State-dict keys are the original's
(``time_tr.attn.query.weight`` ... ``mlp_layer.1.bias``), so released checkpoints load strictly
(:mod:`whisper_flamingo.checkpoints.whisper_at`).

The ablation heads of the original training code (``head=``): ``mean_mlp`` (mean over layers and
time), ``last_mlp`` (last layer, time mean), ``wa_mlp`` (learned layer weights, initialised to
1/L and normalised by their sum, over time-averaged layers), ``mean_tr`` / ``last_tr`` / ``wa_tr``
(the time transformer on the layer mean / last layer / weighted layer average, then time mean); all
end in ``mlp_layer``.  ``inter_dim`` < ``rep_dim`` adds ``down_layer`` (``wa_tr`` with 512 is the
original's ``wa_down_tr_512_H``).  The learned layer weights are called ``layer_weight`` here (no
released checkpoint of an ablation head exists to take a name from).

Registry names (``whisper-flamingo models --family whisper-at``): ``whisper-at-tltr-<size>``
(full width, every Whisper size with a released head), ``whisper-at-tltr-512-<size>`` (small,
medium, large), and the ablations ``whisper-at-<head>-<size>`` (``mean-mlp``, ``last-mlp``,
``wa-mlp``, ``mean-tr``, ``last-tr``, ``wa-tr``, ``wa-tr-512``) for ``tiny.en`` and ``large-v1``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whisper_flamingo.models.registry import register_model
from whisper_flamingo.models.whisper import WHISPER_SIZES, LayerNorm, ResidualAttentionBlock

log = logging.getLogger(__name__)

__all__ = ["TLTR", "TLTRConfig", "HEADS", "POOL", "STEP_FRAMES", "LABEL_DIM", "build_tltr", "parse_mode",
           "pool_layers", "window_steps", "encoder_layers_for_width"]

#: encoder frames averaged into one pooled step (20 encoder frames = 40 mel frames = 0.4 s)
POOL = 20
#: mel frames (10 ms each) per pooled step
STEP_FRAMES = 2 * POOL
#: AudioSet classes
LABEL_DIM = 527
#: the head kinds (``tl_tr`` is TL-TR; the rest are the original's ablation baselines)
HEADS = ("tl_tr", "mean_mlp", "last_mlp", "wa_mlp", "mean_tr", "last_tr", "wa_tr")
_TR_HEADS = ("tl_tr", "mean_tr", "last_tr", "wa_tr")


def encoder_layers_for_width(width: int) -> int:
    """Encoder blocks of the Whisper size with this width (384 -> 4 ... 1280 -> 32)."""
    for d, _heads, enc, *_ in WHISPER_SIZES.values():
        if d == width:
            return enc
    raise ValueError(f"no Whisper size has width {width}")


@dataclass(frozen=True)
class TLTRConfig:
    """Hyper-parameters of a tagging head (the builder's keyword arguments).

    ``n_layer`` / ``rep_dim``: Whisper encoder blocks L and width D; ``inter_dim``: head width d
    (0 = D; 512 for TL-TR-512, which adds the down-projection); ``time_heads`` / ``layer_heads``:
    heads of the time / layer transformer; ``head``: one of :data:`HEADS`.
    """

    n_layer: int
    rep_dim: int
    inter_dim: int = 0
    time_heads: int = 1
    layer_heads: int = 8
    label_dim: int = LABEL_DIM
    head: str = "tl_tr"

    @property
    def width(self) -> int:
        return self.inter_dim or self.rep_dim

    @property
    def down(self) -> bool:
        return self.width != self.rep_dim


def parse_mode(mode: str) -> dict[str, int | str]:
    """Builder settings for an original mode string: package ``tl_tr_1_8`` / ``tl_down_tr_512_1_8``,
    training ``lw_tr_1_8`` / ``lw_down_tr_512_1_8``, ablations ``mean_mlp``, ``wa_tr_1``,
    ``wa_down_tr_512_1`` ...  (``<kind>[_down]_tr[_<d>]_<time heads>[_<layer heads>]``)."""
    parts = mode.split("_")
    if mode in ("mean_mlp", "last_mlp", "wa_mlp"):
        return {"head": mode}
    kind = {"tl": "tl_tr", "lw": "tl_tr", "mean": "mean_tr", "last": "last_tr", "wa": "wa_tr"}.get(parts[0])
    if kind is None or "tr" not in parts:
        raise ValueError(f"unknown Whisper-AT head mode {mode!r}; expected e.g. tl_tr_1_8, tl_down_tr_512_1_8, "
                         f"mean_mlp, wa_tr_1")
    rest = parts[parts.index("tr") + 1:]
    out: dict[str, int | str] = {"head": kind}
    try:
        nums = [int(p) for p in rest]
    except ValueError:
        raise ValueError(f"Whisper-AT head mode {mode!r}: expected integers after 'tr'") from None
    if "down" in parts:
        if not nums:
            raise ValueError(f"Whisper-AT head mode {mode!r}: 'down' needs a width (e.g. tl_down_tr_512_1_8)")
        out["inter_dim"] = nums.pop(0)
    if nums:
        out["time_heads"] = nums.pop(0)
    if nums and kind == "tl_tr":
        out["layer_heads"] = nums.pop(0)
    if nums:
        raise ValueError(f"Whisper-AT head mode {mode!r}: too many numbers")
    return out


def window_steps(at_time_res: float) -> int:
    """Pooled steps per tagging window of ``at_time_res`` seconds, which must be a positive multiple of
    0.4 s (checked in whole 10-ms frames, so 4.4 or 3 * 0.4 pass; ValueError otherwise)."""
    frames = round(float(at_time_res) * 100)
    if frames <= 0 or abs(float(at_time_res) * 100 - frames) > 1e-6 or frames % STEP_FRAMES:
        raise ValueError(f"at_time_res={at_time_res!r}: must be a positive multiple of 0.4 s "
                         f"(one pooled step = {STEP_FRAMES} mel frames), e.g. 0.4, 2, 4.4, 10")
    return frames // STEP_FRAMES


def pool_layers(layers: Tensor, pool: int = POOL) -> Tensor:
    """Mean-pool block outputs ``[..., T', D]`` by ``pool`` along time (non-overlapping; a last
    incomplete group is dropped, as ``avg_pool1d`` does) -> ``[..., T' // pool, D]``."""
    t = layers.shape[-2] // pool * pool
    x = layers[..., :t, :]
    return x.reshape(*x.shape[:-2], t // pool, pool, x.shape[-1]).mean(dim=-2)


class TLTR(nn.Module):
    """A Whisper-AT tagging head: ``[B, L, T, D]`` pooled encoder features -> ``[B, label_dim]`` logits."""

    def __init__(self, cfg: TLTRConfig):
        super().__init__()
        if cfg.head not in HEADS:
            raise ValueError(f"unknown Whisper-AT head {cfg.head!r}; choose one of {', '.join(HEADS)}")
        self.cfg = cfg
        d = cfg.width
        if cfg.down:
            self.down_layer = nn.Sequential(LayerNorm(cfg.rep_dim), nn.Linear(cfg.rep_dim, d))
        if cfg.head in _TR_HEADS:
            self.time_tr = ResidualAttentionBlock(d, cfg.time_heads)
        if cfg.head == "tl_tr":
            self.layer_tr = ResidualAttentionBlock(d, cfg.layer_heads)
        if cfg.head.startswith("wa_"):
            self.layer_weight = nn.Parameter(torch.full((cfg.n_layer,), 1.0 / cfg.n_layer))
        self.mlp_layer = nn.Sequential(LayerNorm(d), nn.Linear(d, cfg.label_dim))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> TLTR:
        """A head (eval mode) from a fixture ``{"cfg", "model"}``, a released Whisper-AT file (``at_model.``
        keys merged with Whisper's) or a training checkpoint (``module.``); see
        :func:`whisper_flamingo.checkpoints.whisper_at.load_tltr`."""
        from whisper_flamingo.checkpoints.whisper_at import load_tltr

        return load_tltr(path)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 4 or x.shape[-1] != self.cfg.rep_dim:
            raise ValueError(f"TL-TR expects features [B, L, T, {self.cfg.rep_dim}], got {tuple(x.shape)}")
        if self.cfg.head.startswith("wa_") and x.shape[1] != self.cfg.n_layer:
            raise ValueError(f"head {self.cfg.head} was built for {self.cfg.n_layer} layers, got {x.shape[1]}")

    def _time(self, x: Tensor) -> Tensor:
        """Time transformer over ``[N, T, d]`` sequences, then the time mean -> ``[N, d]``."""
        return self.time_tr(x).mean(dim=1)

    def _layer_average(self, x: Tensor) -> Tensor:
        """Learned weighted average over the layer axis (dim 1)."""
        w = self.layer_weight / self.layer_weight.sum()
        return torch.einsum("l,bl...->b...", w.to(x.dtype), x)

    def forward(self, features: Tensor) -> Tensor:
        """``features`` ``[B, L, T, D]`` -> logits ``[B, label_dim]`` (no sigmoid)."""
        head = self.cfg.head
        if head == "tl_tr":
            return self.mlp_layer(self.intermediates(features)["layer_pooled"])
        self._check(features)
        x = self.down_layer(features) if self.cfg.down else features
        if head == "mean_mlp":
            x = x.mean(dim=(1, 2))
        elif head == "last_mlp":
            x = x[:, -1].mean(dim=1)
        elif head == "wa_mlp":
            x = self._layer_average(x.mean(dim=2))
        elif head == "mean_tr":
            x = self._time(x.mean(dim=1))
        elif head == "last_tr":
            x = self._time(x[:, -1])
        else:  # wa_tr
            x = self._time(self._layer_average(x))
        return self.mlp_layer(x)

    def intermediates(self, features: Tensor) -> dict[str, Tensor]:
        """TL-TR's pooled stages for ``features`` ``[B, L, T, D]``: ``time_pooled`` ``[B, L, d]`` (after
        ``down_layer``, ``time_tr`` and the time mean) and ``layer_pooled`` ``[B, d]`` (after ``layer_tr`` and
        the layer mean: the classifier's input)."""
        if self.cfg.head != "tl_tr":
            raise ValueError(f"intermediates are TL-TR's; this head is {self.cfg.head}")
        self._check(features)
        x = self.down_layer(features) if self.cfg.down else features
        b, n_layer, t, d = x.shape
        time_pooled = self._time(x.reshape(b * n_layer, t, d)).reshape(b, n_layer, d)
        return {"time_pooled": time_pooled, "layer_pooled": self.layer_tr(time_pooled).mean(dim=1)}

    def tag_windows(self, seq: Tensor, time_resolution: float = 10) -> Tensor:
        """One stream's pooled features ``[L, T, D]`` -> ``[ceil(T / W), label_dim]``, W = window steps of
        ``time_resolution`` s; the time axis is zero-padded at the end to a multiple of W (the padding
        steps are attended to, as in the original package's ``ATModel``)."""
        if seq.dim() != 3:
            raise ValueError(f"tag_windows expects one stream's features [L, T, D], got {tuple(seq.shape)}")
        w = window_steps(time_resolution)
        n_layer, t, d = seq.shape
        s = max(1, math.ceil(t / w))
        x = F.pad(seq, (0, 0, 0, s * w - t))
        return self(x.reshape(n_layer, s, w, d).transpose(0, 1))


def build_tltr(**cfg: int | str) -> TLTR:
    """A randomly initialised head from :class:`TLTRConfig` fields."""
    return TLTR(TLTRConfig(**cfg))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# named configurations

#: Whisper sizes with a released full-width head (``<size>_ori``) and with a TL-TR-512 one (``<size>_low``)
_RELEASED = ("tiny.en", "tiny", "base.en", "base", "small.en", "small", "medium.en", "medium", "large-v1", "large-v2")
_RELEASED_512 = ("small.en", "small", "medium.en", "medium", "large-v1", "large-v2")
_ABLATION_SIZES = ("tiny.en", "large-v1")
_ABLATIONS = {"mean-mlp": {"head": "mean_mlp"}, "last-mlp": {"head": "last_mlp"}, "wa-mlp": {"head": "wa_mlp"},
              "mean-tr": {"head": "mean_tr"}, "last-tr": {"head": "last_tr"}, "wa-tr": {"head": "wa_tr"},
              "wa-tr-512": {"head": "wa_tr", "inter_dim": 512}}


def _size_config(size: str, **extra: int | str) -> dict[str, int | str]:
    d, _heads, n_layer, *_ = WHISPER_SIZES[size]
    return asdict(TLTRConfig(n_layer=n_layer, rep_dim=d, **extra))  # type: ignore[arg-type]


def _release(size: str, low: bool) -> str:
    return (f"download: Whisper-AT release '{size}_{'low' if low else 'ori'}' (at_model. keys merged with the "
            f"Whisper weights); load with TLTR.from_checkpoint(PATH)")


for _size in _RELEASED:
    register_model(f"whisper-at-tltr-{_size}", family="whisper-at", builder=build_tltr, config=_size_config(_size),
                   weights=_release(_size, False),
                   description=f"Whisper-AT TL-TR head (1-head time, 8-head layer transformer) on Whisper {_size}")
for _size in _RELEASED_512:
    register_model(f"whisper-at-tltr-512-{_size}", family="whisper-at", builder=build_tltr,
                   config=_size_config(_size, inter_dim=512), weights=_release(_size, True),
                   description=f"Whisper-AT TL-TR-512 head (down-projection to 512) on Whisper {_size}")
for _size in _ABLATION_SIZES:
    for _name, _extra in _ABLATIONS.items():
        register_model(f"whisper-at-{_name}-{_size}", family="whisper-at", builder=build_tltr,
                       config=_size_config(_size, **_extra),  # type: ignore[arg-type]
                       description=f"Whisper-AT ablation head {_name} on Whisper {_size}")
