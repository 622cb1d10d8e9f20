"""``prepare babble`` (LRS3 and multilingual recipes: reproducible, the right speakers) and ``prepare musan``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import wavfile

from whisper_flamingo.cli import main


def _manifest(path: Path, lang: str, n: int, seconds: list[float]) -> list[Path]:
    """A manifest of ``n`` short wavs whose sample-count column claims ``seconds`` each (the wavs are
    short ramps at distinct levels, so the babble's content says which were used)."""
    wav_dir = path.parent / "audio" / lang
    wav_dir.mkdir(parents=True, exist_ok=True)
    rows, wavs = [], []
    for i in range(n):
        w = wav_dir / f"{i:03d}.wav"
        wavfile.write(str(w), 16000, np.full(100 + i, (hash(lang) % 50) * 10 + i, np.int16))
        rows.append(f"{lang}/{i}\t{w}.mp4\t{w}\t25\t{int(seconds[i] * 16000)}")
        wavs.append(w)
    path.write_text("/\n" + "".join(r + "\n" for r in rows))
    return wavs


def test_lrs3_babble_is_the_mean_of_30_long_utterances_and_reproducible(tmp_path, capsys):
    secs = [16.0 if i % 2 == 0 else 10.0 for i in range(70)]  # 35 long enough
    _manifest(tmp_path / "train.tsv", "en", 70, secs)
    args = ["prepare", "babble", "--recipe", "lrs3", "--manifest", str(tmp_path / "train.tsv"), "--seed", "3"]
    assert main(args + ["--out", str(tmp_path / "a")]) == 0
    assert main(args + ["--out", str(tmp_path / "b")]) == 0
    wav_a = tmp_path / "a" / "noise" / "babble" / "lrs3" / "noise.wav"
    rate, a = wavfile.read(wav_a)
    _, b = wavfile.read(tmp_path / "b" / "noise" / "babble" / "lrs3" / "noise.wav")
    assert rate == 16000 and a.dtype == np.int16 and np.array_equal(a, b)
    sources = (tmp_path / "a" / "noise" / "babble" / "lrs3" / "sources.txt").read_text().splitlines()
    assert len(set(sources)) == 30 and all(int(Path(s).stem) % 2 == 0 for s in sources)  # only the > 15 s ones
    waves = [wavfile.read(s)[1] for s in sources]
    n = min(len(w) for w in waves)
    assert len(a) == n and np.array_equal(a, (np.sum([w[:n].astype(float) for w in waves], 0) / 30).astype(np.int16))
    assert (tmp_path / "a" / "noise" / "babble" / "lrs3" / "test.tsv").read_text() == f"{wav_a.resolve()}\n"
    assert main(args[:-2] + ["--seed", "4", "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "noise" / "babble" / "lrs3" / "sources.txt").read_text() != "\n".join(sources) + "\n"


def test_muavic_babble_round_robin_over_nine_languages(tmp_path):
    langs = ["ru", "en", "ar", "de", "el", "es", "fr", "it", "pt"]  # given out of order on purpose
    pairs = []
    for lang in langs:
        _manifest(tmp_path / f"{lang}.tsv", lang, 6, [20.0] * 5 + [3.0])
        pairs.append(f"{lang}={tmp_path / f'{lang}.tsv'}")
    assert main(["prepare", "babble", "--recipe", "muavic", "--manifest", *pairs, "--out", str(tmp_path)]) == 0
    sources = (tmp_path / "noise" / "babble" / "muavic" / "sources.txt").read_text().splitlines()
    per_lang = {lang: sum(f"/audio/{lang}/" in s for s in sources) for lang in langs}
    assert per_lang == {"en": 4, "ar": 4, "de": 4, "el": 3, "es": 3, "fr": 3, "it": 3, "pt": 3, "ru": 3}
    assert not any(s.endswith("005.wav") for s in sources)  # the 3-s utterances are never used
    assert (tmp_path / "noise" / "babble" / "muavic" / "babble_all.wav").is_file()


def test_musan_pieces_splits_and_training_list(tmp_path, capsys):
    src = tmp_path / "musan"
    rng = np.random.default_rng(0)
    for cat, n, secs in (("music", 3, 25.0), ("noise", 4, 12.0), ("speech", 10, 14.0)):
        for i in range(n):
            d = src / cat / "sub"
            d.mkdir(parents=True, exist_ok=True)
            x = rng.integers(-999, 999, int(secs * 16000)).astype(np.int16)
            wavfile.write(str(d / f"{cat}-{i}.wav"), 16000, x)
    out = tmp_path / "out"
    assert main(["prepare", "musan", "--src", str(src), "--out", str(out), "--per-category", "50",
                 "--babble", "4", "1", "1", "--babble-speakers", "2"]) == 0
    # 25 s -> 10 + 10 + 5 (kept); 12 s -> 10 + 2 (dropped); 14 s -> 10 + 4
    assert len(list((out / "music").rglob("*.wav"))) == 9 and len(list((out / "noise").rglob("*.wav"))) == 4
    speech = [ln for s in ("train", "valid", "test") for ln in (out / "tsv/speech" / f"{s}.tsv").read_text().split()]
    assert len(speech) == 20 and len((out / "tsv" / "speech" / "train.tsv").read_text().split()) == 16
    for p in speech:
        assert 3 * 16000 <= len(wavfile.read(p)[1]) <= 11 * 16000
    lines = (out / "tsv" / "all" / "train.tsv").read_text().split()
    assert len(lines) == 200 and sum("/babble/train/" in ln for ln in lines) == 50
    assert len({ln for ln in lines if "/noise/" in ln}) == 3  # the 80 % of 4 noise pieces, cycled to 50
