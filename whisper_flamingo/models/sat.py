"""SAT: the Streaming Audio Transformer (Dinkel et al., 2023) and its offline ViT ("AudioTransformer").

Both take 16-kHz waveforms ``[B, N]`` and return 527 AudioSet **probabilities** (the sigmoid is inside
the model, as upstream).  The front end (:mod:`.sat_frontend`: 64-bin mel dB with a batch-wide 120-dB
floor) and a BatchNorm over the mel bins are part of the model; 16×16 patches with stride 16 give a grid
of 4 frequency rows × ⌊T/16⌋ time columns, with separate time and frequency positional tables; tokens are
frequency-major (index = f·t_len + t).

Streaming (:class:`SAT`): each call keeps, for every layer i, the tokens that *entered* block i
(Transformer-XL style, not keys/values); the next call prepends them, passed through that block's own
``norm1``, to the keys/values of block i.  The layer-0 memory additionally receives the last m entries
of the time table plus the frequency table before use (m = its time columns), as the released weights
were trained with.  The memory is ``[depth, B, tokens, D]``, truncated to the last
``4·(cache_length // 16)`` tokens.  Inputs longer than ``target_length`` frames are cut into pieces that
are processed in order with the memory; a trailing partial piece is dropped (``pad_last=False``) and the
clip output is the mean of the piece outputs.  :func:`stream` feeds a waveform chunk by chunk as the
upstream ``inference.py`` does.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from whisper_flamingo.models.registry import register_model
from whisper_flamingo.models.sat_frontend import sat_front_end

log = logging.getLogger(__name__)

POOLINGS = ("mean", "token", "logit", "dm")
EVAL_AVGS = ("mean", "max", "last")


@dataclass(frozen=True)
class SATConfig:
    """Hyper-parameters of an AudioTransformer (``streaming=False``) or SAT (``streaming=True``)."""

    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    pooling: str = "mean"
    target_length: int = 192  # frames per piece (10 ms each)
    cache_length: int = 192  # frames of memory (SAT only)
    streaming: bool = True
    pad_last: bool = False
    eval_avg: str = "mean"
    n_mels: int = 64
    patch_size: int = 16
    patch_stride: int = 16
    outputdim: int = 527
    sample_rate: int = 16000

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"SAT pooling '{self.pooling}' is not one of {', '.join(POOLINGS)}")
        if self.eval_avg not in EVAL_AVGS:
            raise ValueError(f"SAT eval_avg '{self.eval_avg}' is not one of {', '.join(EVAL_AVGS)}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"SAT embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")

    @property
    def freq_rows(self) -> int:
        return (self.n_mels - self.patch_size) // self.patch_stride + 1

    @property
    def time_positions(self) -> int:
        """Entries of the time table: (target + cache)/stride for SAT, target/stride for the ViT."""
        frames = self.target_length + (self.cache_length if self.streaming else 0)
        return (frames - self.patch_size) // self.patch_stride + 1

    @property
    def cache_tokens(self) -> int:
        """Tokens kept per layer between calls: 4 frequency rows × (cache_length // stride)."""
        return self.freq_rows * (self.cache_length // self.patch_stride)


class Attention(nn.Module):
    """Multi-head self-attention; ``fused`` keeps the ViT's ``qkv`` layout, else SAT's ``to_q``/``to_kv``
    whose keys/values may be preceded by (already normed) memory rows."""

    def __init__(self, dim: int, heads: int, fused: bool) -> None:
        super().__init__()
        self.heads, self.scale, self.fused = heads, (dim // heads) ** -0.5, fused
        if fused:
            self.qkv = nn.Linear(dim, 3 * dim)
        else:
            self.to_q = nn.Linear(dim, dim)
            self.to_kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        if self.fused:
            if memory is not None:
                raise ValueError("the offline AudioTransformer has no memory; use SAT for streaming")
            q, k, v = self.qkv(x).chunk(3, dim=-1)
        else:
            q = self.to_q(x)
            k, v = self.to_kv(x if memory is None else torch.cat([memory, x], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.reshape(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2) for t in (q, k, v))
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-LN transformer block (LayerNorm eps 1e-6); memory rows go through this block's ``norm1``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, fused: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, fused)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, memory: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.norm1(x), None if memory is None else self.norm1(memory))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class _SwapFreqChannel(nn.Module):
    """``[B, 1, F, T]`` <-> ``[B, F, 1, T]`` (so that a BatchNorm2d normalises each mel bin)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.transpose(1, 2)


class AudioTransformer(nn.Module):
    """The offline ViT of the SAT repository (``audiotransformer_tiny/small/base``): ``model(wav [B, N])``
    → probabilities ``[B, 527]``; inputs longer than ``target_length + 15`` frames are cut into
    ``target_length`` pieces (the last zero-padded when ``pad_last``) whose outputs are averaged.  Unlike
    upstream, whose split drops the last piece when the length is an exact multiple of ``target_length``,
    every full piece counts."""

    def __init__(self, cfg: SATConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embed_dim
        self.front_end = sat_front_end(cfg.sample_rate, cfg.n_mels)
        self.init_bn = nn.Sequential(_SwapFreqChannel(), nn.BatchNorm2d(cfg.n_mels, momentum=0.01),
                                     _SwapFreqChannel())
        self.patch_embed = PatchEmbed(d, cfg.patch_size, cfg.patch_stride)
        if cfg.pooling == "token":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
            self.token_pos_embed = nn.Parameter(torch.randn(1, d) * 0.02)
        self.time_pos_embed = nn.Parameter(torch.randn(1, d, 1, cfg.time_positions) * 0.02)
        self.freq_pos_embed = nn.Parameter(torch.randn(1, d, cfg.freq_rows, 1) * 0.02)
        self.blocks = nn.ModuleList(Block(d, cfg.num_heads, cfg.mlp_ratio, fused=not cfg.streaming)
                                    for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.outputlayer = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, cfg.outputdim))

    @property
    def outputs_probabilities(self) -> bool:
        """The output is a probability (sigmoid inside the model) unless pooling is ``logit``; the tagging
        task then trains with BCE on probabilities, as upstream's ``BCELoss``."""
        return self.cfg.pooling != "logit"

    # ------------------------------------------------------------------ pieces of the computation
    def log_mel(self, waveform: Tensor) -> Tensor:
        """dB log-mel ``[B, n_mels, 1 + N // 160]`` (floor over the whole batch), before BatchNorm."""
        if waveform.dim() != 2:
            raise ValueError(f"SAT models take 16-kHz waveforms [batch, samples], got shape {tuple(waveform.shape)} "
                             "(a single clip: wav[None])")
        return self.front_end(waveform)

    def _normalised(self, logmel: Tensor) -> Tensor:
        """``[B, F, T]`` (or ``[B, 1, F, T]``) dB → BatchNorm'd ``[B, 1, F, T]``."""
        return self.init_bn(logmel if logmel.dim() == 4 else logmel.unsqueeze(1))

    def patch_tokens(self, x: Tensor) -> Tensor:
        """Patch grid of ``[B, 1, F, T]`` + time/frequency positions, flattened frequency-major ``[B, L, D]``."""
        x = self.patch_embed(x)
        t = x.shape[-1]
        if t > self.time_pos_embed.shape[-1]:
            raise ValueError(f"{t} time patches exceed the {self.time_pos_embed.shape[-1]} positions of this model")
        x = x + self.time_pos_embed[:, :, :, :t]
        x = x + self.freq_pos_embed
        return x.flatten(2).transpose(1, 2)

    def with_cls(self, x: Tensor) -> Tensor:
        """``x`` with the CLS token (plus its position) in front under ``token`` pooling, else unchanged."""
        if self.cfg.pooling != "token":
            return x
        cls = self.cls_token.expand(x.shape[0], -1, -1) + self.token_pos_embed
        return torch.cat([cls, x], dim=1)

    def _tokens(self, x: Tensor) -> Tensor:
        return self.with_cls(self.patch_tokens(x))

    def _head(self, x: Tensor) -> Tensor:
        pooling = self.cfg.pooling
        if pooling == "token":
            return self.outputlayer(x[:, 0]).sigmoid()
        if pooling == "dm":
            x = x.reshape(x.shape[0], self.cfg.freq_rows, -1, x.shape[-1]).mean(1)
            return self.outputlayer(x).sigmoid().mean(1)
        out = self.outputlayer(x.mean(1))
        return out if pooling == "logit" else out.sigmoid()

    def _average(self, outs: list[Tensor]) -> Tensor:
        if self.cfg.eval_avg == "last":
            return outs[-1]
        stacked = torch.stack(outs)
        return stacked.mean(0) if self.cfg.eval_avg == "mean" else stacked.max(0).values

    def forward_features(self, x: Tensor) -> Tensor:
        x = self._tokens(x)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_spectrogram(self, logmel: Tensor) -> Tensor:
        """Probabilities ``[B, 527]`` from the dB log-mel ``[B, n_mels, T]``."""
        x = self._normalised(logmel)
        target = self.cfg.target_length
        if x.shape[-1] <= target + self.cfg.patch_stride - 1:
            return self._head(self.forward_features(x))
        pieces = list(x.split(target, dim=-1))
        if pieces[-1].shape[-1] < target:
            pieces[-1] = F.pad(pieces[-1], (0, target - pieces[-1].shape[-1])) if self.cfg.pad_last else None
        pieces = [p for p in pieces if p is not None]
        b = x.shape[0]
        out = self._head(self.forward_features(torch.cat(pieces, dim=0)))
        return self._average(list(out.split(b, dim=0)))

    def forward(self, waveform: Tensor) -> Tensor:
        """Probabilities ``[B, 527]`` of 16-kHz waveforms ``[B, N]``."""
        return self.forward_spectrogram(self.log_mel(waveform))

    @classmethod
    def from_checkpoint(cls, path: str | Path, **overrides: Any) -> AudioTransformer:
        """Load a fixture ``{"cfg", "model"}`` or a released file; see :mod:`whisper_flamingo.checkpoints.sat`."""
        from whisper_flamingo.checkpoints.sat import load_sat

        return load_sat(path, streaming=False, **overrides)


class SAT(AudioTransformer):
    """Streaming Audio Transformer: ``model(wav)`` → probabilities ``[B, 527]``;
    ``model(chunk, cache=memory, return_cache=True)`` → ``(probabilities, memory)``."""

    def __init__(self, cfg: SATConfig) -> None:
        if not cfg.streaming:
            raise ValueError("SAT needs streaming=True (AudioTransformer is the offline model)")
        super().__init__(cfg)

    def _reposition(self, memory: Tensor) -> Tensor:
        """Layer-0 memory ``[B, n, D]`` read as 4 frequency rows × n/4 columns, plus the last n/4 time
        positions and the frequency positions (added on top of those it already holds)."""
        b, n, d = memory.shape
        rows = self.cfg.freq_rows
        if n % rows:
            raise ValueError(f"a layer-0 memory of {n} tokens cannot be read as {rows} frequency rows")
        m = n // rows
        grid = memory.transpose(1, 2).reshape(b, d, rows, m)
        grid = grid + self.time_pos_embed[:, :, :, self.time_pos_embed.shape[-1] - m:]
        grid = grid + self.freq_pos_embed
        return grid.flatten(2).transpose(1, 2)

    def _piece(self, x: Tensor, cache: Tensor | None) -> tuple[Tensor, Tensor]:
        """One piece ``[B, 1, F, T ≤ target]``: (head output, new memory ``[depth, B, tokens, D]``)."""
        x = self._tokens(x)
        keep = self.cfg.cache_tokens
        memories = []
        for i, block in enumerate(self.blocks):
            memory = None if cache is None else cache[i]
            if memory is not None and i == 0:
                memory = self._reposition(memory)
            stored = x if memory is None else torch.cat([memory, x], dim=1)
            memories.append(stored[:, max(stored.shape[1] - keep, 0):].detach())
            x = block(x, memory)
        return self._head(self.norm(x)), torch.stack(memories)

    def forward_spectrogram(self, logmel: Tensor, cache: Tensor | None = None,  # type: ignore[override]
                            return_cache: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """As :meth:`forward`, from the dB log-mel ``[B, n_mels, T]``."""
        x = self._normalised(logmel)
        target = self.cfg.target_length
        if cache is not None and cache.shape[1] != x.shape[0]:
            cache = cache.expand(-1, x.shape[0], -1, -1) if cache.shape[1] == 1 else cache
        if x.shape[-1] <= target:
            out, cache = self._piece(x, cache)
            return (out, cache) if return_cache else out
        pieces = list(x.split(target, dim=-1))
        last = pieces[-1].shape[-1]
        if last < target:
            if self.cfg.pad_last:
                stride = self.cfg.patch_stride
                pieces[-1] = F.pad(pieces[-1], (0, -last % stride))
            else:
                pieces.pop()
        outs = []
        for piece in pieces:
            out, cache = self._piece(piece, cache)
            outs.append(out)
        out = self._average(outs)
        return (out, cache) if return_cache else out

    def forward(self, waveform: Tensor, cache: Tensor | None = None,  # type: ignore[override]
                return_cache: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """Probabilities ``[B, 527]`` of ``[B, N]`` 16-kHz audio, starting from ``cache`` (None: empty
        memory); with ``return_cache`` also the memory ``[depth, B, tokens, D]`` to pass to the next call."""
        return self.forward_spectrogram(self.log_mel(waveform), cache, return_cache)

    @property
    def silence_samples(self) -> int:
        """Samples of the zeros the upstream CLI primes the memory with: cache_length/100 seconds."""
        return int(self.cfg.cache_length / 100 * self.cfg.sample_rate)

    @torch.no_grad()
    def silence_cache(self, batch_size: int = 1) -> Tensor:
        """The initial memory of ``inference.py``: the memory after ``cache_length/100`` s of zeros
        (one piece, processed with empty memory, in eval mode), ``[depth, batch_size, tokens, D]``."""
        param, training = self.time_pos_embed, self.training
        zeros = torch.zeros(1, self.silence_samples, device=param.device, dtype=param.dtype)
        try:  # eval mode: BatchNorm uses (and keeps) its running statistics
            _, memory = self.eval()(zeros, return_cache=True)
        finally:
            self.train(training)
        return memory.expand(-1, batch_size, -1, -1).contiguous()

    @classmethod
    def from_checkpoint(cls, path: str | Path, **overrides: Any) -> SAT:  # type: ignore[override]
        """Load a fixture ``{"cfg", "model"}`` or a released SAT file (state dict at the top or under
        ``model``), strictly; see :func:`whisper_flamingo.checkpoints.sat.load_sat`."""
        from whisper_flamingo.checkpoints.sat import load_sat

        return load_sat(path, streaming=True, **overrides)


class Streamer:
    """Chunk-by-chunk tagging state: ``streamer(chunk_1d)`` → probabilities ``[527]`` (None for a chunk too
    short to hold one 16-frame patch, which upstream would fail on).  A SAT starts from ``cache`` when given,
    else from :meth:`SAT.silence_cache` (``init="silence"``, the upstream CLI) or no memory (``"empty"``,
    as in training) and carries ``self.cache`` on; an offline :class:`AudioTransformer` tags each chunk alone."""

    def __init__(self, model: AudioTransformer, init: str = "silence", cache: Tensor | None = None) -> None:
        if init not in ("silence", "empty"):
            raise ValueError(f"init must be 'silence' or 'empty', not '{init}'")
        self.model, self.streaming = model, isinstance(model, SAT)
        if self.streaming and cache is None and init == "silence":
            cache = model.silence_cache()  # type: ignore[union-attr]
        self.cache = cache
        self.min_samples = max((model.cfg.patch_size - 1) * 160, 257)  # 1 + N // 160 frames ≥ one patch

    @torch.no_grad()
    def __call__(self, chunk: Tensor) -> Tensor | None:
        if chunk.dim() != 1:
            raise ValueError(f"a stream chunk is one 1-D waveform, got shape {tuple(chunk.shape)}")
        if chunk.numel() < self.min_samples:
            log.debug("skipping a chunk of %d samples (shorter than one patch)", chunk.numel())
            return None
        if self.streaming:
            out, self.cache = self.model(chunk[None], cache=self.cache, return_cache=True)
        else:
            out = self.model(chunk[None])
        return out[0]


def stream(model: AudioTransformer, waveform: Tensor, chunk_samples: int, init: str = "silence",
           cache: Tensor | None = None, return_cache: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
    """Per-chunk probabilities ``[n_chunks, 527]`` of a 1-D 16-kHz ``waveform``, as upstream ``inference.py``.

    The waveform is split into ``chunk_samples`` pieces (the last may be shorter; one too short for a
    single patch is left out).  Memory handling as :class:`Streamer`; ``return_cache`` also returns the
    final memory, which the upstream CLI carries on to the next file (pass it back as ``cache``).
    """
    if waveform.dim() != 1:
        raise ValueError(f"stream() takes one 1-D waveform, got shape {tuple(waveform.shape)}")
    streamer = Streamer(model, init, cache)
    outs = [p for p in map(streamer, waveform.split(chunk_samples)) if p is not None]
    probs = torch.stack(outs) if outs else waveform.new_zeros(0, model.cfg.outputdim)
    return (probs, streamer.cache) if return_cache else probs


def build_sat(**config: Any) -> AudioTransformer:
    """An :class:`SAT` (``streaming=True``) or offline :class:`AudioTransformer` from :class:`SATConfig` fields."""
    cfg = SATConfig(**config)
    return SAT(cfg) if cfg.streaming else AudioTransformer(cfg)


# ------------------------------------------------------------------------------------------ registry
_SIZES = {"t": (192, 3, "mean"), "s": (384, 6, "token"), "b": (768, 12, "mean")}
_VIT = {"t": "audiotransformer_tiny_mAP_44_15.pt", "s": "audiotransformer_small_mAP_45_68.pt",
        "b": "audiotransformer_base_mAP_47_40.pt"}
_RELEASED = {("t", 2): "SAT_T_stream2s_mAP_43_34.pt", ("t", 1): "SAT_T_stream1s_mAP_40_11.pt",
             ("s", 2): "SAT_S_stream2s_mAP_43_37.pt", ("s", 1): "SAT_S_stream1s_mAP_40_55.pt",
             ("b", 2): "SAT_B_stream2s_mAP_45_29.pt", ("b", 1): "SAT_B_stream1s_mAP_41_37.pt"}
_ZENODO = "download (SAT release, zenodo 7964975: {})"

for _size, (_dim, _heads, _pool) in _SIZES.items():
    register_model(f"sat-vit-{_size}", family="sat", builder=build_sat, weights=_ZENODO.format(_VIT[_size]),
                   config=asdict(SATConfig(_dim, 12, _heads, pooling=_pool, target_length=1012, cache_length=0,
                                           streaming=False, pad_last=True)),
                   description=f"SAT's offline ViT-{_size.upper()}/16 (AudioTransformer), 10-s context")
    for _sec in (2, 1):
        _frames = 192 if _sec == 2 or _size == "s" else 96  # upstream SAT_S_1s keeps the 2-s lengths
        _note = "; upstream registry lengths 192/192 (as its released checkpoint)" if _sec == 1 and _size == "s" else ""
        register_model(f"sat-{_size}-{_sec}s", family="sat", builder=build_sat,
                       weights=_ZENODO.format(_RELEASED[_size, _sec]),
                       config=asdict(SATConfig(_dim, 12, _heads, pooling=_pool, target_length=_frames,
                                               cache_length=_frames)),
                       description=f"Streaming Audio Transformer {_size.upper()}, {_sec}-s chunks{_note}")


__all__ = ["SAT", "AudioTransformer", "SATConfig", "Attention", "Block", "build_sat", "stream", "Streamer", "POOLINGS"]
