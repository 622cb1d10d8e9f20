"""Additive noise at a chosen signal-to-noise ratio (the original ``add_noise``, made robust).

Units: every waveform here is a float array in **int16 units** (range about ±32768), as in the
original, which mixed int16 audio and cast the mixture back to int16.  The caller divides the
result by 32768 to get Whisper's [-1, 1] float audio.

Recipe (per utterance), identical to the original except where noted:

1. pick one *line* of the noise list uniformly at random (lists repeat files to balance noise
   categories, so picking lines, not distinct files, keeps the intended category weights);
2. SNR: a number is used as is; a ``[lo, hi]`` pair draws an **integer** uniformly in
   ``[ceil(lo), floor(hi)]`` (the original's integer draw; it only accepted tuples, we also take
   lists because YAML has no tuples);
3. ``clean_rms`` over the whole utterance;
4. the noise is used as if tiled ``ceil(len_clean / len_noise)`` times; ``offset="zero"`` takes
   the first ``len_clean`` samples (the original, used for evaluation so every utterance sees the
   same excerpt of a single babble file); ``offset="random"`` (training, ours) starts at a random
   sample: within ``[0, len_noise - len_clean]`` when the noise is long enough (no wrap-around),
   else anywhere in the noise, continuing cyclically;
5. the noise excerpt is scaled to ``clean_rms / 10**(snr/20)`` (RMS over the excerpt) and added;
6. clipping guard: if the mixture leaves the int16 range it is scaled as a whole by
   ``32767 / max`` when ``max >= |min|`` else by ``-32768 / min``;
7. truncation towards zero as by an int16 cast.  We return **float32** holding those integer
   values (not an int16 array).

Differences from the original: silent clean audio gives the clean audio back (no NaN); a silent
noise excerpt gives the clean audio back with a warning; silent, empty, unreadable or missing
noise files are refused when the list is loaded, with the list's file and line.  An SNR of 1000
is not special here: callers treat 1000 dB as "clean" before calling us.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from whisper_flamingo.errors import ConfigError, NoiseError

logger = logging.getLogger(__name__)

INT16_MAX = 32767.0
INT16_MIN = -32768.0
_INT16_SCALE = 32768.0
#: ``NoiseBank.from_list(preload=None)`` keeps the samples in memory up to this many bytes.
AUTO_PRELOAD_BYTES = 2 * 1024**3
OFFSETS = ("zero", "random")


def _list_entries(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(line number, wav path)`` for every non-blank line of a noise list."""
    p = Path(path)
    if not p.is_file():
        raise NoiseError("noise list does not exist; fix the noise list path in the config",
                         reason="missing_file", path=p)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise NoiseError(f"noise list is unreadable ({err}); check the file",
                         reason="unreadable", path=p) from err
    entries = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        field = raw.split("\t", 1)[0].strip()
        if field:
            entries.append((lineno, os.path.abspath(field)))
    return entries


def read_noise_list(path: str | os.PathLike) -> list[str]:
    """Wav paths listed in a noise list (one per line; blank lines ignored).

    Only the first tab-separated field of a line is used.  Relative paths are resolved against
    the *current working directory* (not the list's folder), like the original, which opened them
    as written.  A missing list raises :class:`NoiseError` naming it.
    """
    return [wav for _, wav in _list_entries(path)]


def _load_noise(wav: str, list_path: str | os.PathLike, lineno: int,
                sample_rate: int | None) -> np.ndarray:
    """Read one noise file as mono float32 in int16 units, refusing unusable files."""

    def fail(what: str, reason: str) -> NoiseError:
        return NoiseError(f"noise file {wav} {what}; remove it from the list", reason=reason,
                          path=list_path, line=lineno)

    if not os.path.isfile(wav):
        raise fail("does not exist", "missing_file")
    try:
        data, sr = sf.read(wav, dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises several types for corrupt/unknown files
        raise fail(f"is unreadable ({type(err).__name__}: {err})".replace("\n", " "),
                   "unreadable") from err
    if data.shape[0] == 0:
        raise fail("is empty (no samples)", "empty_file")
    if sample_rate is not None and sr != sample_rate:
        raise fail(f"has sample rate {sr} Hz, expected {sample_rate} Hz (resample it)",
                   "sample_rate")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if not np.all(np.isfinite(mono)):
        raise fail("contains NaN or infinite samples", "nan_samples")
    mono = (mono * _INT16_SCALE).astype(np.float32)
    if not np.any(mono):
        raise fail("is silent (all samples are zero)", "silent")
    return mono


def draw_snr(snr_db: float | Sequence[float], rng: np.random.Generator) -> float:
    """The SNR for one utterance: a number as is, or an integer drawn from ``[lo, hi]``."""
    if isinstance(snr_db, (int, float, np.integer, np.floating)) and not isinstance(snr_db, bool):
        return float(snr_db)
    try:
        lo, hi = snr_db  # type: ignore[misc]
        lo_i, hi_i = math.ceil(float(lo)), math.floor(float(hi))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"noise SNR {snr_db!r} must be a number or a [low, high] pair of dB "
                          "values") from err
    if lo_i > hi_i:
        raise ConfigError(f"noise SNR range {list(snr_db)} holds no integer dB value; "
                          "give [low, high] with low <= high")
    return float(rng.integers(lo_i, hi_i + 1))


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float, offset: int = 0) -> np.ndarray:
    """Add ``noise`` to ``clean`` (both int16 units) so that the mixture has ``snr_db`` dB SNR.

    ``noise`` is read cyclically from sample ``offset`` (``offset=0`` equals the original's
    tile-then-take-the-start).  Returns float32 in int16 units, clipping-guarded and truncated to
    integers like an int16 cast.  Silent clean audio (or a silent noise excerpt) returns the clean
    audio unchanged.
    """
    clean64 = np.asarray(clean, dtype=np.float64).reshape(-1)
    noise = np.asarray(noise).reshape(-1)
    n = clean64.shape[0]
    if n == 0:
        return clean64.astype(np.float32)
    if noise.shape[0] == 0:
        raise NoiseError("noise waveform is empty; give a non-empty noise signal", reason="empty_file")
    clean_rms = math.sqrt(float(np.mean(np.square(clean64))))
    if clean_rms == 0.0:
        return clean64.astype(np.float32)
    start = int(offset) % noise.shape[0]
    if start == 0 and noise.shape[0] >= n:
        excerpt = noise[:n].astype(np.float64)
    else:
        excerpt = noise[(start + np.arange(n)) % noise.shape[0]].astype(np.float64)
    noise_rms = math.sqrt(float(np.mean(np.square(excerpt))))
    if noise_rms == 0.0:
        logger.warning("noise excerpt of %d samples at offset %d is silent; utterance left clean",
                       n, start)
        return clean64.astype(np.float32)
    target_rms = clean_rms / (10.0 ** (float(snr_db) / 20.0))
    mixed = clean64 + excerpt * (target_rms / noise_rms)
    peak, trough = float(mixed.max()), float(mixed.min())
    if peak > INT16_MAX or trough < INT16_MIN:
        mixed *= INT16_MAX / peak if peak >= abs(trough) else INT16_MIN / trough
    return np.clip(np.trunc(mixed), INT16_MIN, INT16_MAX).astype(np.float32)


class NoiseBank:
    """The noise files of one list, read once, from which :meth:`mix` draws.

    Build with :meth:`from_list`.  ``len(bank)`` is the number of list lines (repeats included);
    identical paths are loaded once.  Safe to pickle into DataLoader workers.
    """

    def __init__(self, list_path: str, entries: list[int], paths: list[str], first_lines: list[int],
                 waves: list[np.ndarray] | None, sample_rate: int | None = None) -> None:
        self.list_path = list_path
        self._entries = np.asarray(entries, dtype=np.int64)  # list line -> distinct file index
        self._paths = paths
        self._first_lines = first_lines
        self._waves = waves  # None: read from disk on demand
        self._sample_rate = sample_rate

    @classmethod
    def from_list(cls, path: str | os.PathLike, *, sample_rate: int | None = None,
                  preload: bool | None = None) -> NoiseBank:
        """Load a noise list (see :func:`read_noise_list`) and check every file it names.

        ``sample_rate``: refuse files at another rate (``None``: no check).  ``preload=True``
        keeps every distinct file in memory (float32); ``False`` only checks the files here and
        re-reads one from disk at each :meth:`mix` (for very large lists such as MUSAN's);
        ``None`` (default) preloads when the samples fit in :data:`AUTO_PRELOAD_BYTES` (2 GiB;
        the small babble lists do, MUSAN's training list with its tens of thousands of clips
        may not, and every DDP rank holds its own copy).
        Any unusable file raises :class:`NoiseError` ``<list>:<line>: noise file <wav> ...``.
        """
        list_path = str(path)
        lines = _list_entries(list_path)
        if not lines:
            raise NoiseError("noise list names no files; add one wav path per line",
                             reason="empty_file", path=list_path)
        index: dict[str, int] = {}
        paths: list[str] = []
        first_lines: list[int] = []
        entries: list[int] = []
        for lineno, wav in lines:
            if wav not in index:
                index[wav] = len(paths)
                paths.append(wav)
                first_lines.append(lineno)
            entries.append(index[wav])
        if preload is None:
            total = 0
            for wav, lineno in zip(paths, first_lines):
                try:
                    info = sf.info(wav)
                except Exception:
                    _load_noise(wav, list_path, lineno, sample_rate)  # raises the precise error
                    raise
                total += info.frames * 4
            preload = total <= AUTO_PRELOAD_BYTES
            logger.info("noise list %s: %.1f MiB of samples, preload=%s", list_path,
                        total / 2**20, preload)
        waves: list[np.ndarray] = []
        for wav, lineno in tqdm(list(zip(paths, first_lines)), desc=f"noise {Path(list_path).name}",
                                unit="file", disable=len(paths) < 50, leave=False):
            wave = _load_noise(wav, list_path, lineno, sample_rate)
            if preload:
                waves.append(wave)
        logger.info("noise list %s: %d lines, %d distinct files%s", list_path, len(entries),
                    len(paths), "" if preload else " (read on demand)")
        return cls(list_path, entries, paths, first_lines, waves if preload else None, sample_rate)

    def __len__(self) -> int:
        return int(self._entries.shape[0])

    @property
    def num_files(self) -> int:
        """Number of distinct noise files."""
        return len(self._paths)

    def noise(self, file_index: int) -> np.ndarray:
        """Samples (float32, int16 units) of distinct file ``file_index``."""
        if self._waves is not None:
            return self._waves[file_index]
        return _load_noise(self._paths[file_index], self.list_path, self._first_lines[file_index],
                           self._sample_rate)

    def mix(self, clean: np.ndarray, snr_db: float | tuple[float, float] | list,
            rng: np.random.Generator, offset: str = "zero") -> np.ndarray:
        """Mix a random noise of the list into ``clean`` (int16 units) at ``snr_db``.

        Draws, in this order from ``rng``: the list line, the SNR (if a range), the start (if
        ``offset="random"``).  Returns float32 in int16 units (see :func:`mix_at_snr`).
        """
        if offset not in OFFSETS:
            raise ConfigError(f"noise offset {offset!r} is unknown; use one of {', '.join(OFFSETS)}")
        line = int(rng.integers(len(self)))
        noise = self.noise(int(self._entries[line]))
        snr = draw_snr(snr_db, rng)
        start = 0
        if offset == "random":
            n_clean, n_noise = len(clean), noise.shape[0]
            start = int(rng.integers(n_noise - n_clean + 1 if n_noise >= n_clean else n_noise))
        return mix_at_snr(clean, noise, snr, offset=start)
