"""Decoding one 30-s window as openai-whisper's ``DecodingTask`` does, timestamps included.

:func:`decode_window` is the per-window step of long-form transcription
(:mod:`whisper_flamingo.decoding.seek`): greedy (temperature 0), sampling (temperature > 0, ``best_of``
candidates) or beam search (``beam_size``, ``patience``), with openai-whisper's logit filters
(``SuppressBlank``, ``SuppressTokens``, and with timestamps ``ApplyTimestampRules``: timestamps in
pairs, never decreasing, the first token a timestamp no later than ``max_initial_timestamp``, a
timestamp forced when their total probability beats every text token), its no-speech probability
(``<|nospeech|>`` at the start-of-transcript position), its ranking (``sum_logprob / length`` or the
GNMT penalty) and its ``compression_ratio`` (zlib) of the text.

Ours: the model is any model with the search interface of :mod:`whisper_flamingo.decoding.search`
(``new_kv_cache`` / ``logits``), so audio-visual Whisper-Flamingo windows decode here too; the KV cache
is our explicit one (candidates of one window are its rows).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from whisper_flamingo.decoding.search import SearchOptions, suppressed_tokens
from whisper_flamingo.errors import ConfigError

__all__ = ["WindowResult", "decode_window", "compression_ratio", "TIME_PRECISION"]

#: seconds per timestamp token (30 s over 1500 encoder frames)
TIME_PRECISION = 0.02


def compression_ratio(text: str) -> float:
    """``len(utf-8 bytes) / len(zlib-compressed bytes)``: high for repetitive text (openai's measure)."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


@dataclass
class WindowResult:
    """One decoded window: sampled tokens (timestamps included, no end-of-text) and scores."""

    tokens: list[int]
    text: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float


def _timestamp_rules(logits: Tensor, sampled: list[list[int]], tok, first_step: bool,
                     max_initial_index: int | None) -> None:
    """openai-whisper's ``ApplyTimestampRules`` on float32 ``logits`` (R, V), in place."""
    ts_begin, eot = tok.timestamp_begin, tok.eot
    if tok.no_timestamps is not None:
        logits[:, tok.no_timestamps] = -math.inf
    for k, seq in enumerate(sampled):
        last_ts = len(seq) >= 1 and seq[-1] >= ts_begin
        penultimate_ts = len(seq) < 2 or seq[-2] >= ts_begin
        if last_ts:
            if penultimate_ts:
                logits[k, ts_begin:] = -math.inf
            else:
                logits[k, :eot] = -math.inf
        stamps = [t for t in seq if t >= ts_begin]
        if stamps:
            floor = stamps[-1] if last_ts and not penultimate_ts else stamps[-1] + 1
            logits[k, ts_begin:floor] = -math.inf
    if first_step:
        logits[:, :ts_begin] = -math.inf
        if max_initial_index is not None:
            logits[:, ts_begin + max_initial_index + 1:] = -math.inf
    logprobs = F.log_softmax(logits.float(), dim=-1)
    ts_lp = logprobs[:, ts_begin:].logsumexp(dim=-1)
    text_max = logprobs[:, :ts_begin].max(dim=-1).values
    force = (ts_lp > text_max).nonzero()[:, 0].tolist()
    if force:
        logits[force, :ts_begin] = -math.inf


@torch.no_grad()
def decode_window(model, audio_features: Tensor, tokenizer, *, prompt: Sequence[int] = (), xv: Tensor | None = None,
                  temperature: float = 0.0, options: SearchOptions | None = None, best_of: int | None = None,
                  timestamps: bool = True, max_initial_timestamp: float | None = 1.0,
                  generator: torch.Generator | None = None) -> WindowResult:
    """Decode one encoded window ``audio_features`` (1, T', d) (``xv``: its video stream, if any).

    ``prompt``: previous-text tokens (after ``<|startofprev|>``, cut to the last ``n_text_ctx // 2 - 1``);
    ``options``: beam size, patience, length penalty and suppression (its runaway guard is not used);
    beam search only at temperature 0, ``best_of`` candidates only above it.
    """
    options = options or SearchOptions()
    n_ctx = model.dims.n_text_ctx
    sot_seq = list(tokenizer.sot_sequence if timestamps else tokenizer.sot_sequence_including_notimestamps)
    initial = ([tokenizer.sot_prev] + list(prompt)[-(n_ctx // 2 - 1):] if prompt else []) + sot_seq
    sample_begin, sot_index = len(initial), initial.index(tokenizer.sot)
    sample_len = min(n_ctx // 2, options.max_new_tokens)  # openai: n_text_ctx // 2 (= the default 224)
    beam = options.beam_size if temperature == 0 and options.beam_size > 1 else 0
    if temperature > 0 and best_of is not None and best_of < 1:
        raise ConfigError(f"best_of={best_of}: use a positive number")
    rows = beam or (best_of or 1 if temperature > 0 else 1)
    eot = tokenizer.eot
    device = audio_features.device
    vocab_filter = suppressed_tokens(tokenizer, options)
    blank = tokenizer.encode(" ") + [eot]
    max_initial = None if max_initial_timestamp is None else round(max_initial_timestamp / TIME_PRECISION)

    cache = model.new_kv_cache(audio_features, beams=rows, xv=xv)
    tokens = torch.tensor([initial] * rows, dtype=torch.long, device=device)
    sum_lp = torch.zeros(rows, dtype=torch.float32, device=device)
    step_in = tokens
    no_speech_prob = math.nan
    finished: dict[tuple[int, ...], float] = {}
    max_candidates = options.max_candidates if beam else 0
    for i in range(sample_len):
        all_logits = model.logits(step_in, None, cache=cache)
        if i == 0 and tokenizer.no_speech is not None:
            no_speech_prob = float(all_logits[0, sot_index].float().softmax(-1)[tokenizer.no_speech])
        logits = all_logits[:, -1].float().clone()
        if options.suppress_blank and i == 0:
            logits[:, blank] = -math.inf
        logits[:, vocab_filter] = -math.inf
        if timestamps:
            sampled = [row[sample_begin:] for row in tokens.tolist()]
            _timestamp_rules(logits, sampled, tokenizer, i == 0, max_initial)
        logprobs = F.log_softmax(logits, dim=-1)
        if beam:
            tokens, sum_lp, index, done = _beam_step(tokens, sum_lp, logprobs, beam, eot, finished, max_candidates)
            cache.reorder(index)
            step_in = tokens[:, -1:]
        else:
            if temperature == 0:
                nxt = logits.argmax(dim=-1)
            else:
                probs = (logits / temperature).softmax(dim=-1)
                nxt = torch.multinomial(probs, 1, generator=generator)[:, 0]
            alive = tokens[:, -1] != eot
            sum_lp += logprobs[torch.arange(rows, device=device), nxt] * alive
            nxt = torch.where(alive, nxt, torch.full_like(nxt, eot))
            tokens = torch.cat([tokens, nxt[:, None]], dim=1)
            step_in = nxt[:, None]
            done = bool((nxt == eot).all())
        if done or tokens.shape[-1] > n_ctx:
            break

    if beam:
        candidates = dict(finished)
        if len(candidates) < beam:
            for j in sorted(range(tokens.shape[0]), key=lambda k: float(sum_lp[k]), reverse=True):
                seq = tuple(tokens[j].tolist()) + (eot,)
                candidates.setdefault(seq, float(sum_lp[j]))
                if len(candidates) >= beam:
                    break
        seqs = [(list(s[sample_begin:]), lp) for s, lp in candidates.items()]
    else:
        seqs = [(row[sample_begin:], float(lp)) for row, lp in zip(tokens.tolist(), sum_lp.tolist())]
    cut = [(s[: s.index(eot)] if eot in s else s, lp) for s, lp in seqs]

    def rank(item: tuple[list[int], float]) -> float:
        length = len(item[0])
        penalty = length if options.length_penalty is None else ((5 + length) / 6) ** options.length_penalty
        return item[1] / penalty if penalty else -math.inf

    best_tokens, best_lp = max(cut, key=rank) if len(cut) > 1 else cut[0]
    text = tokenizer.decode([t for t in best_tokens if t < eot]).strip()
    return WindowResult(tokens=best_tokens, text=text, avg_logprob=best_lp / (len(best_tokens) + 1),
                        no_speech_prob=no_speech_prob, temperature=temperature,
                        compression_ratio=compression_ratio(text))


def _beam_step(tokens: Tensor, sum_lp: Tensor, logprobs: Tensor, beam: int, eot: int,
               finished: dict[tuple[int, ...], float], max_candidates: int) -> tuple[Tensor, Tensor, Tensor, bool]:
    """One step of openai-whisper's ``BeamSearchDecoder`` for one window (rows = beams)."""
    scores: dict[tuple[int, ...], float] = {}
    sources: dict[tuple[int, ...], int] = {}
    prefixes = tokens.tolist()
    top_lp, top_tok = logprobs.topk(beam + 1, dim=-1)
    for j, prefix in enumerate(prefixes):
        for lp, t in zip(top_lp[j].tolist(), top_tok[j].tolist()):
            seq = tuple(prefix + [t])
            scores[seq] = float(sum_lp[j]) + lp
            sources[seq] = j
    keep: list[tuple[int, ...]] = []
    new_finished: dict[tuple[int, ...], float] = {}
    for seq in sorted(scores, key=scores.get, reverse=True):
        if seq[-1] == eot:
            new_finished[seq] = scores[seq]
        else:
            keep.append(seq)
            if len(keep) == beam:
                break
    for seq in sorted(new_finished, key=new_finished.get, reverse=True):
        if len(finished) >= max_candidates:
            break
        finished[seq] = new_finished[seq]
    device = tokens.device
    index = torch.tensor([sources[s] for s in keep], dtype=torch.long, device=device)
    new_tokens = torch.tensor([list(s) for s in keep], dtype=torch.long, device=device)
    new_lp = torch.tensor([scores[s] for s in keep], dtype=torch.float32, device=device)
    return new_tokens, new_lp, index, len(finished) >= max_candidates
