"""Long-form transcription: openai-whisper's seek loop, and energy windows for models without timestamps.

``seek`` (timestamp-trained models, e.g. OpenAI's released weights): the log-mel of the whole recording
(plus 30 s of silence) is read in 30-s windows from ``seek``; each window is decoded with timestamp
tokens (:func:`~whisper_flamingo.decoding.window.decode_window`), cut into segments at consecutive
timestamp pairs, and ``seek`` advances to the last complete segment's end (to the window's end when the
window ends on a single timestamp or has no pair).  Temperature fallback re-decodes a window whose text
is too repetitive (``compression_ratio_threshold``) or too unlikely (``logprob_threshold``) unless it is
silence (``no_speech_threshold``); a window judged silent is skipped; the previous windows' text is the
prompt (``condition_on_previous_text``, reset after a window decoded above temperature 0.5), after an
``initial_prompt``.  This is openai-whisper's ``transcribe()`` (without ``clip_timestamps`` and the
hallucination-silence heuristic), so the text and segment times equal its for the same options.

``window`` (fine-tuned checkpoints trained without timestamps): the audio is cut at the quietest
25-ms frame near each 30-s limit (:func:`~whisper_flamingo.decoding.longform.split_points`); each piece
is one segment (its start and end are the cut points), decoded without timestamps with the same
fallback and prompt rules.  ``fixed``: consecutive 30-s pieces (the cut points the Whisper-AT tag rows
were first defined on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from whisper_flamingo.decoding.longform import split_points
from whisper_flamingo.decoding.search import SearchOptions
from whisper_flamingo.decoding.window import TIME_PRECISION, WindowResult, decode_window

log = logging.getLogger(__name__)

__all__ = ["LongFormOptions", "Window", "run_seek", "run_windows", "N_FRAMES", "HOP", "SAMPLE_RATE"]

SAMPLE_RATE = 16000
HOP = 160
N_FRAMES = 3000  # mel frames in a 30-s window
INPUT_STRIDE = 2  # mel frames per encoder frame / timestamp step
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass
class LongFormOptions:
    """openai-whisper's ``transcribe()`` options (same names, same defaults)."""

    temperature: float | Sequence[float] = DEFAULT_TEMPERATURES
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    word_timestamps: bool = False
    prepend_punctuations: str = "\"'“¿([{-"
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"
    best_of: int | None = 5
    search: SearchOptions = field(default_factory=SearchOptions)
    seed: int = 0

    @property
    def temperatures(self) -> list[float]:
        t = self.temperature
        return [float(t)] if isinstance(t, (int, float)) else [float(x) for x in t]


@dataclass
class Window:
    """What the loop hands the encoder: a window's mel ``(n_mels, 3000)``, its first mel frame and length."""

    mel: Tensor
    seek: int
    frames: int


#: ``encode(window) -> (audio_features (1, T', d), xv or None)``: the model's encoder pass for a window
#: (the caller may also keep per-window extras from it, e.g. Whisper-AT's layer taps)
EncodeFn = Callable[[Window], tuple[Tensor, Tensor | None]]
ProgressFn = Callable[[float, float], None]


def _decode_with_fallback(model, features: Tensor, xv: Tensor | None, tokenizer, prompt: list[int],
                          opts: LongFormOptions, timestamps: bool, gen: torch.Generator) -> WindowResult:
    result = None
    for t in opts.temperatures:
        result = decode_window(model, features, tokenizer, prompt=prompt, xv=xv, temperature=t, options=opts.search,
                               best_of=opts.best_of if t > 0 else None, timestamps=timestamps, generator=gen)
        fallback = False
        if opts.compression_ratio_threshold is not None and result.compression_ratio > opts.compression_ratio_threshold:
            fallback = True
        if opts.logprob_threshold is not None and result.avg_logprob < opts.logprob_threshold:
            fallback = True
        if (opts.no_speech_threshold is not None and result.no_speech_prob > opts.no_speech_threshold
                and opts.logprob_threshold is not None and result.avg_logprob < opts.logprob_threshold):
            fallback = False  # silence
        if not fallback:
            break
        log.debug("window fell back from temperature %s (compression %.2f, avg log-prob %.2f)", t,
                  result.compression_ratio, result.avg_logprob)
    assert result is not None
    return result


def _silent(result: WindowResult, opts: LongFormOptions) -> bool:
    if opts.no_speech_threshold is None or not result.no_speech_prob > opts.no_speech_threshold:
        return False
    return not (opts.logprob_threshold is not None and result.avg_logprob > opts.logprob_threshold)


def _segment(seek: int, start: float, end: float, tokens: list[int], result: WindowResult, tokenizer) -> dict:
    return {"seek": seek, "start": start, "end": end,
            "text": tokenizer.decode([t for t in tokens if t < tokenizer.eot]), "tokens": tokens,
            "temperature": result.temperature, "avg_logprob": result.avg_logprob,
            "compression_ratio": result.compression_ratio, "no_speech_prob": result.no_speech_prob}


def _split_timestamps(tokens: list[int], result: WindowResult, seek: int, segment_size: int,
                      tokenizer) -> tuple[list[dict], int, bool]:
    """Segments of one window's tokens and the next seek (openai-whisper's rules)."""
    ts_begin = tokenizer.timestamp_begin
    offset = seek * HOP / SAMPLE_RATE
    is_ts = [t >= ts_begin for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    segments = []
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cur in slices:
            part = tokens[last:cur]
            segments.append(_segment(seek, offset + (part[0] - ts_begin) * TIME_PRECISION,
                                     offset + (part[-1] - ts_begin) * TIME_PRECISION, part, result, tokenizer))
            last = cur
        next_seek = seek + segment_size if single_ending else seek + (tokens[last - 1] - ts_begin) * INPUT_STRIDE
    else:
        duration = segment_size * HOP / SAMPLE_RATE
        stamps = [t for t in tokens if t >= ts_begin]
        if stamps and stamps[-1] != ts_begin:
            duration = (stamps[-1] - ts_begin) * TIME_PRECISION
        segments.append(_segment(seek, offset, offset + duration, tokens, result, tokenizer))
        next_seek = seek + segment_size
    return segments, next_seek, single_ending


class _Transcript:
    """What both loops carry from window to window: the fallback's sampling generator, the tokens and segments
    so far, and where the prompt starts (after ``initial_prompt``; reset after a window decoded above
    temperature 0.5, or after every window without ``condition_on_previous_text``)."""

    def __init__(self, tokenizer, opts: LongFormOptions) -> None:
        self.opts = opts
        self.gen = torch.Generator().manual_seed(opts.seed)
        self.initial: list[int] = tokenizer.encode(" " + opts.initial_prompt.strip()) if opts.initial_prompt else []
        self.tokens: list[int] = list(self.initial)
        self.segments: list[dict] = []
        self.prompt_reset = 0

    def decode(self, model, features: Tensor, xv: Tensor | None, tokenizer, timestamps: bool) -> WindowResult:
        """One window with the temperature fallback, prompted with the text since the last reset."""
        return _decode_with_fallback(model, features, xv, tokenizer, self.tokens[self.prompt_reset:], self.opts,
                                     timestamps, self.gen)

    def add(self, current: list[dict], result: WindowResult) -> None:
        """Keep a decoded window's segments (empty or zero-length ones blanked) and apply the prompt rule."""
        for seg in current:
            if seg["start"] == seg["end"] or not seg["text"].strip():
                seg["text"], seg["tokens"] = "", []
                if "words" in seg:
                    seg["words"] = []
        self.segments.extend({"id": i, **s} for i, s in enumerate(current, start=len(self.segments)))
        self.tokens.extend(t for s in current for t in s["tokens"])
        if not self.opts.condition_on_previous_text or result.temperature > 0.5:
            self.prompt_reset = len(self.tokens)

    def output(self, tokenizer) -> dict[str, Any]:
        return {"text": tokenizer.decode(self.tokens[len(self.initial):]), "segments": self.segments}


def run_seek(model, mel: Tensor, content_frames: int, tokenizer, encode: EncodeFn, opts: LongFormOptions,
             progress: ProgressFn | None = None, align: Callable[..., None] | None = None) -> dict[str, Any]:
    """openai-whisper's seek loop over ``mel`` (n_mels, content_frames + 3000); see the module doc.

    ``align(segments, window, features, xv, last_speech)`` adds word timings (``word_timestamps``) and
    returns the last word's end.  Returns ``{"text", "segments"}``."""
    transcript = _Transcript(tokenizer, opts)
    seek = 0
    last_speech = 0.0
    total = content_frames * HOP / SAMPLE_RATE
    while seek < content_frames:
        size = min(N_FRAMES, content_frames - seek)
        segment_mel = mel[:, seek: seek + size]
        if segment_mel.shape[-1] < N_FRAMES:
            segment_mel = torch.nn.functional.pad(segment_mel, (0, N_FRAMES - segment_mel.shape[-1]))
        window = Window(segment_mel, seek, size)
        features, xv = encode(window)
        result = transcript.decode(model, features, xv, tokenizer, True)
        previous = seek
        if _silent(result, opts):
            seek += size
            if progress:
                progress(min(seek, content_frames) * HOP / SAMPLE_RATE, total)
            continue
        current, seek, single_ending = _split_timestamps(result.tokens, result, seek, size, tokenizer)
        if opts.word_timestamps and align is not None:
            end = align(current, window, features, xv, last_speech)
            if not single_ending and end is not None and end > previous * HOP / SAMPLE_RATE:
                seek = round(end * SAMPLE_RATE / HOP)
            if end is not None:
                last_speech = end
        transcript.add(current, result)
        if progress:
            progress(min(seek, content_frames) * HOP / SAMPLE_RATE, total)
    return transcript.output(tokenizer)


def run_windows(model, samples: np.ndarray, n_mels: int, tokenizer, encode: EncodeFn, opts: LongFormOptions,
                mode: str = "window", progress: ProgressFn | None = None,
                align: Callable[..., None] | None = None) -> dict[str, Any]:
    """Windows without timestamps (``window``: energy cut points; ``fixed``: every 30 s), each one
    segment; see the module doc.  Returns ``{"text", "segments"}``."""
    from whisper_flamingo.data.audio import log_mel, pad_or_trim

    n = len(samples)
    spans = split_points(samples) if mode == "window" else [
        (s, min(s + N_FRAMES * HOP, n)) for s in range(0, n, N_FRAMES * HOP)]
    transcript = _Transcript(tokenizer, opts)
    last_speech = 0.0
    for a, b in spans:
        window = Window(log_mel(pad_or_trim(samples[a:b]), n_mels), a // HOP, max(1, (b - a) // HOP))
        features, xv = encode(window)
        result = transcript.decode(model, features, xv, tokenizer, False)
        current = [_segment(window.seek, a / SAMPLE_RATE, b / SAMPLE_RATE, result.tokens, result, tokenizer)]
        if _silent(result, opts):
            current[0]["text"], current[0]["tokens"] = "", []
        elif opts.word_timestamps and align is not None:
            end = align(current, window, features, xv, last_speech)
            last_speech = end if end is not None else last_speech
        transcript.add(current, result)
        if progress:
            progress(b / SAMPLE_RATE, n / SAMPLE_RATE)
    return transcript.output(tokenizer)
