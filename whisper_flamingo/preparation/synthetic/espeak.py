"""Speech synthesis with eSpeak NG through ctypes, with per-phoneme timings.

The shared library and its data directory come from the PyPI package ``espeakng-loader`` (no root,
no system package).  The library keeps a little state between two syntheses in one process (its
pitch flutter phase), so the same text synthesised twice in one process differs slightly, while a
fresh process always produces the same samples: callers that need bit-for-bit determinism
synthesise a fixed sequence of utterances in a fresh process (see :mod:`.corpus`).  Voice variants
with breath noise are not reproducible even then and are left out by :func:`voice_variants`.
"""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import DataError

log = logging.getLogger(__name__)

ESPEAK_RATE = 22050  # the library's fixed output rate
# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EVENT_END = 5
_EVENT_MSG_TERMINATED = 6
_EVENT_PHONEME = 7
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int,
                             ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Phone:
    """One phoneme as eSpeak reports it: its mnemonic (stress marks kept) and its span in seconds."""

    symbol: str
    start: float
    end: float


@dataclass
class Synthesis:
    """Synthesised speech: float32 samples in [-1, 1] at ``sample_rate``, phones and word starts."""

    audio: np.ndarray
    sample_rate: int
    phones: list[Phone] = field(default_factory=list)
    word_starts: list[float] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def library_paths() -> tuple[Path, Path]:
    """Return ``(libespeak-ng path, espeak-ng-data dir)`` from ``espeakng-loader``."""
    try:
        import espeakng_loader
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise DataError("the synthetic corpus needs eSpeak NG: pip install 'espeakng-loader>=0.2' "
                        "(or the 'synth' extra of whisper-flamingo)", reason="missing_dependency") from err
    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())


def _has_breath(path: Path) -> bool:
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        fields = line.split()
        if fields and fields[0] == "breath" and any(f.isdigit() and int(f) for f in fields[1:]):
            return True
    return False


@lru_cache(maxsize=2)
def voice_variants(deterministic: bool = True) -> tuple[str, ...]:
    """Names of the voice variants shipped in the data dir (``en-us+<name>``), sorted.

    With ``deterministic`` (the default) variants with breath noise are left out: their samples
    differ from one process to the next even for the same text.
    """
    _, data = library_paths()
    vdir = data / "voices" / "!v"
    names = sorted(p.name for p in vdir.iterdir() if p.is_file() and " " not in p.name
                   and not (deterministic and _has_breath(p)))
    return tuple(names)


class Espeak:
    """A process-wide eSpeak NG engine in synchronous mode with phoneme events.

    Use :func:`engine` to get the one instance of a process; the C library is global state.
    """

    def __init__(self) -> None:
        lib_path, data_path = library_paths()
        self._lib = ctypes.CDLL(str(lib_path))
        lib = self._lib
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, os.fsencode(data_path),
                                     _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT)
        if rate <= 0:
            raise DataError(f"espeak_Initialize failed ({rate}); reinstall espeakng-loader",
                            reason="unreadable", path=data_path)
        self.rate = rate
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str, int]] = []
        self._cb = _Callback(self._on_synth)  # keep a reference: the library holds the pointer
        lib.espeak_SetSynthCallback(self._cb)

    def _on_synth(self, wav, n: int, events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while True:
            ev = events[i]
            if ev.type == _EVENT_LIST_TERMINATED:
                break
            if ev.type == _EVENT_PHONEME:
                self._events.append((_EVENT_PHONEME, ev.id.string.decode("utf-8", "replace"), ev.sample))
            elif ev.type == _EVENT_WORD:
                self._events.append((_EVENT_WORD, str(ev.text_position), ev.sample))
            i += 1
        return 0

    def synthesize(self, text: str, voice: str = "en-us", rate: int = 175, pitch: int = 50,
                   pitch_range: int = 50, word_gap: int = 0) -> Synthesis:
        """Synthesise ``text``; return samples at the library rate (22050 Hz) with phone timings.

        ``voice`` is an eSpeak voice name such as ``en-us+m3``; ``rate`` in words per minute,
        ``pitch``/``pitch_range`` in 0..100, ``word_gap`` in units of 10 ms.
        """
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise DataError(f"eSpeak NG has no voice {voice!r}; pick one of en-us+<variant> with a "
                            "variant from voice_variants()", reason="unknown_voice")
        for name, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range),
                            ("wordgap", word_gap), ("volume", 100)):
            lib.espeak_SetParameter(_PARAM[name], int(value), 0)
        self._chunks, self._events = [], []
        data = text.encode("utf-8") + b"\0"
        err = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if err != 0:
            raise DataError(f"espeak_Synth failed with code {err} for text {text!r}",
                            reason="synthesis_failed")
        audio = (np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16))
        audio = audio.astype(np.float32) / 32768.0
        total = len(audio)
        phones: list[Phone] = []
        words: list[float] = []
        ph = [(sym, s) for kind, sym, s in self._events if kind == _EVENT_PHONEME]
        for k, (sym, s) in enumerate(ph):
            end = ph[k + 1][1] if k + 1 < len(ph) else total
            phones.append(Phone(sym, min(s, total) / self.rate, min(max(end, s), total) / self.rate))
        words = [s / self.rate for kind, _, s in self._events if kind == _EVENT_WORD]
        return Synthesis(audio=audio, sample_rate=self.rate, phones=phones, word_starts=words)


_ENGINE: Espeak | None = None


def engine() -> Espeak:
    """The process-wide :class:`Espeak` instance (created on first use)."""
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = Espeak()
    return _ENGINE


def _lowpass(up: int, down: int) -> tuple[np.ndarray, int]:
    """The anti-aliasing filter of ``scipy.signal.resample_poly`` (Kaiser beta 5), times ``up``."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    m = np.arange(2 * half_len + 1) - half_len
    h = np.sinc(m / max_rate) / max_rate * np.kaiser(2 * half_len + 1, 5.0)
    return h / h.sum() * up, half_len


def resample_to(audio: np.ndarray, src_rate: int, dst_rate: int = 16000) -> np.ndarray:
    """Polyphase resampling, numerically the same as ``scipy.signal.resample_poly`` (zero padding).

    Written with numpy alone: importing ``scipy.signal`` costs about a second of CPU in every fresh
    worker process.
    """
    from math import gcd

    x = np.asarray(audio, np.float64)
    if src_rate == dst_rate:
        return x.astype(np.float32)
    g = gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    h, half_len = _lowpass(up, down)
    taps = -(-len(h) // up)
    bank = np.zeros((up, taps))  # polyphase filter bank: bank[p, j] = h[p + up * j]
    hp = np.concatenate([h, np.zeros(up * taps - len(h))])
    bank[:] = hp.reshape(taps, up).T
    n_in = len(x)
    n_out = -(-n_in * up // down)
    xp = np.concatenate([np.zeros(taps), x, np.zeros(taps)])
    n0 = np.arange(n_out, dtype=np.int64) * down + half_len
    i0, phase = n0 // up + taps, n0 % up  # +taps: offset into the zero-padded input
    y = np.empty(n_out, np.float64)
    step = 4096
    j = np.arange(taps)
    for s0 in range(0, n_out, step):
        sl = slice(s0, s0 + step)
        y[sl] = np.einsum("mj,mj->m", bank[phase[sl]], xp[i0[sl, None] - j[None, :]])
    return y.astype(np.float32)
