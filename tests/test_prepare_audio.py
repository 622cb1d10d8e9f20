"""``prepare extract-audio`` and the step machinery (sharding, resuming, the bad-input policy)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from whisper_flamingo.cli import main
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.preparation.jobs import shard


def _write_av(path: Path, seconds: float, rate: int = 44100, channels: int = 2, freq: float = 440.0,
              container_fmt: str | None = None, vcodec: str = "mpeg4", acodec: str = "aac") -> np.ndarray:
    """A small video file with a tone; returns the mono tone at 16 kHz (the expected content)."""
    import av

    n = int(seconds * rate)
    t = np.arange(n) / rate
    tone = (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    with av.open(str(path), "w", format=container_fmt) as c:
        vs = c.add_stream(vcodec, rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        a = c.add_stream(acodec, rate=rate)
        a.layout = "stereo" if channels == 2 else "mono"
        for i in range(int(seconds * 25)):
            f = av.VideoFrame.from_ndarray(np.full((48, 32), 100, np.uint8), format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        step = 1024
        fmt = a.codec_context.format.name
        for i in range(0, n, step):
            block = np.repeat(tone[None, i:i + step], channels, 0)
            if fmt.endswith("p"):
                frame = av.AudioFrame.from_ndarray(block.astype(np.float32), format="fltp",
                                                   layout=a.layout.name)
            else:
                frame = av.AudioFrame.from_ndarray((block.T.reshape(1, -1) * 32767).astype(np.int16),
                                                   format="s16", layout=a.layout.name)
            frame.sample_rate, frame.pts = rate, i
            for p in a.encode(frame):
                c.mux(p)
        for p in a.encode():
            c.mux(p)
    t16 = np.arange(int(seconds * 16000)) / 16000
    return 0.3 * np.sin(2 * np.pi * freq * t16) * 32768


def test_shard_covers_everything_once():
    items = list(range(10))
    parts = [shard(items, r, 3) for r in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert shard([], 0, 2) == []
    with pytest.raises(ConfigError, match="--rank 3"):
        shard(items, 3, 3)


def test_extract_audio_formats_and_resume(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "spk1").mkdir(parents=True)
    expected = _write_av(src / "spk1" / "a.mp4", 1.0)
    _write_av(src / "b.mkv", 0.6, rate=22050, channels=1, container_fmt="matroska")
    _write_av(src / "c.avi", 0.5, rate=48000, acodec="mp2", container_fmt="avi")
    _write_av(src / "d.webm", 0.5, rate=48000, vcodec="libvpx", acodec="libopus", container_fmt="webm")
    out = tmp_path / "wav"
    assert main(["prepare", "extract-audio", "--src", str(src), "--out", str(out), "--no-progress"]) == 0
    assert "4 inputs in this shard: 4 written, 0 already done" in capsys.readouterr().out
    rate, a = wavfile.read(out / "spk1" / "a.wav")
    assert rate == 16000 and a.dtype == np.int16 and a.ndim == 1
    assert abs(a.size - 16000) < 1100  # the AAC priming/padding, at most one frame
    # the tone came through: same frequency, same level (correlation over the middle)
    spec = np.abs(np.fft.rfft(a[2000:14000].astype(float)))
    assert abs(np.argmax(spec) * 16000 / 12000 - 440) < 3
    assert abs(np.sqrt(np.mean(a[2000:14000].astype(float) ** 2)) - np.sqrt(np.mean(expected ** 2))) < 0.1 * 7000
    for name, secs in (("b.wav", 0.6), ("c.wav", 0.5), ("d.wav", 0.5)):
        r, x = wavfile.read(out / name)
        assert r == 16000 and abs(x.size / 16000 - secs) < 0.08, name
    # resuming: everything is kept; a missing output is redone
    (out / "b.wav").unlink()
    assert main(["prepare", "extract-audio", "--src", str(src), "--out", str(out), "--no-progress"]) == 0
    assert "1 written, 3 already done" in capsys.readouterr().out
    # sharding: rank 1 of 2 sees the second half of the sorted list only
    out2 = tmp_path / "wav2"
    assert main(["prepare", "extract-audio", "--src", str(src), "--out", str(out2), "--no-progress",
                 "--rank", "1", "--nshard", "2"]) == 0
    assert sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*.wav")) == ["d.wav", "spk1/a.wav"]


def test_extract_audio_bad_inputs(tmp_path, capsys):
    src = tmp_path / "src"
    src.mkdir()
    _write_av(src / "good.mp4", 0.4)
    (src / "empty.mp4").write_bytes(b"")
    (src / "junk.mp4").write_bytes(b"this is not a video" * 50)
    import av
    with av.open(str(src / "silent.mp4"), "w") as c:  # video only
        vs = c.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        for i in range(5):
            f = av.VideoFrame.from_ndarray(np.zeros((48, 32), np.uint8), format="yuv420p")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
    out = tmp_path / "wav"
    args = ["prepare", "extract-audio", "--src", str(src), "--out", str(out), "--no-progress"]
    assert main(args) == 2  # the first bad file (sorted: empty.mp4) stops the step
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "empty.mp4" in err and "0 bytes" in err
    assert main(args + ["--on-bad-sample", "skip"]) == 0
    line = capsys.readouterr().out
    assert "4 inputs in this shard: 1 written" in line
    assert "3 skipped as bad (empty_file 1, no_audio 1, unreadable 1)" in line
    assert sorted(p.name for p in out.rglob("*")) == ["good.wav"]  # no partial files left behind
