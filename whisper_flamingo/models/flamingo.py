"""Whisper-Flamingo: Whisper with gated cross-attention to lip-video features (plain PyTorch).

Tensor flow (``fusion="separate"``, the released models)::

    mel (B, n_mels, T_m) -> Whisper encoder ---------------------------> xa (B, ceil(T_m/2), d)
    video (B, 1, T_v, 88, 88) -> video encoder (B, T_v, D_v)
        -> video_projection_scalar * video_projection(.) -----------------> xv (B, T_v, d)
    tokens (B, L) -> decoder blocks: [gated x-attn over xv, gated FF] + self-attn + x-attn over xa + MLP
        -> logits (B, L, n_vocab)

Parameter names are the original's, so a released checkpoint loads strictly once Lightning's
``model.`` prefix is stripped (:mod:`whisper_flamingo.checkpoints.flamingo`): the Whisper keys,
``encoder.video_model.*`` (AV-HuBERT: ``encoder.video_model.w2v_model.*`` for a fine-tuned encoder,
the English models; ``encoder.video_model.*`` for a self-supervised one, mWhisper-Flamingo; the
ResNet-18 front end alone: ``encoder.video_model.{frontend3D,trunk}.*``), ``encoder.video_projection``
(Linear D_v -> d), ``encoder.video_projection_scalar`` (a 0-dim parameter, init 1), and in every
decoder block ``gated_x_attn``, ``gated_x_attn_ln``, ``attn_gate``, ``ff_ln``, ``ff``, ``ff_gate``
(see :class:`~whisper_flamingo.models.whisper.ResidualAttentionBlock`).  Gates start at 0: the model
then computes exactly what the audio-only Whisper computes.

Modalities (``modality`` argument, and the per-batch modality dropout of training, see
:func:`draw_modality`): ``"av"`` both streams; ``"a"`` the video stream is zeroed (the original
``x_v = 0 * x_v``); ``"v"`` the audio encoder output is zeroed (``x = 0 * x``).  A zeroed stream is not
computed: it is a zero tensor.  Attention over identical all-zero keys averages identical values, so
its length does not matter; zero video features have length 1.

Fusion ``"lip-reader"`` (not used by released models): the video-encoder features are repeated x2 in
time (25 -> 50 Hz), projected and scaled, cropped to ``n_audio_ctx`` frames, given Whisper's
sinusoidal positions and passed through 3 new encoder-style blocks ``encoder.video_projection_blocks``
(the original's name); the result is ``xv`` and also *replaces the audio* as the input of Whisper's
encoder blocks (sinusoidal positions are added again there, as in the original's training forward;
its video-only decoding flag skipped that second addition, a train/test mismatch not reproduced here).
With this fusion the "audio" stream ``xa`` is video-derived and ``mel`` is not used.

Key-padding masks (``use_padding_mask``, the config key ``padding_mask``; off by default, as the
original): Whisper's encoder is masked as in :class:`~whisper_flamingo.models.whisper.AudioEncoder`
(``mel_frames``); the video encoder takes the video ``padding_mask`` as always (AV-HuBERT masks its
attention and zeroes padded frames before its positional convolution; the front end's only temporal
convolution sees zero-padded frames, i.e. its own zero padding); the decoder's cross-attention masks
the padded encoder frames and the gated cross-attention the padded video frames
(:meth:`WhisperFlamingo.stream_masks`).  A zeroed stream keeps the mask of its real length (the
audio, ``"v"``) or needs none (the one-frame zero video, ``"a"``).  The lip-reader fusion masks its
blocks with the video mask repeated x2 in time.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig
from whisper_flamingo.models.registry import create, register_model
from whisper_flamingo.models.resnet import ResEncoder
from whisper_flamingo.models.whisper import (
    KVCache,
    ModelDimensions,
    ResidualAttentionBlock,
    Whisper,
    audio_valid,
    mel_lengths,
    model_modality,
)

log = logging.getLogger(__name__)

FUSIONS = ("separate", "lip-reader")
MODALITIES = ("av", "a", "v")
LIP_READER_BLOCKS = 3


class FinetunedVideoEncoder(nn.Module):
    """A fine-tuned AV-HuBERT kept as ``w2v_model`` (the key layout ``video_model.w2v_model.*``)."""

    def __init__(self, w2v_model: AVHubert) -> None:
        super().__init__()
        self.w2v_model = w2v_model

    @property
    def out_dim(self) -> int:
        return self.w2v_model.out_dim

    def forward(self, video: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        return self.w2v_model(video, padding_mask)


def wrap_video_encoder(encoder: nn.Module) -> nn.Module:
    """The module stored as ``encoder.video_model``: a fine-tuned AV-HuBERT is wrapped (``w2v_model``)."""
    if isinstance(encoder, AVHubert) and encoder.mode == "finetuned":
        return FinetunedVideoEncoder(encoder)
    return encoder


def avhubert_of(video_model: nn.Module | None) -> AVHubert | None:
    """The AV-HuBERT inside ``encoder.video_model`` (None for the ResNet front end or no encoder)."""
    if isinstance(video_model, FinetunedVideoEncoder):
        return video_model.w2v_model
    return video_model if isinstance(video_model, AVHubert) else None


def fusion_from_config(av_fusion: str) -> str:
    """Map the ``av_fusion`` key to a fusion: ``lip-reader``, or ``separate`` for the rest.

    The original treated ``""`` and ``"early"`` as "no special fusion" (the video still reaches the
    gated layers); ``"None"`` means no video branch at all, i.e. not a Whisper-Flamingo model.
    """
    if av_fusion == "lip-reader":
        return "lip-reader"
    if av_fusion == "None":
        raise ConfigError("av_fusion: 'None' builds an audio-only model (no video branch); use a "
                          "config/audio/ config or set av_fusion: separate")
    return "separate"


def check_modality(modality: str) -> str:
    """The model's name (``av``, ``a``, ``v``) of ``modality``, also given as ``avsr``, ``asr``, ``vsr``."""
    return model_modality(modality)


def draw_modality(prob_use_av: float, prob_use_a: float, rng) -> str:
    """One modality-dropout draw for a whole batch: ``"av"``, ``"a"`` or ``"v"``.

    ``r = rng.random()`` (uniform in [0, 1)); ``r < prob_use_av`` -> ``"av"``; ``r < prob_use_av +
    prob_use_a`` -> ``"a"`` (video zeroed); else ``"v"`` (audio zeroed).  The original tested
    ``0 < r <= p``, which differs only on a set of probability zero.  ``rng`` is anything with
    ``random()`` (a ``numpy.random.Generator``, ``random.Random``); seed it identically on every
    DDP rank (e.g. :func:`modality_rng`) so that all ranks drop the same modality.
    """
    av, a = float(prob_use_av), float(prob_use_a)
    if av < 0 or a < 0 or av + a > 1.0 + 1e-9:
        raise ValueError(f"modality probabilities must be >= 0 with prob_use_av + prob_use_a <= 1, got {av}, {a}")
    r = float(rng.random())
    if r < av:
        return "av"
    if r < av + a:
        return "a"
    return "v"


def modality_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of the modality draw of training step ``step`` (same on every rank)."""
    return np.random.default_rng(np.random.SeedSequence([int(seed) % 2**63, int(step), 0x6d6f64]))


def make_video_encoder(use_av_hubert_encoder: bool = True, avhubert_config: AVHubertConfig | None = None,
                       mode: str = "finetuned") -> nn.Module:
    """A randomly initialised video encoder: AV-HuBERT (Large unless ``avhubert_config``) or the ResNet."""
    if use_av_hubert_encoder:
        return AVHubert(avhubert_config, mode=mode)
    return ResEncoder("prelu")


class WhisperFlamingo(nn.Module):
    """Whisper + video encoder + gated cross-attention decoder (see the module doc).

    ``WhisperFlamingo(whisper, video_encoder, video_dim=None, fusion="separate", gated=True)`` *adopts*
    the modules of ``whisper`` (no copy: the given Whisper's decoder blocks gain the gated layers and
    afterwards need ``xv``).  ``video_encoder`` is an :class:`AVHubert`, a :class:`ResEncoder`, any
    module mapping ``(video, padding_mask)`` to ``(B, T, D_v)``, or None when only precomputed video
    features will be used (``video_dim`` is then required).  New layers are created on the Whisper's
    device and dtype.
    """

    def __init__(self, whisper: Whisper, video_encoder: nn.Module | None, video_dim: int | None = None,
                 fusion: str = "separate", gated: bool = True) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        dims = whisper.dims
        if dims.n_audio_state != dims.n_text_state:
            raise ValueError("Whisper-Flamingo needs n_audio_state == n_text_state")
        if video_dim is None:
            if video_encoder is None or not hasattr(video_encoder, "out_dim"):
                raise ValueError("video_dim is required when the video encoder has no out_dim")
            video_dim = int(video_encoder.out_dim)
        self.dims = dims
        self.use_padding_mask = bool(getattr(whisper, "use_padding_mask", False))
        self.fusion = fusion
        self.gated = bool(gated)
        self.video_dim = int(video_dim)
        self.encoder = whisper.encoder
        self.decoder = whisper.decoder
        enc, d = self.encoder, dims.n_audio_state
        if video_encoder is not None:
            enc.video_model = wrap_video_encoder(video_encoder)
        else:
            enc.video_model = None
        ref = enc.conv1.weight
        with torch.device(ref.device):
            enc.video_projection = nn.Linear(self.video_dim, d, dtype=ref.dtype)
            enc.video_projection_scalar = nn.Parameter(torch.tensor(1.0, dtype=ref.dtype))
            if fusion == "lip-reader":
                enc.video_projection_blocks = nn.ModuleList(
                    ResidualAttentionBlock(d, dims.n_audio_head) for _ in range(LIP_READER_BLOCKS)).to(ref.dtype)
        if self.gated:
            for block in self.decoder.blocks:
                block.add_gated_x_attn()

    # ------------------------------------------------------------------------------------ construction
    @classmethod
    def from_whisper(cls, whisper_model: Whisper, video_encoder: nn.Module | None, video_dim: int | None = None,
                     fusion: str = "separate", gated: bool = True) -> WhisperFlamingo:
        """Wrap a (stage-1) Whisper; its modules are adopted, not copied (see the class doc)."""
        return cls(whisper_model, video_encoder, video_dim, fusion, gated)

    @classmethod
    def build(cls, dims: ModelDimensions, *, use_av_hubert_encoder: bool = True, av_fusion: str = "separate",
              add_gated_x_attn: int | bool = 1, avhubert_config: AVHubertConfig | None = None,
              video_mode: str = "finetuned", video_encoder: bool = True) -> WhisperFlamingo:
        """Random-init model from config values (works under ``torch.device("meta")``).

        ``video_encoder=False`` leaves the encoder out (precomputed features); D_v is then 1024 for
        AV-HuBERT (or ``avhubert_config.encoder_embed_dim``) and 512 for the ResNet.
        """
        fusion = fusion_from_config(av_fusion)
        enc = make_video_encoder(use_av_hubert_encoder, avhubert_config, video_mode) if video_encoder else None
        if enc is not None:
            dim = enc.out_dim
        elif use_av_hubert_encoder:
            dim = avhubert_config.encoder_embed_dim if avhubert_config is not None else 1024
        else:
            dim = ResEncoder.out_dim
        return cls(Whisper(dims), enc, dim, fusion, bool(add_gated_x_attn))

    @classmethod
    def from_names(cls, whisper: str, video: str, fusion: str = "separate", gated: bool = True) -> WhisperFlamingo:
        """Random-init model from registered configurations: a Whisper (e.g. ``whisper-small``) and a video
        encoder (e.g. ``avhubert-large``, ``lip-resnet18``); works under ``torch.device("meta")``."""
        return cls(create(whisper), create(video), None, fusion, gated)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> WhisperFlamingo:
        """A released Whisper-Flamingo ``.pt`` or a stage-2 checkpoint of ours, in eval mode; see
        :func:`whisper_flamingo.checkpoints.flamingo.load_stage2_checkpoint`."""
        from whisper_flamingo.checkpoints.flamingo import load_stage2_checkpoint

        return load_stage2_checkpoint(path)

    # ------------------------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return self.encoder.conv1.weight.device

    @property
    def is_multilingual(self) -> bool:
        return self.dims.n_vocab >= 51865

    @property
    def num_languages(self) -> int:
        return self.dims.n_vocab - 51765 - int(self.is_multilingual)

    @property
    def video_model(self) -> nn.Module | None:
        return self.encoder.video_model

    @property
    def video_encoder_kind(self) -> str | None:
        """``"avhubert-finetuned"``, ``"avhubert-pretrained"``, ``"resnet"``, another module's class name,
        or ``"features"`` without a video encoder (precomputed features)."""
        model = self.encoder.video_model
        if model is None:
            return "features"
        avhubert = avhubert_of(model)
        if avhubert is not None:
            return f"avhubert-{avhubert.mode}"
        return "resnet" if isinstance(model, ResEncoder) else type(model).__name__

    @property
    def avhubert(self) -> AVHubert | None:
        """The AV-HuBERT encoder (None with the ResNet front end or without a video encoder)."""
        return avhubert_of(self.encoder.video_model)

    def _stream_dtype(self, device: torch.device) -> torch.dtype:
        """dtype the encoder outputs have (autocast's when active): used for zeroed streams."""
        if torch.is_autocast_enabled(device.type):
            return torch.get_autocast_dtype(device.type)
        return self.encoder.conv1.weight.dtype

    # ------------------------------------------------------------------------------------ masks
    def mel_lengths(self, mel: Tensor, mel_frames: Tensor | None) -> Tensor | None:
        """Real mel frames per utterance when masks are on (``mel_frames``, or the whole width), else None."""
        return mel_lengths(mel, mel_frames) if self.use_padding_mask else None

    def audio_valid(self, audio_features: Tensor, mel_frames: Tensor | None = None) -> Tensor | None:
        """Key mask (B, T') of Whisper's encoder output (True = real); None without ``use_padding_mask``."""
        return audio_valid(audio_features, mel_frames) if self.use_padding_mask else None

    def video_valid(self, xv: Tensor, padding_mask: Tensor | None, rate: int = 1) -> Tensor | None:
        """Key mask (B, T_v) of ``xv`` from the video ``padding_mask`` (True = pad) repeated ``rate`` times in
        time; None without ``use_padding_mask``, all True without a padding mask."""
        if not self.use_padding_mask:
            return None
        b, n = xv.shape[:2]
        if padding_mask is None:
            return torch.ones(b, n, dtype=torch.bool, device=xv.device)
        valid = ~padding_mask.to(device=xv.device, dtype=torch.bool)
        if rate > 1:
            valid = valid.repeat_interleave(rate, dim=1)
        if valid.shape[1] < n:
            raise ValueError(f"video padding mask has {valid.shape[1]} frames but the video stream has {n}")
        return valid[:, :n]

    def stream_masks(self, xa: Tensor, xv: Tensor | None, mel_frames: Tensor | None = None,
                     padding_mask: Tensor | None = None, modality: str = "av") -> tuple[Tensor | None, Tensor | None]:
        """``(xa_valid, xv_valid)``: the decoder's key masks of what :meth:`encode` returned for ``modality``
        (``mel_frames``: real mel frames; ``padding_mask``: the video's, True = pad).  ``(None, None)``
        without ``use_padding_mask``; a zeroed one-frame video stream gets None (nothing is padded)."""
        if not self.use_padding_mask:
            return None, None
        modality = check_modality(modality)
        if self.fusion == "lip-reader":
            xa_valid = self.video_valid(xa, padding_mask, rate=2)
        else:
            xa_valid = self.audio_valid(xa, mel_frames)
        xv_valid = None if xv is None or modality == "a" else \
            self.video_valid(xv, padding_mask, rate=2 if self.fusion == "lip-reader" else 1)
        return xa_valid, xv_valid

    # ------------------------------------------------------------------------------------ encoders
    def embed_audio(self, mel: Tensor, mel_frames: Tensor | None = None) -> Tensor:
        """Whisper's encoder on ``mel`` (audio only, any fusion): ``(B, min(ceil(T/2), n_audio_ctx), d)``
        (``mel_frames``: real mel frames per utterance, used with ``use_padding_mask``)."""
        return self.encoder(mel, self.mel_lengths(mel, mel_frames))

    def video_features(self, video: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """The video encoder's output ``(B, T_v, D_v)`` for ``video (B, 1, T_v, 88, 88)``."""
        model = self.encoder.video_model
        if model is None:
            raise ValueError("this model has no video encoder; pass precomputed video features")
        if isinstance(model, ResEncoder):
            return model(video)  # the ResNet front end takes no padding mask
        return model(video, padding_mask)

    def project_video(self, features: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """Video-encoder features ``(B, T_v, D_v)`` -> ``xv``: ``scalar * Linear(.)`` (``separate``), or
        the lip-reader path (x2 in time, projection, crop, positions, 3 blocks; masked by the video
        ``padding_mask`` with ``use_padding_mask``)."""
        enc = self.encoder
        if not torch.is_autocast_enabled(features.device.type):
            features = features.to(enc.video_projection.weight.dtype)  # e.g. float16 feature files
        if self.fusion == "lip-reader":
            features = torch.repeat_interleave(features, 2, dim=1)  # 25 Hz -> 50 Hz
        xv = enc.video_projection_scalar * enc.video_projection(features)
        if self.fusion == "lip-reader":
            xv = xv[:, : enc.n_ctx]
            valid = self.video_valid(xv, padding_mask, rate=2)
            xv = (xv + enc.positional_embedding[: xv.shape[1]]).to(xv.dtype)
            for block in enc.video_projection_blocks:
                xv = block(xv, valid=valid)
        return xv

    def embed_video(self, video: Tensor | None = None, padding_mask: Tensor | None = None,
                    features: Tensor | None = None) -> Tensor:
        """``xv (B, T, d)`` from lip ``video (B, 1, T, 88, 88)`` (+ ``padding_mask (B, T)``, True = pad) or
        from precomputed video-encoder ``features (B, T, D_v)``."""
        if features is None:
            if video is None:
                raise ValueError("embed_video needs video or precomputed features")
            features = self.video_features(video, padding_mask)
        return self.project_video(features, padding_mask)

    def encode(self, mel: Tensor | None, video: Tensor | None = None, padding_mask: Tensor | None = None,
               modality: str = "av", video_features: Tensor | None = None,
               mel_frames: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``(xa, xv)`` for the decoder under ``modality`` (``av``/``a``/``v``, or the decoder's
        ``avsr``/``asr``/``vsr``; see the module doc): what the search needs.  ``mel_frames``: real mel
        frames per utterance (masks, with ``use_padding_mask``; their masks: :meth:`stream_masks`)."""
        modality = check_modality(modality)
        has_video = video is not None or video_features is not None
        if self.fusion == "lip-reader":
            if not has_video:
                raise ValueError("the lip-reader fusion needs video (or precomputed video features)")
            xv = self.embed_video(video, padding_mask, video_features)
            if modality == "v":
                xa = torch.zeros_like(xv)
            else:
                enc = self.encoder
                valid = self.video_valid(xv, padding_mask, rate=2)
                x = (xv + enc.positional_embedding[: xv.shape[1]]).to(xv.dtype)
                for block in enc.blocks:
                    x = block(x, valid=valid)
                xa = enc.ln_post(x)
            if modality == "a":
                xv = xv.new_zeros(xv.shape[0], 1, xv.shape[2])
            return xa, xv
        if mel is None:
            raise ValueError("the separate fusion needs mel")
        b, d = mel.shape[0], self.dims.n_audio_state
        dtype = self._stream_dtype(mel.device)
        if modality == "v":
            frames = min((mel.shape[-1] + 1) // 2, self.dims.n_audio_ctx)
            xa = torch.zeros(b, frames, d, dtype=dtype, device=mel.device)
        else:
            xa = self.embed_audio(mel, mel_frames)
        if modality == "a":
            xv = torch.zeros(b, 1, d, dtype=xa.dtype, device=mel.device)
        else:
            if not has_video:
                raise ValueError(f"modality {modality!r} needs video (or precomputed video features)")
            xv = self.embed_video(video, padding_mask, video_features)
        return xa, xv

    # ------------------------------------------------------------------------------------ decoder
    def _zero_xv(self, audio_features: Tensor | None, rows: int, device: torch.device) -> Tensor | None:
        if not self.gated:
            return None
        dtype = audio_features.dtype if audio_features is not None else self._stream_dtype(device)
        return torch.zeros(rows, 1, self.dims.n_text_state, dtype=dtype, device=device)

    def logits(self, tokens: Tensor, audio_features: Tensor | None, cache: KVCache | None = None,
               xv: Tensor | None = None, xa_valid: Tensor | None = None, xv_valid: Tensor | None = None) -> Tensor:
        """Decoder logits ``(B, L, n_vocab)`` float32.  With ``cache`` pass only the new tokens (``xa``
        and ``xv`` and their masks live in the cache).  Without one, ``xv=None`` means no video (zeros,
        i.e. ``"a"``); ``xa_valid`` / ``xv_valid``: the key masks of :meth:`stream_masks`."""
        if cache is not None:
            return self.decoder(tokens, None, cache)
        if xv is None:
            xv, xv_valid = self._zero_xv(audio_features, tokens.shape[0], tokens.device), None
        return self.decoder(tokens, audio_features, None, xv=xv, xa_valid=xa_valid,
                            xv_valid=xv_valid if self.gated else None)

    def new_kv_cache(self, audio_features: Tensor, beams: int = 1, xv: Tensor | None = None,
                     xa_valid: Tensor | None = None, xv_valid: Tensor | None = None) -> KVCache:
        """A decoding cache with ``B * beams`` rows; the audio and the gated video keys/values (and the
        key masks ``xa_valid`` / ``xv_valid``) are computed here, once per utterance.  ``xv=None``: no
        video (zeros)."""
        if xv is None:
            xv, xv_valid = self._zero_xv(audio_features, audio_features.shape[0], audio_features.device), None
        return self.decoder.new_kv_cache(audio_features, beams, xv=xv, xa_valid=xa_valid,
                                         xv_valid=xv_valid if self.gated else None)

    def forward(self, mel: Tensor | None, tokens: Tensor, video: Tensor | None = None,
                padding_mask: Tensor | None = None, modality: str = "av",
                video_features: Tensor | None = None, mel_frames: Tensor | None = None) -> Tensor:
        """Teacher-forced logits ``(B, L, n_vocab)`` for ``tokens`` under ``modality`` (``mel_frames``:
        real mel frames per utterance; with ``use_padding_mask`` every stream is masked)."""
        xa, xv = self.encode(mel, video, padding_mask, modality, video_features, mel_frames)
        xa_valid, xv_valid = self.stream_masks(xa, xv, mel_frames, padding_mask, modality)
        return self.decoder(tokens, xa, None, xv=xv if self.gated else None, xa_valid=xa_valid,
                            xv_valid=xv_valid if self.gated else None)

    def audio_only(self) -> Whisper:
        """The Whisper inside (its tensors shared, not copied), without the video branch and gated layers:
        what the original built for ``--av_fusion None`` before loading a stage-2 checkpoint non-strictly.
        Stage 2 freezes Whisper, so this is the stage-1 model the stage-2 one was trained from."""
        with torch.device("meta"):
            whisper = Whisper(self.dims)
        state = self.state_dict()
        whisper.load_state_dict({k: state[k] for k in whisper.state_dict()}, strict=True, assign=True)
        whisper.use_padding_mask = self.use_padding_mask
        return whisper.train(self.training)

    # ------------------------------------------------------------------------------------ parameters
    def gated_parameter_names(self) -> list[str]:
        """Names of the new decoder-side parameters (gated attention, gated FF, gates)."""
        keys = (".gated_x_attn", ".attn_gate", ".ff_ln.", ".ff.", ".ff_gate")
        return [n for n, _ in self.named_parameters() if n.startswith("decoder.") and any(k in n for k in keys)]


_RELEASED = "local file (Whisper-Flamingo release: whisper-flamingo_{})"
for _name, _whisper, _video, _weights, _what in (
        ("whisper-flamingo-small", "whisper-small", "avhubert-large", _RELEASED.format("en-x_small.pt"),
         "Whisper-Flamingo En-X small: Whisper small + AV-HuBERT Large (fine-tuned), gated cross-attention"),
        ("whisper-flamingo-medium", "whisper-medium", "avhubert-large",
         _RELEASED.format("en-x_medium.pt, lrs2_medium.pt"),
         "Whisper-Flamingo medium: Whisper medium + AV-HuBERT Large (fine-tuned), gated cross-attention"),
        ("whisper-flamingo-large-v2", "whisper-large-v2", "avhubert-large",
         _RELEASED.format("en-x_large.pt, en_large.pt"),
         "Whisper-Flamingo large: Whisper large-v2 + AV-HuBERT Large (fine-tuned), gated cross-attention"),
        ("mwhisper-flamingo-small", "whisper-small", "avhubert-large-pretrained",
         _RELEASED.format("multi-all_small.pt"),
         "mWhisper-Flamingo small: Whisper small + multilingual mAV-HuBERT Large (self-supervised path)"),
        ("mwhisper-flamingo-medium", "whisper-medium", "avhubert-large-pretrained",
         _RELEASED.format("multi-all_medium.pt"),
         "mWhisper-Flamingo medium: Whisper medium + multilingual mAV-HuBERT Large (self-supervised path)"),
        ("whisper-flamingo-demo", "whisper-tiny.en", "avhubert-tiny",
         "random init only (`make demo-av` trains it)",
         "the CPU demo's stage-2 model: Whisper tiny.en + AV-HuBERT tiny (light front end)")):
    register_model(_name, family="whisper-flamingo", builder=WhisperFlamingo.from_names, weights=_weights,
                   description=_what,
                   config={"whisper": _whisper, "video": _video, "fusion": "separate", "gated": True})


__all__ = ["WhisperFlamingo", "FinetunedVideoEncoder", "FUSIONS", "MODALITIES", "draw_modality", "modality_rng",
           "make_video_encoder", "wrap_video_encoder", "avhubert_of", "fusion_from_config", "check_modality"]
