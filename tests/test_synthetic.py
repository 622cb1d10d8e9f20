"""The synthetic MuAViC-layout corpus: layout, counts, alignment, speakers, noise, determinism."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
from needs import need_module

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.preparation.synthetic import generate_corpus
from whisper_flamingo.preparation.synthetic.corpus import N_BABBLE
from whisper_flamingo.preparation.synthetic.grammar import LANGS, SentenceGenerator, english_vocabulary

need_module("espeakng_loader", "the synth extra: pip install .[synth]", module_level=True)

SIZES = {"train": 12, "valid": 4, "test": 4}
LANGS_USED = ("fr", "es")


def _generate(out: Path, jobs: int, seed: int = 0):
    return generate_corpus(out, seed=seed, n_train=SIZES["train"], n_valid=SIZES["valid"],
                           n_test=SIZES["test"], jobs=jobs, en_x_langs=LANGS_USED, progress=False)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return _generate(tmp_path_factory.mktemp("synth_a"), jobs=2)


@pytest.fixture(scope="module")
def corpus_again(tmp_path_factory):
    """Same seed and sizes, another directory and another number of jobs."""
    return _generate(tmp_path_factory.mktemp("synth_b"), jobs=1)


def _rows(tsv: Path) -> tuple[str, list[list[str]]]:
    lines = tsv.read_text(encoding="utf-8").splitlines()
    return lines[0], [line.split("\t") for line in lines[1:]]


def _resolve(root: str, p: str) -> Path:
    return Path(p) if Path(p).is_absolute() else Path(root) / p


def _video_frames(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="gray") for f in container.decode(video=0)])


def test_manifests_match_media(corpus):
    for split, n in SIZES.items():
        root, rows = _rows(corpus.tsv(split))
        assert root == "/" and len(rows) == n
        labels = corpus.labels(split).read_text(encoding="utf-8").splitlines()
        assert len(labels) == n and all(labels)
        for utt_id, video, audio, n_frames, n_samples in rows:
            assert re.fullmatch(r"s\d{3}\w+/\d{5}", utt_id)
            a, v = _resolve(root, audio), _resolve(root, video)
            assert str(a) == str(corpus.root / "muavic" / "en" / "audio" / split / f"{utt_id}.wav")
            assert str(v) == str(a).replace("audio", "video").replace(".wav", ".mp4")
            info = sf.info(str(a))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames == int(n_samples)
            frames = _video_frames(v)
            assert frames.shape == (int(n_frames), 96, 96)
            assert int(n_frames) == round(int(n_samples) / 16000 * 25)
            assert abs(int(n_frames) / 25 - int(n_samples) / 16000) <= 1 / 25
            assert 1.0 < int(n_samples) / 16000 < 6.0


def test_translation_manifests_are_aligned(corpus):
    for split in SIZES:
        _, en_rows = _rows(corpus.tsv(split))
        en = corpus.labels(split).read_text(encoding="utf-8").splitlines()
        assert all(re.fullmatch(r"[a-z' ]+", line) for line in en)  # LRS3 style
        for lang in LANGS_USED:
            _, rows = _rows(corpus.tsv(split, lang))
            assert rows == en_rows
            tr = corpus.labels(split, lang).read_text(encoding="utf-8").splitlines()
            assert len(tr) == len(en)
            assert all(t[0].isupper() or t.startswith("¿") for t in tr)
            assert all(t.endswith((".", "?")) for t in tr)


def test_speakers_are_disjoint(corpus):
    meta = json.loads((corpus.root / "corpus.json").read_text())
    voices = {s: {d["voice"].split("+")[1] for d in meta["extra"]["speaker_details"][s]} for s in SIZES}
    spk = {}
    for split in SIZES:
        _, rows = _rows(corpus.tsv(split))
        spk[split] = {r[0].split("/")[0] for r in rows}
        assert spk[split] == set(corpus.speakers[split])
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        assert not spk[a] & spk[b]
        assert not voices[a] & voices[b]
    babble_voices = {v.split("+")[1] for v in meta["extra"]["babble_source_voices"]}
    assert not babble_voices & (voices["valid"] | voices["test"])


def test_babble_is_mean_of_other_speakers(corpus):
    for split in ("valid", "test"):
        lines = corpus.babble_tsv[split].read_text().splitlines()
        assert lines == [str(corpus.babble_wav)]
    meta = json.loads((corpus.root / "corpus.json").read_text())
    sources = [sf.read(p, dtype="int16")[0] for p in meta["extra"]["babble_sources"]]
    assert len(sources) >= 30 and len(sources) == N_BABBLE
    n = min(len(s) for s in sources)
    expected = np.stack([s[:n].astype(np.float64) for s in sources]).mean(0).astype(np.int16)
    babble, sr = sf.read(str(corpus.babble_wav), dtype="int16")
    assert sr == 16000 and babble.dtype == np.int16
    np.testing.assert_array_equal(babble, expected)
    assert len(babble) > 3 * 16000 and np.abs(babble).max() > 100


def test_training_noise_list(corpus):
    paths = corpus.train_noise_tsv.read_text().splitlines()
    kinds = {Path(p).name.split("_")[0] for p in paths}
    assert kinds >= {"babble", "white", "pink", "music"}
    for p in paths:
        assert Path(p).is_absolute()
        x, sr = sf.read(p, dtype="int16")
        assert sr == 16000 and 3.0 <= len(x) / sr <= 11.0
        assert np.sqrt(np.mean(x.astype(np.float64) ** 2)) > 50  # not silent


def test_mouth_moves_with_speech(corpus):
    active, motion = [], []
    for split in SIZES:
        root, rows = _rows(corpus.tsv(split))
        for _, video, audio, n_frames, _ in rows:
            x, _ = sf.read(str(_resolve(root, audio)), dtype="float64")
            frames = _video_frames(_resolve(root, video)).astype(np.float64)
            energy = np.sqrt((x.reshape(int(n_frames), 640) ** 2).mean(1))
            act = energy > 0.01  # -40 dBFS: speech; the padding is room tone at about -60 dBFS
            assert not act[:2].any() and act.any()
            mouth = frames[:, 36:]  # below the nose
            dev = np.abs(mouth - mouth[0]).mean((1, 2))  # first frame: mouth at rest
            active.append(act)
            motion.append(dev)
    act, dev = np.concatenate(active), np.concatenate(motion)
    assert dev[act].mean() > 1.4 * dev[~act].mean()
    assert np.corrcoef(act, dev)[0, 1] > 0.25


def test_same_seed_same_files(corpus, corpus_again):
    for split in SIZES:
        for lang in ("en", *LANGS_USED):
            assert corpus.labels(split, lang).read_bytes() == corpus_again.labels(split, lang).read_bytes()
        _, rows_a = _rows(corpus.tsv(split))
        _, rows_b = _rows(corpus_again.tsv(split))
        assert [r[0] for r in rows_a] == [r[0] for r in rows_b]
        for ra, rb in zip(rows_a, rows_b):
            assert Path(ra[2]).read_bytes() == Path(rb[2]).read_bytes()  # wav
            assert Path(ra[1]).read_bytes() == Path(rb[1]).read_bytes()  # mp4
    assert corpus.babble_wav.read_bytes() == corpus_again.babble_wav.read_bytes()
    for pa, pb in zip(corpus.train_noise_tsv.read_text().split(), corpus_again.train_noise_tsv.read_text().split()):
        assert Path(pa).read_bytes() == Path(pb).read_bytes()


def test_root_relative_manifests(tmp_path):
    info = generate_corpus(tmp_path / "rel", seed=1, n_train=2, n_valid=1, n_test=1, jobs=2,
                           relative_paths=True, noise=False, progress=False)
    assert info.babble_wav is None and not (info.root / "noise").exists()
    for split in ("train", "valid", "test"):
        for lang in ("en", "fr"):
            root, rows = _rows(info.tsv(split, lang))
            assert root == str(info.root) and len(rows) == info.sizes[split]
            for _, video, audio, n_frames, n_samples in rows:
                assert not Path(audio).is_absolute() and audio.startswith("muavic/en/audio/")
                assert sf.info(str(_resolve(root, audio))).frames == int(n_samples)
                assert _video_frames(_resolve(root, video)).shape[0] == int(n_frames)


def test_grammar_vocabulary_and_translations():
    vocab = english_vocabulary()
    assert 200 <= len(vocab) <= 800
    gen_a = SentenceGenerator(random.Random(3), LANGS, min_words=5, max_words=11)
    gen_b = SentenceGenerator(random.Random(3), LANGS, min_words=5, max_words=11)
    sents = [gen_a.sample() for _ in range(400)]
    assert [s.en for s in sents] == [gen_b.sample().en for _ in range(400)]
    assert len({s.en for s in sents}) > 380  # varied
    assert len({s.template for s in sents}) >= 6
    for s in sents:
        assert 5 <= s.n_words <= 11 and set(s.en.split()) <= vocab
        fr, es = s.translations["fr"], s.translations["es"]
        assert not re.search(r"\b(le|la|de|je|ne|que) [aeiouéèêâôîh]", fr, re.IGNORECASE)  # elided
        assert not re.search(r"\b(à le|de le|à les|de les)\b", fr)  # contracted
        assert not re.search(r"\b(a el|de el)\b", es)
    with pytest.raises(ValueError):
        SentenceGenerator(random.Random(0), ("xx",))


def test_resampler_matches_scipy():
    from scipy import signal

    from whisper_flamingo.preparation.synthetic.espeak import resample_to

    x = np.random.default_rng(0).standard_normal(22050 + 17)
    ours = resample_to(x, 22050, 16000)
    ref = signal.resample_poly(x, 320, 441)
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-6)


def test_refuses_foreign_directory_and_bad_language(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not empty"):
        generate_corpus(tmp_path, n_train=2, n_valid=1, n_test=1, progress=False)
    with pytest.raises(ConfigError, match="xx"):
        generate_corpus(tmp_path / "new", n_train=2, n_valid=1, n_test=1, en_x_langs=("xx",),
                        progress=False)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_reports_errors(tmp_path, capsys):
    from whisper_flamingo.cli import main

    (tmp_path / "x").write_text("")
    assert main(["prepare", "synthetic", "--out", str(tmp_path), "--train", "2", "--no-progress"]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["prepare", "synthetic", "--out", str(tmp_path), "--langs", "xx"])
