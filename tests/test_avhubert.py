"""AV-HuBERT: parity with the original implementation, checkpoint formats, restricted unpickling."""

from __future__ import annotations

import argparse
import contextlib
import enum
import importlib.util
import io
import logging
import os
import pickle
import sys
import types
import typing
from collections import OrderedDict, defaultdict
from pathlib import Path

import pytest
import torch
from needs import need

from whisper_flamingo.checkpoints.avhubert import (
    avhubert_state_from_whisper_flamingo,
    config_from_state_dict,
    load_avhubert_from_whisper_flamingo,
    load_resencoder,
)
from whisper_flamingo.checkpoints.safe_pickle import RefusedGlobal, safe_load, to_plain
from whisper_flamingo.checkpoints.safe_pickle import load as restricted_load
from whisper_flamingo.errors import CheckpointError, ConfigError
from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig
from whisper_flamingo.models.params import count_parameters
from whisper_flamingo.models.resnet import ResEncoder

REF_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "avhubert_reference"
WEIGHTS = REF_DIR / "small_weights.pt"
TOL = 1e-4
UNUSED = ("mask_emb", "label_embs_concat", "final_proj.weight", "final_proj.bias")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops; avoids OpenMP spin-waits when the 2 cores are shared
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def ref():
    need(WEIGHTS.is_file() and (REF_DIR / "small_io.pt").is_file(), f"the AV-HuBERT reference fixture {REF_DIR}")
    weights = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    io_ = torch.load(REF_DIR / "small_io.pt", map_location="cpu", weights_only=True)
    return weights, io_


@pytest.fixture(scope="module")
def model(ref):
    return AVHubert.from_checkpoint(WEIGHTS)  # pretraining-style file: {"cfg", "model"}, unprefixed keys


@pytest.fixture(scope="module")
def masked_run(model, ref):
    """One masked forward, capturing the ResNet output and the input of the final LayerNorm."""
    captured = {}
    hooks = [
        model.feature_extractor_video.resnet.register_forward_hook(lambda m, i, o: captured.update(resnet=o)),
        model.encoder.layer_norm.register_forward_hook(lambda m, i, o: captured.update(pre_ln=i[0])),
    ]
    try:
        with torch.no_grad():
            captured["features"] = model(ref[1]["video"], ref[1]["padding_mask"])
    finally:
        for h in hooks:
            h.remove()
    return captured


def _reference_state(ref, keep_unused: bool = False) -> dict[str, torch.Tensor]:
    return {k: v for k, v in ref[0]["model"].items() if keep_unused or k not in UNUSED}


def _assert_same_state(model: torch.nn.Module, ref) -> None:
    expected = _reference_state(ref)
    got = model.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert torch.equal(got[k], v.to(got[k].dtype)), k


# ------------------------------------------------------------------------------------------ parity


def test_parity_with_padding_mask(model, ref, masked_run):
    io_ = ref[1]
    assert not model.training and model.mode == "pretrained"
    feats = masked_run["features"]
    assert feats.shape == (2, 20, 128)
    assert (feats[1, :13] - io_["features"][1, :13]).abs().max() <= TOL  # the meaningful frames
    assert (feats - io_["features"]).abs().max() <= TOL  # padded outputs are reproduced too
    # debug aids: ResNet output (B, T, 512) and the last layer before the final LayerNorm
    assert (masked_run["resnet"].transpose(1, 2) - io_["resnet_out"]).abs().max() <= TOL
    assert (masked_run["pre_ln"] - io_["pre_final_layer_norm"]).abs().max() <= TOL


def test_parity_without_padding_mask(model, ref, masked_run):
    io_ = ref[1]
    with torch.no_grad():
        feats = model(io_["video"])
    assert (feats - io_["features_no_mask"]).abs().max() <= TOL
    # the mask matters for the padded item, and item 0 (no padding) is unchanged by it
    assert (feats[1, :13] - masked_run["features"][1, :13]).abs().max() > 1e-2
    assert (feats[0] - masked_run["features"][0]).abs().max() <= 1e-5


def test_parity_audio_visual(model, ref):
    io_ = ref[1]
    with torch.no_grad():
        feats = model(io_["video"], io_["padding_mask"], audio=io_["audio"])
    assert (feats - io_["features_audio_visual"]).abs().max() <= TOL


# ------------------------------------------------------------------------------------------ sizes


def test_parameter_counts_match_reference_on_meta_device():
    with torch.device("meta"):
        large = AVHubert(AVHubertConfig.large(finetuned=True), mode="finetuned")
        base = AVHubert(AVHubertConfig.base())
    core = count_parameters(large) + 104  # the reference's "core" includes mask_emb [104], not modelled here
    assert core == 324_623_080
    assert core + 2004 * 256 == 325_136_104  # fine-tuned English encoder (+ label_embs_concat)
    assert core + 1004 * 256 + (256 * 1024 + 256) == 325_142_504  # mAV-HuBERT (+ labels + final_proj)
    assert count_parameters(base) + 104 == 102_620_392
    assert count_parameters(large.feature_extractor_video.resnet) == 11_186_688
    assert len(large.state_dict()) == 536 - 2  # the 536 released keys minus mask_emb / label_embs_concat
    # shape inference recovers the Large config from a (meta) state dict
    inferred = config_from_state_dict(large.state_dict(), finetuned=True)
    assert inferred == AVHubertConfig.large(finetuned=True)


# ------------------------------------------------------------------------------------------ model API


def _tiny_config(**overrides) -> AVHubertConfig:
    values = dict(encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64, encoder_attention_heads=4,
                  conv_pos=8, conv_pos_groups=4, layer_norm_first=True, dropout=0.0, attention_dropout=0.0,
                  activation_dropout=0.0, encoder_layerdrop=0.0, dropout_input=0.0)
    values.update(overrides)
    return AVHubertConfig(**values)


def test_output_layer_and_post_ln_variant():
    torch.manual_seed(0)
    video = torch.randn(2, 1, 3, 24, 24)  # small frames keep the ResNet cheap
    m = AVHubert(_tiny_config()).eval()
    with torch.no_grad():
        out = m(video)
        last = m(video, output_layer=2)
        first = m(video, output_layer=1)
    assert out.shape == (2, 3, 32)
    assert torch.allclose(out, m.encoder.layer_norm(last), atol=1e-6)  # final LN only without output_layer
    assert not torch.allclose(first, last)
    with pytest.raises(ValueError, match="output_layer"):
        m(video, output_layer=3)
    post = AVHubert(_tiny_config(layer_norm_first=False)).eval()
    with torch.no_grad():
        assert post(video).shape == (2, 3, 32)


def test_pretrained_mode_applies_modality_dropout_only_in_training():
    torch.manual_seed(0)
    video_a, video_b = torch.randn(2, 1, 1, 3, 24, 24)
    cfg = _tiny_config(modality_dropout=1.0, audio_dropout=0.0)  # always drop the video stream
    pretrained = AVHubert(cfg, mode="pretrained").train()
    finetuned = AVHubert(cfg, mode="finetuned").train()
    finetuned.load_state_dict(pretrained.state_dict())
    with torch.no_grad():
        assert torch.equal(pretrained(video_a), pretrained(video_b))  # video zeroed: input ignored
        assert not torch.allclose(finetuned(video_a), finetuned(video_b))  # extract_finetune never drops
        pretrained.eval()
        assert not torch.allclose(pretrained(video_a), pretrained(video_b))


def test_feature_grad_mult_scales_front_end_gradients():
    torch.manual_seed(0)
    video = torch.randn(1, 1, 2, 24, 24)
    grads = {}
    for mult in (1.0, 0.1, 0.0):
        torch.manual_seed(1)
        m = AVHubert(_tiny_config(feature_grad_mult=mult)).eval()
        m.feature_extractor_video.resnet.requires_grad_(False)  # no (slow) Conv3d backward on CPU
        m(video).square().sum().backward()
        grads[mult] = (m.feature_extractor_video.proj.weight.grad, m.post_extract_proj.weight.grad)
    assert torch.allclose(grads[0.1][0], 0.1 * grads[1.0][0], rtol=1e-4, atol=1e-8)
    assert torch.allclose(grads[0.1][1], grads[1.0][1])
    assert grads[0.0][0] is None and grads[0.0][1] is not None  # front end frozen (no_grad)


def test_config_validation():
    cfg = AVHubertConfig.from_dict({"encoder_layers": "3", "layer_norm_first": "true", "decoder_layers": 9})
    assert cfg.encoder_layers == 3 and cfg.layer_norm_first is True
    with pytest.raises(ConfigError, match="sub_encoder_layers"):
        AVHubertConfig.from_dict({"sub_encoder_layers": 2}, source="x.pt")
    with pytest.raises(ConfigError, match="mode"):
        AVHubert(_tiny_config(), mode="ssl")


# ------------------------------------------------------------------------------------------ checkpoints


def test_pretraining_file_loads_and_mode_is_explicit(model, ref, caplog):
    _assert_same_state(model, ref)
    assert model.config.encoder_attention_heads == 4 and model.config.dropout_input == pytest.approx(0.1)
    with caplog.at_level(logging.INFO, logger="whisper_flamingo.checkpoints.avhubert"):
        again = AVHubert.from_checkpoint(WEIGHTS, mode=None)
    assert again.mode == "pretrained" and "auto-detected" in caplog.text
    with pytest.raises(CheckpointError, match="small_weights.pt: mode 'finetuned' requested"):
        AVHubert.from_checkpoint(WEIGHTS, mode="finetuned")


def _fake_module(m: pytest.MonkeyPatch, name: str, **classes) -> None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules:
            m.setitem(sys.modules, sub, types.ModuleType(sub))
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
        setattr(sys.modules[name], cls_name, cls)


@contextlib.contextmanager
def fake_fairseq_and_omegaconf(monkeypatch):
    """Stand-ins registered under fairseq / omegaconf / sentencepiece names, only while writing files."""

    class Dictionary:
        def __init__(self, symbols):
            self.bos_word, self.unk_word, self.pad_word, self.eos_word = "<s>", "<unk>", "<pad>", "</s>"
            self.symbols = ["<s>", "<pad>", "</s>", "<unk>", *symbols]
            self.count = [1] * len(self.symbols)
            self.indices = {s: i for i, s in enumerate(self.symbols)}
            self.nspecial = 4

    class SentencePieceProcessor:
        def __getstate__(self):
            return b"\x0a\x03serialized-model-proto"

        def __setstate__(self, state):
            pass

    class SentencepieceBPE:
        def __init__(self):
            self.sp = SentencePieceProcessor()

    class Choices(str, enum.Enum):
        c10d = "c10d"
        no_c10d = "no_c10d"

    class Metadata:
        def __init__(self, key=None):
            self.ref_type, self.object_type, self.optional, self.key = typing.Any, None, True, key
            self.flags, self.flags_root = {}, False

    class ContainerMetadata(Metadata):
        def __init__(self, key=None, object_type=dict):
            super().__init__(key)
            self.object_type, self.key_type, self.element_type = object_type, typing.Any, typing.Any
            self.resolver_cache = defaultdict(dict)

    class AnyNode:
        def __init__(self, value, key=None, parent=None):
            self._metadata, self._parent, self._val = Metadata(key), parent, value

    class ListConfig:
        def __init__(self, items, key=None, parent=None):
            self._metadata, self._parent = ContainerMetadata(key, list), parent
            self._content = [AnyNode(v, i, self) for i, v in enumerate(items)]

    class DictConfig:
        def __init__(self, content, key=None, parent=None):
            self._metadata, self._parent = ContainerMetadata(key), parent
            self._content = {k: self._node(k, v) for k, v in content.items()}

        def _node(self, k, v):
            if isinstance(v, dict):
                return DictConfig(v, k, self)
            if isinstance(v, list):
                return ListConfig(v, k, self)
            return AnyNode(v, k, self)

    with monkeypatch.context() as m:
        _fake_module(m, "fairseq.data.dictionary", Dictionary=Dictionary)
        _fake_module(m, "fairseq.data.encoders.sentencepiece_bpe", SentencepieceBPE=SentencepieceBPE)
        _fake_module(m, "fairseq.dataclass.constants", Choices=Choices)
        _fake_module(m, "sentencepiece", SentencePieceProcessor=SentencePieceProcessor)
        _fake_module(m, "omegaconf.base", Metadata=Metadata, ContainerMetadata=ContainerMetadata)
        _fake_module(m, "omegaconf.nodes", AnyNode=AnyNode)
        _fake_module(m, "omegaconf.listconfig", ListConfig=ListConfig)
        _fake_module(m, "omegaconf.dictconfig", DictConfig=DictConfig)
        yield types.SimpleNamespace(Dictionary=Dictionary, SentencepieceBPE=SentencepieceBPE, Choices=Choices,
                                    DictConfig=DictConfig)


def _assert_not_importable():
    """The fake modules existed only while writing; loading must work without fairseq / omegaconf."""
    for name in ("fairseq", "omegaconf", "sentencepiece"):
        assert name not in sys.modules or hasattr(sys.modules[name], "__file__")  # no fake left behind
    assert importlib.util.find_spec("fairseq") is None  # fairseq is never a dependency


def test_finetuned_fairseq_file_loads_without_fairseq(ref, tmp_path, monkeypatch):
    enc_cfg = dict(ref[0]["cfg"], dropout=0.0, activation_dropout=0.1, feature_grad_mult=1.0)
    state = OrderedDict((f"encoder.w2v_model.{k}", v) for k, v in _reference_state(ref, True).items()
                        if not k.startswith("final_proj"))  # fine-tuned models have no final_proj
    state["decoder.embed_tokens.weight"] = torch.randn(1004, 16)
    state["decoder.layers.0.fc1.weight"] = torch.randn(8, 16)
    path = tmp_path / "large_noise_pt_noise_ft_433h_only_weights.pt"  # the name must not matter
    with fake_fairseq_and_omegaconf(monkeypatch) as fake:
        ckpt = {
            "args": None,
            "cfg": {"common": {"fp16": True}, "distributed_training": {"ddp_backend": "c10d"},
                    "model": {"_name": "av_hubert_seq2seq", "decoder_layers": 9, "dropout": 0.3,
                              "w2v_args": {"model": enc_cfg, "task": {"image_crop_size": 88}}}},
            "model": state,
            "task_state": {"dictionaries": [fake.Dictionary([str(i) for i in range(100)])],
                           "target_dictionary": fake.Dictionary(["▁the", "s"]),
                           "s2s_tokenizer": fake.SentencepieceBPE()},
            "extra_state": {"ddp_backend": fake.Choices.c10d, "metrics": OrderedDict(loss=1.5)},
            "optimizer_history": [{"criterion_name": "LabelSmoothedCrossEntropyCriterion", "num_updates": 3}],
        }
        torch.save(ckpt, path)
    _assert_not_importable()
    raw = safe_load(path)  # fairseq objects come back as inert stand-ins
    assert to_plain(raw["extra_state"]["ddp_backend"]) == "c10d"
    target = to_plain(raw["task_state"]["target_dictionary"])
    assert target["__class__"] == "fairseq.data.dictionary.Dictionary" and target["symbols"][-2:] == ["▁the", "s"]
    bpe = to_plain(raw["task_state"]["s2s_tokenizer"])
    assert bpe["sp"]["__state__"] == b"\x0a\x03serialized-model-proto"

    loaded = AVHubert.from_checkpoint(path)  # mode auto-detected from the encoder.w2v_model. keys
    assert loaded.mode == "finetuned" and not loaded.training
    assert loaded.config.dropout == 0.0 and loaded.config.activation_dropout == pytest.approx(0.1)
    assert loaded.config.encoder_attention_heads == 4  # read from w2v_args.model, not inferred
    _assert_same_state(loaded, ref)
    with pytest.raises(CheckpointError, match="mode 'pretrained' requested"):
        AVHubert.from_checkpoint(path, mode="pretrained")


def test_dictconfig_and_namespace_configs_load_without_omegaconf(ref, tmp_path, monkeypatch):
    state = _reference_state(ref, True)
    with fake_fairseq_and_omegaconf(monkeypatch) as fake:
        cfg = fake.DictConfig({"model": dict(ref[0]["cfg"], dropout=0.25), "task": {"labels": ["km"]}})
        torch.save({"cfg": cfg, "model": state}, tmp_path / "dictconfig.pt")
    torch.save({"args": argparse.Namespace(**ref[0]["cfg"]), "cfg": None, "model": state},
               tmp_path / "namespace.pt", _use_new_zipfile_serialization=False)  # also the legacy format
    _assert_not_importable()
    plain = to_plain(safe_load(tmp_path / "dictconfig.pt")["cfg"])
    assert plain["task"] == {"labels": ["km"]} and plain["model"]["encoder_layers"] == 2
    from_dictconfig = AVHubert.from_checkpoint(tmp_path / "dictconfig.pt", mode="pretrained")
    assert from_dictconfig.config.dropout == pytest.approx(0.25)
    from_namespace = AVHubert.from_checkpoint(tmp_path / "namespace.pt")
    assert from_namespace.config == AVHubertConfig.from_dict(ref[0]["cfg"])
    _assert_same_state(from_dictconfig, ref)
    _assert_same_state(from_namespace, ref)


def test_whisper_flamingo_checkpoint(ref, tmp_path, caplog):
    cfg = AVHubertConfig.from_dict(ref[0]["cfg"])
    state = {f"model.encoder.video_model.w2v_model.{k}": v for k, v in _reference_state(ref, True).items()
             if not k.startswith("final_proj")}
    state["model.encoder.video_projection.weight"] = torch.randn(4, 128)
    state["model.encoder.video_projection_scalar"] = torch.tensor(1.0)
    state["model.decoder.blocks.0.attn.query.weight"] = torch.randn(4, 4)
    path = tmp_path / "whisper-flamingo_en_small.pt"
    torch.save({"state_dict": state}, path)
    with caplog.at_level(logging.DEBUG, logger="whisper_flamingo.checkpoints.avhubert"):
        loaded = load_avhubert_from_whisper_flamingo(path, config=cfg)
    assert loaded.mode == "finetuned" and not loaded.training
    assert "dropping unused AV-HuBERT tensor" in caplog.text
    _assert_same_state(loaded, ref)
    with torch.no_grad():  # no padding: item 1 alone reproduces the reference
        feats = loaded(ref[1]["video"][1:2])
    assert (feats[0] - ref[1]["features_no_mask"][1]).abs().max() <= TOL

    # prefix already stripped of Lightning's "model.", self-supervised path (has final_proj), passed as a dict
    ssl = {f"encoder.video_model.{k}": v for k, v in _reference_state(ref, True).items()}
    sub, inferred, mode, prefix = avhubert_state_from_whisper_flamingo(ssl)
    assert (mode, prefix) == ("pretrained", "encoder.video_model.") and "final_proj.weight" not in sub
    assert (inferred.encoder_layers, inferred.encoder_embed_dim, inferred.encoder_ffn_embed_dim) == (2, 128, 256)
    assert load_avhubert_from_whisper_flamingo(ssl, config=cfg).mode == "pretrained"


def test_missing_or_mismatched_key_is_named(ref, tmp_path):
    state = _reference_state(ref, True)
    del state["encoder.layers.1.fc2.bias"]
    torch.save({"cfg": ref[0]["cfg"], "model": state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=r"broken\.pt: does not match the AV-HuBERT model: 1 missing keys "
                                              r"\(e\.g\. encoder\.layers\.1\.fc2\.bias\)"):
        AVHubert.from_checkpoint(tmp_path / "broken.pt")
    state = _reference_state(ref, True)
    torch.save({"cfg": dict(ref[0]["cfg"], encoder_ffn_embed_dim=512), "model": state}, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"shape\.pt: does not match the AV-HuBERT model: .*mis-shaped keys "
                                              r"\(e\.g\. encoder\.layers\.0\.fc1\.weight"):
        AVHubert.from_checkpoint(tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match="not found"):
        AVHubert.from_checkpoint(tmp_path / "absent.pt")


def test_resencoder_alone(ref, tmp_path):
    enc = load_resencoder(WEIGHTS)
    assert isinstance(enc, ResEncoder) and not enc.training
    with torch.no_grad():  # the ResNet has no cross-item interaction: item 1 alone matches the batch output
        out = enc(ref[1]["video"][1:2])
    assert out.shape == (1, 20, 512)
    assert (out[0].T - ref[1]["resnet_out"][1]).abs().max() <= TOL
    # Whisper-Flamingo's ResNet path stores the front end directly under encoder.video_model.
    wf = {f"model.encoder.video_model.{k}": v for k, v in enc.state_dict().items()}
    wf["model.decoder.token_embedding.weight"] = torch.randn(3, 3)
    torch.save({"state_dict": wf}, tmp_path / "wf_resnet.pt")
    again = load_resencoder(tmp_path / "wf_resnet.pt")
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), enc.state_dict().values()))


# ------------------------------------------------------------------------------------------ safe pickle


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _EvalEvil:
    def __reduce__(self):
        return eval, ("__import__('os').getpid()",)


@pytest.mark.parametrize("legacy", [False, True])
def test_malicious_pickle_is_refused(tmp_path, legacy):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.zeros(2)}, "cfg": _Evil(marker)}, path,
               _use_new_zipfile_serialization=not legacy)
    qualname = f"{os.system.__module__}.system"  # posix.system on Linux
    with pytest.raises(CheckpointError, match=rf"evil\.pt: refuses to unpickle {qualname}; this is not an "
                                              r"AV-HuBERT/Whisper checkpoint or it contains code"):
        AVHubert.from_checkpoint(path)
    assert not marker.exists()
    torch.save({"x": _EvalEvil()}, tmp_path / "eval.pt")
    with pytest.raises(CheckpointError, match="refuses to unpickle builtins.eval"):
        safe_load(tmp_path / "eval.pt")


def test_restricted_unpickler_blocks_class_patching_and_dotted_names():
    # BUILD on a class object would monkey-patch it: Namespace.__doc__ = "evil"
    patch = b"\x80\x02cargparse\nNamespace\nN}X\x07\x00\x00\x00__doc__X\x04\x00\x00\x00evils\x86b."
    doc = argparse.Namespace.__doc__
    with pytest.raises(RefusedGlobal, match="set the state of"):
        restricted_load(io.BytesIO(patch))
    assert argparse.Namespace.__doc__ == doc
    # protocol-4 dotted names must not reach attributes of allowed globals
    dotted = b"\x80\x04\x8c\x0bcollections\x8c\x14OrderedDict.fromkeys\x93."
    with pytest.raises(RefusedGlobal, match="collections.OrderedDict.fromkeys"):
        restricted_load(io.BytesIO(dotted))
    assert restricted_load(io.BytesIO(pickle.dumps({"a": [1, 2.5, None, (3,)], "b": {1}}))) == {
        "a": [1, 2.5, None, (3,)], "b": {1}}
