"""A synthetic multi-label sound-tagging set labelled with real AudioSet classes (``prepare synthetic-tagging``).

Each 10-s, 16-kHz clip mixes 0-3 sound events drawn from :data:`EVENTS`, each a real AudioSet class
(mids from the official label CSV): eSpeak NG speech (``Speech``), a melody over chords (``Music``), a
steady sine (``Sine wave``), short tone bursts (``Beep, bleep``), the 350 + 440 Hz North-American
dial tone (``Dial tone``), white and pink noise; a clip with no event is ``Silence`` (a faint room tone).
Events occupy a random part of the clip (speech sometimes only half a second, as AudioSet's weak
labels do), at random levels.  Train and evaluation speech come from disjoint eSpeak voices.

Layout under ``out``::

    audio/{train,valid,eval}/<split>_NNNNN.wav      16 kHz mono int16
    {train,valid,eval}.json                         {"data": [{"wav": "audio/...", "labels": "mid,mid"}]}
    class_labels_indices.csv                        the 527 AudioSet classes (index,mid,display_name)
    class_labels_used.csv                           only the classes used here (their AudioSet mids and names)
    tagging.json                                    seed, sizes, classes used

The same seed and sizes give the same files.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_flamingo.data.tagging import AUDIOSET_LABELS, read_label_csv
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.preparation.synthetic import noise as noise_gen
from whisper_flamingo.preparation.synthetic.grammar import SentenceGenerator

log = logging.getLogger(__name__)

SR = 16000
CLIP_SECONDS = 10.0
SPLITS = ("train", "valid", "eval")
STAMP = "tagging.json"

#: event -> AudioSet display name (looked up in the label CSV for its mid)
EVENTS = {"speech": "Speech", "music": "Music", "sine": "Sine wave", "beep": "Beep, bleep", "dial": "Dial tone",
          "white": "White noise", "pink": "Pink noise"}
SILENCE = "Silence"
_EVAL_VOICES = ("m1", "m3", "f1", "f4", "david", "linda", "max", "steph")


def _level(x: np.ndarray, rms_dbfs: float) -> np.ndarray:
    rms = float(np.sqrt(np.mean(x ** 2))) + 1e-12
    return x * (10 ** (rms_dbfs / 20) / rms)


def _span(rng: np.random.Generator, n: int, lo: float, hi: float) -> tuple[int, int]:
    length = int(min(n, rng.uniform(lo, hi) * SR))
    start = int(rng.integers(0, n - length + 1))
    return start, length


def _tone(freqs: tuple[float, ...], length: int) -> np.ndarray:
    t = np.arange(length) / SR
    x = sum(np.sin(2 * np.pi * f * t) for f in freqs)
    ramp = np.minimum(1.0, np.minimum(np.arange(length), np.arange(length)[::-1]) / (0.005 * SR))
    return x * ramp


def _sine(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray]:
    start, length = _span(rng, n, 2.0, 10.0)
    return start, _tone((float(rng.uniform(150, 3000)),), length)


def _dial(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray]:
    start, length = _span(rng, n, 3.0, 10.0)
    return start, _tone((350.0, 440.0), length)


def _beep(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray]:
    start, length = _span(rng, n, 2.0, 10.0)
    out = np.zeros(length)
    f, dur, period = float(rng.uniform(700, 2500)), float(rng.uniform(0.08, 0.3)), float(rng.uniform(0.4, 1.5))
    for s in np.arange(0, length / SR - dur, period):
        b = int(s * SR)
        seg = _tone((f,), int(dur * SR))
        out[b:b + len(seg)] += seg
    return start, out


def _noise(kind: str) -> Callable[[np.random.Generator, int], tuple[int, np.ndarray]]:
    def make(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray]:
        start, length = _span(rng, n, 2.0, 10.0)
        fn = noise_gen.white_noise if kind == "white" else noise_gen.pink_noise
        return start, fn(length, rng).astype(np.float64)
    return make


def _music(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray]:
    start, length = _span(rng, n, 3.0, 10.0)
    return start, noise_gen.music_like(length, rng).astype(np.float64)


@dataclass
class SpeechPool:
    """Pre-synthesised utterances (float, 16 kHz) per split group."""

    train: list[np.ndarray]
    eval: list[np.ndarray]


def synthesize_speech(seed: int, n_train: int = 48, n_eval: int = 16) -> SpeechPool:
    """eSpeak NG sentences in train voices and (disjoint) evaluation voices."""
    from whisper_flamingo.preparation.synthetic.espeak import engine, resample_to, voice_variants

    rng = random.Random(seed)
    gen = SentenceGenerator(rng, langs=(), min_words=4, max_words=12)
    variants = voice_variants()
    eval_v = [v for v in _EVAL_VOICES if v in variants]
    train_v = [v for v in variants if v not in eval_v]
    eng = engine()

    def utter(voices: list[str]) -> np.ndarray:
        syn = eng.synthesize(gen.sample().en, voice=f"en-us+{rng.choice(voices)}", rate=rng.randint(140, 190),
                             pitch=rng.randint(25, 75), pitch_range=rng.randint(30, 85))
        return resample_to(syn.audio, syn.sample_rate, SR).astype(np.float64)

    return SpeechPool([utter(train_v) for _ in range(n_train)], [utter(eval_v) for _ in range(n_eval)])


def _speech(pool: list[np.ndarray]) -> Callable[[np.random.Generator, int], tuple[int, np.ndarray]]:
    def make(rng: np.random.Generator, n: int) -> tuple[int, np.ndarray]:
        parts: list[np.ndarray] = []
        for _ in range(int(rng.integers(1, 5))):
            parts += [pool[int(rng.integers(len(pool)))], np.zeros(int(rng.uniform(0.1, 0.6) * SR))]
        x = np.concatenate(parts)[:n]
        if rng.random() < 0.25:  # a short burst of speech only
            x = x[: int(rng.uniform(0.5, 2.0) * SR)]
        return int(rng.integers(0, n - len(x) + 1)), x
    return make


def compose_clip(rng: np.random.Generator, speech_pool: list[np.ndarray]) -> tuple[np.ndarray, list[str]]:
    """One clip (int16) and the display names of its classes."""
    n = int(CLIP_SECONDS * SR)
    makers = {"speech": _speech(speech_pool), "music": _music, "sine": _sine, "beep": _beep, "dial": _dial,
              "white": _noise("white"), "pink": _noise("pink")}
    k = int(rng.choice([0, 1, 2, 3], p=[0.1, 0.35, 0.35, 0.2]))
    names = list(EVENTS)
    weights = np.array([2.5 if e == "speech" else 1.0 for e in names])
    chosen = list(rng.choice(names, size=k, replace=False, p=weights / weights.sum())) if k else []
    mix = rng.standard_normal(n) * 10 ** (float(rng.uniform(-75, -65)) / 20)  # room tone
    for ev in chosen:
        start, x = makers[ev](rng, n)
        if len(x) == 0:
            continue
        mix[start:start + len(x)] += _level(x, float(rng.uniform(-30, -16)))
    peak = float(np.abs(mix).max())
    if peak > 0.95:
        mix *= 0.95 / peak
    labels = [EVENTS[e] for e in chosen] or [SILENCE]
    return np.clip(np.round(mix * 32768), -32768, 32767).astype(np.int16), labels


@dataclass
class TaggingSetInfo:
    root: Path
    sizes: dict[str, int]
    lists: dict[str, Path]
    label_csv: Path
    elapsed_s: float


def generate_tagging_set(out: str | Path, seed: int = 0, n_train: int = 240, n_valid: int = 40, n_eval: int = 60,
                         progress: bool = True) -> TaggingSetInfo:
    """Write the set (module doc); an existing folder must be empty or a previous set (replaced)."""
    import soundfile as sf
    from tqdm import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not (out / STAMP).is_file():
        raise ConfigError(f"{out}: exists, is not empty and holds no {STAMP}; choose a new or empty directory")
    if (out / "audio").exists():
        shutil.rmtree(out / "audio")
    out.mkdir(parents=True, exist_ok=True)
    labels = read_label_csv(AUDIOSET_LABELS)
    mid = {name: labels.mids[labels.names.index(name)] for name in [*EVENTS.values(), SILENCE]}
    pool = synthesize_speech(seed)
    sizes = {"train": n_train, "valid": n_valid, "eval": n_eval}
    lists = {}
    bar = tqdm(total=sum(sizes.values()), desc="clips", unit="clip", disable=not progress)
    for split_no, (split, count) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, split_no])
        folder = out / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)
        data = []
        for i in range(count):
            pcm, names = compose_clip(rng, pool.train if split == "train" else pool.eval)
            rel = f"audio/{split}/{split}_{i:05d}.wav"
            sf.write(str(out / rel), pcm, SR, subtype="PCM_16", format="WAV")
            data.append({"wav": rel, "labels": ",".join(mid[n] for n in names)})
            bar.update(1)
        lists[split] = out / f"{split}.json"
        lists[split].write_text(json.dumps({"data": data}, indent=1), encoding="utf-8")
    bar.close()
    label_csv = out / "class_labels_indices.csv"
    shutil.copyfile(AUDIOSET_LABELS, label_csv)
    used = [(mid[n], n) for n in [*EVENTS.values(), SILENCE]]
    (out / "class_labels_used.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"{n}"\n' for i, (m, n) in enumerate(used)), encoding="utf-8")
    (out / STAMP).write_text(json.dumps({"seed": seed, "sizes": sizes, "classes": mid}, indent=1), encoding="utf-8")
    return TaggingSetInfo(out.resolve(), sizes, lists, label_csv, time.perf_counter() - t0)
