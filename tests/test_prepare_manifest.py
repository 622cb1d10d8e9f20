"""Manifests for a new user's own data: the README's worked example and `prepare manifest` (issue 12)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_utils import tiny_config

from whisper_flamingo.data.manifest import check_records, load_split
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.preparation.manifest import manifest_from_folder, muavic_root_of

ROOT = Path(__file__).resolve().parents[1]


def _tone(path: Path, n: int, sr: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (np.sin(np.arange(n) * 0.05) * 8000).astype(np.int16), sr, subtype="PCM_16")


def _readme_example() -> dict[str, list[str]]:
    """The README's worked example: ``# <path>`` headed text blocks of the manifest section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### Your own data: the manifest format", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```text\n# (\S+)\n(.*?)```", section, re.DOTALL)
    return {path: body.splitlines() for path, body in blocks}


def test_readme_manifest_example_is_read_as_written(tmp_path):
    """Write the README's example files (under tmp_path instead of /) and read them back, headers checked."""
    blocks = _readme_example()
    assert set(blocks) == {"/data/mine/muavic/en/train.tsv", "/data/mine/muavic/en/train.en"}
    tsv, labels = blocks["/data/mine/muavic/en/train.tsv"], blocks["/data/mine/muavic/en/train.en"]
    root = tsv[0]
    assert root == "/data/mine/audio" and len(tsv) == 2 and len(labels) == 1
    fields = tsv[1].split("\t")
    assert len(fields) == 5, "the README's example row must hold five tab-separated columns"
    uid, video, audio, frames, samples = fields
    mine = tmp_path / "data/mine"
    _tone(mine / "audio" / audio, int(samples))  # 16 kHz: the count in the README is the sample count
    for split in ("train", "valid", "test"):
        (mine / f"muavic/en/{split}.tsv").parent.mkdir(parents=True, exist_ok=True)
        (mine / f"muavic/en/{split}.tsv").write_text("\n".join([str(mine / "audio"), *tsv[1:]]) + "\n")
        (mine / f"muavic/en/{split}.en").write_text("\n".join(labels) + "\n")
    data = load_split(tiny_config(mine, audio_max_length=480000), "train", probe=True)
    (rec,) = data.records
    assert (rec.id, rec.n_samples, rec.n_video_frames, rec.text) == (uid, int(samples), 0, labels[0])
    assert rec.audio_path == str(mine / "audio" / audio)
    # the README's 44.1 kHz statement: the native count and the 16 kHz count are both accepted
    seconds = int(samples) / 16000
    _tone(mine / "audio" / audio, int(seconds * 44100), sr=44100)
    for count in (int(seconds * 44100), int(samples)):
        rec.n_samples = count
        kept, bad = check_records([rec], "error")
        assert kept[0].n_samples == int(samples) and not bad


def test_prepare_manifest_from_txt_files_reads_back(tmp_path):
    rec = tmp_path / "rec"
    _tone(rec / "a.wav", 16000)
    _tone(rec / "spk" / "b.flac", 44100 * 2, sr=44100)
    (rec / "a.txt").write_text("hello\tworld\n")
    (rec / "spk" / "b.txt").write_text("second\nline\n")
    out = tmp_path / "data"
    for split in ("train", "valid", "test"):
        info = manifest_from_folder(rec, out / "muavic/en", split=split)
        assert info.rows == 2 and info.tsv == out / f"muavic/en/{split}.tsv"
    lines = (out / "muavic/en/train.tsv").read_text().splitlines()
    assert lines == [str(rec.resolve()), "a\t-\ta.wav\t0\t16000", "spk/b\t-\tspk/b.flac\t0\t32000"]
    assert (out / "muavic/en/train.en").read_text() == "hello world\nsecond line\n"
    data = load_split(tiny_config(out, audio_max_length=480000), "train", probe=True)
    assert [(r.id, r.text, r.n_samples) for r in data.records] == [("a", "hello world", 16000),
                                                                    ("spk/b", "second line", 32000)]
    with pytest.raises(ConfigError, match="--overwrite"):
        manifest_from_folder(rec, out / "muavic/en", split="train")


def test_prepare_manifest_transcript_tsv_language_and_bad_files(tmp_path):
    rec = tmp_path / "rec"
    for name in ("x1", "x2", "x3"):
        _tone(rec / f"{name}.wav", 8000)
    (rec / "x3.wav").write_bytes(b"not audio")
    table = tmp_path / "t.tsv"
    table.write_text("x1.wav\thola mundo\nx3\tmal\n\n")
    out = tmp_path / "data/muavic/es/muavic_normalized"
    with pytest.raises(DataError, match="no transcript for x2.wav") as exc:
        manifest_from_folder(rec, out, lang="es", transcripts=table)
    assert "--on-bad-sample skip" in str(exc.value)
    info = manifest_from_folder(rec, out, lang="es", transcripts=table, on_bad_sample="skip")
    assert info.rows == 1 and info.skipped == {"missing_transcript": 1, "unreadable": 1}
    assert info.tsv == out / "train.tsv" and muavic_root_of(out, "train", "es") == tmp_path / "data"
    assert (out / "train.es").read_text() == "hola mundo\n"


def test_prepare_manifest_command(tmp_path):
    rec = tmp_path / "rec"
    _tone(rec / "u.wav", 1600)
    (rec / "u.txt").write_text("one\n")
    out = subprocess.run([sys.executable, "-m", "whisper_flamingo.cli", "prepare", "manifest", "--layout", "audio",
                          "--src", str(rec), "--out", str(tmp_path / "d/muavic/en"), "--split", "valid"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"1 rows (0.00 h) written to {tmp_path / 'd/muavic/en/valid.tsv'}" in out.stdout
    assert f"muavic_root={tmp_path / 'd'} lang=en" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "whisper_flamingo.cli", "prepare", "manifest", "--layout", "audio",
                          "--src", str(tmp_path / "no"), "--out", str(tmp_path / "d")], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no'}: audio folder does not exist"]
