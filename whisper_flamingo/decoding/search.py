"""Batched greedy and beam search over a Whisper-style model with a KV cache.

The search semantics follow openai-whisper's ``DecodingTask`` at temperature 0 without timestamps:

* logit filters: ``SuppressBlank`` (blank and end-of-text suppressed at the first sampled position)
  and ``SuppressTokens`` (``"-1"`` = the tokenizer's non-speech symbols, plus the task/start tokens
  and ``<|nospeech|>``, which are always suppressed);
* greedy: arg-max of the filtered logits, the float32 sum of the chosen log-probabilities (the
  end-of-text log-probability included);
* beam search: each beam proposes its ``beam_size + 1`` best tokens, candidates are ranked by their
  cumulative float32 log-probability, ended candidates are collected until ``round(beam_size *
  patience)`` have finished, and the final choice maximises ``sum_logprob / length`` (or the GNMT
  penalty ``((5 + length) / 6) ** length_penalty``), exactly like ``BeamSearchDecoder`` and
  ``MaximumLikelihoodRanker``;
* ``avg_logprob = sum_logprob / (len(tokens) + 1)``.

What is ours: every utterance carries its own prompt; rows whose search is over are dropped from the
batch (and from the KV cache) instead of being carried to the end; beam search is batched
(openai-whisper's is only correct for one utterance at a time) and gives the same result as decoding
the utterances one by one.  An optional *runaway guard* (``runaway_guard=True``; off by default, as
openai-whisper and the original, which always allow 224 new tokens) gives each utterance a token
budget from its duration and stops hypotheses caught in an n-gram loop.

The model must provide ``encode(mel, video, padding_mask, modality)`` -> ``(audio_features, xv)``
(``xv`` the video stream of a gated model, None for an audio-only one), ``new_kv_cache(audio_features,
beams=K, xv=xv)`` (a cache with ``reorder(index)``; row ``r`` belongs to utterance ``r // K``) and
``logits(tokens, audio_features, cache=cache)`` (with a cache only the new tokens are passed).

Key-padding masks: a model with ``use_padding_mask`` set is also given ``mel_frames=`` by ``encode``
and provides ``stream_masks(audio_features, xv, mel_frames, padding_mask, modality)`` -> ``(xa_valid,
xv_valid)``, which go to ``new_kv_cache(..., xa_valid=, xv_valid=)``; the cache keeps them with the
cross-attention keys/values and reorders them with the beams.  Other models are called as before.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from whisper_flamingo.errors import ConfigError

log = logging.getLogger(__name__)

MEL_FRAMES_PER_SECOND = 100  # Whisper's log-mel hop is 10 ms

# Runaway guard defaults, per-utterance token budget: min(max_new_tokens, base + per_second * seconds).
# 224 is openai-whisper's sample_len (n_text_ctx // 2).  15 tokens/s is ~3x fast English speech in
# Whisper BPE and covers the token-hungry scripts (Greek, Arabic, Russian) and translation; for a
# 30-s window the budget is the plain 224 cap, as in openai-whisper.
DEFAULT_MAX_NEW_TOKENS = 224
DEFAULT_BUDGET_BASE = 20.0
DEFAULT_BUDGET_PER_SECOND = 15.0


@dataclass(frozen=True)
class SearchOptions:
    """How to search.  The defaults reproduce openai-whisper's greedy decoding without timestamps
    (up to ``max_new_tokens`` = 224 new tokens for every utterance, no loop stop).

    ``patience=None`` means 1.0; ``length_penalty=None`` ranks by ``sum_logprob / length``, a float
    in [0, 1] uses the GNMT penalty.  A hypothesis that reaches its token budget unfinished is flagged
    ``"runaway"``.  ``runaway_guard=True`` (ours, off by default) turns on the two guards below; their
    parameters are read only then:

    * token budget: an utterance lasting ``s`` seconds gets ``min(max_new_tokens, budget_base +
      budget_per_second * s)`` new tokens (``budget_per_second=None``: always ``max_new_tokens``);
    * repetition stop: a hypothesis whose last tokens are one n-gram (n <= ``loop_max_period``)
      repeated at least ``loop_repeats`` times and spanning at least ``loop_min_span`` tokens is
      stopped and flagged ``"loop"`` (``loop_repeats=0``: no repetition stop).

    ``precision`` "fp16"/"bf16" runs the model under autocast on CUDA (ignored on CPU, which always
    computes in float32).
    """

    beam_size: int = 1
    patience: float | None = None
    length_penalty: float | None = None
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    budget_base: float = DEFAULT_BUDGET_BASE
    budget_per_second: float | None = DEFAULT_BUDGET_PER_SECOND
    suppress_blank: bool = True
    suppress_tokens: str | Sequence[int] | None = "-1"
    without_timestamps: bool = True
    loop_repeats: int = 4
    loop_max_period: int = 10
    loop_min_span: int = 12
    precision: str = "fp32"
    runaway_guard: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.beam_size <= 64:
            raise ConfigError(f"beam_size={self.beam_size}: use a value between 1 and 64")
        if self.patience is not None and (self.patience <= 0 or round(self.beam_size * self.patience) < 1):
            raise ConfigError(f"patience={self.patience}: beam_size * patience must round to at least 1")
        if self.length_penalty is not None and not 0 <= self.length_penalty <= 1:
            raise ConfigError(f"length_penalty={self.length_penalty}: use None or a value in [0, 1]")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens}: must be at least 1")
        if not self.without_timestamps:
            raise ConfigError("without_timestamps=False: timestamp decoding is not supported; set it to True")
        if self.precision not in ("fp32", "fp16", "bf16"):
            raise ConfigError(f"precision={self.precision!r}: use 'fp32', 'fp16' or 'bf16'")
        if self.loop_repeats < 0 or self.loop_max_period < 1:
            raise ConfigError("loop_repeats must be >= 0 and loop_max_period >= 1")

    @property
    def max_candidates(self) -> int:
        """Finished beams to collect before an utterance's beam search stops."""
        return round(self.beam_size * (self.patience or 1.0))

    @property
    def active_loop_repeats(self) -> int:
        """``loop_repeats`` with the runaway guard on, else 0 (no repetition stop)."""
        return self.loop_repeats if self.runaway_guard else 0

    def budget(self, seconds: float) -> int:
        """Token budget (new tokens, end-of-text included) for ``seconds`` of audio."""
        if not self.runaway_guard or self.budget_per_second is None:
            return self.max_new_tokens
        return max(1, min(self.max_new_tokens, int(self.budget_base + self.budget_per_second * seconds)))


@dataclass
class Hypothesis:
    """One decoded utterance: text tokens (no prompt, no end-of-text), text and scores."""

    tokens: list[int]
    text: str
    avg_logprob: float
    sum_logprob: float
    flags: set[str] = field(default_factory=set)


def suppressed_tokens(tokenizer, options: SearchOptions) -> list[int]:
    """Token ids masked at every step (openai-whisper's ``SuppressTokens`` list)."""
    spec = options.suppress_tokens
    if isinstance(spec, str):
        ids = [int(t) for t in spec.split(",") if t.strip()]
    else:
        ids = list(spec or [])
    if -1 in ids:
        ids = [t for t in ids if t >= 0] + list(tokenizer.non_speech_tokens)
    ids += [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm]
    if tokenizer.no_speech is not None:
        ids.append(tokenizer.no_speech)
    return sorted(set(ids))


def find_loop(generated: Tensor, repeats: int, max_period: int, min_span: int) -> Tensor:
    """Rows of ``generated`` (R, n) whose tail is one n-gram repeated (see :class:`SearchOptions`)."""
    rows, n = generated.shape
    hit = torch.zeros(rows, dtype=torch.bool, device=generated.device)
    if repeats <= 0:
        return hit
    for period in range(1, max_period + 1):
        span = max(repeats * period, min_span)
        if span > n:
            break
        tail = generated[:, n - span:]
        hit |= (tail[:, period:] == tail[:, :-period]).all(dim=1)
    return hit


def autocast_for(device: torch.device, precision: str):
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device_type="cuda", dtype=dtype)


def _seconds(n: int, width_seconds: float, mel_frames: Tensor | Sequence[int] | None,
             audio_seconds: Sequence[float] | None) -> list[float]:
    if audio_seconds is not None:
        return [float(s) for s in audio_seconds]
    if mel_frames is not None:
        frames = mel_frames.tolist() if isinstance(mel_frames, Tensor) else list(mel_frames)
        return [f / MEL_FRAMES_PER_SECOND for f in frames]
    return [width_seconds] * n


class _Filters:
    """Suppression applied in place to float32 logits of the next position."""

    def __init__(self, tokenizer, options: SearchOptions, vocab: int, device: torch.device) -> None:
        always = [t for t in suppressed_tokens(tokenizer, options) if t < vocab]
        first = list(always)
        if options.suppress_blank:
            first += [t for t in tokenizer.encode(" ") + [tokenizer.eot] if t < vocab]
        self.always = torch.tensor(sorted(set(always)), dtype=torch.long, device=device)
        self.first = torch.tensor(sorted(set(first)), dtype=torch.long, device=device)

    def apply(self, logits: Tensor, first_step: bool) -> None:
        logits.index_fill_(1, self.first if first_step else self.always, -math.inf)


@torch.no_grad()
def decode_batch(model, mel: Tensor | None, prompts: Sequence[Sequence[int]], tokenizer,
                 options: SearchOptions | None = None, *, mel_frames: Tensor | Sequence[int] | None = None,
                 audio_seconds: Sequence[float] | None = None, audio_features: Tensor | None = None,
                 xv: Tensor | None = None, video: Tensor | None = None, padding_mask: Tensor | None = None,
                 modality: str = "asr", xa_valid: Tensor | None = None,
                 xv_valid: Tensor | None = None) -> list[Hypothesis]:
    """Decode a batch of log-mel spectrograms ``mel`` (B, n_mels, T), one prompt per utterance.

    ``mel_frames`` (valid frames per utterance) or ``audio_seconds`` set each utterance's token budget
    (with the runaway guard); without them the whole width of ``mel`` counts as audio.  Utterances whose
    prompts differ in length are searched in separate groups.  Returns one :class:`Hypothesis` per
    utterance, in input order.

    The model encodes ``mel`` with ``video`` (B, 1, T_v, H, W) and ``padding_mask`` under ``modality``
    (``asr``, ``avsr``, ``vsr``) through its ``encode``.  Already encoded inputs: ``audio_features``
    (B, T', d) replaces ``mel`` (which may then be None), and ``xv`` (B, T_v, d) is handed to
    ``model.new_kv_cache(..., xv=xv)`` (Whisper-Flamingo's video), with their key masks ``xa_valid`` /
    ``xv_valid`` (B, T) (True = real frame) for a model with ``use_padding_mask``.

    A model with ``use_padding_mask`` encodes with ``mel_frames`` (None: the whole width is real) and
    masks the padded frames everywhere (see the module doc): its hypotheses do not depend on the batch.
    """
    options = options or SearchOptions()
    if audio_features is not None:
        n, width = audio_features.shape[0], audio_features.shape[1] * 2 / MEL_FRAMES_PER_SECOND
    elif mel is not None and mel.ndim == 3:
        n, width = mel.shape[0], mel.shape[-1] / MEL_FRAMES_PER_SECOND
    else:
        raise ValueError("mel must be (B, n_mels, T), or audio_features (B, T', d) must be given")
    if audio_features is not None and (video is not None or padding_mask is not None):
        raise ValueError("pass video with mel (encoded here), or audio_features with xv, not a mix")
    if n != len(prompts) or (xv is not None and xv.shape[0] != n):
        raise ValueError(f"{n} utterances but {len(prompts)} prompts" + ("" if xv is None else f", {xv.shape[0]} xv"))
    if n == 0:
        return []
    seconds = _seconds(n, width, mel_frames, audio_seconds)
    results: list[Hypothesis | None] = [None] * n
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)

    def take(t: Tensor | None, idx: list[int]) -> Tensor | None:
        return t if t is None or len(idx) == n else t[idx]

    masked = bool(getattr(model, "use_padding_mask", False))
    frames = None if mel_frames is None else torch.as_tensor(mel_frames, dtype=torch.long)

    was_training = model.training
    model.eval()
    try:
        for idx in groups.values():
            device = (audio_features if audio_features is not None else mel).device
            with autocast_for(device, options.precision):
                masks = {}
                if audio_features is not None:
                    audio, video_stream = take(audio_features, idx), take(xv, idx)
                    masks = {"xa_valid": take(xa_valid, idx), "xv_valid": take(xv_valid, idx)}
                elif masked:
                    group_frames, group_mask = take(frames, idx), take(padding_mask, idx)
                    audio, video_stream = model.encode(take(mel, idx), take(video, idx), group_mask, modality,
                                                       mel_frames=group_frames)
                    masks = dict(zip(("xa_valid", "xv_valid"),
                                     model.stream_masks(audio, video_stream, group_frames, group_mask, modality)))
                else:
                    audio, video_stream = model.encode(take(mel, idx), take(video, idx), take(padding_mask, idx),
                                                       modality)
                masks = {k: v for k, v in masks.items() if v is not None}
                hyps = _decode_group(model, audio, video_stream, [list(prompts[i]) for i in idx], tokenizer,
                                     options, [seconds[i] for i in idx], masks)
            for i, h in zip(idx, hyps):
                results[i] = h
    finally:
        model.train(was_training)
    return results  # type: ignore[return-value]


def _decode_group(model, audio: Tensor, xv: Tensor | None, prompts: list[list[int]], tokenizer,
                  options: SearchOptions, seconds: list[float], masks: dict[str, Tensor]) -> list[Hypothesis]:
    n_ctx = model.dims.n_text_ctx
    prompt_len = len(prompts[0])
    cap = n_ctx + 1 - prompt_len  # the last forward pass may hold n_ctx tokens
    budgets = [min(options.budget(s), cap) for s in seconds]
    if options.beam_size == 1:
        raw = _greedy(model, audio, xv, prompts, tokenizer, options, budgets, masks)
    else:
        raw = _beam(model, audio, xv, prompts, tokenizer, options, budgets, masks)
    out = []
    for tokens, sum_lp, flags in raw:
        out.append(Hypothesis(tokens=tokens, text=tokenizer.decode(tokens).strip(),
                              avg_logprob=sum_lp / (len(tokens) + 1), sum_logprob=sum_lp, flags=flags))
    return out


def _greedy(model, audio: Tensor, xv: Tensor | None, prompts: list[list[int]], tokenizer,
            options: SearchOptions, budgets: list[int],
            masks: dict[str, Tensor]) -> list[tuple[list[int], float, set[str]]]:
    device = audio.device
    n = audio.shape[0]
    eot = tokenizer.eot
    cache = model.new_kv_cache(audio, beams=1, xv=xv, **masks)
    active = torch.arange(n, device=device)  # row -> utterance
    budget = torch.tensor(budgets, device=device)
    sum_lp = torch.zeros(n, dtype=torch.float32, device=device)
    step_tokens = torch.tensor(prompts, dtype=torch.long, device=device)
    generated = torch.empty(n, 0, dtype=torch.long, device=device)  # rows follow `active`
    results: list[tuple[list[int], float, set[str]] | None] = [None] * n
    filters = None
    step = 0
    while active.numel():
        logits = model.logits(step_tokens, None, cache=cache)[:, -1].float()
        if filters is None:
            filters = _Filters(tokenizer, options, logits.shape[-1], device)
        filters.apply(logits, first_step=step == 0)
        next_tok = logits.argmax(dim=-1)
        # log-probability of the chosen token only (no full log-softmax: the choice is the arg-max)
        sum_lp[active] += logits.gather(1, next_tok[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)
        step += 1
        ended = next_tok == eot
        generated = torch.cat([generated, next_tok[:, None]], dim=1)
        runaway = ~ended & (budget[active] <= step)
        loop = ~ended & find_loop(generated, options.active_loop_repeats, options.loop_max_period,
                                  options.loop_min_span)
        done = ended | runaway | loop
        if bool(done.any()):
            rows = done.nonzero()[:, 0].tolist()
            gen_rows = generated[rows].tolist()
            lp_rows = sum_lp[active[rows]].tolist()
            utts = active[rows].tolist()
            for k, r in enumerate(rows):
                toks = gen_rows[k][:-1] if bool(ended[r]) else gen_rows[k]
                flags = {"runaway"} if bool(runaway[r]) and not bool(loop[r]) else set()
                if bool(loop[r]):
                    flags.add("loop")
                results[utts[k]] = (toks, lp_rows[k], flags)
            keep = (~done).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            cache.reorder(keep)
            active, generated, next_tok = active[keep], generated[keep], next_tok[keep]
        step_tokens = next_tok[:, None]
    return results  # type: ignore[return-value]


class _BeamState:
    """Finished candidates of one utterance: an insertion-ordered dict as in openai-whisper.

    Keys are the generated tokens, ending with end-of-text unless the sequence was retired by the
    repetition guard (``loop``) or taken unfinished at the end of the budget (``unfinished``).
    """

    __slots__ = ("finished", "flags")

    def __init__(self) -> None:
        self.finished: dict[tuple[int, ...], float] = {}
        self.flags: dict[tuple[int, ...], set[str]] = {}

    def add(self, seq: tuple[int, ...], score: float, flags: set[str] | None = None) -> None:
        self.finished[seq] = score
        if flags:
            self.flags[seq] = flags
        else:
            self.flags.pop(seq, None)


def _finalize(state: _BeamState, generated: Tensor, sum_lp: Tensor, beam: int, eot: int,
              length_penalty: float | None, ran_out: bool) -> tuple[list[int], float, set[str]]:
    """Top up with unfinished beams like ``BeamSearchDecoder.finalize``, then rank."""
    if len(state.finished) < beam:
        scores = sum_lp.tolist()
        finite = [j for j in range(beam) if math.isfinite(scores[j])] or list(range(beam))
        # numpy's argsort of <= 16 values is stable; openai-whisper walks it backwards
        for j in reversed(sorted(finite, key=lambda k: scores[k])):
            seq = tuple(generated[j].tolist()) + (eot,)
            state.add(seq, scores[j], {"runaway"} if ran_out else None)
            if len(state.finished) >= beam:
                break
    best, best_score = None, -math.inf
    for seq, lp in state.finished.items():
        length = len(seq) - 1 if seq and seq[-1] == eot else len(seq)
        penalty = max(length, 1) if length_penalty is None else ((5 + length) / 6) ** length_penalty
        score = lp / penalty
        if best is None or score > best_score:
            best, best_score = seq, score
    assert best is not None
    tokens = list(best[:-1] if best and best[-1] == eot else best)
    return tokens, state.finished[best], set(state.flags.get(best, ()))


def _beam(model, audio: Tensor, xv: Tensor | None, prompts: list[list[int]], tokenizer,
          options: SearchOptions, budgets: list[int],
          masks: dict[str, Tensor]) -> list[tuple[list[int], float, set[str]]]:
    device = audio.device
    n = audio.shape[0]
    beam = options.beam_size
    limit = options.max_candidates
    eot = tokenizer.eot
    cache = model.new_kv_cache(audio, beams=beam, xv=xv, **masks)
    states = [_BeamState() for _ in range(n)]
    active = list(range(n))  # utterance of each block of `beam` rows
    # The initial beams are identical copies: only beam 0 proposes candidates at the first step
    # (openai-whisper de-duplicates the copies' identical candidate sequences).
    sum_lp = torch.zeros(n, beam, dtype=torch.float32, device=device)
    sum_lp[:, 1:] = -math.inf
    step_tokens = torch.tensor(prompts, dtype=torch.long, device=device).repeat_interleave(beam, dim=0)
    generated = torch.empty(n * beam, 0, dtype=torch.long, device=device)
    budget = torch.tensor(budgets, device=device)
    arange_beam = torch.arange(beam, device=device)
    filters = None
    step = 0
    results: list[tuple[list[int], float, set[str]] | None] = [None] * n
    while active:
        m = len(active)
        logits = model.logits(step_tokens, None, cache=cache)[:, -1].float()
        if filters is None:
            filters = _Filters(tokenizer, options, logits.shape[-1], device)
        filters.apply(logits, first_step=step == 0)
        logprobs = F.log_softmax(logits, dim=-1)
        top_lp, top_tok = logprobs.topk(beam + 1, dim=-1)  # (m*beam, beam+1)
        scores = (sum_lp[:, :, None] + top_lp.view(m, beam, beam + 1)).view(m, -1)
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices
        cand_scores = scores.gather(1, order)
        cand_tok = top_tok.view(m, -1).gather(1, order)
        cand_src = torch.div(order, beam + 1, rounding_mode="floor")  # source beam in the utterance
        live = cand_tok != eot
        seen_live = live.cumsum(dim=1)
        keep = live & (seen_live <= beam)
        ended = ~live & (seen_live < beam) & torch.isfinite(cand_scores)
        pos = torch.sort(keep.to(torch.int8), dim=1, descending=True, stable=True).indices[:, :beam]
        src_rows = torch.arange(m, device=device)[:, None] * beam + cand_src.gather(1, pos)  # (m, beam)
        step += 1
        if bool(ended.any()):  # candidates ending here, already in descending score order
            prev = generated.tolist()
            srcs, vals = cand_src.tolist(), cand_scores.tolist()
            for u, j in ended.nonzero().tolist():
                state = states[active[u]]
                if len(state.finished) < limit:
                    state.add(tuple(prev[u * beam + srcs[u][j]]) + (eot,), vals[u][j])
        generated = torch.cat([generated[src_rows.view(-1)], cand_tok.gather(1, pos).view(-1, 1)], dim=1)
        sum_lp = cand_scores.gather(1, pos)
        # repetition guard: a looping beam is retired as a finished candidate and its slot killed
        loop = find_loop(generated, options.active_loop_repeats, options.loop_max_period, options.loop_min_span)
        loop &= torch.isfinite(sum_lp.view(-1))
        if bool(loop.any()):
            flat = sum_lp.view(-1).tolist()
            for r in loop.nonzero()[:, 0].tolist():
                state = states[active[r // beam]]
                if len(state.finished) < limit:
                    state.add(tuple(generated[r].tolist()), flat[r], {"loop"})
            sum_lp = sum_lp.masked_fill(loop.view(m, beam), -math.inf)
        over = (budget[torch.tensor(active, device=device)] <= step).tolist()
        dead = (~torch.isfinite(sum_lp)).all(dim=1).tolist()
        kept = []
        for u, utt in enumerate(active):
            if len(states[utt].finished) >= limit or over[u] or dead[u]:
                results[utt] = _finalize(states[utt], generated[u * beam:(u + 1) * beam], sum_lp[u], beam,
                                         eot, options.length_penalty, ran_out=over[u])
            else:
                kept.append(u)
        if not kept:
            break
        if len(kept) < m:
            sel = torch.tensor(kept, device=device)
            src_rows, sum_lp = src_rows[sel], sum_lp[sel]
            generated = generated[(sel[:, None] * beam + arange_beam).view(-1)]
            active = [active[u] for u in kept]
        cache.reorder(src_rows.reshape(-1))
        step_tokens = generated[:, -1:]
    return results  # type: ignore[return-value]
