"""CTranslate2 Whisper directories, both ways.

Reading needs no ctranslate2: ``model.bin`` (binary versions 4-6; float32/float16/bfloat16/int8/int16
weights) is parsed here and the fused QKV and cross-attention KV are split back into openai-whisper's
layout.  Writing uses ctranslate2's own spec API (``pip install ctranslate2``).
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from whisper.model import ModelDimensions

from whisper_flamingo.checkpoints.io import StateDict
from whisper_flamingo.checkpoints.openai import count_layers
from whisper_flamingo.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["FP16_NOTE", "read_ct2_model_bin", "write_ct2_model_bin", "ct2_to_openai", "load_ct2_dir",
           "ct2_vocabulary", "export_ctranslate2"]

FP16_NOTE = "weights are float16-rounded (converted from a float16 CTranslate2 model)"

_CT2_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("i1"), 2: np.dtype("<i2"), 3: np.dtype("<i4"),
               4: np.dtype("<f2"), 5: np.dtype("<u2")}  # 5 = bfloat16, decoded below
_CT2_DTYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}


class _Reader:
    def __init__(self, data: bytes | memoryview, where: str):
        self.data, self.pos, self.where = memoryview(data), 0, where

    def take(self, n: int) -> memoryview:
        if self.pos + n > len(self.data):
            raise CheckpointError(f"{self.where}: truncated at byte {self.pos} (wanted {n} more bytes); "
                                  "the file is incomplete")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def string(self) -> str:
        n = self.unpack("H")
        return bytes(self.take(n))[:-1].decode("utf-8")


def read_ct2_model_bin(data: bytes | memoryview, where: str = "model.bin"
                       ) -> tuple[dict[str, np.ndarray], dict[str, str], str]:
    """Parse a CTranslate2 ``model.bin`` → ``(variables, aliases, spec_name)``.

    Arrays are read-only views into ``data``; bfloat16 tensors are returned as raw ``uint16``.
    """
    r = _Reader(data, where)
    version = r.unpack("I")
    if not 4 <= version <= 6:
        raise CheckpointError(f"{where}: CTranslate2 binary version {version} is not supported (4-6); "
                              "re-convert the model with ctranslate2 >= 3")
    spec = r.string()
    r.unpack("I")  # spec revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(r.unpack("I")):
        name = r.string()
        shape = [r.unpack("I") for _ in range(r.unpack("B"))]
        dtype_id, nbytes = r.unpack("B"), r.unpack("I")
        if dtype_id not in _CT2_DTYPES:
            raise CheckpointError(f"{where}: variable {name} has unknown dtype id {dtype_id}")
        dtype = _CT2_DTYPES[dtype_id]
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise CheckpointError(f"{where}: variable {name} has {nbytes} bytes for shape {shape}; corrupt file")
        variables[name] = np.frombuffer(r.take(nbytes), dtype=dtype).reshape(shape)
    aliases = {r.string(): r.string() for _ in range(r.unpack("I"))}
    return variables, aliases, spec


def write_ct2_model_bin(path: str | Path, variables: dict[str, np.ndarray | Tensor],
                        aliases: dict[str, str] | None = None, spec_name: str = "WhisperSpec", revision: int = 3,
                        version: int = 6) -> Path:
    """Write ``variables`` as a CTranslate2 ``model.bin`` (numpy arrays or tensors; torch.bfloat16 is
    stored as bfloat16)."""
    def string(s: str) -> bytes:
        raw = s.encode("utf-8")
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<I", version) + string(spec_name) + struct.pack("<II", revision, len(variables)))
        for name in sorted(variables):
            value = variables[name]
            if isinstance(value, Tensor):
                bf16 = value.dtype == torch.bfloat16
                arr = (value.view(torch.int16) if bf16 else value).detach().cpu().contiguous().numpy()
                dtype_id = 5 if bf16 else _CT2_DTYPE_IDS[arr.dtype.name]
            else:
                arr = np.asarray(value, order="C")
                dtype_id = _CT2_DTYPE_IDS[arr.dtype.name]
            f.write(string(name) + struct.pack("<B", arr.ndim))
            f.write(b"".join(struct.pack("<I", d) for d in arr.shape))
            f.write(struct.pack("<BI", dtype_id, arr.nbytes))
            f.write(arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes())
        aliases = aliases or {}
        f.write(struct.pack("<I", len(aliases)))
        for alias, target in sorted(aliases.items()):
            f.write(string(alias) + string(target))
    return path


def _ct2_float(variables: dict[str, np.ndarray], aliases: dict[str, str], name: str, where: str) -> Tensor:
    """Variable ``name`` as float32, dequantised when it has a ``_scale`` sibling."""
    target = aliases.get(name, name)
    if target not in variables:
        raise CheckpointError(f"{where}: missing variable {name}; not a complete CTranslate2 Whisper model")
    arr = variables[target]
    scale = variables.get(aliases.get(name + "_scale", target + "_scale"))
    if arr.dtype.kind == "i" and scale is None:
        raise CheckpointError(f"{where}: quantised variable {name} has no {name}_scale")
    if arr.dtype == np.uint16:  # bfloat16: the upper half of a float32
        w = torch.from_numpy((arr.astype(np.uint32) << 16).view(np.float32))
    else:
        w = torch.from_numpy(arr.astype(np.float32))
    if scale is not None:
        s = torch.from_numpy(np.array(scale, dtype=np.float32))
        if s.ndim == 0:  # int16: one scale per tensor
            w = w / s
        else:  # int8: one scale per output row (convolutions viewed as [out, in*k])
            w = (w.reshape(w.shape[0], -1) / s[:, None]).reshape(w.shape)
    return w


def ct2_to_openai(variables: dict[str, np.ndarray], aliases: dict[str, str] | None = None,
                  where: str = "model.bin") -> tuple[ModelDimensions, StateDict]:
    """CTranslate2 ``WhisperSpec`` variables → openai-whisper dims and state_dict (float32)."""
    aliases = aliases or {}

    def get(name: str) -> Tensor:
        return _ct2_float(variables, aliases, name, where)

    def scalar(name: str) -> int:
        if name not in variables:
            raise CheckpointError(f"{where}: missing {name}; not a CTranslate2 Whisper model")
        return int(variables[name])

    def linear(src: str, dst: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = get(f"{src}/weight")
        if bias:
            sd[f"{dst}.bias"] = get(f"{src}/bias")

    def norm(src: str, dst: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = get(f"{src}/gamma"), get(f"{src}/beta")

    sd: StateDict = {}
    d = get("encoder/conv1/weight").shape[0]
    for part in ("conv1", "conv2"):
        linear(f"encoder/{part}", f"encoder.{part}")
    sd["encoder.positional_embedding"] = get("encoder/position_encodings/encodings")
    n_audio_layer, n_text_layer = count_layers(variables, "encoder/layer_"), count_layers(variables, "decoder/layer_")
    for side, n_layer in (("encoder", n_audio_layer), ("decoder", n_text_layer)):
        for i in range(n_layer):
            src, dst = f"{side}/layer_{i}", f"{side}.blocks.{i}"
            norm(f"{src}/self_attention/layer_norm", f"{dst}.attn_ln")
            w, b = get(f"{src}/self_attention/linear_0/weight"), get(f"{src}/self_attention/linear_0/bias")
            # the key bias slot holds zeros (openai's key has no bias; a bias there would be softmax-invariant)
            for j, proj in enumerate(("query", "key", "value")):
                sd[f"{dst}.attn.{proj}.weight"] = w[j * d:(j + 1) * d].clone()
                if proj != "key":
                    sd[f"{dst}.attn.{proj}.bias"] = b[j * d:(j + 1) * d].clone()
            linear(f"{src}/self_attention/linear_1", f"{dst}.attn.out")
            if side == "decoder":
                norm(f"{src}/attention/layer_norm", f"{dst}.cross_attn_ln")
                linear(f"{src}/attention/linear_0", f"{dst}.cross_attn.query")
                w, b = get(f"{src}/attention/linear_1/weight"), get(f"{src}/attention/linear_1/bias")
                sd[f"{dst}.cross_attn.key.weight"] = w[:d].clone()
                sd[f"{dst}.cross_attn.value.weight"] = w[d:].clone()
                sd[f"{dst}.cross_attn.value.bias"] = b[d:].clone()
                linear(f"{src}/attention/linear_2", f"{dst}.cross_attn.out")
            norm(f"{src}/ffn/layer_norm", f"{dst}.mlp_ln")
            linear(f"{src}/ffn/linear_0", f"{dst}.mlp.0")
            linear(f"{src}/ffn/linear_1", f"{dst}.mlp.2")
    norm("encoder/layer_norm", "encoder.ln_post")
    sd["decoder.token_embedding.weight"] = get("decoder/embeddings/weight")
    sd["decoder.positional_embedding"] = get("decoder/position_encodings/encodings")
    norm("decoder/layer_norm", "decoder.ln")
    dims = ModelDimensions(
        n_mels=sd["encoder.conv1.weight"].shape[1], n_audio_ctx=sd["encoder.positional_embedding"].shape[0],
        n_audio_state=d, n_audio_head=scalar("encoder/num_heads"), n_audio_layer=n_audio_layer,
        n_vocab=sd["decoder.token_embedding.weight"].shape[0],
        n_text_ctx=sd["decoder.positional_embedding"].shape[0],
        n_text_state=sd["decoder.token_embedding.weight"].shape[1], n_text_head=scalar("decoder/num_heads"),
        n_text_layer=n_text_layer)
    return dims, sd


def _ct2_float_dtypes(variables: dict[str, np.ndarray]) -> set[str]:
    names = {a.dtype.name for n, a in variables.items() if a.ndim > 0 and not n.endswith("_scale")}
    return {"bfloat16" if t == "uint16" else t for t in names}


def load_ct2_dir(path: str | Path, parts: list[Path] | None = None
                 ) -> tuple[ModelDimensions, StateDict, dict[str, Any]]:
    """Read a CTranslate2 Whisper directory (or the ``parts`` of one ``model.bin``, concatenated)."""
    path = Path(path)
    files = parts or [path / "model.bin"]
    for f in files:
        if not f.is_file():
            raise CheckpointError(f"{f}: missing; expected a CTranslate2 model directory with model.bin")
    data = files[0].read_bytes() if len(files) == 1 else b"".join(f.read_bytes() for f in files)
    where = str(files[0]) if len(files) == 1 else f"{files[0]} (+{len(files) - 1} parts)"
    variables, aliases, spec = read_ct2_model_bin(data, where)
    if spec != "WhisperSpec":
        raise CheckpointError(f"{where}: CTranslate2 spec is {spec!r}; expected 'WhisperSpec'")
    dims, sd = ct2_to_openai(variables, aliases, where)
    dtypes = sorted(_ct2_float_dtypes(variables))
    info: dict[str, Any] = {"source": f"CTranslate2 {where}", "ct2_dtypes": dtypes}
    if dtypes == ["float16"]:
        info["note"] = FP16_NOTE
    elif any(t in ("int8", "int16") for t in dtypes):
        info["note"] = f"weights dequantised from a {'/'.join(dtypes)} CTranslate2 model"
    log.info("read %s: CTranslate2 %s, %d variables -> %d openai tensors", where, "/".join(dtypes),
             len(variables), len(sd))
    return dims, sd, info


def ct2_vocabulary(n_vocab: int) -> list[str]:
    """The CTranslate2/Hugging Face token list of a Whisper vocabulary (GPT-2 byte-level strings)."""
    from whisper.tokenizer import get_encoding

    multilingual = n_vocab >= 51865
    enc = get_encoding("multilingual" if multilingual else "gpt2",
                       num_languages=n_vocab - 51765 - int(multilingual))
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    byte_char = {b: chr(b if b in printable else next(extra)) for b in range(256)}
    tokens = [""] * enc.n_vocab
    for raw, rank in enc._mergeable_ranks.items():
        tokens[rank] = "".join(byte_char[b] for b in raw)
    hf_names = {"<|nospeech|>": "<|nocaptions|>", **({} if multilingual else {"<|he|>": "<|iw|>"})}
    for name, rank in enc._special_tokens.items():
        tokens[rank] = hf_names.get(name, name)
    tokens += [f"<|{i * 0.02:.2f}|>" for i in range(n_vocab - len(tokens))]
    return tokens[:n_vocab]


def export_ctranslate2(dims: ModelDimensions, sd: StateDict, out_dir: str | Path,
                       quantization: str = "float16", vocabulary: list[str] | None = None) -> Path:
    """Write a CTranslate2 Whisper directory with ctranslate2's own spec API (``quantization`` as in
    ``ct2-transformers-converter``: float32, float16, int8, int8_float16, int16, ...)."""
    try:
        from ctranslate2.specs import whisper_spec
    except ImportError:
        raise CheckpointError("writing CTranslate2 models needs the ctranslate2 package; pip install ctranslate2"
                              ) from None
    d = dims.n_audio_state
    spec = whisper_spec.WhisperSpec(dims.n_audio_layer, dims.n_audio_head, dims.n_text_layer, dims.n_text_head)

    def w(key: str) -> np.ndarray:  # a copy: ctranslate2 quantises arrays in place
        return sd[key].detach().float().cpu().numpy().copy()

    def zeros() -> np.ndarray:
        return np.zeros(d, dtype=np.float32)

    def set_linear(s: Any, key: str) -> None:
        s.weight, s.bias = w(f"{key}.weight"), w(f"{key}.bias")

    def set_norm(s: Any, key: str) -> None:
        s.gamma, s.beta = w(f"{key}.weight"), w(f"{key}.bias")

    enc, dec = spec.encoder, spec.decoder
    set_linear(enc.conv1, "encoder.conv1")
    set_linear(enc.conv2, "encoder.conv2")
    enc.position_encodings.encodings = w("encoder.positional_embedding")
    set_norm(enc.layer_norm, "encoder.ln_post")
    for side, layers in (("encoder", enc.layer), ("decoder", dec.layer)):
        for i, layer in enumerate(layers):
            key = f"{side}.blocks.{i}"
            att = layer.self_attention
            set_norm(att.layer_norm, f"{key}.attn_ln")
            att.linear[0].weight = np.concatenate([w(f"{key}.attn.{p}.weight") for p in ("query", "key", "value")])
            att.linear[0].bias = np.concatenate([w(f"{key}.attn.query.bias"), zeros(), w(f"{key}.attn.value.bias")])
            set_linear(att.linear[1], f"{key}.attn.out")
            if side == "decoder":
                x = layer.attention
                set_norm(x.layer_norm, f"{key}.cross_attn_ln")
                set_linear(x.linear[0], f"{key}.cross_attn.query")
                x.linear[1].weight = np.concatenate([w(f"{key}.cross_attn.key.weight"),
                                                     w(f"{key}.cross_attn.value.weight")])
                x.linear[1].bias = np.concatenate([zeros(), w(f"{key}.cross_attn.value.bias")])
                set_linear(x.linear[2], f"{key}.cross_attn.out")
            set_norm(layer.ffn.layer_norm, f"{key}.mlp_ln")
            set_linear(layer.ffn.linear_0, f"{key}.mlp.0")
            set_linear(layer.ffn.linear_1, f"{key}.mlp.2")
    dec.embeddings.weight = w("decoder.token_embedding.weight")
    dec.position_encodings.encodings = w("decoder.positional_embedding")
    set_norm(dec.layer_norm, "decoder.ln")
    dec.projection.weight = w("decoder.token_embedding.weight")  # tied; saved as an alias
    eot = 50256 + int(dims.n_vocab >= 51865)
    spec.config.suppress_ids = []
    spec.config.suppress_ids_begin = [220, eot]
    spec.config.lang_ids = list(range(eot + 2, eot + 2 + max(0, dims.n_vocab - 51765 - int(dims.n_vocab >= 51865))))
    spec.config.alignment_heads = [[i, h] for i in range(dims.n_text_layer // 2, dims.n_text_layer)
                                   for h in range(dims.n_text_head)]
    spec.register_vocabulary(vocabulary if vocabulary is not None else ct2_vocabulary(dims.n_vocab))
    spec.validate()
    spec.optimize(quantization=quantization)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec.save(str(out_dir))
    log.info("wrote CTranslate2 Whisper (%s) to %s", quantization, out_dir)
    return out_dir
