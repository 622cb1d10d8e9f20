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
    esc50/esc_{train,eval}_data_<k>.json            ESC-50's shape: 5 folds of single-label 5-s clips (fold k = test),
    esc50/esc_class_labels_indices.csv, esc50/audio  ``esc_per_class`` clips per class and fold (the 8 classes)
    sat/train.tsv, sat/psl_chunked{2,4}s.tsv        SAT's tables for the train split (§3.5 columns; TSV, not parquet;
                                                    no HDF5: hdf5path is empty, filename is relative to sat/)

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


def compose_clip(rng: np.random.Generator, speech_pool: list[np.ndarray], seconds: float = CLIP_SECONDS,
                 events: list[str] | None = None) -> tuple[np.ndarray, list[str], list[tuple[str, float, float]]]:
    """One clip (int16), the display names of its classes and the events' spans ``(name, start_s, end_s)``;
    ``events`` (keys of :data:`EVENTS`, ``[]`` = silence) instead of a random draw."""
    n = int(seconds * SR)
    makers = {"speech": _speech(speech_pool), "music": _music, "sine": _sine, "beep": _beep, "dial": _dial,
              "white": _noise("white"), "pink": _noise("pink")}
    if events is None:
        k = int(rng.choice([0, 1, 2, 3], p=[0.1, 0.35, 0.35, 0.2]))
        names = list(EVENTS)
        weights = np.array([2.5 if e == "speech" else 1.0 for e in names])
        chosen = list(rng.choice(names, size=k, replace=False, p=weights / weights.sum())) if k else []
    else:
        chosen = list(events)
    mix = rng.standard_normal(n) * 10 ** (float(rng.uniform(-75, -65)) / 20)  # room tone
    spans = []
    for ev in chosen:
        start, x = makers[ev](rng, n)
        if len(x) == 0:
            continue
        mix[start:start + len(x)] += _level(x, float(rng.uniform(-30, -16)))
        spans.append((EVENTS[ev], start / SR, (start + len(x)) / SR))
    peak = float(np.abs(mix).max())
    if peak > 0.95:
        mix *= 0.95 / peak
    labels = [EVENTS[e] for e in chosen] or [SILENCE]
    return np.clip(np.round(mix * 32768), -32768, 32767).astype(np.int16), labels, spans


def _write_esc50_like(out: Path, seed: int, pool: list[np.ndarray], mid: dict[str, str], per_class: int) -> None:
    """ESC-50's shape: 5 folds of single-label 5-s clips; ``esc_{train,eval}_data_<k>.json`` (fold k = test)."""
    import soundfile as sf

    classes = [*EVENTS, "silence"]
    folds: dict[int, list[dict[str, str]]] = {}
    for fold in range(1, 6):
        rng = np.random.default_rng([seed, 100 + fold])
        folds[fold] = []
        for c in classes:
            for i in range(per_class):
                pcm, names, _ = compose_clip(rng, pool, 5.0, [] if c == "silence" else [c])
                rel = f"audio/{fold}-{c}-{i}.wav"
                (out / "audio").mkdir(parents=True, exist_ok=True)
                sf.write(str(out / rel), pcm, SR, subtype="PCM_16", format="WAV")
                folds[fold].append({"wav": rel, "labels": mid[names[0]]})
    for k in range(1, 6):
        train = [r for f in range(1, 6) if f != k for r in folds[f]]
        (out / f"esc_train_data_{k}.json").write_text(json.dumps({"data": train}, indent=1), encoding="utf-8")
        (out / f"esc_eval_data_{k}.json").write_text(json.dumps({"data": folds[k]}, indent=1), encoding="utf-8")
    names = [*EVENTS.values(), SILENCE]
    (out / "esc_class_labels_indices.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{mid[n]},"{n}"\n' for i, n in enumerate(names)), encoding="utf-8")


def _write_sat_tables(out: Path, rows: list[tuple[str, list[str], list[tuple[str, float, float]]]],
                      index: dict[str, int], chunk: float = 2.0) -> None:
    """SAT's training TSV (filename, labels as ;-joined indices, duration, hdf5path: empty, we write no HDF5)
    and a pseudo-strong-label table (filename, start, end, prob, idxs) per ``chunk`` seconds, from the known
    event spans: prob = the share of the chunk the event covers (Silence where nothing sounds)."""
    out.mkdir(parents=True, exist_ok=True)
    tsv = ["filename\tlabels\tduration\thdf5path"]
    psl = ["filename\tstart\tend\tprob\tidxs"]
    for rel, names, spans in rows:
        tsv.append(f"{rel}\t{';'.join(str(index[n]) for n in names)}\t{CLIP_SECONDS:g}\t")
        for c in range(int(CLIP_SECONDS / chunk)):
            a, b = c * chunk, (c + 1) * chunk
            cover: dict[str, float] = {}
            for name, s0, s1 in spans:
                frac = max(0.0, min(b, s1) - max(a, s0)) / chunk
                if frac >= 0.05:
                    cover[name] = max(cover.get(name, 0.0), frac)
            top = sorted((cover or {SILENCE: 1.0}).items(), key=lambda kv: -kv[1])
            psl.append(f"{rel}\t{a:g}\t{b:g}\t{';'.join(f'{v:.3f}' for _, v in top)}\t"
                       f"{';'.join(str(index[n]) for n, _ in top)}")
    (out / "train.tsv").write_text("\n".join(tsv) + "\n", encoding="utf-8")
    (out / f"psl_chunked{chunk:g}s.tsv").write_text("\n".join(psl) + "\n", encoding="utf-8")


@dataclass
class TaggingSetInfo:
    root: Path
    sizes: dict[str, int]
    lists: dict[str, Path]
    label_csv: Path
    elapsed_s: float


def generate_tagging_set(out: str | Path, seed: int = 0, n_train: int = 240, n_valid: int = 40, n_eval: int = 60,
                         progress: bool = True, esc_per_class: int = 1) -> TaggingSetInfo:
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
    sat_rows: list[tuple[str, list[str], list[tuple[str, float, float]]]] = []
    bar = tqdm(total=sum(sizes.values()), desc="clips", unit="clip", disable=not progress)
    for split_no, (split, count) in enumerate(sizes.items()):
        rng = np.random.default_rng([seed, split_no])
        folder = out / "audio" / split
        folder.mkdir(parents=True, exist_ok=True)
        data = []
        for i in range(count):
            pcm, names, spans = compose_clip(rng, pool.train if split == "train" else pool.eval)
            rel = f"audio/{split}/{split}_{i:05d}.wav"
            sf.write(str(out / rel), pcm, SR, subtype="PCM_16", format="WAV")
            data.append({"wav": rel, "labels": ",".join(mid[n] for n in names)})
            if split == "train":
                sat_rows.append((f"../{rel}", names, spans))
            bar.update(1)
        lists[split] = out / f"{split}.json"
        lists[split].write_text(json.dumps({"data": data}, indent=1), encoding="utf-8")
    bar.close()
    if esc_per_class:
        if (out / "esc50").exists():
            shutil.rmtree(out / "esc50")
        _write_esc50_like(out / "esc50", seed, pool.train, mid, esc_per_class)
    for chunk in (2.0, 4.0):  # 4-s chunks for the 2-s models, 2-s chunks for the 1-s models (as the reference)
        _write_sat_tables(out / "sat", sat_rows, {n: labels.mids.index(m) for n, m in mid.items()}, chunk)
    label_csv = out / "class_labels_indices.csv"
    shutil.copyfile(AUDIOSET_LABELS, label_csv)
    used = [(mid[n], n) for n in [*EVENTS.values(), SILENCE]]
    (out / "class_labels_used.csv").write_text(
        "index,mid,display_name\n" + "".join(f'{i},{m},"{n}"\n' for i, (m, n) in enumerate(used)), encoding="utf-8")
    (out / STAMP).write_text(json.dumps({"seed": seed, "sizes": sizes, "classes": mid}, indent=1), encoding="utf-8")
    return TaggingSetInfo(out.resolve(), sizes, lists, label_csv, time.perf_counter() - t0)
