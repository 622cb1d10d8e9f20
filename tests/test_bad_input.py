"""Every bad input gives one ``error: <file>:<line>: ...`` line and exit status 2; ``skip`` counts it.

The train command runs in-process (``cli.main``) on a freshly generated tiny corpus per case.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from corpus_utils import make_tiny_corpus
from whisper.model import ModelDimensions

from whisper_flamingo import cli
from whisper_flamingo.models.whisper import Whisper

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bad_input")
    corpus = make_tiny_corpus(root / "corpus", n_train=8, n_valid=3, n_test=3, seed=5)
    torch.manual_seed(0)
    ckpt = root / "tiny.pt"
    torch.save({"dims": asdict(DIMS), "model_state_dict": Whisper(DIMS).state_dict()}, ckpt)
    return {"corpus": corpus, "model": ckpt}


@pytest.fixture()
def corpus(pristine, tmp_path) -> Path:
    """A private copy whose tsv paths point into the copy."""
    dst = tmp_path / "corpus"
    shutil.copytree(pristine["corpus"], dst)
    src = str(pristine["corpus"])
    for tsv in list(dst.rglob("*.tsv")):
        tsv.write_text(tsv.read_text().replace(src, str(dst)))
    return dst


def train(pristine, corpus: Path, tmp_path: Path, capsys, *extra: str) -> tuple[int, str]:
    args = ["train", "config/audio/demo.yaml", f"model_name={pristine['model']}", f"muavic_root={corpus}",
            f"noise_fn={corpus}/noise/train.tsv", f"noise_fn_val={corpus}/noise/valid.tsv",
            f"noise_fn_test={corpus}/noise/test.tsv", f"log_output_dir={tmp_path}/logs",
            f"check_output_dir={tmp_path}/ckpt", "num_worker=0", "num_train_steps=2", "audio_max_length=32000",
            "batch_size=1.0", "val_decode=false", "validate_before_training=true", "accelerator=cpu",
            "precision=32", "lang=en", *extra]
    rc = cli.main(args)
    err = capsys.readouterr().err
    return rc, err


def error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def rows(corpus: Path, split: str = "train") -> list[list[str]]:
    return [line.split("\t") for line in (corpus / "muavic/en" / f"{split}.tsv").read_text().splitlines()[1:]]


def audio_of(corpus: Path, i: int, split: str = "train") -> Path:
    return Path(rows(corpus, split)[i][2])


def corrupt_missing(c: Path) -> tuple[str, str]:
    p = audio_of(c, 2)
    p.unlink()
    return str(p), "train.tsv:4"


def corrupt_empty(c: Path) -> tuple[str, str]:
    p = audio_of(c, 1)
    p.write_bytes(b"")
    return str(p), "train.tsv:3"


def corrupt_truncated(c: Path) -> tuple[str, str]:
    p = audio_of(c, 0)
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return str(p), "train.tsv:2"


def corrupt_garbage(c: Path) -> tuple[str, str]:
    p = audio_of(c, 3)
    p.write_bytes(b"this is not a wav file at all" * 20)
    return str(p), "train.tsv:5"


def corrupt_nan(c: Path) -> tuple[str, str]:
    p = audio_of(c, 1, "valid")
    x, sr = sf.read(p, dtype="float32")
    x[len(x) // 2] = np.nan
    sf.write(p, x, sr, subtype="FLOAT")
    return str(p), ""


def corrupt_label_count(c: Path) -> tuple[str, str]:
    lab = c / "muavic/en/train.en"
    lab.write_text("\n".join(lab.read_text().splitlines()[:-1]) + "\n")
    return str(lab), "train.tsv"


def corrupt_columns(c: Path) -> tuple[str, str]:
    tsv = c / "muavic/en/train.tsv"
    lines = tsv.read_text().splitlines()
    lines[3] = "\t".join(lines[3].split("\t")[:4])
    tsv.write_text("\n".join(lines) + "\n")
    return str(tsv) + ":4", "5 tab-separated"


def corrupt_sample_count(c: Path) -> tuple[str, str]:
    tsv = c / "muavic/en/train.tsv"
    lines = tsv.read_text().splitlines()
    f = lines[2].split("\t")
    f[4] = str(int(f[4]) + 4000)
    lines[2] = "\t".join(f)
    tsv.write_text("\n".join(lines) + "\n")
    return str(tsv) + ":3", f[2]


def corrupt_empty_text(c: Path) -> tuple[str, str]:
    lab = c / "muavic/en/train.en"
    lines = lab.read_text().splitlines()
    lines[4] = ""
    lab.write_text("\n".join(lines) + "\n")
    return str(lab) + ":5", "empty transcript"


CASES = {
    "missing_file": corrupt_missing,
    "empty_file": corrupt_empty,
    "truncated": corrupt_truncated,
    "unreadable": corrupt_garbage,
    "nan_samples": corrupt_nan,
    "label_count_mismatch": corrupt_label_count,
    "column_count": corrupt_columns,
    "sample_count_mismatch": corrupt_sample_count,
    "empty_transcript": corrupt_empty_text,
}


@pytest.mark.parametrize("reason", sorted(CASES))
def test_bad_input_gives_one_line_error(reason, pristine, corpus, tmp_path, capsys):
    must1, must2 = CASES[reason](corpus)
    rc, err = train(pristine, corpus, tmp_path, capsys)
    assert rc == 2, err
    line = error_line(err)
    assert must1 in line and must2 in line, line


def test_unknown_language_code(pristine, corpus, tmp_path, capsys):
    rc, err = train(pristine, corpus, tmp_path, capsys, "lang=xx")
    assert rc == 2
    line = error_line(err)
    assert "unknown language code 'xx'" in line


def test_silent_noise_file_is_an_error_naming_it(pristine, corpus, tmp_path, capsys):
    wav = corpus / "noise" / "white.wav"
    sf.write(wav, np.zeros(16000, dtype=np.int16), 16000, subtype="PCM_16")
    rc, err = train(pristine, corpus, tmp_path, capsys)
    assert rc == 2
    line = error_line(err)
    assert str(wav) in line and "silent" in line and "train.tsv:2" in line


def test_missing_config_file(capsys, tmp_path):
    rc = cli.main(["train", str(tmp_path / "nope.yaml")])
    assert rc == 2
    assert "nope.yaml: config file not found" in error_line(capsys.readouterr().err)


def test_error_from_a_dataloader_worker_is_one_line(pristine, corpus, tmp_path, capsys):
    path, _ = corrupt_nan(corpus)
    rc, err = train(pristine, corpus, tmp_path, capsys, "num_worker=1")
    assert rc == 2
    line = error_line(err)
    assert path in line and "NaN" in line and "Caught" not in line


def test_skip_policy_drops_and_counts_bad_samples(pristine, corpus, tmp_path, capsys, caplog):
    corrupt_missing(corpus)
    corrupt_empty_text(corpus)
    corrupt_sample_count(corpus)
    nan_path, _ = corrupt_nan(corpus)
    caplog.set_level(logging.INFO)
    rc, err = train(pristine, corpus, tmp_path, capsys, "on_bad_sample=skip", "num_train_steps=4")
    assert rc == 0, err
    text = caplog.text
    for reason in ("missing_file", "empty_transcript", "sample_count_mismatch", "nan_samples"):
        assert re.search(rf"{reason}'?(=|: )[1-9]", text), (reason, text)
    assert (tmp_path / "ckpt" / "demo_tiny.en" / "last.ckpt").is_file()
