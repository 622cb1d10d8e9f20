"""Reading speech audio and turning it into Whisper's log-mel spectrogram.

Units convention: :func:`load_audio` returns a mono **float32 array in int16 units** (values in
about ``[-32768, 32767]``; an int16 PCM file comes back with exactly its integer values), so that
noise mixing follows the original int16 arithmetic (see :mod:`whisper_flamingo.data.noise`).
:func:`to_unit_range` divides by 32768 to get Whisper's ``[-1, 1]`` float audio, which
:func:`log_mel` expects.

Files are read with ``soundfile`` (libsndfile; wav, flac, ogg, ...).  Problems raise
:class:`~whisper_flamingo.errors.DataError` naming the file, with these ``reason`` tags:

* ``missing_file``: the path does not exist;
* ``empty_file``: zero bytes, or a valid header with zero frames;
* ``unreadable``: libsndfile cannot parse the header;
* ``truncated``: a wav's ``data`` chunk declares more bytes than the file holds, fewer frames
  were decoded than the header declares, or decoding failed part-way (corrupt flac);
* ``nan_samples``: NaN or infinite samples (float files);
* ``sample_count_mismatch``: the manifest's sample count is neither the file's native sample count
  nor a 16 kHz count within one mel frame (160 samples, 10 ms) of its duration.

Stereo (or more channels) is averaged to mono and a non-16 kHz file is resampled to 16 kHz with
:func:`scipy.signal.resample_poly` (polyphase FIR low-pass, Kaiser window with beta 5.0, the
ratio reduced by the gcd); both log a warning once per file and process.
"""

from __future__ import annotations

import logging
import math
import os
import re
import struct
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from whisper_flamingo.errors import DataError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000
#: samples per mel frame (10 ms)
HOP_LENGTH = 160
#: Whisper's 30 s input window in samples
N_SAMPLES_30S = 30 * SAMPLE_RATE
INT16_SCALE = 32768.0

_warned: set[tuple[str, str]] = set()
_WARN_LIMIT = 100_000


def _warn_once(path: str, kind: str, message: str, *args: object) -> None:
    key = (path, kind)
    if key in _warned:
        return
    if len(_warned) < _WARN_LIMIT:
        _warned.add(key)
    logger.warning(message, *args)


@dataclass(frozen=True)
class AudioHeader:
    """What the header of an audio file says (no samples decoded)."""

    path: str
    frames: int
    samplerate: int
    channels: int
    format: str
    subtype: str

    @property
    def frames_16k(self) -> int:
        """Length in samples after resampling to 16 kHz."""
        return resampled_length(self.frames, self.samplerate)


def resampled_length(frames: int, samplerate: int) -> int:
    """Length of ``frames`` samples at ``samplerate`` after :func:`resample_poly` to 16 kHz."""
    if samplerate == SAMPLE_RATE:
        return int(frames)
    g = math.gcd(SAMPLE_RATE, int(samplerate))
    up, down = SAMPLE_RATE // g, int(samplerate) // g
    return int(math.ceil(frames * up / down))


def _wav_data_shortfall(path: str, block_align: int) -> tuple[int, int] | None:
    """For a RIFF/WAVE file: ``(declared_frames, available_frames)`` when the data chunk is cut.

    libsndfile silently shortens the frame count of a truncated wav; we walk the RIFF chunks to
    compare the declared ``data`` size with the bytes the file really holds.  Returns ``None``
    when the file is complete or the size is a streaming placeholder (0 or 0xFFFFFFFF).
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            pos = 12
            while pos + 8 <= size:
                fh.seek(pos)
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"data":
                    if csize in (0, 0xFFFFFFFF):
                        return None
                    available = size - (pos + 8)
                    if csize > available:
                        return csize // block_align, max(available, 0) // block_align
                    return None
                pos += 8 + csize + (csize & 1)
    except OSError:
        return None
    return None


def _block_align(info) -> int:  # soundfile's info object
    bits = {"PCM_U8": 8, "PCM_S8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32, "FLOAT": 32,
            "DOUBLE": 64, "ULAW": 8, "ALAW": 8}.get(info.subtype)
    return max(1, (bits // 8) * info.channels) if bits else 0


def probe_audio(path: str | os.PathLike) -> AudioHeader:
    """Check a file from its header only (fast) and return what the header says.

    Raises :class:`DataError` with reason ``missing_file``, ``empty_file``, ``unreadable`` or
    ``truncated`` (wav files whose data chunk is cut short).  Corruption inside compressed data
    (flac) is only found by decoding, i.e. by :func:`load_audio`.
    """
    p = str(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DataError("audio file does not exist; fix the path in the manifest or set "
                        "on_bad_sample: skip", reason="missing_file", path=p) from None
    except OSError as err:
        raise DataError(f"audio file cannot be accessed ({err.strerror}); check permissions",
                        reason="unreadable", path=p) from None
    if st.st_size == 0:
        raise DataError("audio file is empty (0 bytes); re-create it or set on_bad_sample: skip",
                        reason="empty_file", path=p)
    try:
        info = sf.info(p)
    except Exception as err:  # libsndfile raises several types
        msg = _library_message(err, p)
        raise DataError(f"audio header is unreadable ({msg}); re-create the file or set "
                        "on_bad_sample: skip", reason="unreadable", path=p) from None
    if info.frames <= 0:
        raise DataError("audio file has no samples; re-create it or set on_bad_sample: skip",
                        reason="empty_file", path=p)
    if info.format in ("WAV", "WAVEX"):
        align = _block_align(info)
        cut = _wav_data_shortfall(p, align) if align else None
        if cut is not None:
            raise DataError(f"audio file is truncated: header declares {cut[0]} frames, the file "
                            f"holds {cut[1]}; re-create it or set on_bad_sample: skip",
                            reason="truncated", path=p)
    return AudioHeader(p, int(info.frames), int(info.samplerate), int(info.channels),
                       str(info.format), str(info.subtype))


#: the manifest's sample count may differ from the file's duration by up to one mel frame (10 ms)
SAMPLE_COUNT_TOLERANCE = HOP_LENGTH


def sample_count_matches(header: AudioHeader, expected_samples: int) -> bool:
    """The manifest's sample count rule: the file's native sample count (at its own rate), or a 16 kHz count
    within one mel frame (160 samples, 10 ms) of the file's duration."""
    n = int(expected_samples)
    if n == header.frames:
        return True
    return abs(n - header.frames * SAMPLE_RATE / header.samplerate) <= SAMPLE_COUNT_TOLERANCE


def check_sample_count(header: AudioHeader, expected_samples: int) -> None:
    """Raise ``sample_count_mismatch`` unless :func:`sample_count_matches` (native count, or 16 kHz within 10 ms)."""
    if sample_count_matches(header, expected_samples):
        return
    rate = header.samplerate
    native = f"{header.frames} samples at {rate} Hz ({header.frames / rate:.3f} s"
    native += ")" if rate == SAMPLE_RATE else f", {header.frames_16k} at 16 kHz)"
    raise DataError(f"audio has {native} but the manifest says {int(expected_samples)}; the count must be the "
                    "file's native sample count or a 16 kHz count within 160 samples (10 ms) of its duration: "
                    "regenerate the manifest (whisper-flamingo prepare manifest) or set on_bad_sample: skip",
                    reason="sample_count_mismatch", path=header.path)


def _library_message(err: BaseException, path: str) -> str:
    """libsndfile's reason without the file name it quotes (the message names the file already)."""
    text = str(err).replace("\n", " ").replace(str(path), "")
    text = re.sub(r"Error opening\s*''\s*:?\s*", "", text).strip(" :'.")
    return text or type(err).__name__


def load_audio(path: str | os.PathLike, expected_samples: int | None = None) -> np.ndarray:
    """Read an audio file as mono 16 kHz float32 **in int16 units** (see module doc).

    ``expected_samples`` (the manifest's sample count) is checked by :func:`sample_count_matches`.
    """
    header = probe_audio(path)
    p = header.path
    try:
        data, sr = sf.read(p, dtype="float32", always_2d=True)
    except Exception as err:
        msg = _library_message(err, p)
        raise DataError(f"audio data cannot be decoded ({msg}); the file is probably truncated or "
                        "corrupt: re-create it or set on_bad_sample: skip", reason="truncated",
                        path=p) from None
    if data.shape[0] < header.frames:
        raise DataError(f"audio file is truncated: header declares {header.frames} frames, decoded "
                        f"{data.shape[0]}; re-create it or set on_bad_sample: skip",
                        reason="truncated", path=p)
    if data.shape[0] == 0:
        raise DataError("audio file has no samples", reason="empty_file", path=p)
    if not np.all(np.isfinite(data)):
        raise DataError("audio contains NaN or infinite samples; re-create the file or set "
                        "on_bad_sample: skip", reason="nan_samples", path=p)
    if data.shape[1] > 1:
        _warn_once(p, "channels", "%s: %d channels, averaged to mono", p, data.shape[1])
        mono = data.mean(axis=1, dtype=np.float32)
    else:
        mono = data[:, 0]
    mono = mono * np.float32(INT16_SCALE)
    if sr != SAMPLE_RATE:
        _warn_once(p, "rate", "%s: sample rate %d Hz, resampled to %d Hz (polyphase, Kaiser window)",
                   p, sr, SAMPLE_RATE)
        mono = resample_to_16k(mono, sr)
    if expected_samples is not None:
        check_sample_count(header, expected_samples)
    return np.ascontiguousarray(mono, dtype=np.float32)


def resample_to_16k(audio: np.ndarray, samplerate: int) -> np.ndarray:
    """Resample to 16 kHz with a polyphase FIR filter (``scipy.signal.resample_poly``, Kaiser 5.0)."""
    from scipy.signal import resample_poly

    if samplerate == SAMPLE_RATE:
        return audio
    g = math.gcd(SAMPLE_RATE, int(samplerate))
    out = resample_poly(audio, SAMPLE_RATE // g, int(samplerate) // g, window=("kaiser", 5.0))
    return out.astype(np.float32)


def to_unit_range(audio_int16_units: np.ndarray) -> np.ndarray:
    """int16 units -> Whisper's float audio in ``[-1, 1)`` (divide by 32768), float32."""
    return (np.asarray(audio_int16_units, dtype=np.float32) / np.float32(INT16_SCALE)).astype(np.float32)


def pad_or_trim(audio: np.ndarray, length: int = N_SAMPLES_30S) -> np.ndarray:
    """Zero-pad or cut a 1-D waveform to ``length`` samples (30 s: the original-Whisper mode)."""
    audio = np.asarray(audio)
    if audio.shape[-1] > length:
        return audio[..., :length]
    if audio.shape[-1] < length:
        pad = [(0, 0)] * (audio.ndim - 1) + [(0, length - audio.shape[-1])]
        return np.pad(audio, pad)
    return audio


def log_mel(audio: np.ndarray | torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's normalised log-mel spectrogram of float audio in ``[-1, 1]``: ``(n_mels, n // 160)``.

    Calls :func:`whisper.audio.log_mel_spectrogram` (STFT n_fft 400, hop 160, Hann window,
    centred with reflect padding, which gives ``n // 160 + 1`` frames of which Whisper drops the
    last; power spectrum; Whisper's 80- or 128-bin mel filters; log10 floored at 1e-10, clamped to
    max - 8, then (x + 4) / 4).  Audio of at most 200 samples cannot be reflect-padded: it is
    zero-padded to 401 samples first and cut back to ``n // 160`` frames (possibly zero).
    """
    from whisper.audio import log_mel_spectrogram

    if n_mels not in (80, 128):
        raise ValueError(f"n_mels must be 80 or 128, got {n_mels}")
    x = torch.as_tensor(np.asarray(audio, dtype=np.float32) if not torch.is_tensor(audio) else audio)
    x = x.to(torch.float32).reshape(-1)
    n = int(x.shape[0])
    frames = n // HOP_LENGTH
    if n <= 200:
        x = torch.nn.functional.pad(x, (0, 401 - n))
    mel = log_mel_spectrogram(x, n_mels=n_mels)
    return mel[:, :frames].contiguous()
