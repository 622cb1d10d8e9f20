"""A tiny generated corpus in the MuAViC layout (and LRS2's), for tests and demos.

``make_tiny_corpus(root)`` writes synthetic "speech" (harmonic tones with a wandering pitch plus a
little noise, 16 kHz mono int16) with random word transcripts, manifests whose root line is
``/`` and whose paths are absolute (as MuAViC's), and noise lists.  Layout under ``root``::

    muavic/en/{train,valid,test}.tsv|.en             English ASR (always)
    muavic/en/audio/<split>/vidNNN/NNNNN.wav
    muavic/en/video/<split>/vidNNN/NNNNN.mp4         with video=True (96x96, 25 fps, H.264)
    muavic/X/muavic_normalized/<split>.tsv|.X        for X in langs (X != en)
    muavic/X/audio/<split>/...
    muavic/en/X/<split>.tsv|.X                       En->X, for X in en_x (the English audio)
    muavic/X/en/<split>.tsv|.en                      X->En, for X in x_en (X's audio)
    lrs2/<split>.tsv|.wrd, lrs2/main/...             with lrs2=True
    noise/{train,valid,test}.tsv, noise/*.wav        noise lists (one absolute wav path a line)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 16000
WORDS = {
    "en": "the cat sat on a mat and we ask what you can do for your country today".split(),
    "es": "el gato se sienta en la alfombra y nosotros preguntamos hoy".split(),
    "fr": "le chat est assis sur le tapis et nous demandons aujourd hui".split(),
    "de": "die katze sitzt auf der matte und wir fragen heute".split(),
    "it": "il gatto siede sul tappeto e noi chiediamo oggi".split(),
    "pt": "o gato senta no tapete e nos perguntamos hoje".split(),
    "ru": "кот сидит на коврике и мы спрашиваем сегодня".split(),
    "el": "η γάτα κάθεται στο χαλί και ρωτάμε σήμερα".split(),
    "ar": "القط يجلس على السجادة ونحن نسأل اليوم".split(),
}


def synth_speech(rng: np.random.Generator, n_samples: int, level: float = 6000.0) -> np.ndarray:
    """Voice-like int16 signal: harmonics of a wandering pitch, syllable envelope, light noise."""
    t = np.arange(n_samples) / SR
    f0 = rng.uniform(110, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.55 + 0.45 * np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6.28))
    x = x * env + 0.05 * rng.standard_normal(n_samples)
    x = x / (np.abs(x).max() + 1e-9) * level
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def _write_video(path: Path, n_frames: int, rng: np.random.Generator) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 96, 96, "yuv420p"
        base = rng.integers(60, 200)
        for i in range(n_frames):
            img = np.full((96, 96, 3), base, np.uint8)
            h = 20 + int(10 * np.sin(i / 3))  # a "mouth" opening and closing
            img[48 - h // 2:48 + h // 2, 28:68] = 30
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _make_utts(rng: np.random.Generator, media_root: Path, split: str, n: int, lang: str,
               video: bool, prefix: str, min_s: float, max_s: float) -> list[tuple]:
    """Write n utterances; return (id, video_path, audio_path, frames, samples, text) rows."""
    rows = []
    for k in range(n):
        uid = f"{prefix}{k // 3:03d}/{k:05d}"
        n_samples = int(rng.uniform(min_s, max_s) * SR)
        audio_path = media_root / "audio" / split / f"{uid}.wav"
        video_path = media_root / "video" / split / f"{uid}.mp4"
        audio_path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(audio_path, synth_speech(rng, n_samples), SR, subtype="PCM_16")
        frames = int(n_samples / SR * 25)
        if video:
            _write_video(video_path, frames, rng)
        words = WORDS.get(lang, WORDS["en"])
        text = " ".join(rng.choice(words, size=int(rng.integers(2, 7))))
        rows.append((uid, str(video_path), str(audio_path), frames, n_samples, text))
    return rows


def write_manifest(tsv: Path, label: Path, rows: Sequence[tuple], root_line: str = "/") -> None:
    """Write a tsv (root line + 5 columns) and its aligned label file."""
    tsv.parent.mkdir(parents=True, exist_ok=True)
    lines = [root_line] + ["\t".join(str(x) for x in r[:5]) for r in rows]
    tsv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    label.write_text("".join(r[5] + "\n" for r in rows), encoding="utf-8")


def make_tiny_corpus(root: Path, n_train: int = 12, n_valid: int = 4, n_test: int = 4, seed: int = 0,
                     *, langs: Sequence[str] = ("en",), en_x: Sequence[str] = (),
                     x_en: Sequence[str] = (), lrs2: bool = False, video: bool = False,
                     noise: bool = True, min_s: float = 0.3, max_s: float = 1.6) -> Path:
    """Write the corpus under ``root`` (see module doc) and return ``root`` (the ``muavic_root``)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    base = root / "muavic"
    en_rows = {}
    for split, n in sizes.items():
        en_rows[split] = _make_utts(rng, base / "en", split, n, "en", video, "en", min_s, max_s)
        write_manifest(base / "en" / f"{split}.tsv", base / "en" / f"{split}.en", en_rows[split])
    for lang in sorted(set(langs) | set(x_en)):
        if lang == "en":
            continue
        for split, n in sizes.items():
            rows = _make_utts(rng, base / lang, split, n, lang, video, lang, min_s, max_s)
            if lang in langs:
                d = base / lang / "muavic_normalized"
                write_manifest(d / f"{split}.tsv", d / f"{split}.{lang}", rows)
            if lang in x_en:
                en_text = [r[:5] + (" ".join(rng.choice(WORDS["en"], size=4)),) for r in rows]
                write_manifest(base / lang / "en" / f"{split}.tsv", base / lang / "en" / f"{split}.en",
                               en_text)
    for lang in en_x:
        words = WORDS.get(lang, WORDS["en"])
        for split in sizes:
            rows = [r[:5] + (" ".join(rng.choice(words, size=4)).capitalize() + ".",)
                    for r in en_rows[split]]
            write_manifest(base / "en" / lang / f"{split}.tsv", base / "en" / lang / f"{split}.{lang}", rows)
    if lrs2:
        for split, n in sizes.items():
            rows = _make_utts(rng, root / "lrs2" / "main", split, n, "en", video, "lrs", min_s, max_s)
            rows = [r[:5] + (r[5].upper(),) for r in rows]
            write_manifest(root / "lrs2" / f"{split}.tsv", root / "lrs2" / f"{split}.wrd", rows)
    if noise:
        nd = root / "noise"
        nd.mkdir(parents=True, exist_ok=True)
        babble = sum(synth_speech(rng, 3 * SR, 3000).astype(np.float64) for _ in range(4)) / 4
        sf.write(nd / "babble.wav", babble.astype(np.int16), SR, subtype="PCM_16")
        white = (rng.standard_normal(2 * SR) * 2000).astype(np.int16)
        sf.write(nd / "white.wav", white, SR, subtype="PCM_16")
        (nd / "train.tsv").write_text(f"{nd / 'babble.wav'}\n{nd / 'white.wav'}\n")
        (nd / "valid.tsv").write_text(f"{nd / 'babble.wav'}\n")
        (nd / "test.tsv").write_text(f"{nd / 'babble.wav'}\n")
    return root


def tiny_config(root: Path, **overrides):
    """A :class:`whisper_flamingo.config.Config` for the tiny corpus (small lengths, no workers)."""
    from whisper_flamingo.config import Config

    nd = Path(root) / "noise"
    values = dict(muavic_root=str(root), lrs2_root=str(Path(root) / "lrs2"), lang="en",
                  model_name="tiny", audio_max_length=32000, text_max_length=200, batch_size=1.0,
                  val_batch_bins_multiplier=2.0, num_worker=0, noise_prob=1.0, noise_snr_train=0.0,
                  noise_fn=str(nd / "train.tsv"), noise_fn_val=str(nd / "valid.tsv"),
                  noise_fn_test=str(nd / "test.tsv"), seed=3407)
    values.update(overrides)
    return Config(**values)


def tensorboard_scalars(logdir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar logged under ``logdir``: ``{tag: [(step, value), ...]}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, list[tuple[int, float]]] = {}
    for ev in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(ev))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out
