"""``prepare extract-audio``: the sound track of any video (or audio) file as a 16 kHz mono int16 wav.

PyAV decodes and resamples (FFmpeg's ``swr``, the library behind ``ffmpeg -ac 1 -ar 16000 -acodec
pcm_s16le``, which MuAViC ran); no ffmpeg binary is needed.  The whole first audio stream is kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from whisper_flamingo.errors import DataError
from whisper_flamingo.preparation.media import open_container

SAMPLE_RATE = 16000


def decode_audio_16k(path: str | Path) -> np.ndarray:
    """The first audio stream of ``path`` as 16 kHz mono int16 samples (DataError naming the file if unusable)."""
    import av

    path = Path(path)
    container = open_container(path)
    chunks: list[np.ndarray] = []
    try:
        if not container.streams.audio:
            raise DataError("has no audio stream; leave it out (or give the audio as its own file)",
                            reason="no_audio", path=path)
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        try:
            for frame in container.decode(stream):
                frame.pts = None
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
        except av.error.FFmpegError as err:
            raise DataError(f"audio decoding failed part-way ({err}); the file is damaged, re-download it",
                            reason="truncated", path=path) from None
    finally:
        container.close()
    audio = np.concatenate(chunks).astype(np.int16) if chunks else np.zeros(0, np.int16)
    if audio.size == 0:
        raise DataError("the audio stream holds no samples; leave the file out", reason="empty_file", path=path)
    return audio


def write_wav(path: Path, audio: np.ndarray, rate: int = SAMPLE_RATE) -> None:
    """Write int16 mono samples as a PCM wav."""
    from scipy.io import wavfile

    wavfile.write(str(path), rate, np.asarray(audio, np.int16))


def extract_one(src: Path, out: Path) -> dict:
    """Decode ``src`` and write ``out`` (16 kHz mono int16 wav); returns the seconds written."""
    audio = decode_audio_16k(src)
    write_wav(out, audio)
    return {"seconds": round(audio.size / SAMPLE_RATE, 2)}
