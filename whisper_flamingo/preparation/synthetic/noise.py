"""Noise signals for the synthetic corpus: LRS3-style babble, white, pink and music-like tones.

All functions return int16 arrays at 16 kHz.  Babble follows AV-HuBERT's ``lrs3_noise.py``: the
mean of N speech utterances truncated to the shortest, cast to int16.
"""

from __future__ import annotations

import numpy as np

SR = 16000


def babble_mean(sources: list[np.ndarray]) -> np.ndarray:
    """LRS3-style babble: mean of int16 ``sources`` truncated to the shortest, cast to int16."""
    if not sources:
        raise ValueError("babble needs at least one source utterance")
    n = min(len(s) for s in sources)
    stack = np.stack([np.asarray(s[:n], dtype=np.float64) for s in sources])
    return stack.mean(axis=0).astype(np.int16)


def babble_mix(sources: list[np.ndarray], n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """Babble of exactly ``n_samples``: mean of the sources, each tiled circularly from a random
    offset (for training noise files longer than some sources)."""
    acc = np.zeros(n_samples, np.float64)
    for s in sources:
        s = np.asarray(s, np.float64)
        start = int(rng.integers(len(s)))
        idx = (start + np.arange(n_samples)) % len(s)
        acc += s[idx]
    return _to_int16(acc / len(sources), rms_dbfs=float(rng.uniform(-24, -18)))


def _to_int16(x: np.ndarray, rms_dbfs: float) -> np.ndarray:
    x = np.asarray(x, np.float64)
    rms = np.sqrt(np.mean(x ** 2)) + 1e-12
    y = x * (10 ** (rms_dbfs / 20) * 32768 / rms)
    peak = np.abs(y).max()
    if peak > 32000:
        y *= 32000 / peak
    return np.round(y).astype(np.int16)


def white_noise(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    return _to_int16(rng.standard_normal(n_samples), rms_dbfs=float(rng.uniform(-28, -20)))


def pink_noise(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """1/f noise by spectral shaping of white noise."""
    spec = np.fft.rfft(rng.standard_normal(n_samples))
    f = np.fft.rfftfreq(n_samples, 1 / SR)
    spec *= 1.0 / np.sqrt(np.maximum(f, 20.0))
    return _to_int16(np.fft.irfft(spec, n_samples), rms_dbfs=float(rng.uniform(-26, -18)))


def music_like(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random melody over sustained chords, with harmonics, envelopes and soft percussion."""
    t_total = n_samples / SR
    out = np.zeros(n_samples, np.float64)
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    scale = np.array([0, 2, 4, 7, 9, 12, 14, 16, 19, 21])  # pentatonic over two octaves
    tempo = float(rng.uniform(0.18, 0.45))  # seconds per beat

    def note(freq: float, start: float, dur: float, amp: float, harmonics=(1.0, 0.5, 0.3, 0.15)):
        s0, n = int(start * SR), int(dur * SR)
        n = min(n, n_samples - s0)
        if n <= 0:
            return
        t = np.arange(n) / SR
        wave = sum(a * np.sin(2 * np.pi * freq * (k + 1) * t) for k, a in enumerate(harmonics))
        env = np.minimum(1.0, t / 0.015) * np.exp(-t / max(dur * 0.6, 0.05))
        out[s0:s0 + n] += amp * wave * env

    t = 0.0
    while t < t_total:  # melody
        beats = int(rng.choice([1, 1, 2, 2, 3, 4]))
        note(root * 4 * 2 ** (scale[rng.integers(len(scale))] / 12), t, beats * tempo * 1.1, 0.6)
        t += beats * tempo
    t = 0.0
    while t < t_total:  # chords
        base = root * 2 * 2 ** (scale[rng.integers(5)] / 12)
        for iv in (0, 4, 7):
            note(base * 2 ** (iv / 12), t, 8 * tempo, 0.25, harmonics=(1.0, 0.3))
        t += 8 * tempo
    if rng.random() < 0.7:  # soft percussion
        for k in range(int(t_total / tempo)):
            s0 = int(k * tempo * SR)
            n = min(int(0.08 * SR), n_samples - s0)
            if n > 0:
                out[s0:s0 + n] += 0.4 * rng.standard_normal(n) * np.exp(-np.arange(n) / (0.015 * SR))
    return _to_int16(out, rms_dbfs=float(rng.uniform(-24, -18)))
