"""Manifest selection per lang/task mode, row errors, filters and the audio pre-pass."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from corpus_utils import make_tiny_corpus, tiny_config, write_manifest

from whisper_flamingo.data.manifest import (
    LANGUAGE_SETS,
    check_records,
    load_split,
    manifest_spec,
    read_manifest,
    resolve_selection,
)
from whisper_flamingo.errors import ConfigError, DataError


def _labels(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------------------- modes
def test_en_mode(tiny_corpus):
    cfg = tiny_config(tiny_corpus, lang="en")
    data = load_split(cfg, "train")
    assert len(data.records) == 12
    r = data.records[0]
    assert (r.lang, r.task) == ("en", "transcribe")
    assert r.tsv_path.endswith("muavic/en/train.tsv") and r.label_path.endswith("muavic/en/train.en")
    assert r.line == 2 and r.text == _labels(tiny_corpus / "muavic/en/train.en")[0].strip()
    assert os.path.isfile(r.audio_path) and r.video_path.endswith(".mp4")
    assert r.where == f"{r.tsv_path}:2"


def test_multi_en_st_is_en_x(tiny_corpus):
    sel = resolve_selection("multi_en-st")
    assert sel.task == "En-X" and sel.langs == LANGUAGE_SETS["multi_en-st"] and sel.reduce_val == 200
    # 'en' rows stay English transcription even for En-X (the original's branch order)
    en = manifest_spec(sel, "en", "test", tiny_corpus)
    assert en.tsv == tiny_corpus / "muavic/en/test.tsv" and en.task == "transcribe"
    es = manifest_spec(sel, "es", "test", tiny_corpus)
    assert es.tsv == tiny_corpus / "muavic/en/es/test.tsv" and es.labels.name == "test.es"
    recs = read_manifest(es)
    assert {r.lang for r in recs} == {"es"} and {r.task for r in recs} == {"transcribe"}
    # same English audio, Spanish text
    en_recs = read_manifest(en)
    assert [r.audio_path for r in recs] == [r.audio_path for r in en_recs]
    assert recs[0].text == _labels(tiny_corpus / "muavic/en/es/test.es")[0]


def test_x_en_uses_translate(tiny_corpus):
    cfg = tiny_config(tiny_corpus, lang="es", whisper_task="X-En")
    recs = load_split(cfg, "valid").records
    assert len(recs) == 4
    assert {(r.lang, r.task) for r in recs} == {("es", "translate")}
    assert recs[0].tsv_path.endswith("muavic/es/en/valid.tsv")
    assert recs[0].label_path.endswith("muavic/es/en/valid.en")
    assert "/muavic/es/audio/" in recs[0].audio_path


def test_single_code_and_lrs2(tiny_corpus):
    recs = load_split(tiny_config(tiny_corpus, lang="es"), "test").records
    assert recs[0].tsv_path.endswith("muavic/es/muavic_normalized/test.tsv")
    assert recs[0].lang == "es" and recs[0].task == "transcribe"
    lrs = load_split(tiny_config(tiny_corpus, lang="lrs2"), "valid").records
    assert len(lrs) == 4 and lrs[0].label_path.endswith("lrs2/valid.wrd") and lrs[0].lang == "en"
    assert lrs[0].text.isupper()


def test_multi_modes_select_languages(tiny_corpus):
    sel = resolve_selection("multi-all")
    assert sel.langs == ("en", "ar", "de", "el", "es", "fr", "it", "pt", "ru")
    assert sel.task == "transcribe" and sel.reduce_val == 300 and not sel.lrs2
    spec = manifest_spec(sel, "ar", "train", tiny_corpus)
    assert spec.tsv == tiny_corpus / "muavic/ar/muavic_normalized/train.tsv"
    assert spec.labels == tiny_corpus / "muavic/ar/muavic_normalized/train.ar"
    assert resolve_selection("multi").langs == ("en", "es", "fr", "it", "pt")
    assert resolve_selection("multi", reduce_val=0).reduce_val is None
    assert resolve_selection("multi", reduce_val=7).reduce_val == 7
    assert resolve_selection("es").reduce_val is None
    assert resolve_selection("lrs2_medium").lrs2
    with pytest.raises(ConfigError):
        resolve_selection("en", task="bogus")


def test_multiple_languages_concatenate(tmp_path):
    root = make_tiny_corpus(tmp_path, 3, 2, 2, langs=("en", "es", "fr"), noise=False)
    # a 'multi'-like selection restricted to what exists: patch the language set via single modes
    recs = []
    for lang in ("en", "es", "fr"):
        recs += load_split(tiny_config(root, lang=lang), "train").records
    assert [r.lang for r in recs] == ["en"] * 3 + ["es"] * 3 + ["fr"] * 3
    # and 'multi' reads en, es, fr, it, pt in order: it fails on the first missing one (it)
    with pytest.raises(DataError) as exc:
        load_split(tiny_config(root, lang="multi"), "train")
    assert exc.value.reason == "missing_file" and "muavic/it/muavic_normalized/train.tsv" in str(exc.value)


def test_vc2(tmp_path):
    root = make_tiny_corpus(tmp_path / "c", 3, 2, 2, langs=("en", "es"), noise=False)
    vc2 = tmp_path / "vc2"
    rows = [line.split("\t") for line in (root / "muavic/en/train.tsv").read_text().splitlines()[1:]]
    write_manifest(vc2 / "train.tsv", vc2 / "train.en", [tuple(r) + ("vox text",) for r in rows * 2])
    d = root / "muavic/es/muavic_normalized"
    shutil.copy(d / "train.tsv", d / "train_muavic_vc2.tsv")
    shutil.copy(d / "train.es", d / "train_muavic_vc2.es")
    recs = load_split(tiny_config(root, lang="en", vc2=True, vc2_path=str(vc2)), "train").records
    assert len(recs) == 6 and recs[0].tsv_path == str(vc2 / "train.tsv") and recs[0].text == "vox text"
    # valid is never the vc2 manifest
    assert load_split(tiny_config(root, lang="en", vc2=True, vc2_path=str(vc2)), "valid").records[
        0].tsv_path.endswith("muavic/en/valid.tsv")
    es = load_split(tiny_config(root, lang="es", vc2=True), "train").records
    assert es[0].tsv_path.endswith("train_muavic_vc2.tsv")
    with pytest.raises(ConfigError, match="vc2_path"):
        load_split(tiny_config(root, lang="en", vc2=True, vc2_path=""), "train")


# ---------------------------------------------------------------------------- row errors
@pytest.fixture()
def small(tmp_path):
    return make_tiny_corpus(tmp_path, 5, 2, 2, noise=False)


def _edit(path: Path, lineno: int, new: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = new
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_column_count(small):
    tsv = small / "muavic/en/train.tsv"
    _edit(tsv, 3, "only\ttwo")
    with pytest.raises(DataError) as exc:
        load_split(tiny_config(small), "train")
    assert exc.value.reason == "column_count" and f"{tsv}:3:" in str(exc.value)
    data = load_split(tiny_config(small, on_bad_sample="skip"), "train")
    assert len(data.records) == 4 and data.skipped["column_count"] == 1


def test_bad_integer_field(small):
    tsv = small / "muavic/en/train.tsv"
    fields = tsv.read_text().splitlines()[1].split("\t")
    fields[4] = "12x"
    _edit(tsv, 2, "\t".join(fields))
    with pytest.raises(DataError, match=f"{tsv}:2:") as exc:
        load_split(tiny_config(small), "train")
    assert exc.value.reason == "bad_field"


def test_label_count_mismatch_always_errors(small):
    lab = small / "muavic/en/valid.en"
    lab.write_text(lab.read_text() + "one extra line\n")
    for policy in ("error", "skip"):
        with pytest.raises(DataError) as exc:
            load_split(tiny_config(small, on_bad_sample=policy), "valid")
        assert exc.value.reason == "label_count_mismatch"
        assert str(lab) in str(exc.value) and str(small / "muavic/en/valid.tsv") in str(exc.value)


def test_empty_transcript(small):
    lab = small / "muavic/en/train.en"
    _edit(lab, 2, "   ")
    with pytest.raises(DataError) as exc:
        load_split(tiny_config(small), "train")
    msg = str(exc.value)
    assert exc.value.reason == "empty_transcript" and msg.startswith(f"{lab}:2: empty transcript")
    assert "train.tsv:3" in msg
    data = load_split(tiny_config(small, on_bad_sample="skip"), "train")
    assert len(data.records) == 4 and data.skipped == {"empty_transcript": 1}


def test_audio_only_rows_kept_for_audio_and_counted_for_video(small, caplog):
    """n_video_frames 0 (audio-only data) is legitimate for stage 1; a task reading video drops and counts it."""
    tsv = small / "muavic/en/train.tsv"
    for line in (3, 4):
        fields = tsv.read_text().splitlines()[line - 1].split("\t")
        fields[3] = "0"
        _edit(tsv, line, "\t".join(fields))
    data = load_split(tiny_config(small), "train")
    assert len(data.records) == 5 and not data.filtered and not data.skipped
    with caplog.at_level("INFO", logger="whisper_flamingo.data.manifest"):
        data = load_split(tiny_config(small), "train", need_video=True)  # not an error, even in error mode
    assert len(data.records) == 3 and data.filtered == {"no_video": 2}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train: dropped")]
    assert lines == ["train: dropped 2 rows: no_video (n_video_frames is 0 (audio-only rows) and this task "
                     "reads video)"]


def test_every_dropped_row_is_summarised_once_per_reason(small, caplog):
    tsv, lab = small / "muavic/en/train.tsv", small / "muavic/en/train.en"
    _edit(lab, 1, "x" * 50)  # too long a transcript
    _edit(lab, 2, "  ")  # empty transcript (skipped)
    fields = tsv.read_text().splitlines()[3].split("\t")
    fields[3] = "0"
    _edit(tsv, 4, "\t".join(fields))
    with caplog.at_level("INFO", logger="whisper_flamingo.data.manifest"):
        data = load_split(tiny_config(small, on_bad_sample="skip", text_max_length=40), "train", need_video=True)
    assert len(data.records) == 2
    lines = sorted(r.getMessage() for r in caplog.records if r.getMessage().startswith("train: dropped"))
    assert len(lines) == 3, lines
    assert lines[0].startswith("train: dropped 1 bad rows: empty_transcript")
    assert lines[1].startswith("train: dropped 1 rows: no_video")
    assert lines[2].startswith("train: dropped 1 rows: text_too_long (transcript longer than text_max_length")


def test_native_sample_counts_become_16k_before_the_length_filter(tmp_path):
    """A manifest of 8 kHz files with native counts: accepted, and filtered by their 16 kHz length."""
    root = make_tiny_corpus(tmp_path, 4, 2, 2, noise=False)
    tsv = root / "muavic/en/train.tsv"
    lines = tsv.read_text().splitlines()
    rows = []
    for row in lines[1:]:
        f = row.split("\t")
        audio = os.path.join(lines[0], f[2])
        x, sr = sf.read(audio, dtype="int16")
        sf.write(audio, x[::2], sr // 2, subtype="PCM_16")  # 8 kHz, native count = half the 16 kHz one
        f[4] = str(len(x[::2]))
        rows.append("\t".join(f))
    tsv.write_text("\n".join([lines[0], *rows]) + "\n")
    cfg = tiny_config(root)
    data = load_split(cfg, "train", probe=True)
    assert [r.n_samples for r in data.records] == [2 * int(r.split("\t")[4]) for r in rows]
    longest = max(r.n_samples for r in data.records)
    cut = load_split(tiny_config(root, audio_max_length=longest - 1), "train", probe=True)
    assert len(cut.records) == 3 and cut.filtered == {"audio_too_long": 1}


def test_unknown_language(small):
    with pytest.raises(DataError) as exc:
        load_split(tiny_config(small, lang="xx"), "train")
    assert exc.value.reason == "unknown_language" and "'xx'" in str(exc.value)
    assert "muavic/xx/muavic_normalized/train.tsv" in str(exc.value)


def test_missing_manifest(small):
    with pytest.raises(DataError) as exc:
        load_split(tiny_config(small, lang="fr"), "train")
    assert exc.value.reason == "missing_file" and "muavic/fr/muavic_normalized/train.tsv" in str(exc.value)


def test_relative_paths_fall_back_to_muavic_root(small, monkeypatch, tmp_path):
    tsv = small / "muavic/en/test.tsv"
    lines = tsv.read_text().splitlines()
    rel = [lines[0].replace("/", "some/other/root")]
    for line in lines[1:]:
        f = line.split("\t")
        f[1], f[2] = os.path.relpath(f[1], small), os.path.relpath(f[2], small)
        rel.append("\t".join(f))
    tsv.write_text("\n".join(rel) + "\n")
    monkeypatch.chdir(tmp_path)
    recs = load_split(tiny_config(small), "test").records
    assert all(os.path.isfile(r.audio_path) for r in recs)
    assert recs[0].audio_path == str(small / "muavic/en/audio/test" / recs[0].id) + ".wav"
    assert recs[0].video_path.endswith(".mp4") and recs[0].video_path.startswith(str(small))


# ---------------------------------------------------------------------------- filters
def test_length_filters(tiny_corpus):
    base = tiny_config(tiny_corpus)
    all_train = load_split(base, "train").records
    lens = sorted(r.n_samples for r in all_train)
    cut = lens[5]
    data = load_split(tiny_config(tiny_corpus, audio_max_length=cut), "train")
    assert len(data.records) == sum(n <= cut for n in lens)
    assert data.filtered["audio_too_long"] == 12 - len(data.records)
    chars = sorted(len(r.text) for r in all_train)
    data = load_split(tiny_config(tiny_corpus, text_max_length=chars[3]), "train")
    assert all(len(r.text) <= chars[3] for r in data.records) and data.filtered["text_too_long"] > 0
    # valid: only audio_max_length_val; test: no length filter at all
    v = load_split(tiny_config(tiny_corpus, audio_max_length=1, text_max_length=1,
                               audio_max_length_val=1), "valid")
    assert v.records == [] and v.filtered["audio_too_long"] == 4
    t = load_split(tiny_config(tiny_corpus, audio_max_length=1, text_max_length=1,
                               audio_max_length_val=1), "test")
    assert len(t.records) == 4


def test_reduce_val(tiny_corpus):
    cfg = tiny_config(tiny_corpus, lang="multi_en-st")
    sel = resolve_selection(cfg.lang, cfg.whisper_task, cfg.reduce_val)
    assert sel.reduce_val == 200
    for split in ("valid", "test"):
        recs = load_split(tiny_config(tiny_corpus, lang="es", reduce_val=3), split).records
        assert len(recs) == 3 and [r.line for r in recs] == [2, 3, 4]
        assert len(load_split(tiny_config(tiny_corpus, lang="es", reduce_val=0), split).records) == 4
    assert len(load_split(tiny_config(tiny_corpus, lang="es", reduce_val=3), "train").records) == 12
    assert len(load_split(tiny_config(tiny_corpus, lang="es", reduce_val=3), "test",
                          reduce=False).records) == 4


# ---------------------------------------------------------------------------- pre-pass
def test_check_records(tmp_path):
    root = make_tiny_corpus(tmp_path, 8, 2, 2, noise=False)
    recs = load_split(tiny_config(root), "train").records
    Path(recs[0].audio_path).unlink()
    Path(recs[1].audio_path).write_bytes(b"")
    data = Path(recs[2].audio_path).read_bytes()
    Path(recs[2].audio_path).write_bytes(data[: len(data) // 2])
    sf.write(recs[3].audio_path, np.zeros(recs[3].n_samples + 161, np.int16), 16000, subtype="PCM_16")
    Path(recs[4].audio_path).write_text("garbage")
    kept, counts = check_records(recs, "skip", desc="train")
    assert counts == {"missing_file": 1, "empty_file": 1, "truncated": 1, "sample_count_mismatch": 1,
                      "unreadable": 1}
    assert [r.id for r in kept] == [r.id for r in recs[5:]]
    with pytest.raises(DataError) as exc:
        check_records(recs, "error")
    msg = str(exc.value)
    assert msg.startswith(f"{recs[0].tsv_path}:2: ") and recs[0].audio_path in msg and "4 more" in msg
    assert "\n" not in msg and exc.value.reason == "missing_file"
    assert check_records(recs[5:], "error") == (recs[5:], {})
