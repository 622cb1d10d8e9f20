"""Streaming sound tagging with SAT from files or raw PCM, and the upstream ``inference.py`` output lines.

``whisper-flamingo tag --stream`` prints, per file, :func:`file_header` and then for every chunk k
:func:`chunk_lines` followed by a blank line, e.g. ``[0.0s]-[2.0s] Topk-1 Speech                         0.9582``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import BinaryIO

from torch import Tensor

from whisper_flamingo.data.pcm import read_pcm_chunks
from whisper_flamingo.models.sat import AudioTransformer, Streamer

__all__ = ["chunk_lines", "file_header", "stream_pcm"]


def stream_pcm(model: AudioTransformer, source: BinaryIO, chunk_samples: int, init: str = "silence",
               cache: Tensor | None = None, sample_width: int = 2) -> Iterator[tuple[int, Tensor]]:
    """(chunk index, probabilities ``[527]``) for each chunk of raw 16-kHz mono PCM read from ``source``
    (e.g. ``sys.stdin.buffer``), as soon as the chunk has arrived; SAT memory as :class:`Streamer`."""
    streamer = Streamer(model, init, cache)
    for index, chunk in enumerate(read_pcm_chunks(source, chunk_samples, sample_width)):
        probs = streamer(chunk)
        if probs is not None:
            yield index, probs


def file_header(path: object) -> str:
    """``===== <path centred in 20 characters> =====``, the upstream per-file header."""
    return f"===== {str(path):^20} ====="


def chunk_lines(index: int, chunk_seconds: float, probs: Tensor, labels: Sequence[str], topk: int = 3) -> list[str]:
    """The upstream lines of chunk ``index``: ``[<k·c>s]-[<(k+1)·c>s] Topk-<r> <label:<30> <prob:.4f>``,
    best first (times in Python float formatting, as upstream prints them)."""
    if len(labels) != probs.shape[-1]:
        raise ValueError(f"{len(labels)} label names for {probs.shape[-1]} classes")
    values, indices = probs.topk(min(topk, probs.shape[-1]))
    seconds = float(chunk_seconds)
    span = f"[{index * seconds}s]-[{(index + 1) * seconds}s]"
    return [f"{span} Topk-{rank} {labels[int(i)]:<30} {float(p):.4f}"
            for rank, (p, i) in enumerate(zip(values, indices), start=1)]
