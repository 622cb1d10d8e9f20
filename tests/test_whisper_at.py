"""Whisper-AT TL-TR heads: parameter counts, parity with the original (fixture), checkpoint layouts."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from needs import need

from whisper_flamingo.checkpoints.whisper_at import load_released, released_whisper_part, save_tltr
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.registry import create, list_models, model_info
from whisper_flamingo.models.whisper import Whisper, whisper_dims
from whisper_flamingo.models.whisper_at import TLTR, parse_mode, window_steps

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tagging_reference" / "whisper_at"

# the reference table (audio_tagging.md §1.3), to the last digit of the formula it was verified with
COUNTS = {"tiny": 3_751_823, "base": 6_575_119, "small": 14_581_007, "medium": 25_732_623, "large-v1": 40_029_967}
COUNTS_512 = {"small": 6_970_383, "medium": 7_101_967, "large-v1": 7_233_551}


def _fixture(name: str) -> tuple[Path, dict]:
    weights = FIXTURES / f"{name}_weights.pt"
    need(weights.is_file(), f"{weights} (Whisper-AT reference fixture)")
    return weights, torch.load(FIXTURES / f"{name}_io.pt", map_location="cpu", weights_only=True)


def test_parameter_counts_match_the_reference():
    for size, n in COUNTS.items():
        assert model_info(f"whisper-at-tltr-{size}").parameters == n, size
        assert round(n / 1e6, 3) == {"tiny": 3.752, "base": 6.575, "small": 14.581, "medium": 25.733,
                                     "large-v1": 40.030}[size]
    for size, n in COUNTS_512.items():
        assert model_info(f"whisper-at-tltr-512-{size}").parameters == n, size
    assert model_info("whisper-at-tltr-tiny.en").parameters == COUNTS["tiny"]
    assert model_info("whisper-at-tltr-512-large-v2").parameters == COUNTS_512["large-v1"]
    assert {"whisper-at-mean-mlp-large-v1", "whisper-at-wa-tr-512-tiny.en"} <= set(list_models("whisper-at"))
    assert model_info("whisper-at-wa-mlp-large-v1").parameters == 1280 * 2 + 1280 * 527 + 527 + 32


def test_modes_and_resolutions():
    assert parse_mode("tl_down_tr_512_1_8") == {"head": "tl_tr", "inter_dim": 512, "time_heads": 1, "layer_heads": 8}
    assert parse_mode("lw_tr_1_8") == {"head": "tl_tr", "time_heads": 1, "layer_heads": 8}
    assert parse_mode("wa_down_tr_256_4") == {"head": "wa_tr", "inter_dim": 256, "time_heads": 4}
    with pytest.raises(ValueError):
        parse_mode("conv_tr_1")
    assert [window_steps(r) for r in (0.4, 2, 4.4, 10, 3 * 0.4, 8.8)] == [1, 5, 11, 25, 3, 22]
    for bad in (0.5, 1, 0, -0.4, 4.41):
        with pytest.raises(ValueError, match="multiple of 0.4"):
            window_steps(bad)


@pytest.mark.parametrize("name", ["tltr_tiny", "tltr512_small"])
def test_parity_with_the_original(name, one_thread):
    """Every io tensor of the fixture (training TLTR and package ATModel paths) within 1e-4."""
    weights, io = _fixture(name)
    head = TLTR.from_checkpoint(weights)
    assert not head.training
    assert head.cfg.down == (name == "tltr512_small")
    feats = io["features"]
    n_layer, dim = feats.shape[1], feats.shape[-1]
    seq = feats.permute(1, 0, 2, 3).reshape(n_layer, -1, dim)
    with torch.no_grad():
        got = {"logits": head(feats), **head.intermediates(feats)}
        for r in (10, 4, 2):
            got[f"seq_logits_res{r}"] = head.tag_windows(seq, r)
        got["seq_first_logits_res10"] = head.tag_windows(seq[:, : io["seq_first_n"]], 10)
    tensors = [k for k, v in io.items() if torch.is_tensor(v) and k != "features"]
    assert sorted(tensors) == sorted(got)  # every io tensor is checked
    for key in tensors:
        assert got[key].shape == io[key].shape, key
        assert (got[key] - io[key]).abs().max() <= 1e-4, key


def test_training_and_released_layouts_load_strictly(tmp_path):
    weights, io = _fixture("tltr_tiny")
    raw = torch.load(weights, map_location="cpu", weights_only=True)
    head_sd = raw["model"]
    ref = TLTR.from_checkpoint(weights)
    # training form (DataParallel), no cfg: dims from the shapes
    torch.save({f"module.{k}": v for k, v in head_sd.items()}, tmp_path / "train.pth")
    train = TLTR.from_checkpoint(tmp_path / "train.pth")
    assert train.cfg == ref.cfg and not train.training
    # released form: at_model. keys merged into a tiny Whisper checkpoint
    dims = whisper_dims("tiny.en")
    whisper = Whisper(dims)
    merged = {**whisper.state_dict(), **{f"at_model.{k}": v for k, v in head_sd.items()}}
    torch.save({"dims": vars(dims), "model_state_dict": merged}, tmp_path / "released.pt")
    released = TLTR.from_checkpoint(tmp_path / "released.pt")
    with torch.no_grad():
        for h in (train, released):
            assert torch.equal(h(io["features"]), ref(io["features"]))
    part = released_whisper_part(tmp_path / "released.pt")
    assert not any(k.startswith("at_model.") for k in part["model_state_dict"])
    torch.save(part, tmp_path / "whisper_part.pt")
    again = Whisper(dims)
    again.load_state_dict(torch.load(tmp_path / "whisper_part.pt", weights_only=True)["model_state_dict"], strict=True)
    model, head2 = load_released(tmp_path / "released.pt")
    assert torch.equal(model.encoder.conv1.weight, whisper.encoder.conv1.weight) and not model.training
    assert head2.cfg == ref.cfg
    # strict: a missing key (or a foreign one) is an error naming the file
    broken = {f"at_model.{k}": v for k, v in head_sd.items() if k != "layer_tr.mlp_ln.bias"}
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="broken.pt.*missing"):
        TLTR.from_checkpoint(tmp_path / "broken.pt")
    torch.save({**head_sd, "time_tr.extra": torch.zeros(1)}, tmp_path / "extra.pt")
    with pytest.raises(CheckpointError, match="unexpected"):
        TLTR.from_checkpoint(tmp_path / "extra.pt")


def test_saved_heads_round_trip_and_registry(tmp_path):
    for name in ("whisper-at-wa-tr-512-tiny.en", "whisper-at-last-mlp-tiny.en", "whisper-at-tltr-512-small"):
        head = create(name).eval()
        feats = torch.randn(2, head.cfg.n_layer, 5, head.cfg.rep_dim)
        path = save_tltr(head, tmp_path / f"{name}.pt")
        loaded = create(name, checkpoint=path)
        with torch.no_grad():
            assert torch.equal(loaded(feats), head(feats)), name
        assert loaded(feats).shape == (2, 527)
