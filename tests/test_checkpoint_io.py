"""The package's one checkpoint reader, one strict loader and one prefix stripper (checkpoints/io.py)."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from whisper_flamingo.checkpoints import (
    load_avhubert,
    load_stage1_checkpoint,
    load_state_strict,
    load_whisper,
    load_whisper_flamingo,
    read_checkpoint_file,
    strip_prefix,
)
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.whisper import ModelDimensions, Whisper

PACKAGE = Path(__file__).resolve().parents[1] / "whisper_flamingo"
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=1, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=1, n_text_layer=1)


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _state() -> dict:
    return {"state_dict": {"model.w": torch.arange(4000, dtype=torch.float32)}, "epoch": 1}


def _error(path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        read_checkpoint_file(path)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{path}: "), msg  # one line, naming the file first
    return msg[len(f"{path}: "):]


@pytest.mark.parametrize("legacy", [False, True])
def test_reads_plain_and_restricted_pickles(tmp_path, legacy):
    plain, hp = tmp_path / "plain.pt", tmp_path / "hp.ckpt"
    torch.save(_state(), plain, _use_new_zipfile_serialization=not legacy)
    torch.save({**_state(), "hyper_parameters": {"args": argparse.Namespace(lr=0.5)}}, hp,
               _use_new_zipfile_serialization=not legacy)
    assert torch.equal(read_checkpoint_file(plain)["state_dict"]["model.w"], torch.arange(4000.0))
    got = read_checkpoint_file(hp)  # weights_only refuses the Namespace: the restricted unpickler reads it
    assert got["hyper_parameters"]["args"].lr == 0.5 and got["epoch"] == 1


def test_a_file_with_other_globals_is_read_once(tmp_path, monkeypatch):
    """A zip file's pickle globals are listed before any tensor is read: no wasted weights-only pass."""
    path = tmp_path / "hp.ckpt"
    torch.save({**_state(), "hyper_parameters": {"args": argparse.Namespace(lr=0.5)}}, path)
    calls, load = [], torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: calls.append(k["weights_only"]) or load(*a, **k))
    assert read_checkpoint_file(path)["hyper_parameters"]["args"].lr == 0.5
    assert calls == [False]  # the restricted unpickler only
    calls.clear()
    torch.save(_state(), path)
    assert read_checkpoint_file(path)["epoch"] == 1 and calls == [True]


@pytest.mark.parametrize("legacy", [False, True])
def test_truncated_file_is_named_as_truncated(tmp_path, legacy):
    full = tmp_path / "full.pt"
    torch.save(_state(), full, _use_new_zipfile_serialization=not legacy)
    data = full.read_bytes()
    for fraction in (0.02, 0.3, 0.6, 0.95):
        cut = tmp_path / f"cut{fraction}.pt"
        cut.write_bytes(data[: max(1, int(len(data) * fraction))])
        msg = _error(cut)
        assert msg.startswith("truncated") and "fetch or save it again" in msg, msg


def test_not_a_checkpoint_missing_empty_and_directory(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello, not a checkpoint")
    assert _error(text).startswith("not a file written by torch.save (starts with b'hell')")
    assert _error(tmp_path / "absent.pt") == "checkpoint file not found; check the path"
    (tmp_path / "empty.pt").write_bytes(b"")
    assert _error(tmp_path / "empty.pt").startswith("empty file (0 bytes)")
    (tmp_path / "dir.ckpt").mkdir()
    assert _error(tmp_path / "dir.ckpt").startswith("is a directory")


@pytest.mark.parametrize("legacy", [False, True])
def test_forbidden_pickle_global_is_refused_not_run(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    torch.save({**_state(), "x": _Evil(marker)}, path, _use_new_zipfile_serialization=not legacy)
    msg = _error(path)
    assert msg.startswith(f"refuses to unpickle {os.system.__module__}.system;"), msg
    assert not marker.exists()


def test_the_loaders_of_every_format_report_the_readers_cause(tmp_path):
    full = tmp_path / "full.pt"
    torch.save(_state(), full)
    cut = tmp_path / "cut.ckpt"
    cut.write_bytes(full.read_bytes()[:900])
    for load in (load_whisper, load_whisper_flamingo, load_avhubert,
                 lambda p: load_stage1_checkpoint(Whisper(DIMS), p)):
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(cut))}: truncated \("):
            load(cut)


def test_one_reader_in_the_package():
    """Only io.py (weights-only) and safe_pickle.py (the restricted unpickler it falls back to) call torch.load."""
    callers = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
                     if re.search(r"\btorch\.load\(|(?<!yaml\.)\bsafe_load\(", p.read_text()))
    assert callers == ["checkpoints/io.py", "checkpoints/safe_pickle.py"]


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.norm = nn.BatchNorm1d(2)


def test_strict_loader_lists_unexpected_missing_and_misshaped_keys():
    net = _Net()
    state = {k: torch.ones_like(v) for k, v in net.state_dict().items()}
    state["extra.weight"] = torch.zeros(1)
    state["lin.bias"] = torch.zeros(5)
    del state["norm.weight"]
    with pytest.raises(CheckpointError) as err:
        load_state_strict(net, state, "run/last.ckpt", what="tiny net", key_prefix="model.", hint="do X")
    assert str(err.value) == (
        "run/last.ckpt: does not match the tiny net: 1 unexpected keys (e.g. model.extra.weight); 1 missing keys "
        "(e.g. model.norm.weight); 1 mis-shaped keys (e.g. model.lin.bias (5,) vs model (2,)); do X")
    assert not torch.equal(net.lin.weight, torch.ones(2, 3))  # nothing was loaded


def test_strict_loader_allow_missing_assign_and_old_batchnorm():
    net = _Net()
    state = {k: torch.full_like(v, 2) for k, v in net.state_dict().items() if not k.startswith("norm.")}
    assert load_state_strict(net, state, allow_missing=True) == [
        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"]
    assert torch.equal(net.lin.weight, torch.full((2, 3), 2.0))
    with pytest.raises(CheckpointError, match="5 missing keys"):
        load_state_strict(net, state)
    full = {k: v for k, v in _Net().state_dict().items() if k != "norm.num_batches_tracked"}  # pre-1.0 BatchNorm
    with torch.device("meta"):
        meta = _Net()
    assert load_state_strict(meta, full, assign=True) == []
    assert meta.lin.weight is not None and not meta.lin.weight.is_meta and int(meta.norm.num_batches_tracked) == 0


def test_strip_prefix():
    state = {"model.a": 1, "module.model.b": 2, "module.c": 3, "d": 4, "xmodel.e": 5}
    assert strip_prefix(state) == {"a": 1, "b": 2, "c": 3, "d": 4, "xmodel.e": 5}
    assert strip_prefix(state, "model.") == {"a": 1, "module.model.b": 2, "module.c": 3, "d": 4, "xmodel.e": 5}
    assert strip_prefix(state, "model.", keep_others=False) == {"a": 1}
    assert strip_prefix({"encoder.video_model.w": 1, "encoder.x": 2}, "encoder.video_model.",
                        keep_others=False) == {"w": 1}
    assert strip_prefix(state, "", keep_others=False) == state
