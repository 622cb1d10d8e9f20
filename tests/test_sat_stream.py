"""SAT streaming from raw PCM (standard input) and the upstream ``inference.py`` output lines."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from whisper_flamingo.data.pcm import read_pcm_chunks
from whisper_flamingo.decoding.sat_stream import chunk_lines, file_header, stream_pcm
from whisper_flamingo.errors import DataError
from whisper_flamingo.models.sat import build_sat, stream


class Trickle(io.RawIOBase):
    """A pipe that hands out at most ``step`` bytes per read (as a live recorder does)."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, n: int = -1) -> bytes:
        n = self.step if n < 0 else min(n, self.step)
        out = self.data[self.pos:self.pos + n]
        self.pos += len(out)
        return out


def pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def test_pcm_chunks_are_whole_even_from_a_trickling_pipe():
    ints = np.arange(-5000, 5000, 7, dtype=np.int16)  # 1429 samples
    for source in (io.BytesIO(pcm(ints)), Trickle(pcm(ints) + b"\x01", step=33)):
        chunks = list(read_pcm_chunks(source, 400))
        assert [len(c) for c in chunks] == [400, 400, 400, 229]
        assert torch.equal(torch.cat(chunks), torch.from_numpy(ints.astype(np.float32) / 32768))
    assert list(read_pcm_chunks(io.BytesIO(b""), 400)) == []
    with pytest.raises(DataError, match="sample width 3"):
        list(read_pcm_chunks(io.BytesIO(b""), 400, sample_width=3))


def test_stream_from_pcm_equals_stream_of_the_same_samples():
    torch.manual_seed(0)
    model = build_sat(embed_dim=32, depth=2, num_heads=2, target_length=32, cache_length=32).eval()
    ints = (np.random.default_rng(0).standard_normal(4 * 5120 + 3000) * 3000).astype(np.int16)
    wav = torch.from_numpy(ints.astype(np.float32) / 32768)
    expected = stream(model, wav, 5120)
    got = list(stream_pcm(model, Trickle(pcm(ints), step=1000), 5120))
    assert [i for i, _ in got] == [0, 1, 2, 3, 4]
    assert torch.equal(torch.stack([p for _, p in got]), expected)
    empty = torch.stack([p for _, p in stream_pcm(model, io.BytesIO(pcm(ints)), 5120, init="empty")])
    assert torch.equal(empty, stream(model, wav, 5120, init="empty"))
    assert not torch.allclose(empty[0], expected[0])


def test_chunk_lines_use_the_upstream_format():
    probs = torch.tensor([0.1, 0.95821, 0.0, 0.16614])
    labels = ["Speech", "Stream", "Music", "Trickle, dribble"]
    assert chunk_lines(0, 2.0, probs, labels, topk=3) == [
        "[0.0s]-[2.0s] Topk-1 Stream                         0.9582",
        "[0.0s]-[2.0s] Topk-2 Trickle, dribble               0.1661",
        "[0.0s]-[2.0s] Topk-3 Speech                         0.1000",
    ]
    assert chunk_lines(2, 0.1, probs, labels, topk=1) == [  # Python's float artefacts, as upstream prints them
        "[0.2s]-[0.30000000000000004s] Topk-1 Stream                         0.9582"]
    assert chunk_lines(1, 2, probs, labels, topk=1)[0].startswith("[2.0s]-[4.0s] ")
    assert file_header("a.wav") == "=====        a.wav         ====="
    with pytest.raises(ValueError, match="3 label names for 4 classes"):
        chunk_lines(0, 2.0, probs, labels[:3])
