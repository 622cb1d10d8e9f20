"""Hugging Face Whisper directories (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``,
sharded or not), both ways; the key map between openai-whisper and ``WhisperForConditionalGeneration``."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from whisper.model import ModelDimensions

from whisper_flamingo.checkpoints.io import StateDict, read_checkpoint_file
from whisper_flamingo.checkpoints.openai import expected_whisper_keys
from whisper_flamingo.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["openai_to_hf", "hf_to_openai", "load_hf_dir", "save_hf_dir"]

_HF_BLOCK = [  # (openai suffix, HF suffix) inside a block
    ("attn.query", "self_attn.q_proj"), ("attn.key", "self_attn.k_proj"), ("attn.value", "self_attn.v_proj"),
    ("attn.out", "self_attn.out_proj"), ("attn_ln", "self_attn_layer_norm"),
    ("cross_attn.query", "encoder_attn.q_proj"), ("cross_attn.key", "encoder_attn.k_proj"),
    ("cross_attn.value", "encoder_attn.v_proj"), ("cross_attn.out", "encoder_attn.out_proj"),
    ("cross_attn_ln", "encoder_attn_layer_norm"),
    ("mlp.0", "fc1"), ("mlp.2", "fc2"), ("mlp_ln", "final_layer_norm"),
]
_HF_TOP = [
    ("encoder.conv1", "encoder.conv1"), ("encoder.conv2", "encoder.conv2"),
    ("encoder.positional_embedding", "encoder.embed_positions.weight"), ("encoder.ln_post", "encoder.layer_norm"),
    ("decoder.token_embedding.weight", "decoder.embed_tokens.weight"),
    ("decoder.positional_embedding", "decoder.embed_positions.weight"), ("decoder.ln", "decoder.layer_norm"),
]


def _openai_key_to_hf(key: str) -> str:
    m = re.match(r"(encoder|decoder)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
    if m:
        side, i, rest, kind = m.groups()
        for ours, theirs in _HF_BLOCK:
            if rest == ours:
                return f"model.{side}.layers.{i}.{theirs}.{kind}"
    for ours, theirs in _HF_TOP:
        if key == ours:
            return f"model.{theirs}"
        if key.startswith(ours + "."):
            return f"model.{theirs}{key[len(ours):]}"
    raise CheckpointError(f"no Hugging Face name for Whisper key {key!r}")


def openai_to_hf(dims: ModelDimensions, sd: StateDict) -> tuple[dict[str, Any], StateDict]:
    """openai-whisper dims/state_dict → Hugging Face ``config.json`` dict and state_dict."""
    if dims.n_audio_state != dims.n_text_state:
        raise CheckpointError("Hugging Face Whisper needs n_audio_state == n_text_state")
    multilingual = dims.n_vocab >= 51865
    eot = 50256 + int(multilingual)
    config = {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
        "vocab_size": dims.n_vocab, "num_mel_bins": dims.n_mels, "d_model": dims.n_audio_state,
        "encoder_layers": dims.n_audio_layer, "encoder_attention_heads": dims.n_audio_head,
        "decoder_layers": dims.n_text_layer, "decoder_attention_heads": dims.n_text_head,
        "encoder_ffn_dim": 4 * dims.n_audio_state, "decoder_ffn_dim": 4 * dims.n_text_state,
        "max_source_positions": dims.n_audio_ctx, "max_target_positions": dims.n_text_ctx,
        "activation_function": "gelu", "scale_embedding": False, "tie_word_embeddings": True,
        "decoder_start_token_id": eot + 1, "bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot,
        "begin_suppress_tokens": [220, eot], "suppress_tokens": [],
        "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0, "torch_dtype": "float32",
    }
    hf = {_openai_key_to_hf(k): v for k, v in sd.items()}
    return config, hf


def hf_to_openai(config: dict[str, Any], hf_sd: StateDict, where: str = "Hugging Face model"
                 ) -> tuple[ModelDimensions, StateDict]:
    """Hugging Face Whisper config dict and state_dict → openai-whisper dims and state_dict."""
    try:
        d = int(config["d_model"])
        dims = ModelDimensions(
            n_mels=int(config["num_mel_bins"]), n_audio_ctx=int(config["max_source_positions"]),
            n_audio_state=d, n_audio_head=int(config["encoder_attention_heads"]),
            n_audio_layer=int(config["encoder_layers"]), n_vocab=int(config["vocab_size"]),
            n_text_ctx=int(config["max_target_positions"]), n_text_state=d,
            n_text_head=int(config["decoder_attention_heads"]), n_text_layer=int(config["decoder_layers"]))
    except KeyError as err:
        raise CheckpointError(f"{where}: config lacks {err.args[0]!r}; expected a Whisper config.json") from None
    for side in ("encoder", "decoder"):
        ffn = int(config.get(f"{side}_ffn_dim", 4 * d))
        if ffn != 4 * d:
            raise CheckpointError(f"{where}: {side}_ffn_dim={ffn} is not 4*d_model; openai-whisper cannot hold it")
    if config.get("scale_embedding"):
        raise CheckpointError(f"{where}: scale_embedding=true is not representable in openai-whisper")
    inverse = {_openai_key_to_hf(k): k for k in expected_whisper_keys(dims)}
    sd: StateDict = {}
    unexpected = []
    for key, value in hf_sd.items():
        name = key if key.startswith(("model.", "proj_out.")) else f"model.{key}"
        if name == "proj_out.weight":
            emb = hf_sd.get("model.decoder.embed_tokens.weight", hf_sd.get("decoder.embed_tokens.weight"))
            if emb is not None and not torch.equal(value, emb):
                raise CheckpointError(f"{where}: proj_out is not tied to embed_tokens; openai-whisper cannot hold it")
            continue
        if name in inverse:
            sd[inverse[name]] = value
        else:
            unexpected.append(key)
    missing = [k for k in inverse.values() if k not in sd]
    if unexpected or missing:
        raise CheckpointError(f"{where}: not a plain Whisper model: unexpected {unexpected[:3]}, missing "
                              f"{missing[:3]}")
    return dims, sd


def _read_hf_weights(path: Path) -> StateDict:
    from safetensors.torch import load_file

    for index_name, loader in (("model.safetensors.index.json", load_file),
                               ("pytorch_model.bin.index.json", None)):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: StateDict = {}
            for shard in shards:
                out.update(loader(str(path / shard)) if loader else read_checkpoint_file(path / shard))
            return out
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return read_checkpoint_file(path / "pytorch_model.bin")
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin; expected a Hugging Face "
                          "Whisper directory")


def load_hf_dir(path: str | Path) -> tuple[ModelDimensions, StateDict, dict[str, Any]]:
    """Read a Hugging Face Whisper directory."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path / 'config.json'}: unreadable ({err}); expected a Hugging Face config") from None
    if config.get("model_type") != "whisper":
        raise CheckpointError(f"{path / 'config.json'}: model_type is {config.get('model_type')!r}; "
                              "expected 'whisper'")
    dims, sd = hf_to_openai(config, _read_hf_weights(path), str(path))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}
    log.info("read %s: Hugging Face Whisper -> %d openai tensors", path, len(sd))
    return dims, sd, {"source": f"Hugging Face {path}"}


def save_hf_dir(out_dir: str | Path, dims: ModelDimensions, sd: StateDict) -> Path:
    """Write ``config.json`` + ``model.safetensors`` for ``WhisperForConditionalGeneration``."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config, hf = openai_to_hf(dims, sd)
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    save_file({k: v.detach().cpu().contiguous() for k, v in hf.items()}, str(out_dir / "model.safetensors"),
              metadata={"format": "pt"})
    log.info("wrote Hugging Face Whisper to %s (%d tensors)", out_dir, len(hf))
    return out_dir
