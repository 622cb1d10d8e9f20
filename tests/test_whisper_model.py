"""Our plain-PyTorch Whisper against openai-whisper's model, and the KV cache against recompute."""

from __future__ import annotations

import logging

import pytest
import torch
from whisper.model import ModelDimensions
from whisper.model import Whisper as UpstreamWhisper

from whisper_flamingo.models.whisper import Whisper

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                       n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=4, n_text_layer=2)


@pytest.fixture(scope="module")
def pair() -> tuple[UpstreamWhisper, Whisper]:
    torch.manual_seed(0)
    upstream = UpstreamWhisper(DIMS)
    with torch.no_grad():
        for name, p in upstream.named_parameters():
            p.normal_(0.0, 0.15 if "embedding" not in name else 0.5)
    ours = Whisper(DIMS)
    ours.load_state_dict(upstream.state_dict(), strict=True)
    return upstream.eval(), ours.eval()


def test_state_dict_keys_match_upstream(pair):
    upstream, ours = pair
    assert list(ours.state_dict()) == list(upstream.state_dict())
    for k, v in ours.state_dict().items():
        assert v.shape == upstream.state_dict()[k].shape, k
    # and back: an upstream model loads ours strictly
    UpstreamWhisper(DIMS).load_state_dict(ours.state_dict(), strict=True)
    assert not ours.is_multilingual and ours.num_languages == upstream.num_languages


@torch.no_grad()
def test_encoder_and_logits_match_upstream_on_30s(pair):
    upstream, ours = pair
    mel = torch.randn(2, 80, 3000)
    ref, got = upstream.embed_audio(mel), ours.embed_audio(mel)
    assert got.shape == (2, 1500, 64)
    assert (ref - got).abs().max() <= 1e-5
    tokens = torch.randint(0, DIMS.n_vocab, (2, 12))
    ref_logits, got_logits = upstream.logits(tokens, ref), ours.logits(tokens, got)
    assert got_logits.dtype == torch.float32 and got_logits.shape == (2, 12, DIMS.n_vocab)
    assert (ref_logits - got_logits).abs().max() <= 1e-5 * max(1.0, ref_logits.abs().max().item())
    assert torch.allclose(ours(mel, tokens), got_logits, atol=1e-6)


@torch.no_grad()
def test_variable_length_encoder_slices_positions(pair):
    upstream, ours = pair
    mel = torch.randn(1, 80, 1001)  # odd length: ceil(1001 / 2) = 501 frames
    got = ours.embed_audio(mel)
    assert got.shape == (1, 501, 64)
    full_table = upstream.encoder.positional_embedding
    try:  # upstream checks the exact table shape: hand it the sliced table
        upstream.encoder.positional_embedding = full_table[:501]
        ref = upstream.embed_audio(mel)
    finally:
        upstream.encoder.positional_embedding = full_table
    assert (ref - got).abs().max() <= 1e-5


@torch.no_grad()
def test_long_input_is_cropped_with_one_warning(caplog):
    torch.manual_seed(1)
    model = Whisper(DIMS).eval()
    mel = torch.randn(1, 80, 3100)
    with caplog.at_level(logging.WARNING, logger="whisper_flamingo.models.whisper"):
        out = model.embed_audio(mel)
        model.embed_audio(mel)
    assert out.shape == (1, 1500, 64)
    assert len([r for r in caplog.records if "longer than" in r.getMessage()]) == 1
    # frames up to 3000 feed the last encoder frame; later frames must not matter
    mel2 = mel.clone()
    mel2[..., 3001:] = 0
    assert torch.equal(model.embed_audio(mel2), out)
    mel2[..., 3000] += 1
    assert not torch.equal(model.embed_audio(mel2), out)


@torch.no_grad()
def test_incremental_decoding_equals_full_recompute(pair):
    _, ours = pair
    audio = ours.embed_audio(torch.randn(2, 80, 400))
    beams = 3
    tokens = torch.randint(0, DIMS.n_vocab, (2 * beams, 9))
    full = ours.logits(tokens, audio.repeat_interleave(beams, 0))
    cache = ours.new_kv_cache(audio, beams=beams)
    assert cache.rows == 6 and cache.offset == 0
    steps = [ours.logits(tokens[:, :4], None, cache)]  # prompt in one go
    steps.append(ours.logits(tokens[:, 4:7], None, cache))  # several new tokens at offset > 0
    for i in range(7, 9):
        steps.append(ours.logits(tokens[:, i:i + 1], None, cache))
    assert cache.offset == 9
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-4


@torch.no_grad()
def test_reorder_follows_beams_and_dropped_rows(pair):
    _, ours = pair
    torch.manual_seed(3)
    audio = ours.embed_audio(torch.randn(3, 80, 300))
    beams = 2
    history = torch.randint(0, DIMS.n_vocab, (3 * beams, 3))
    utt = torch.arange(3).repeat_interleave(beams)
    cache = ours.new_kv_cache(audio, beams=beams)
    ours.logits(history, audio, cache)
    reorders = [
        torch.tensor([1, 1, 2, 3, 5, 4]),  # within-utterance beam reorder (fixed K/V untouched)
        torch.tensor([2, 3, 4, 5]),  # utterance 0 finished: regular groups of 2
        torch.tensor([1, 2, 3]),  # irregular: one row of utterance 1, two of utterance 2
        torch.tensor([2, 0]),  # permute across utterances
        torch.tensor([1]),
    ]
    for index in reorders:
        cache.reorder(index)
        history, utt = history[index], utt[index]
        assert torch.equal(cache.row_utterance, utt)
        new = torch.randint(0, DIMS.n_vocab, (len(index), 1))
        step = ours.logits(new, None, cache)[:, -1]
        history = torch.cat([history, new], 1)
        ref = ours.logits(history, audio[utt])[:, -1]
        assert (step - ref).abs().max() <= 1e-4
    cache.reorder(torch.tensor([], dtype=torch.long))
    assert cache.rows == 0


def test_too_many_positions_is_an_error(pair):
    _, ours = pair
    audio = torch.zeros(1, 5, 64)
    with pytest.raises(ValueError, match="n_text_ctx"):
        ours.logits(torch.zeros(1, DIMS.n_text_ctx + 1, dtype=torch.long), audio)


@torch.no_grad()
def test_bfloat16_model_runs_and_cache_matches(pair):
    _, ours = pair
    model = Whisper(DIMS).eval()
    model.load_state_dict(ours.state_dict())
    model = model.to(torch.bfloat16)
    mel = torch.randn(2, 80, 200)
    audio = model.embed_audio(mel.bfloat16())
    assert audio.dtype == torch.bfloat16
    tokens = torch.randint(0, DIMS.n_vocab, (4, 5))
    cache = model.new_kv_cache(audio, beams=2)
    steps = torch.cat([model.logits(tokens[:, :3], None, cache), model.logits(tokens[:, 3:], None, cache)], 1)
    full = model.logits(tokens, audio.repeat_interleave(2, 0))
    assert steps.dtype == torch.float32
    assert (steps - full).abs().max() <= 0.05 * full.abs().max()
    ref = ours.logits(tokens, ours.embed_audio(mel).repeat_interleave(2, 0))
    assert (full - ref).abs().max() <= 0.05 * ref.abs().max()
