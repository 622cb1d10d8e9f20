"""SAT: parity with the original Streaming Audio Transformer (SAT_T_2s fixture), memory mechanics,
registry figures, checkpoint forms, MAE pre-training model and its transfer into a SAT."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from needs import need

from whisper_flamingo.checkpoints.sat import load_sat, load_vit_into_sat
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.registry import create, get_entry, model_info
from whisper_flamingo.models.sat import SAT, AudioTransformer, SATConfig, build_sat, stream
from whisper_flamingo.models.sat_frontend import AmplitudeToDB, htk_mel_filterbank
from whisper_flamingo.models.sat_mae import AudioMAE, masked_patch_loss, patchify

REF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tagging_reference" / "sat"
WEIGHTS, IO = REF_DIR / "SAT_T_2s_weights.pt", REF_DIR / "SAT_T_2s_io.pt"
TOL = 1e-4
TINY = dict(embed_dim=32, depth=2, num_heads=2, target_length=32, cache_length=32)  # 2 time patches per piece


def tiny_sat(**kw) -> SAT:
    torch.manual_seed(0)
    model = build_sat(**{**TINY, **kw}).eval()
    with torch.no_grad():  # BN statistics in the dB range, so that the activations are not degenerate
        model.init_bn[1].running_mean.uniform_(-25, 5)
        model.init_bn[1].running_var.uniform_(50, 400)
    return model


@pytest.fixture(scope="module")
def ref():
    need(WEIGHTS.exists() and IO.exists(), f"the SAT reference fixture ({REF_DIR})")
    torch.set_num_threads(1)
    model = SAT.from_checkpoint(WEIGHTS)
    return model, torch.load(IO, map_location="cpu", weights_only=True)


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ------------------------------------------------------------------------------------------ registry


def test_parameter_counts_equal_the_reference_registry_table():
    published = {"sat-vit-t": 5.503, "sat-vit-s": 21.623, "sat-vit-b": 85.712, "sat-t-2s": 5.496, "sat-t-1s": 5.493,
                 "sat-s-2s": 21.608, "sat-s-1s": 21.608, "sat-b-2s": 85.682, "sat-b-1s": 85.673}
    for name, millions in published.items():
        assert round(model_info(name).parameters / 1e6, 3) == millions, name
    assert model_info("sat-t-2s").parameters == 5_495_695  # the fixture's exact count


def test_sat_s_1s_keeps_the_upstream_2s_lengths_and_the_others_follow_their_name():
    cfg = {n: SATConfig(**get_entry(n).config) for n in ("sat-t-1s", "sat-s-1s", "sat-b-1s", "sat-t-2s")}
    assert (cfg["sat-t-1s"].target_length, cfg["sat-t-1s"].cache_tokens) == (96, 24)
    assert (cfg["sat-b-1s"].target_length, cfg["sat-b-1s"].cache_tokens) == (96, 24)
    assert (cfg["sat-s-1s"].target_length, cfg["sat-s-1s"].cache_length, cfg["sat-s-1s"].pooling) == (192, 192, "token")
    assert (cfg["sat-t-2s"].time_positions, cfg["sat-t-2s"].cache_tokens) == (24, 48)


# ------------------------------------------------------------------------------------------ parity


def test_front_end_buffers_and_log_mel_match_the_reference(ref):
    model, io = ref
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(htk_mel_filterbank(), state["front_end.0.mel_scale.fb"])
    assert torch.equal(torch.hann_window(512), state["front_end.0.spectrogram.window"])
    with torch.no_grad():
        db = model.log_mel(io["waveform"])
        chunks = torch.stack([torch.stack([model.log_mel(w[None, k * 32000:(k + 1) * 32000])[0] for k in range(5)])
                              for w in io["waveform"]])
    for ours, theirs in ((db, io["logmel_db"]), (chunks, io["stream_chunk_logmel_db"])):
        # float32 FFT rounding differs between builds: 0.07 dB at -82 dB, none that matters in power
        assert maxdiff(10 ** (ours / 10), 10 ** (theirs / 10)) <= 1e-5 * (10 ** (theirs / 10)).max()
        assert maxdiff(ours, theirs) < 0.1
        loud = theirs > -20
        assert (ours - theirs)[loud].abs().max() <= TOL
    assert db.amin().item() == pytest.approx(io["logmel_db"].amax().item() - 120, abs=1e-4)  # batch-wide floor


def test_whole_clip_parity_and_batch_wide_top_db(ref):
    model, io = ref
    wav = io["waveform"]
    with torch.no_grad():
        whole = model(wav)
        assert maxdiff(whole, io["clip_probs"]) <= TOL
        assert maxdiff(model.forward_spectrogram(io["logmel_db"]), io["clip_probs"]) <= TOL
        alone = torch.cat([model(wav[i:i + 1]) for i in range(2)])
        lm = model.log_mel(wav)
        pieces, cache = [], None
        for k in range(5):  # the five 192-frame pieces one by one with the memory; the 41 left are dropped
            p, cache = model.forward_spectrogram(lm[..., k * 192:(k + 1) * 192], cache, return_cache=True)
            pieces.append(p)
        dropped = model.forward_spectrogram(lm[..., :960])
    assert maxdiff(alone, io["clip_probs_b1"]) <= TOL
    assert maxdiff(torch.stack(pieces, 1), io["clip_piece_logits"].sigmoid()) <= TOL
    assert maxdiff(torch.stack(pieces).mean(0), whole) <= 1e-6
    assert maxdiff(dropped, whole) <= 1e-6


def test_streaming_parity_silence_empty_short_chunks_and_two_files(ref):
    model, io = ref
    wav, cs = io["waveform"], io["chunk_samples"]
    silence = model.silence_cache()
    assert model.silence_samples == io["silence_samples"]
    assert maxdiff(silence, io["silence_cache"]) <= TOL
    with torch.no_grad():
        _, after0 = model(wav[:1, :cs], cache=silence, return_cache=True)
        probs0, from_mel = model.forward_spectrogram(io["stream_chunk_logmel_db"][0, 0][None], io["silence_cache"],
                                                     return_cache=True)
    # from the reference's log-mel the memory agrees to 1e-5; from the waveform it inherits the FFT rounding
    # of quiet bins (0.07 dB at -82 dB) in its layer inputs (values up to 28): 3e-3, invisible in the outputs
    assert maxdiff(from_mel, io["stream_cache_after_chunk0"]) <= TOL
    assert maxdiff(probs0[0], io["stream_probs"][0, 0]) <= TOL
    assert maxdiff(after0, io["stream_cache_after_chunk0"]) <= 1e-2
    for key, kw in (("stream_probs", {}), ("stream_probs_empty_init", {"init": "empty"})):
        assert maxdiff(torch.stack([stream(model, w, cs, **kw) for w in wav]), io[key]) <= TOL, key
    short = torch.stack([stream(model, w, io["short_chunk_samples"]) for w in wav])
    assert maxdiff(short, io["stream_probs_short_chunks"]) <= TOL
    first, memory = stream(model, wav[0], cs, return_cache=True)
    second = stream(model, wav[1], cs, cache=memory)  # the CLI carries the memory on to the next file
    assert maxdiff(torch.stack([first, second]), io["stream_probs_cli_two_files"]) <= TOL


# ------------------------------------------------------------------------------------------ memory mechanics


def test_stream_equals_consecutive_pieces_with_the_memory():
    model = tiny_sat()
    torch.manual_seed(1)
    chunk = 5120  # 33 frames per chunk: one 32-frame piece, the last frame dropped
    wav = torch.randn(4 * chunk) * 0.1
    with torch.no_grad():
        memory, manual = model.silence_cache(), []
        for piece in wav.split(chunk):
            probs, memory = model(piece[None], cache=memory, return_cache=True)
            manual.append(probs[0])
        streamed, final = stream(model, wav, chunk, return_cache=True)
        empty = stream(model, wav, chunk, init="empty")
    assert torch.allclose(streamed, torch.stack(manual), atol=1e-6)
    assert torch.allclose(final, memory)
    assert memory.shape == (2, 1, model.cfg.cache_tokens, 32)
    assert not torch.allclose(streamed[0], empty[0], atol=1e-4)  # the silence memory matters
    silence = model.silence_cache()
    stats = model.init_bn[1].running_mean.clone()
    model.train()  # the silence memory is an eval-mode computation that leaves the BN statistics alone
    assert torch.equal(model.silence_cache(3), silence.expand(-1, 3, -1, -1)) and model.training
    assert torch.equal(model.init_bn[1].running_mean, stats)


def test_whole_clip_equals_pieces_with_memory_and_the_remainder_is_dropped():
    model = tiny_sat()
    torch.manual_seed(2)
    lm = torch.randn(2, 64, 3 * 32 + 20) * 10 - 20
    with torch.no_grad():
        whole, whole_memory = model.forward_spectrogram(lm, return_cache=True)
        memory, outs = None, []
        for k in range(3):
            out, memory = model.forward_spectrogram(lm[..., k * 32:(k + 1) * 32], memory, return_cache=True)
            outs.append(out)
    assert torch.allclose(whole, torch.stack(outs).mean(0), atol=1e-6)
    assert torch.allclose(whole_memory, memory, atol=1e-6)


def test_memory_holds_layer_inputs_normed_and_repositioned():
    """A direct re-computation of block 0 with the memory: norm1 on the memory, the layer-0 memory plus
    the last time positions and the frequency positions, keys/values over [memory, current]."""
    model = tiny_sat()
    torch.manual_seed(3)
    memory = torch.randn(2, 1, 8, 32)
    logmel = torch.randn(1, 64, 32) * 10 - 20
    with torch.no_grad():
        tokens = model.patch_tokens(model._normalised(logmel))  # [1, 8, 32]: 4 rows x 2 columns
        _, new = model.forward_spectrogram(logmel, memory, return_cache=True)
        grid = memory[0].transpose(1, 2).reshape(1, 32, 4, 2)
        mem0 = (grid + model.time_pos_embed[..., -2:] + model.freq_pos_embed).flatten(2).transpose(1, 2)
        block, attn = model.blocks[0], model.blocks[0].attn
        q = attn.to_q(block.norm1(tokens))
        k, v = attn.to_kv(torch.cat([block.norm1(mem0), block.norm1(tokens)], 1)).chunk(2, -1)
        heads = [((q[..., h * 16:(h + 1) * 16] @ k[..., h * 16:(h + 1) * 16].transpose(1, 2)) / 4).softmax(-1)
                 @ v[..., h * 16:(h + 1) * 16] for h in range(2)]
        after0 = tokens + attn.proj(torch.cat(heads, -1))
        after0 = after0 + block.mlp(block.norm2(after0))
    assert torch.allclose(new[0], tokens, atol=1e-6)  # a full piece replaces the memory by its layer inputs
    assert torch.allclose(new[1], after0, atol=1e-5)


def test_short_chunks_keep_the_tail_of_the_repositioned_memory():
    model = tiny_sat()
    torch.manual_seed(4)
    memory = torch.randn(2, 1, 8, 32)
    x = torch.randn(1, 64, 16) * 10 - 20  # one time patch: 4 tokens
    with torch.no_grad():
        _, new = model.forward_spectrogram(x, memory, return_cache=True)
        repositioned = model._reposition(memory[0])
    assert torch.allclose(new[0, :, :4], repositioned[:, 4:], atol=1e-6)
    assert torch.allclose(new[1, :, :4], memory[1, :, 4:])


def test_offline_vit_averages_its_pieces_and_rejects_memory():
    torch.manual_seed(6)
    vit = build_sat(**{**TINY, "streaming": False, "cache_length": 0, "pad_last": True}).eval()
    lm = torch.randn(1, 64, 80) * 10 - 20  # > 32 + 15 frames: pieces of 32, 32 and 16 (zero-padded to 32)
    with torch.no_grad():
        whole = vit.forward_spectrogram(lm)
        x = vit._normalised(lm)
        last = torch.nn.functional.pad(x[..., 64:], (0, 16))
        pieces = [vit._head(vit.forward_features(p)) for p in (x[..., :32], x[..., 32:64], last)]
        assert torch.allclose(whole, torch.stack(pieces).mean(0), atol=1e-6)
        assert torch.allclose(vit.forward_spectrogram(lm[..., :47]), vit._head(vit.forward_features(x[..., :47])))
    with pytest.raises(ValueError, match="no memory"):
        vit.blocks[0].attn(torch.zeros(1, 4, 32), torch.zeros(1, 4, 32))
    with pytest.raises(ValueError, match=r"\[batch, samples\]"):
        vit(torch.zeros(16000))


def test_amplitude_to_db_floors_over_the_batch():
    power = torch.tensor([[[1e4, 1.0]], [[1e-3, 0.0]]])  # [2, 1, 2]: 40 dB max over the batch
    db = AmplitudeToDB(top_db=50)(power)
    assert db.tolist() == [[[40.0, 0.0]], [[-10.0, -10.0]]]
    assert AmplitudeToDB(top_db=None)(power)[1, 0, 1].item() == pytest.approx(-100.0)


# ------------------------------------------------------------------------------------------ checkpoints


def test_released_forms_load_strictly_and_errors_name_the_way_out(tmp_path):
    model = tiny_sat()
    state = model.state_dict()
    torch.save({"model": state}, tmp_path / "under_model.pt")
    torch.save(state, tmp_path / "top.pt")
    for name in ("under_model.pt", "top.pt"):
        loaded = SAT.from_checkpoint(tmp_path / name, num_heads=2)  # heads are not in the shapes: D/64 otherwise
        assert loaded.cfg == model.cfg
        assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    torch.save({"model": {**state, "extra.weight": torch.zeros(1)}}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected keys.*extra.weight"):
        SAT.from_checkpoint(tmp_path / "extra.pt", num_heads=2)
    vit = build_sat(**{**TINY, "streaming": False, "cache_length": 0})
    torch.save(vit.state_dict(), tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="AudioTransformer.from_checkpoint"):
        SAT.from_checkpoint(tmp_path / "vit.pt")
    assert isinstance(AudioTransformer.from_checkpoint(tmp_path / "vit.pt", num_heads=2), AudioTransformer)


def test_create_by_name_from_the_fixture(ref):
    model, io = ref
    named = create("sat-t-2s", checkpoint=WEIGHTS)
    with torch.no_grad():
        assert maxdiff(named(io["waveform"][:1]), model(io["waveform"][:1])) == 0
    assert load_sat(WEIGHTS).cfg.cache_tokens == 48


# ------------------------------------------------------------------------------------------ MAE


def tiny_mae() -> AudioMAE:
    torch.manual_seed(5)
    return create("sat-mae-t", embed_dim=32, depth=2, num_heads=2, target_length=64, decoder_dim=16,
                  decoder_heads=2, decoder_depth=1)


def test_mae_masks_three_quarters_and_scores_only_masked_patches():
    mae = tiny_mae()
    wav = torch.randn(2, 16000 * 64 // 100) * 0.1  # 65 frames: 4 x 4 patches
    loss, pred, mask = mae(wav, generator=torch.Generator().manual_seed(0))
    assert pred.shape == (2, 16, 256) and mask.sum(1).tolist() == [12.0, 12.0]
    target = patchify(mae.encoder.log_mel(wav))
    norm = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    by_hand = ((pred - norm) ** 2).mean(-1)[mask.bool()].mean()
    assert loss.item() == pytest.approx(by_hand.item(), rel=1e-5)
    changed = pred.detach().clone()
    changed[~mask.bool()] += 100  # visible patches do not count
    assert masked_patch_loss(changed, target, mask).item() == pytest.approx(loss.item(), rel=1e-5)
    loss.backward()
    assert mae.encoder.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_patchify_is_frequency_major():
    x = torch.arange(32 * 48, dtype=torch.float32).reshape(1, 32, 48)
    patches = patchify(x)
    assert patches.shape == (1, 6, 256)
    assert torch.equal(patches[0, 1], x[0, :16, 16:32].reshape(-1))  # row 0, column 1
    assert torch.equal(patches[0, 3], x[0, 16:, :16].reshape(-1))  # row 1, column 0


def test_mae_encoder_weights_load_into_a_sat(tmp_path):
    mae = tiny_mae()
    sat = tiny_sat()
    head = sat.outputlayer[1].weight.clone()
    left = load_vit_into_sat(sat, mae)
    enc = mae.encoder.state_dict()
    got = sat.state_dict()
    for i in range(2):
        qkv = enc[f"blocks.{i}.attn.qkv.weight"]
        assert torch.equal(got[f"blocks.{i}.attn.to_q.weight"], qkv[:32])
        assert torch.equal(got[f"blocks.{i}.attn.to_kv.weight"], qkv[32:])
    assert torch.equal(got["time_pos_embed"], enc["time_pos_embed"][..., :4])  # 4 of the MAE's 4 (cropped if longer)
    for key in ("patch_embed.proj.weight", "freq_pos_embed", "norm.weight", "init_bn.1.running_var",
                "blocks.1.mlp.fc2.weight"):
        assert torch.equal(got[key], enc[key]), key
    assert torch.equal(sat.outputlayer[1].weight, head) and left == [k for k in got if k.startswith("outputlayer")]
    longer = tiny_sat(target_length=64, cache_length=64)  # 8 time positions from the MAE's 4: bilinear
    load_vit_into_sat(longer, mae)
    table = torch.nn.functional.interpolate(enc["time_pos_embed"], size=(1, 8), mode="bilinear", align_corners=False)
    assert torch.equal(longer.time_pos_embed, table)
    # from a file as a Lightning run saves it (keys model.encoder.*): the same tensors
    other = tiny_sat(pooling="token")
    torch.save({"state_dict": {f"model.{k}": v for k, v in mae.state_dict().items()}}, tmp_path / "mae.ckpt")
    assert load_vit_into_sat(other, tmp_path / "mae.ckpt") == [k for k in got if k.startswith("outputlayer")]
    assert torch.equal(other.cls_token, mae.encoder.cls_token)
    assert torch.equal(other.blocks[1].attn.to_kv.bias, enc["blocks.1.attn.qkv.bias"][32:])
