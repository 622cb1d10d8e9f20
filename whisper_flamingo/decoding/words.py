"""Word timings from cross-attention, as openai-whisper's ``word_timestamps=True``.

A window's text tokens are re-run through the decoder (after ``<|notimestamps|>``); the
cross-attention weights of the *alignment heads* (the decoder heads whose attention follows the
speech; openai-whisper publishes them per released model, other models use every head of the last
half of the decoder layers) over the window's real encoder frames are softmaxed, standardised per
token, median-filtered (width 7) and averaged; dynamic time warping through the negated matrix gives
each token a time, and tokens are grouped into words (``tokenizer.split_to_word_tokens``) with
punctuation merged into their neighbours.  The word-boundary heuristics (long words around sentence
ends cut to twice the median word length, segment starts and ends moved to the words) are openai's.
DTW, the median filter and the punctuation merge are openai-whisper's library functions.
"""

from __future__ import annotations

import base64
import gzip
import itertools

import numpy as np
import torch
from torch import Tensor

__all__ = ["alignment_heads", "WordAligner"]

TOKENS_PER_SECOND = 50  # encoder frames per second
SENTENCE_END = ".。!！?？"


def alignment_heads(model, name: str | None = None) -> Tensor:
    """``(n_text_layer, n_text_head)`` bool: openai-whisper's published heads of the released model
    ``name`` (e.g. ``tiny.en``, ``base``) when its shape matches, else every head of the last half of the
    decoder layers (openai's default)."""
    import whisper

    layers, heads = model.dims.n_text_layer, model.dims.n_text_head
    packed = whisper._ALIGNMENT_HEADS.get(name or "")
    if packed is not None:
        array = np.frombuffer(gzip.decompress(base64.b85decode(packed)), dtype=bool).copy()
        if array.size == layers * heads:
            return torch.from_numpy(array.reshape(layers, heads))
    out = torch.zeros(layers, heads, dtype=torch.bool)
    out[layers // 2:] = True
    return out


class WordAligner:
    """``aligner(segments, window, features, xv, last_speech) -> last word end`` adds ``words`` to the
    segments of one window (called by :mod:`whisper_flamingo.decoding.seek`)."""

    def __init__(self, model, tokenizer, prepend: str, append: str, medfilt_width: int = 7,
                 qk_scale: float = 1.0) -> None:
        self.model, self.tok = model, tokenizer
        self.prepend, self.append = prepend, append
        self.medfilt_width, self.qk_scale = medfilt_width, qk_scale
        self.heads = getattr(model, "alignment_heads", None)
        if self.heads is None:
            self.heads = alignment_heads(model, getattr(model, "model_name", None))

    @torch.no_grad()
    def _alignment(self, text_tokens: list[int], features: Tensor, xv: Tensor | None, num_frames: int) -> list[dict]:
        from whisper.timing import dtw, median_filter

        tok, model = self.tok, self.model
        if not text_tokens:
            return []
        tokens = torch.tensor([[*tok.sot_sequence, tok.no_timestamps, *text_tokens, tok.eot]], device=features.device)
        normed: list[Tensor | None] = [None] * len(model.decoder.blocks)
        hooks = [block.cross_attn_ln.register_forward_hook(lambda _m, _i, out, i=i: normed.__setitem__(i, out))
                 for i, block in enumerate(model.decoder.blocks)]
        try:
            cache = model.new_kv_cache(features, beams=1, xv=xv)
            logits = model.logits(tokens, None, cache=cache)[0]
        finally:
            for h in hooks:
                h.remove()
        probs = logits[len(tok.sot_sequence):, : tok.eot].float().softmax(dim=-1)
        token_probs = probs[np.arange(len(text_tokens)), text_tokens].tolist()
        weights = []
        for layer, head in self.heads.nonzero().tolist():
            attn = model.decoder.blocks[layer].cross_attn
            q = attn._split(attn.query(normed[layer]))[0, head].float()
            k = attn._split(attn.key(features))[0, head].float()
            weights.append(q @ k.T / (q.shape[-1] ** 0.5))
        w = torch.stack(weights)[:, :, : num_frames // 2]
        w = (w * self.qk_scale).softmax(dim=-1)
        std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
        w = median_filter((w - mean) / std, self.medfilt_width)
        matrix = w.mean(dim=0)[len(tok.sot_sequence): -1]
        text_idx, time_idx = dtw(-matrix)
        words, word_tokens = tok.split_to_word_tokens(text_tokens + [tok.eot])
        if len(word_tokens) <= 1:
            return []
        bounds = np.pad(np.cumsum([len(t) for t in word_tokens[:-1]]), (1, 0))
        jumps = np.pad(np.diff(text_idx), (1, 0), constant_values=1).astype(bool)
        jump_times = time_idx[jumps] / TOKENS_PER_SECOND
        starts, ends = jump_times[bounds[:-1]], jump_times[bounds[1:]]
        return [{"word": word, "tokens": toks, "start": float(s), "end": float(e),
                 "probability": float(np.mean(token_probs[i:j]))}
                for word, toks, s, e, i, j in zip(words, word_tokens, starts, ends, bounds[:-1], bounds[1:])]

    def __call__(self, segments: list[dict], window, features: Tensor, xv: Tensor | None,
                 last_speech: float) -> float | None:
        from whisper.timing import WordTiming, merge_punctuations

        if not segments:
            return None
        per_segment = [[t for t in s["tokens"] if t < self.tok.eot] for s in segments]
        found = self._alignment(list(itertools.chain.from_iterable(per_segment)), features, xv, window.frames)
        durations = np.array([a["end"] - a["start"] for a in found])
        durations = durations[durations.nonzero()]
        median = min(0.7, float(np.median(durations))) if len(durations) else 0.0
        longest = median * 2
        if len(durations):
            for i in range(1, len(found)):
                if found[i]["end"] - found[i]["start"] > longest:
                    if found[i]["word"] in SENTENCE_END:
                        found[i]["end"] = found[i]["start"] + longest
                    elif found[i - 1]["word"] in SENTENCE_END:
                        found[i]["start"] = found[i]["end"] - longest
        timings = [WordTiming(a["word"], a["tokens"], a["start"], a["end"], a["probability"]) for a in found]
        merge_punctuations(timings, self.prepend, self.append)
        offset = window.seek * 160 / 16000
        index = 0
        for segment, text_tokens in zip(segments, per_segment):
            saved, words = 0, []
            while index < len(timings) and saved < len(text_tokens):
                t = timings[index]
                if t.word:
                    words.append({"word": t.word, "start": round(offset + t.start, 2), "end": round(offset + t.end, 2),
                                  "probability": t.probability})
                saved += len(t.tokens)
                index += 1
            if words:
                _adjust(segment, words, last_speech, median, longest)
                last_speech = segment["end"]
            segment["words"] = words
        return next((w["end"] for s in reversed(segments) for w in reversed(s["words"])), segments[-1]["end"])


def _adjust(segment: dict, words: list[dict], last_speech: float, median: float, longest: float) -> None:
    """openai-whisper's fixes of the first and last word against the segment's timestamps."""
    first = words[0]
    too_long = first["end"] - first["start"] > longest or (
        len(words) > 1 and words[1]["end"] - first["start"] > longest * 2)
    if first["end"] - last_speech > median * 4 and too_long:
        if len(words) > 1 and words[1]["end"] - words[1]["start"] > longest:
            boundary = max(words[1]["end"] / 2, words[1]["end"] - longest)
            first["end"] = words[1]["start"] = boundary
        first["start"] = max(0, first["end"] - longest)
    if segment["start"] < first["end"] and segment["start"] - 0.5 > first["start"]:
        first["start"] = max(0, min(first["end"] - median, segment["start"]))
    else:
        segment["start"] = first["start"]
    if segment["end"] > words[-1]["start"] and segment["end"] + 0.5 < words[-1]["end"]:
        words[-1]["end"] = max(words[-1]["start"] + median, segment["end"])
    else:
        segment["end"] = words[-1]["end"]
