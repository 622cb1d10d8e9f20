"""The front door: one call from a recording (audio or video) to openai-whisper's result dict.

:func:`transcribe` is the one implementation behind ``whisper-flamingo transcribe``, the ``tag``
command, the Python API (:func:`whisper_flamingo.load_model`) and the web page.  Long-form decoding is
:mod:`whisper_flamingo.decoding.seek`: openai-whisper's seek / timestamp-token loop for timestamp-trained
models, energy-cut windows for fine-tuned checkpoints.  Optional in the same pass: lip video (mouth
crops) for a Whisper-Flamingo model, noise mixed in at an SNR, word timings from cross-attention, and
Whisper-AT sound tags from the encoder's layer taps.

Whisper-AT tags, ours vs the original package: its tag rows follow Whisper's seek, so a row may be
predicted from features of another time span; here each encoded window's steps (every encoder block's
output before ``ln_post``, mean-pooled by 20: 0.4 s per step) are laid on one time line at the window's
start, later windows overwriting earlier ones where they overlap, and row ``i`` is tagged from the steps
of seconds ``[i * at_time_res, (i + 1) * at_time_res)`` (past the last window the head zero-pads, as the
original's head does).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from whisper_flamingo.data.audio import (
    INT16_SCALE,
    N_SAMPLES_30S,
    SAMPLE_RATE,
    load_audio,
    log_mel,
    pad_or_trim,
    to_unit_range,
)
from whisper_flamingo.decoding.search import SearchOptions
from whisper_flamingo.decoding.seek import (
    DEFAULT_TEMPERATURES,
    N_FRAMES,
    LongFormOptions,
    Window,
    run_seek,
    run_windows,
)
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.models.whisper_at import POOL, STEP_FRAMES, TLTR, pool_layers, window_steps

log = logging.getLogger(__name__)

__all__ = ["transcribe", "load_media_audio", "detect_language", "language_probs", "timestamp_trained",
           "WINDOW_SECONDS", "VIDEO_SUFFIXES"]

WINDOW_SECONDS = 30
HOP = 160  # samples per mel frame
VIDEO_FRAME_MEL = 4  # mel frames (10 ms) per video frame (25 fps)
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4a", ".aac", ".mp3", ".opus")


def load_media_audio(path: str | os.PathLike) -> np.ndarray:
    """Mono 16-kHz float audio in ``[-1, 1)`` of an audio file, or of a video's (or compressed file's)
    first audio stream (decoded with PyAV)."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        return to_unit_range(load_audio(path))
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise DataError("has no audio stream; tag an audio file or a video with sound", path=str(path))
            resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
            chunks = []
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except av.error.FFmpegError as err:
        raise DataError(f"cannot decode its audio ({err}); re-create the file", path=str(path)) from None
    if not chunks:
        raise DataError("audio stream has no samples", path=str(path))
    return np.concatenate(chunks).astype(np.float32)


def _as_audio(audio: str | os.PathLike | np.ndarray | Tensor) -> np.ndarray:
    if isinstance(audio, (str, os.PathLike)):
        return load_media_audio(audio)
    out = audio.detach().cpu().numpy() if torch.is_tensor(audio) else np.asarray(audio)
    return np.ascontiguousarray(out, dtype=np.float32).reshape(-1)


def _tokenizer(model, language: str | None, task: str):
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(model.is_multilingual, num_languages=model.num_languages, language=language, task=task)


@torch.no_grad()
def language_probs(model, audio_features: Tensor, xv: Tensor | None = None) -> dict[str, float]:
    """Language code -> probability for one encoded window ``audio_features`` (1, T', d): the softmax of
    the logits after ``<|startoftranscript|>`` over the language tokens only (openai's ``detect_language``)."""
    tok = _tokenizer(model, None, "transcribe")
    cache = model.new_kv_cache(audio_features[:1], beams=1, xv=xv)
    logits = model.logits(torch.tensor([[tok.sot]], device=audio_features.device), None, cache=cache)[0, -1]
    ids = torch.tensor(tok.all_language_tokens, device=logits.device)
    masked = torch.full_like(logits, -math.inf)
    masked[ids] = logits[ids]
    probs = masked.softmax(dim=-1).cpu()
    return {code: float(probs[t]) for t, code in zip(tok.all_language_tokens, tok.all_language_codes)}


def detect_language(model, audio_features: Tensor, xv: Tensor | None = None) -> str:
    """The most likely language code of one encoded window ``audio_features`` (1, T', d)."""
    probs = language_probs(model, audio_features, xv)
    return max(probs, key=probs.get)


def timestamp_trained(model) -> bool:
    """Whether ``model`` predicts timestamp tokens (OpenAI's released weights): the attribute
    ``timestamp_trained`` that :func:`whisper_flamingo.load_model` sets from where the weights came from
    (False when unset: our fine-tuned checkpoints are trained with ``<|notimestamps|>``)."""
    return bool(getattr(model, "timestamp_trained", False))


def _video_tensor(video: np.ndarray | Tensor) -> Tensor:
    """Mouth crops ``(T, H, W)`` (uint8, 25 fps) -> normalised ``(T, 88, 88)``; float input is taken as
    already normalised."""
    from whisper_flamingo.data.video import transform_video

    if torch.is_tensor(video) and video.is_floating_point():
        return video.float()
    return transform_video(np.asarray(video))


def _mix_noise(samples: np.ndarray, noise: str | os.PathLike | np.ndarray, snr: float) -> np.ndarray:
    """``samples`` ([-1, 1)) with ``noise`` (a file or [-1, 1) samples) added at ``snr`` dB (data/noise.py)."""
    from whisper_flamingo.data.noise import mix_at_snr

    noise_units = (_as_audio(noise) if not isinstance(noise, np.ndarray) else noise.astype(np.float32)) * INT16_SCALE
    if noise_units.size == 0:
        raise DataError("the noise has no samples", reason="empty_file")
    return (mix_at_snr(samples * INT16_SCALE, noise_units, float(snr)) / INT16_SCALE).astype(np.float32)


class _Encoder:
    """Encodes the windows the long-form loop asks for (audio, video slice, modality) and keeps each
    window's pooled Whisper-AT layer taps from the same pass (``at_head``)."""

    def __init__(self, model, video: Tensor | None, modality: str, tags: bool) -> None:
        self.model, self.video, self.modality, self.tags = model, video, modality, tags
        self.pooled: list[tuple[int, Tensor]] = []  # (first mel frame, [L, 75, D])
        self.n_mels = model.dims.n_mels

    def __call__(self, window: Window) -> tuple[Tensor, Tensor | None]:
        model = self.model
        device = model.device
        mel = window.mel.to(device)[None]
        dtype = next(model.parameters()).dtype
        mel = mel.to(dtype) if dtype in (torch.float16, torch.bfloat16) else mel
        layers = None
        if self.tags:
            taps: list[Tensor] = []
            features = model.encoder(mel, model.mel_lengths(mel, None), taps=taps)
            layers = torch.stack(taps, dim=1)
            self.pooled.append((window.seek, pool_layers(layers.float(), POOL)[0].cpu()))
        if self.video is None or self.modality == "asr":
            if getattr(model, "video_encoder_kind", None) is None:
                return (features if layers is not None else model.embed_audio(mel)), None
            xa, xv = model.encode(mel, None, None, "asr")
            return (features if layers is not None else xa), xv
        first = window.seek // VIDEO_FRAME_MEL
        last = first + max(1, math.ceil(window.frames / VIDEO_FRAME_MEL))
        clip = self.video[first:last]
        if clip.shape[0] == 0:  # past the end of the video: this window is audio only
            xa, xv = model.encode(mel, None, None, "asr")
            return (features if layers is not None else xa), xv
        clip = clip.to(device=device, dtype=dtype)[None, None]
        xa, xv = model.encode(mel, clip, None, self.modality)
        if layers is not None and self.modality != "vsr":
            xa = features
        return xa, xv


@torch.no_grad()
def transcribe(model, audio: str | os.PathLike | np.ndarray | Tensor, *,
               at_head: TLTR | str | os.PathLike | None = None, at_time_res: float = 10,
               language: str | None = None, task: str = "transcribe", options: SearchOptions | None = None,
               long_form: str = "auto", temperature: float | Sequence[float] = DEFAULT_TEMPERATURES,
               compression_ratio_threshold: float | None = 2.4, logprob_threshold: float | None = -1.0,
               no_speech_threshold: float | None = 0.6, condition_on_previous_text: bool = True,
               initial_prompt: str | None = None, word_timestamps: bool = False, best_of: int | None = 5,
               video: np.ndarray | Tensor | None = None, modality: str = "auto",
               noise: str | os.PathLike | np.ndarray | None = None, snr: float | None = None,
               progress: Callable[[float, float], None] | None = None, seed: int = 0,
               batch_size: int | None = None) -> dict[str, Any]:
    """Transcribe ``audio`` (a path, or 16-kHz float samples in [-1, 1]) with a Whisper or a
    Whisper-Flamingo model; openai-whisper's ``transcribe()`` options, same names and defaults.

    Returns openai-whisper's ``{"text", "segments", "language"}`` (segments: ``id``, ``seek``, ``start``,
    ``end``, ``text``, ``tokens``, ``temperature``, ``avg_logprob``, ``compression_ratio``,
    ``no_speech_prob``, with ``word_timestamps`` also ``words``) plus ``modality`` (``asr``, ``avsr`` or
    ``vsr``) and ``long_form`` (the windowing used) and, with ``language=None`` on a multilingual model,
    ``language_probs``.

    * ``long_form``: ``seek`` (openai's timestamp algorithm), ``window`` (energy cut points, no
      timestamps), ``fixed`` (every 30 s, no timestamps) or ``auto`` = ``seek`` for a
      :func:`timestamp_trained` model, else ``window`` (see :mod:`whisper_flamingo.decoding.seek`);
    * ``options``: beam size, patience, length penalty, suppression; ``max_new_tokens`` below 224 caps
      every window's tokens;
    * ``video``: mouth crops ``(T, H, W)`` at 25 fps for a Whisper-Flamingo model; ``modality`` ``auto``
      = ``avsr`` with video, else ``asr``;
    * ``noise`` / ``snr``: noise (a file or samples) mixed in at ``snr`` dB before anything else;
    * ``at_head`` (a TL-TR head or its checkpoint): also ``at_time_res`` and ``audio_tag``, float32 logits
      ``[ceil(duration / at_time_res), 527]`` from the same encoder pass; row ``i`` from the pooled
      encoder steps of seconds ``[i * at_time_res, (i + 1) * at_time_res)`` (0.4-s steps taken from the
      window that starts last at or before them);
    * ``progress(done_seconds, total_seconds)`` is called after each window.
    """
    del batch_size  # windows are decoded one after another (each may prompt the next)
    if isinstance(at_head, (str, os.PathLike)):
        at_head = TLTR.from_checkpoint(at_head).to(model.device)
    steps = window_steps(at_time_res) if at_head is not None else 0
    if at_head is not None and round(float(at_time_res) * 100) != 1000:
        log.warning("at_time_res=%s: Whisper-AT heads were trained on 10-s clips; other resolutions may tag worse",
                    at_time_res)
    if not hasattr(model, "logits") or not hasattr(model, "new_kv_cache"):
        raise ConfigError(f"transcribe: needs a Whisper or Whisper-Flamingo model, got {type(model).__name__}")
    has_video_branch = getattr(model, "video_encoder_kind", None) is not None
    if modality not in ("auto", "asr", "avsr", "vsr"):
        raise ConfigError(f"modality={modality!r}: use auto, asr, avsr or vsr")
    if modality == "auto":
        modality = "avsr" if video is not None and has_video_branch else "asr"
    if modality != "asr" and (video is None or not has_video_branch):
        raise ConfigError(f"modality {modality}: needs a Whisper-Flamingo model and a video with a face"
                          + ("" if has_video_branch else f" (the model is {type(model).__name__}, audio only)"))
    if long_form not in ("auto", "seek", "window", "fixed"):
        raise ConfigError(f"long_form={long_form!r}: use auto, seek, window or fixed")
    if long_form == "auto":
        long_form = "seek" if timestamp_trained(model) else "window"
    samples = _as_audio(audio)
    if samples.size == 0:
        raise DataError("audio has no samples", reason="empty_file")
    if noise is not None:
        if snr is None:
            raise ConfigError("noise given without snr: say the signal-to-noise ratio in dB")
        samples = _mix_noise(samples, noise, snr)
    search = options or SearchOptions()
    opts = LongFormOptions(temperature=temperature, compression_ratio_threshold=compression_ratio_threshold,
                           logprob_threshold=logprob_threshold, no_speech_threshold=no_speech_threshold,
                           condition_on_previous_text=condition_on_previous_text, initial_prompt=initial_prompt,
                           word_timestamps=word_timestamps, best_of=best_of, search=search, seed=seed)
    encoder = _Encoder(model, None if video is None or modality == "asr" else _video_tensor(video), modality,
                       at_head is not None)
    n_mels = model.dims.n_mels
    if long_form == "seek":
        from whisper.audio import log_mel_spectrogram

        mel = log_mel_spectrogram(torch.from_numpy(samples), n_mels, padding=N_SAMPLES_30S)
        content_frames = mel.shape[-1] - N_FRAMES
        first_window = Window(mel[:, :N_FRAMES], 0, min(N_FRAMES, content_frames))
    else:
        first_window = Window(log_mel(pad_or_trim(samples[:N_SAMPLES_30S]), n_mels), 0,
                              max(1, min(N_SAMPLES_30S, len(samples)) // HOP))
    probs = None
    if language is None and model.is_multilingual:
        probe = _Encoder(model, encoder.video, modality, False)
        probs = language_probs(model, *probe(first_window))
        language = max(probs, key=probs.get)
    language = language or "en"
    tok = _tokenizer(model, language, task)
    align = None
    if word_timestamps:
        from whisper_flamingo.decoding.words import WordAligner

        align = WordAligner(model, tok, opts.prepend_punctuations, opts.append_punctuations)
    if long_form == "seek":
        out = run_seek(model, mel, content_frames, tok, encoder, opts, progress, align)
    else:
        out = run_windows(model, samples, n_mels, tok, encoder, opts, long_form, progress, align)
    result: dict[str, Any] = {**out, "language": language, "modality": modality, "long_form": long_form}
    if probs is not None:
        result["language_probs"] = probs
    if at_head is not None:
        result["at_time_res"] = at_time_res
        result["audio_tag"] = _tag_rows(at_head, encoder.pooled, len(samples), steps)
    log.debug("transcribed %.1f s (%s, %s)", len(samples) / SAMPLE_RATE, long_form, modality)
    return result


def _tag_rows(head: TLTR, pooled: list[tuple[int, Tensor]], n_samples: int, steps: int) -> Tensor:
    """``[ceil(frames / window frames), 527]`` from the windows' pooled steps (first mel frame, [L, 75, D]):
    one time line of 0.4-s steps, each taken from the last window starting at or before it."""
    frames = n_samples // HOP
    rows = max(1, math.ceil(frames / (steps * STEP_FRAMES)))
    length = max(seek // STEP_FRAMES + p.shape[1] for seek, p in pooled)
    line = pooled[0][1].new_zeros(pooled[0][1].shape[0], length, pooled[0][1].shape[2])
    for seek, p in pooled:
        first = seek // STEP_FRAMES
        line[:, first: first + p.shape[1]] = p
    line = line[:, : rows * steps]
    param = next(head.parameters())
    out = head.tag_windows(line.to(device=param.device, dtype=param.dtype), steps * STEP_FRAMES / 100)
    return out.float().cpu()
