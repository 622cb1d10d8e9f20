"""Raw PCM from a byte stream (standard input, a pipe from a microphone recorder) in fixed-size chunks."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from whisper_flamingo.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["read_pcm_chunks"]


def read_pcm_chunks(stream: BinaryIO, chunk_samples: int, sample_width: int = 2) -> Iterator[Tensor]:
    """Float32 waveforms of ``chunk_samples`` mono samples (the last one shorter) read from ``stream``.

    The bytes are signed little-endian integers of ``sample_width`` bytes (2: s16le, as ``arecord -f
    S16_LE`` or ``ffmpeg -f s16le`` write; 4: s32le), scaled to [-1, 1).  A chunk is yielded as soon as
    it is complete, so a live pipe is tagged while it runs.  A trailing partial sample is dropped.
    """
    if chunk_samples <= 0:
        raise DataError(f"chunk_samples must be positive, got {chunk_samples}", reason="bad_chunk")
    if sample_width not in (2, 4):
        raise DataError(f"raw PCM sample width {sample_width} bytes is not supported; use 2 (s16le) or 4 (s32le)",
                        reason="bad_pcm")
    dtype, scale = ("<i2", 32768.0) if sample_width == 2 else ("<i4", 2147483648.0)
    want = chunk_samples * sample_width
    buffer = bytearray()
    while True:
        data = stream.read(want - len(buffer))
        if data:
            buffer.extend(data)
            if len(buffer) < want:
                continue
        usable = len(buffer) - len(buffer) % sample_width
        if usable:
            samples = np.frombuffer(bytes(buffer[:usable]), dtype=dtype).astype(np.float32) / scale
            yield torch.from_numpy(samples)
        if len(buffer) != usable:
            log.warning("raw PCM input ended inside a sample: %d trailing byte(s) dropped", len(buffer) - usable)
        buffer.clear()
        if not data:
            return
