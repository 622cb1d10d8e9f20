"""One call from audio to transcript, optionally with Whisper-AT sound tags from the same encoder pass.

:func:`transcribe` cuts the audio into consecutive 30-s windows (the last one shorter), pads each to
30 s as Whisper does, encodes a batch of windows once, decodes the text of every window with our
search (:mod:`whisper_flamingo.decoding.search`; greedy or beam, no timestamps, no conditioning on the
previous window's text) and, with an ``at_head``, tags the audio from the very same encoder pass: every
encoder block's output before ``ln_post`` is mean-pooled by 20 (0.4 s per step), the windows' steps are
concatenated into one time line, and the head tags consecutive ``at_time_res``-second windows of it.

Ours vs the original Whisper-AT package: its tag rows follow Whisper's seek, so when a decoding window
does not start on a multiple of ``at_time_res`` a row is predicted from features of another time span;
here the decoding windows start every 30 s and row ``i`` is always computed from the pooled steps of
seconds ``[i * at_time_res, (i + 1) * at_time_res)`` (a row crossing a 30-s boundary takes steps from
both windows; past the last window the head zero-pads, as the original's head does).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from whisper_flamingo.data.audio import N_SAMPLES_30S, SAMPLE_RATE, load_audio, log_mel, pad_or_trim, to_unit_range
from whisper_flamingo.decoding.search import SearchOptions, decode_batch
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.models.whisper_at import POOL, STEP_FRAMES, TLTR, pool_layers, window_steps

log = logging.getLogger(__name__)

__all__ = ["transcribe", "load_media_audio", "detect_language", "WINDOW_SECONDS", "VIDEO_SUFFIXES"]

WINDOW_SECONDS = 30
HOP = 160  # samples per mel frame
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
def detect_language(model, audio_features: Tensor) -> str:
    """The most likely language code of one encoded window ``audio_features`` (1, T', d)."""
    tok = _tokenizer(model, None, "transcribe")
    logits = model.logits(torch.tensor([[tok.sot]], device=audio_features.device), audio_features)[0, -1]
    ids = torch.tensor(tok.all_language_tokens, device=logits.device)
    best = int(ids[logits[ids].argmax()])
    return tok.all_language_codes[tok.all_language_tokens.index(best)]


@torch.no_grad()
def transcribe(model, audio: str | os.PathLike | np.ndarray | Tensor, *, at_head: TLTR | None = None,
               at_time_res: float = 10, language: str | None = None, task: str = "transcribe",
               options: SearchOptions | None = None, batch_size: int = 4) -> dict[str, Any]:
    """Transcribe ``audio`` (a path, or 16-kHz float samples in [-1, 1]) with an audio-only Whisper.

    Returns Whisper's usual ``{"text", "segments", "language"}`` (one segment per 30-s window:
    ``id``, ``seek`` (mel frame), ``start``, ``end``, ``text``, ``tokens``, ``avg_logprob``); with
    ``at_head`` also ``at_time_res`` and ``audio_tag``, a float32 CPU tensor of logits
    ``[ceil(duration / at_time_res), 527]`` from the same encoder pass (``at_time_res`` seconds: a
    multiple of 0.4, checked in whole 10-ms frames).  ``language=None`` detects it from the first
    window (a multilingual model) or is ``en``.
    """
    steps = window_steps(at_time_res) if at_head is not None else 0
    if at_head is not None and round(float(at_time_res) * 100) != 1000:
        log.warning("at_time_res=%s: Whisper-AT heads were trained on 10-s clips; other resolutions may tag worse",
                    at_time_res)
    if not hasattr(model, "embed_audio_layers") or getattr(model, "video_encoder_kind", None) is not None:
        raise ConfigError(f"transcribe: needs an audio-only Whisper, got {type(model).__name__}")
    samples = _as_audio(audio)
    if samples.size == 0:
        raise DataError("audio has no samples", reason="empty_file")
    device = model.device
    starts = list(range(0, len(samples), N_SAMPLES_30S))
    options = options or SearchOptions()
    tok = _tokenizer(model, language or (None if model.is_multilingual else "en"), task)
    texts: list[Any] = []
    pooled: list[Tensor] = []
    for b in range(0, len(starts), max(1, batch_size)):
        mel = torch.stack([log_mel(pad_or_trim(samples[s: s + N_SAMPLES_30S]), model.dims.n_mels)
                           for s in starts[b: b + batch_size]]).to(device)
        if at_head is not None:
            features, layers = model.embed_audio_layers(mel)
            pooled.append(pool_layers(layers.float(), POOL).cpu())
        else:
            features = model.embed_audio(mel)
        if language is None and b == 0 and model.is_multilingual:
            language = detect_language(model, features[:1])
            tok = _tokenizer(model, language, task)
        prompts = [list(tok.sot_sequence_including_notimestamps)] * features.shape[0]
        seconds = [min(WINDOW_SECONDS, (len(samples) - s) / SAMPLE_RATE) for s in starts[b: b + batch_size]]
        texts += decode_batch(model, None, prompts, tok, options, audio_features=features, audio_seconds=seconds)
    duration = len(samples) / SAMPLE_RATE
    segments = [{"id": i, "seek": s // HOP, "start": s / SAMPLE_RATE,
                 "end": min(s + N_SAMPLES_30S, len(samples)) / SAMPLE_RATE, "text": h.text, "tokens": h.tokens,
                 "avg_logprob": h.avg_logprob} for i, (s, h) in enumerate(zip(starts, texts))]
    result: dict[str, Any] = {"text": " ".join(h.text for h in texts if h.text), "segments": segments,
                              "language": language or "en"}
    if at_head is not None:
        result["at_time_res"] = at_time_res
        result["audio_tag"] = _tag_rows(at_head, torch.cat(pooled), len(samples), steps, device)
    log.debug("transcribed %.1f s in %d windows", duration, len(starts))
    return result


def _tag_rows(head: TLTR, pooled: Tensor, n_samples: int, steps: int, device: torch.device) -> Tensor:
    """``[ceil(frames / window frames), 527]`` from the windows' pooled steps ``[W, L, 75, D]``."""
    frames = n_samples // HOP
    rows = max(1, math.ceil(frames / (steps * STEP_FRAMES)))
    line = pooled.transpose(0, 1).flatten(1, 2)[:, : rows * steps]  # [L, W * 75, D], one time line
    param = next(head.parameters())
    out = head.tag_windows(line.to(device=param.device, dtype=param.dtype), steps * STEP_FRAMES / 100)
    return out.float().cpu()
