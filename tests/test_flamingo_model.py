"""Whisper-Flamingo: gated layers, modalities, KV cache, fusion modes, released checkpoint layout,
and the extract-video-features command."""

from __future__ import annotations

import argparse
import copy
from collections import Counter

import numpy as np
import pytest
import torch

from whisper_flamingo.checkpoints.flamingo import (
    build_whisper_flamingo,
    infer_layout,
    load_whisper_flamingo,
    load_whisper_flamingo_state,
)
from whisper_flamingo.errors import CheckpointError, ConfigError, DataError
from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig
from whisper_flamingo.models.flamingo import (
    WhisperFlamingo,
    draw_modality,
    fusion_from_config,
    modality_rng,
)
from whisper_flamingo.models.params import count_parameters
from whisper_flamingo.models.resnet import ResEncoder
from whisper_flamingo.models.whisper import ModelDimensions, Whisper

# head dim 64 everywhere, so that checkpoint loading (which infers d // 64 heads) rebuilds the same model
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=128, n_audio_head=2, n_audio_layer=2,
                       n_vocab=51865, n_text_ctx=448, n_text_state=128, n_text_head=2, n_text_layer=2)
AV_CFG = AVHubertConfig(encoder_layers=1, encoder_embed_dim=64, encoder_ffn_embed_dim=128,
                        encoder_attention_heads=1, conv_pos=8, conv_pos_groups=4, layer_norm_first=True)
SMALL = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=768, n_audio_head=12, n_audio_layer=12,
                        n_vocab=51865, n_text_ctx=448, n_text_state=768, n_text_head=12, n_text_layer=12)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _whisper(seed: int = 0, dims: ModelDimensions = DIMS) -> Whisper:
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():
        model.decoder.positional_embedding.normal_(0.0, 0.02)  # torch.empty in Whisper's init
    return model.eval()


def _avhubert(mode: str = "finetuned", seed: int = 1) -> AVHubert:
    torch.manual_seed(seed)
    return AVHubert(AV_CFG, mode=mode).eval()


def _set_gates(model: WhisperFlamingo, attn: float = 0.8, ff: float = -0.5) -> None:
    with torch.no_grad():
        for block in model.decoder.blocks:
            block.attn_gate.fill_(attn)
            block.ff_gate.fill_(ff)


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(3)
    mel = torch.randn(2, 80, 120, generator=g)
    tokens = torch.randint(0, DIMS.n_vocab, (2, 6), generator=g)
    video = torch.randn(2, 1, 8, 88, 88, generator=g)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[1, 6:] = True
    return mel, tokens, video, mask


@pytest.fixture(scope="module")
def pair():
    """(audio-only Whisper, Whisper-Flamingo built from an identical copy of it)."""
    whisper = _whisper()
    flamingo = WhisperFlamingo.from_whisper(copy.deepcopy(whisper), _avhubert()).eval()
    return whisper, flamingo


@torch.no_grad()
def test_gates_at_zero_give_exactly_the_audio_only_logits(pair, inputs):
    whisper, flamingo = pair
    mel, tokens, video, mask = inputs
    ref = whisper(mel, tokens)
    for block in flamingo.decoder.blocks:
        assert block.attn_gate.shape == (1,) and block.attn_gate.item() == 0 and block.ff_gate.item() == 0
    assert flamingo.encoder.video_projection_scalar.shape == () and flamingo.encoder.video_projection_scalar == 1
    assert torch.equal(flamingo(mel, tokens, video, mask), ref)
    assert torch.equal(flamingo(mel, tokens, modality="a"), ref)
    assert torch.equal(flamingo.logits(tokens, flamingo.embed_audio(mel)), ref)  # no xv: no video
    # and with open gates the video changes the output
    model = copy.deepcopy(flamingo)
    _set_gates(model)
    assert not torch.allclose(model(mel, tokens, video, mask), ref, atol=1e-3)


@torch.no_grad()
def test_modalities_zero_the_right_stream(pair, inputs):
    _, flamingo = pair
    model = copy.deepcopy(flamingo)
    _set_gates(model)
    mel, tokens, video, mask = inputs
    xa, xv = model.encode(mel, video, mask)
    assert xa.shape == (2, 60, 128) and xv.shape == (2, 8, 128)
    assert torch.allclose(xv, model.encoder.video_projection(model.avhubert(video, mask)))
    a_only = model(mel, tokens, video, mask, modality="a")
    assert torch.allclose(a_only, model.logits(tokens, xa, xv=torch.zeros_like(xv)), atol=1e-4)
    v_only = model(mel, tokens, video, mask, modality="v")
    assert torch.allclose(v_only, model.logits(tokens, torch.zeros_like(xa), xv=xv), atol=1e-4)
    assert not torch.allclose(a_only, v_only, atol=1e-3)
    with pytest.raises(ValueError, match="needs video"):
        model(mel, tokens, modality="av")
    with pytest.raises(ValueError, match="modality"):
        model(mel, tokens, video, modality="x")
    # precomputed video-encoder features give the same result as the video
    feats = model.video_features(video, mask)
    assert torch.equal(model(mel, tokens, video_features=feats), model(mel, tokens, video, mask))
    assert torch.allclose(model(mel, tokens, video_features=feats.half()), model(mel, tokens, video, mask),
                          atol=0.05)


def test_modality_dropout_draw_frequencies():
    rng = np.random.default_rng(0)
    counts = Counter(draw_modality(0.5, 0.2, rng) for _ in range(20000))
    assert abs(counts["av"] / 20000 - 0.5) < 0.015
    assert abs(counts["a"] / 20000 - 0.2) < 0.015
    assert abs(counts["v"] / 20000 - 0.3) < 0.015
    rng = np.random.default_rng(1)
    assert {draw_modality(1.0, 0.0, rng) for _ in range(2000)} == {"av"}  # English configs
    assert set(Counter(draw_modality(0.5, 0.0, rng) for _ in range(2000))) == {"av", "v"}  # mWhisper-Flamingo
    with pytest.raises(ValueError):
        draw_modality(0.8, 0.3, rng)
    # one draw per (seed, step), identical on every rank, different across steps
    draws = [draw_modality(0.5, 0.0, modality_rng(3407, step)) for step in range(200)]
    assert draws == [draw_modality(0.5, 0.0, modality_rng(3407, step)) for step in range(200)]
    assert 60 < draws.count("av") < 140


@torch.no_grad()
def test_incremental_decoding_with_gated_layers_equals_recompute(pair, inputs):
    _, flamingo = pair
    model = copy.deepcopy(flamingo)
    _set_gates(model, 0.6, 0.9)
    mel, tokens, video, mask = inputs
    xa, xv = model.encode(mel, video, mask)
    full = model.logits(tokens, xa, xv=xv)
    beams = 3
    cache = model.new_kv_cache(xa, beams=beams, xv=xv)
    assert set(cache.static_kv[0]) == {"cross_attn", "gated_x_attn"}
    assert cache.static_kv[0]["gated_x_attn"][0].shape[0] == 2  # per utterance, not per beam
    rows = tokens.repeat_interleave(beams, 0)
    steps = [model.logits(rows[:, :3], None, cache)]  # the prompt in one call
    steps += [model.logits(rows[:, i: i + 1], None, cache) for i in range(3, 6)]
    incremental = torch.cat(steps, dim=1)
    assert torch.allclose(incremental, full.repeat_interleave(beams, 0), atol=1e-4)
    # beam reordering: keep rows of utterance 1 then one row of utterance 0 (irregular groups)
    cache = model.new_kv_cache(xa, beams=beams, xv=xv)
    model.logits(rows[:, :4], None, cache)
    index = torch.tensor([4, 3, 0])
    cache.reorder(index)
    step = model.logits(rows[index, 4:5], None, cache)
    assert torch.allclose(step[:, 0], full[[1, 1, 0], 4], atol=1e-4)
    # no xv: audio-only cache equals decoding with zero video
    no_video = model.new_kv_cache(xa, beams=1)
    got = model.logits(tokens, None, no_video)
    assert torch.allclose(got, model.logits(tokens, xa, xv=torch.zeros(2, 5, 128)), atol=1e-4)


@torch.no_grad()
def test_resnet_only_video_branch(inputs):
    mel, tokens, video, mask = inputs
    torch.manual_seed(5)
    model = WhisperFlamingo.from_whisper(_whisper(), ResEncoder()).eval()
    keys = model.state_dict()
    assert "encoder.video_model.frontend3D.0.weight" in keys and "encoder.video_model.trunk.layer4.1.bn2.bias" in keys
    assert keys["encoder.video_projection.weight"].shape == (128, 512)
    assert model.avhubert is None and model.video_dim == 512
    _set_gates(model)
    xa, xv = model.encode(mel, video, mask)
    assert xv.shape == (2, 8, 128)
    assert model(mel, tokens, video, mask).shape == (2, 6, DIMS.n_vocab)


@torch.no_grad()
def test_lip_reader_fusion_shapes_and_path(inputs):
    _, tokens, video, mask = inputs
    dims = ModelDimensions(**{**DIMS.__dict__, "n_audio_ctx": 12})
    torch.manual_seed(6)
    model = WhisperFlamingo.from_whisper(_whisper(dims=dims), _avhubert(), fusion="lip-reader").eval()
    names = list(model.state_dict())
    assert "encoder.video_projection_blocks.2.mlp.2.weight" in names
    assert not any(n.startswith("encoder.video_projection_blocks.3") or ".cross_attn" in n
                   for n in names if n.startswith("encoder.video_projection_blocks"))
    feats = model.video_features(video, mask)  # (2, 8, 64)
    xa, xv = model.encode(None, video, mask)
    assert xv.shape == (2, 12, 128) and xa.shape == (2, 12, 128)  # 8 frames x2 = 16, cropped to n_audio_ctx 12
    enc = model.encoder
    x = enc.video_projection(torch.repeat_interleave(feats, 2, dim=1))[:, :12] + enc.positional_embedding[:12]
    for block in enc.video_projection_blocks:
        x = block(x)
    assert torch.allclose(xv, x, atol=1e-5)
    x = x + enc.positional_embedding[:12]  # the encoder blocks get positions again (original training path)
    for block in enc.blocks:
        x = block(x)
    assert torch.allclose(xa, enc.ln_post(x), atol=1e-5)
    assert model(None, tokens, video, mask).shape == (2, 6, DIMS.n_vocab)


def test_fusion_from_config():
    assert fusion_from_config("separate") == "separate"
    assert fusion_from_config("") == "separate" and fusion_from_config("early") == "separate"
    assert fusion_from_config("lip-reader") == "lip-reader"
    with pytest.raises(ConfigError, match="audio-only"):
        fusion_from_config("None")


# ------------------------------------------------------------------------------------------ checkpoints


def _released_small_state() -> dict[str, torch.Tensor]:
    """Key names and shapes of a released Whisper-Flamingo small (English, AV-HuBERT Large fine-tuned),
    on the meta device: the Whisper keys, the gated layers and the video branch as the original names
    them, plus AV-HuBERT's pretraining tensors the original kept."""
    d, av = 768, "model.encoder.video_model.w2v_model."
    meta = torch.device("meta")
    with meta:
        state = {f"model.{k}": v for k, v in Whisper(SMALL).state_dict().items()}
        avh = AVHubert(AVHubertConfig.large(finetuned=True), mode="finetuned").state_dict()
    state.update({av + k: v for k, v in avh.items()})
    state[av + "mask_emb"] = torch.empty(1024, device=meta)
    state[av + "label_embs_concat"] = torch.empty(2004, 256, device=meta)
    state["model.encoder.video_projection.weight"] = torch.empty(d, 1024, device=meta)
    state["model.encoder.video_projection.bias"] = torch.empty(d, device=meta)
    state["model.encoder.video_projection_scalar"] = torch.empty((), device=meta)
    for i in range(12):
        b = f"model.decoder.blocks.{i}."
        for name in ("query", "value", "out"):
            state[f"{b}gated_x_attn.{name}.weight"] = torch.empty(d, d, device=meta)
            state[f"{b}gated_x_attn.{name}.bias"] = torch.empty(d, device=meta)
        state[f"{b}gated_x_attn.key.weight"] = torch.empty(d, d, device=meta)
        for ln in ("gated_x_attn_ln", "ff_ln"):
            state[f"{b}{ln}.weight"] = torch.empty(d, device=meta)
            state[f"{b}{ln}.bias"] = torch.empty(d, device=meta)
        state[f"{b}attn_gate"] = torch.empty(1, device=meta)
        state[f"{b}ff_gate"] = torch.empty(1, device=meta)
        state[f"{b}ff.0.weight"] = torch.empty(4 * d, d, device=meta)
        state[f"{b}ff.0.bias"] = torch.empty(4 * d, device=meta)
        state[f"{b}ff.2.weight"] = torch.empty(d, 4 * d, device=meta)
        state[f"{b}ff.2.bias"] = torch.empty(d, device=meta)
    return state


def test_released_small_key_layout_loads_strictly_and_counts_651m():
    state = _released_small_state()
    layout = infer_layout({k[6:]: v for k, v in state.items()}, "released-small")
    assert layout.dims == SMALL and layout.video == "avhubert" and layout.avhubert_mode == "finetuned"
    assert layout.avhubert_config.encoder_layers == 24 and layout.fusion == "separate" and layout.gated
    model, _ = load_whisper_flamingo_state(state, "released-small")  # strict, meta tensors assigned
    assert len(model.state_dict()) == len(state) - 2  # all but mask_emb and label_embs_concat
    n = count_parameters(model)
    assert n == 651_038_361  # README: 651 M (AV-HuBERT's unused mask_emb / label_embs_concat excluded)
    assert count_parameters(model, ["encoder.video_model."]) == 324_622_976
    assert round((n + 1024 + 2004 * 256) / 1e6) == 652  # with them, as the original counted its module
    # a missing or an extra key is an error that names it
    broken = dict(state)
    del broken["model.decoder.blocks.3.ff_gate"]
    broken["model.decoder.blocks.0.adapter.weight"] = torch.empty(2, device="meta")
    with pytest.raises(CheckpointError) as err:
        load_whisper_flamingo_state(broken, "broken.pt")
    msg = str(err.value)
    assert "broken.pt" in msg and "decoder.blocks.3.ff_gate" in msg and "decoder.blocks.0.adapter.weight" in msg
    assert "\n" not in msg


@torch.no_grad()
@pytest.mark.parametrize("layout", ["finetuned", "pretrained", "resnet", "lip-reader"])
def test_checkpoint_file_round_trip(tmp_path, inputs, layout):
    mel, tokens, video, mask = inputs
    if layout == "resnet":
        torch.manual_seed(2)
        video_encoder = ResEncoder()
    else:
        video_encoder = _avhubert("pretrained" if layout == "pretrained" else "finetuned")
    fusion = "lip-reader" if layout == "lip-reader" else "separate"
    model = WhisperFlamingo.from_whisper(_whisper(), video_encoder, fusion=fusion).eval()
    _set_gates(model, 0.3, 0.2)
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    if layout in ("finetuned", "pretrained", "lip-reader"):
        prefix = "model.encoder.video_model." + ("" if layout == "pretrained" else "w2v_model.")
        state[prefix + "mask_emb"] = torch.zeros(64)
        state[prefix + "label_embs_concat"] = torch.zeros(10, 8)
        if layout == "pretrained":
            state[prefix + "final_proj.weight"] = torch.zeros(8, 64)
            state[prefix + "final_proj.bias"] = torch.zeros(8)
    path = tmp_path / "wf.pt"
    torch.save({"state_dict": state}, path)
    loaded = load_whisper_flamingo(path)
    assert loaded.fusion == fusion and not loaded.training
    if layout != "resnet":
        assert loaded.avhubert.mode == ("pretrained" if layout == "pretrained" else "finetuned")
    assert torch.equal(loaded(mel, tokens, video, mask), model(mel, tokens, video, mask))
    state_only = {k: v for k, v in state.items() if "video_projection.bias" not in k}
    torch.save({"state_dict": state_only}, path)
    with pytest.raises(CheckpointError, match="video_projection.bias"):
        load_whisper_flamingo(path)
    torch.save({"model": {}}, path)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_whisper_flamingo(path)


def test_build_from_config_values(tmp_path):
    with torch.device("meta"):
        model = WhisperFlamingo.build(SMALL, use_av_hubert_encoder=False, av_fusion="separate", add_gated_x_attn=0)
    assert not model.gated and model.video_dim == 512
    assert not any("gated" in k for k in model.state_dict())
    # from a Config: the given Whisper, the video encoder from video_model_ckpt (a Whisper-Flamingo file here)
    src = WhisperFlamingo.from_whisper(_whisper(), _avhubert())
    path = tmp_path / "wf.pt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in src.state_dict().items()}}, path)
    cfg = argparse.Namespace(av_fusion="separate", use_av_hubert_encoder=True, video_model_ckpt=str(path),
                             video_model_mode="auto", add_gated_x_attn=1, video_feature_dir="")
    built = build_whisper_flamingo(cfg, whisper=_whisper(4))
    assert built.avhubert.mode == "finetuned" and built.gated and built.video_dim == 64
    assert torch.equal(built.avhubert.encoder.layers[0].fc1.weight, src.avhubert.encoder.layers[0].fc1.weight)
    cfg.video_model_ckpt, cfg.video_feature_dir = "", str(tmp_path)
    assert build_whisper_flamingo(cfg, whisper=_whisper(4)).video_model is None
    cfg.video_feature_dir = ""
    with pytest.raises(ConfigError, match="video_model_ckpt"):
        build_whisper_flamingo(cfg, whisper=_whisper(4))


# ------------------------------------------------------------------------------------------ feature extraction


def test_extract_video_features_round_trip(tiny_video_corpus, tmp_path, capsys):
    from whisper_flamingo.commands import extract_video_features as cmd
    from whisper_flamingo.data.manifest import manifest_spec, read_manifest, resolve_selection
    from whisper_flamingo.data.video import load_video, load_video_features

    encoder = _avhubert("pretrained", seed=9)
    ckpt = tmp_path / "avhubert.pt"  # a pretraining-style fairseq file: {"cfg": {"model": ...}, "model": ...}
    torch.save({"cfg": {"model": dict(AV_CFG.to_dict(), _name="av_hubert")}, "model": encoder.state_dict()}, ckpt)
    out = tmp_path / "feats"
    parser = argparse.ArgumentParser()
    cmd.add_arguments(parser)
    common = ["--muavic-root", str(tiny_video_corpus), "--lang", "en", "--video-model-ckpt", str(ckpt),
              "--device", "cpu"]
    argv = common + ["--split", "test", "--out", str(out)]
    assert cmd.run(parser.parse_args(argv)) == 0
    assert "wrote 3 feature files" in capsys.readouterr().out
    recs = read_manifest(manifest_spec(resolve_selection("en"), "en", "test", tiny_video_corpus))
    with torch.no_grad():
        for rec in recs:
            feats = load_video_features(out, rec.id, rec.n_samples)
            clip = load_video(rec.video_path, rec.n_samples)
            ref = encoder(clip[None, None])[0]
            assert feats.shape == (clip.shape[0], 64)
            assert torch.allclose(feats, ref, atol=1e-2, rtol=1e-2)
    # resumable: nothing to do; a deleted file is written again
    assert cmd.run(parser.parse_args(argv)) == 0
    text = capsys.readouterr().out
    assert "wrote 0 feature files" in text and "3 already there" in text
    (out / f"{recs[0].id}.npy").unlink()
    assert cmd.run(parser.parse_args(argv)) == 0
    assert "wrote 1 feature files" in capsys.readouterr().out
    # another encoder may not write into the same folder
    with pytest.raises(ConfigError, match="another video encoder"):
        cmd.run(parser.parse_args(argv + ["--encoder", "resnet"]))
    # the tiny corpus reuses ids across splits: one folder cannot hold both (real MuAViC splits are disjoint)
    with pytest.raises(DataError, match="names two videos"):
        cmd.run(parser.parse_args(common + ["--split", "valid", "test", "--out", str(tmp_path / "both")]))
