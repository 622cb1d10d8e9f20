"""AST: the Kaldi fbank front end, the model, its checkpoint layouts, parity with the original."""

from __future__ import annotations

import json
import math

import pytest
import torch
from needs import need_module

from whisper_flamingo.checkpoints.ast import (
    adapt_positions,
    ast_from_deit,
    ast_state_to_hf,
    hf_state_to_ast,
    save_ast_hf_dir,
    save_ast_released,
)
from whisper_flamingo.data.fbank import NORM_STATS, ast_input, kaldi_fbank
from whisper_flamingo.errors import CheckpointError, DataError
from whisper_flamingo.models.ast import AST, ASTConfig
from whisper_flamingo.models.registry import create, list_models, model_info

REF = "tagging_reference/ast/"
HEADS = {192: 2 * (192 * 1000 + 1000), 768: 2 * (768 * 1000 + 1000)}  # DeiT's unused ImageNet heads


@pytest.fixture(scope="module")
def reference(shared_data):
    io = torch.load(shared_data / REF / "ast_tiny224_s10_t100_io.pt", map_location="cpu", weights_only=True)
    return io, shared_data / REF / "ast_tiny224_s10_t100_weights.pt"


def _tiny(input_tdim: int = 128, label_dim: int = 7, **kw) -> AST:
    torch.manual_seed(0)
    model = AST(ASTConfig(label_dim=label_dim, input_tdim=input_tdim, model_size="tiny224", **kw))
    with torch.no_grad():  # no default-looking values: LayerNorms and biases random too
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "mlp_head.0" in name:
                p.normal_(0.5 if name.endswith("weight") else 0.0, 0.1)
    return model.eval()


# ------------------------------------------------------------------------------------------ parity


def test_logits_and_intermediates_match_the_original(reference, one_thread):
    io, weights = reference
    model = AST.from_checkpoint(weights)
    assert model.cfg == ASTConfig(label_dim=527, fstride=10, tstride=10, input_fdim=128, input_tdim=100,
                                  model_size="tiny224")
    with torch.no_grad():
        assert (model.patch_tokens(io["fbank"]) - io["patch_tokens"]).abs().max() <= 1e-4
        assert (model.features(io["fbank"]) - io["pooled"]).abs().max() <= 1e-4
        assert (model(io["fbank"]) - io["logits"]).abs().max() <= 1e-4
        assert (model(io["fbank_model_input"]) - io["fbank_logits"]).abs().max() <= 1e-4
        # through the registry too (the named configuration, its length set to the fixture's)
        named = create("ast-tiny224", checkpoint=weights, input_tdim=100)
        assert torch.equal(named(io["fbank"]), model(io["fbank"]))
    # the stored count includes DeiT's two unused 1000-class heads
    stored = torch.load(weights, map_location="cpu", weights_only=True)["cfg"]["n_params"]
    assert sum(p.numel() for p in model.parameters()) + HEADS[192] == stored


def test_waveform_to_logits_matches_the_original_front_end(reference, one_thread):
    io, weights = reference
    wav = io["waveform"][0]
    fbank = kaldi_fbank(wav - wav.mean())
    assert fbank.shape == io["kaldi_fbank"].shape == (98, 128)
    assert (fbank - io["kaldi_fbank"]).abs().max() <= 1e-3
    x = ast_input(io["waveform"], target_length=100, stats="audioset")
    assert (io["norm_mean"], io["norm_std"]) == pytest.approx(NORM_STATS["audioset"])
    assert (x - io["fbank_model_input"][0]).abs().max() <= 1e-3
    with torch.no_grad():
        logits = AST.from_checkpoint(weights)(x[None])
    assert (logits - io["fbank_logits"]).abs().max() <= 1e-4


def test_layer_norm_eps_and_exact_gelu():
    # the fixture's 1e-4 tolerance cannot see the backbone eps (1e-5 instead of 1e-6 moves logits by 4e-5)
    model = _tiny(input_tdim=32)
    norms = {n: m.eps for n, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
    assert norms.pop("mlp_head.0") == 1e-5
    assert len(norms) == 2 * 12 + 1 and set(norms.values()) == {1e-6}
    x = torch.linspace(-3, 3, 7)
    block = model.v.blocks[0].mlp
    with torch.no_grad():
        block.fc1.weight.zero_()
        block.fc1.bias[:7] = x
        block.fc2.weight.zero_()
        block.fc2.weight[0, :7] = 1.0
        block.fc2.bias.zero_()
        out = block(torch.zeros(1, 192))[0, 0]
    exact = sum(0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist())
    assert out.item() == pytest.approx(exact, abs=1e-6)


# ------------------------------------------------------------------------------------------ front end


def test_fbank_frames_empty_bin_and_padding():
    torch.manual_seed(0)
    for seconds, frames in ((1.0, 98), (0.5, 48)):
        assert kaldi_fbank(torch.randn(int(16000 * seconds))).shape == (frames, 128)
    fb = kaldi_fbank(torch.randn(4000))
    # mel bin 3 holds no FFT bin at 512 points: log(float32 eps) in every frame (torchaudio's behaviour)
    assert torch.all(fb[:, 3] == math.log(torch.finfo(torch.float32).eps))
    assert torch.all(fb[:, [0, 1, 2, 4, 127]] > -15)
    # a 1-kHz tone peaks in the mel bin whose centre is nearest 1 kHz
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / 16000)
    mel = [1127 * math.log(1 + f / 700) for f in (20, 8000, 1000)]  # low, high, tone
    centre = round((mel[2] - mel[0]) / ((mel[1] - mel[0]) / 129)) - 1
    assert abs(int(kaldi_fbank(tone).mean(0).argmax()) - centre) <= 1
    # pipeline: 0.3 s → 28 frames, padded to 40 with zeros, normalised to (0 - mean) / (2 std)
    x = ast_input(torch.randn(4800) + 3.0, target_length=40, stats="esc50")
    mean, std = NORM_STATS["esc50"]
    assert x.shape == (40, 128) and torch.allclose(x[28:], torch.full((12, 128), -mean / (2 * std)))
    assert ast_input(torch.randn(16000), target_length=50).shape == (50, 128)  # cut
    with pytest.raises(DataError, match="shorter than one"):
        kaldi_fbank(torch.randn(399))


def test_a_dc_offset_is_removed_frame_by_frame():
    torch.manual_seed(1)
    wav = torch.randn(3200) * 0.1
    # per-frame DC removal cancels a constant offset exactly (up to rounding), so AST's removal of the
    # waveform mean changes only float rounding; without it a 0.5 offset would dominate the low bins
    assert (kaldi_fbank(wav + 0.5) - kaldi_fbank(wav)).abs().max() < 2e-3
    assert torch.allclose(ast_input(wav + 0.5, 30), ast_input(wav, 30), atol=1e-5)


# ------------------------------------------------------------------------------------------ registry


def test_registry_sizes_and_published_counts():
    assert list_models("ast") == ["ast-tiny224", "ast-small224", "ast-base224", "ast-base384"]
    # the original prints 88.132 M for the AudioSet model (1214 tokens), DeiT's unused heads included
    assert round((model_info("ast-base384").parameters + HEADS[768]) / 1e3) == 88_132
    model = create("ast-tiny224", input_tdim=128, label_dim=35)
    assert model(torch.zeros(2, 128, 128)).shape == (2, 35)
    assert model.v.pos_embed.shape == (1, 12 * 12 + 2, 192)
    with pytest.raises(ValueError, match="input_tdim=128 .* got 100 frames"):
        model(torch.zeros(1, 100, 128))


# ------------------------------------------------------------------------------------------ layouts


def _released(model: AST, extra: dict | None = None) -> dict:
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    width = model.cfg.width
    state |= {"module.v.head.weight": torch.zeros(1000, width), "module.v.head.bias": torch.zeros(1000),
              "module.v.head_dist.weight": torch.zeros(1000, width), "module.v.head_dist.bias": torch.zeros(1000)}
    return state | (extra or {})


def test_released_files_infer_their_config_or_name_the_keyword(tmp_path, one_thread):
    model = _tiny(input_tdim=128)
    x = torch.randn(1, 128, 128)
    with torch.no_grad():
        want = model(x)
    named = tmp_path / "speechcommands_10_10_0.9812.pth"
    torch.save(_released(model), named)
    loaded = AST.from_checkpoint(named)  # strides from the name, length 128 from the recipe lengths
    assert loaded.cfg == model.cfg
    with torch.no_grad():
        assert torch.equal(loaded(x), want)
    # our writer produces the same layout (module. prefix, zero DeiT heads) and reads back equal
    ours = save_ast_released(model, tmp_path / "esc50_10_10_0.9000.pth")
    assert torch.load(ours, weights_only=True).keys() == _released(model).keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in AST.from_checkpoint(ours).state_dict().items())
    plain = tmp_path / "ast.pth"
    torch.save(_released(model), plain)
    with pytest.raises(CheckpointError, match="pass fstride= and tstride="):  # 144 = 12x12 = 9x16 = 8x18
        AST.from_checkpoint(plain)
    assert AST.from_checkpoint(plain, fstride=10, tstride=10).cfg == model.cfg
    audioset = _tiny(input_tdim=1024)  # 1212 positions: stride 10 is the only equal stride that fits
    torch.save(_released(audioset), plain)
    assert AST.from_checkpoint(plain).cfg == audioset.cfg
    odd = _tiny(input_tdim=100)
    torch.save(_released(odd), plain)
    with pytest.raises(CheckpointError, match=r"pass input_tdim= \(between 96 and 105\)"):
        AST.from_checkpoint(plain, fstride=10, tstride=10)
    assert AST.from_checkpoint(plain, fstride=10, tstride=10, input_tdim=100).cfg == odd.cfg
    # strict beyond DeiT's heads: a stray key or a missing one is refused, naming it
    torch.save(_released(model, {"module.v.extra": torch.zeros(1)}), named)
    with pytest.raises(CheckpointError, match="unexpected keys .*v.extra"):
        AST.from_checkpoint(named)
    state = _released(model)
    del state["module.v.blocks.3.mlp.fc2.bias"]
    torch.save(state, named)
    with pytest.raises(CheckpointError, match="missing keys .*blocks.3.mlp.fc2.bias"):
        AST.from_checkpoint(named)
    with pytest.raises(CheckpointError, match="unknown keyword 'tdim'"):
        AST.from_checkpoint(named, tdim=5)


def test_fixture_form_and_adaptation_to_another_length(tmp_path, one_thread):
    model = _tiny(input_tdim=128)
    path = tmp_path / "ast.pt"
    torch.save({"cfg": {"model_size": "tiny224", "label_dim": 7, "fstride": 10, "tstride": 10, "input_fdim": 128,
                        "input_tdim": 128, "n_params": 1}, "model": model.state_dict()}, path)
    short = AST.from_checkpoint(path, input_tdim=64)  # 12 x 12 grid → 12 x 5: centred columns 6-2 .. 6+2
    grid = model.v.pos_embed[0, 2:].reshape(12, 12, 192)
    assert torch.equal(short.v.pos_embed[0, :2], model.v.pos_embed[0, :2])
    assert torch.equal(short.v.pos_embed[0, 2:].reshape(12, 5, 192), grid[:, 4:9])
    strided = AST.from_checkpoint(path, fstride=16, tstride=16)  # 8 x 8: centred rows and columns 2..9
    assert torch.equal(strided.v.pos_embed[0, 2:].reshape(8, 8, 192), grid[2:10, 2:10])
    long = AST.from_checkpoint(path, input_tdim=256, label_dim=3)  # 12 x 25: bilinear in time, new head
    assert long.v.pos_embed.shape == (1, 12 * 25 + 2, 192)
    assert torch.allclose(long.v.pos_embed[0, 2:].reshape(12, 25, 192)[:, 0], grid[:, 0], atol=0.2)
    assert long(torch.randn(1, 256, 128)).shape == (1, 3)
    assert torch.equal(long.v.blocks[5].attn.qkv.weight, model.v.blocks[5].attn.qkv.weight)
    with pytest.raises(CheckpointError, match="model_size='base384' cannot be loaded"):
        AST.from_checkpoint(path, model_size="base384")
    # adapt_positions itself: the identity on the same grid
    assert torch.equal(adapt_positions(model.v.pos_embed, (12, 12), (12, 12)), model.v.pos_embed)


def test_imagenet_init_from_a_deit_checkpoint(tmp_path, one_thread):
    torch.manual_seed(2)
    donor = _tiny(input_tdim=128).state_dict()
    deit = {k[2:]: v for k, v in donor.items() if k.startswith("v.")}
    deit["patch_embed.proj.weight"] = torch.randn(192, 3, 16, 16)
    deit["pos_embed"] = torch.randn(1, 14 * 14 + 2, 192)
    deit |= {"head.weight": torch.zeros(1000, 192), "head.bias": torch.zeros(1000),
             "head_dist.weight": torch.zeros(1000, 192), "head_dist.bias": torch.zeros(1000)}
    path = tmp_path / "deit_tiny_distilled_patch16_224.pth"
    torch.save({"model": deit}, path)
    model = ast_from_deit(path, model_size="tiny224", input_tdim=128, label_dim=35)
    assert torch.equal(model.v.patch_embed.proj.weight, deit["patch_embed.proj.weight"].sum(1, keepdim=True))
    grid = deit["pos_embed"][0, 2:].reshape(14, 14, 192)
    assert torch.equal(model.v.pos_embed[0, 2:].reshape(12, 12, 192), grid[1:13, 1:13])  # start 7 - 6
    assert torch.equal(model.v.blocks[11].mlp.fc2.weight, deit["blocks.11.mlp.fc2.weight"])
    assert model.mlp_head[1].weight.shape == (35, 192)
    wide = AST.from_checkpoint(path, input_tdim=1024)  # size from the DeiT; 12 x 101: time resized
    assert wide.cfg.model_size == "tiny224" and not wide.training
    assert wide.v.pos_embed.shape == (1, 12 * 101 + 2, 192)
    with pytest.raises(CheckpointError, match="width 192 cannot initialise AST base384"):
        ast_from_deit(path, model_size="base384")


def test_hugging_face_layout_both_ways(tmp_path, one_thread):
    model = _tiny(input_tdim=48, label_dim=5, fstride=12, tstride=11)
    hf = ast_state_to_hf(model.state_dict())
    assert "audio_spectrogram_transformer.encoder.layer.0.attention.attention.key.weight" in hf
    assert not any("qkv" in k or "head_dist" in k for k in hf)
    back = hf_state_to_ast(hf)
    assert back.keys() == model.state_dict().keys()
    assert all(torch.equal(back[k], v) for k, v in model.state_dict().items())
    out = save_ast_hf_dir(model, tmp_path / "hf")
    config = json.loads((out / "config.json").read_text())
    assert (config["frequency_stride"], config["time_stride"], config["max_length"]) == (12, 11, 48)
    loaded = AST.from_checkpoint(out)
    assert loaded.cfg == model.cfg
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    # and transformers' own class agrees, loading our directory and giving its state dict back to us
    need_module("transformers", "the test extra")
    from transformers import ASTForAudioClassification

    theirs = ASTForAudioClassification.from_pretrained(out).eval()
    x = torch.randn(2, 48, 128)
    with torch.no_grad():
        # only the classifier LayerNorm's eps differs (HF: one eps for all, 1e-6; AST's head: 1e-5)
        assert (theirs(input_values=x).logits - model(x)).abs().max() < 1e-4
    imported = hf_state_to_ast(theirs.state_dict())
    assert all(torch.equal(imported[k], v) for k, v in model.state_dict().items())


@pytest.mark.filterwarnings("ignore:At least one mel filter has all zero values")  # bin 3, as in torchaudio
def test_front_end_agrees_with_the_hugging_face_feature_extractor():
    # an independent (numpy) implementation of the same recipe: fbank, zero padding, (x - mean) / (2 std)
    need_module("transformers", "the test extra")
    from transformers import ASTFeatureExtractor

    torch.manual_seed(0)
    wav = 0.1 * torch.randn(12000) + 0.3 * torch.sin(torch.arange(12000) * 0.2)
    theirs = ASTFeatureExtractor(max_length=90)(wav.numpy(), sampling_rate=16000, return_tensors="pt")
    ours = ast_input(wav, target_length=90, stats="audioset")
    assert ours.shape == theirs["input_values"][0].shape == (90, 128)
    assert (ours - theirs["input_values"][0]).abs().max() < 2e-4  # 2e-4 · 2 · 4.57 ≈ 2e-3 in the log domain
