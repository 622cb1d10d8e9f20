"""AST weights: the fixture form, the released AST files, DeiT ImageNet checkpoints, Hugging Face
``ASTForAudioClassification`` (both ways), and positional-embedding adaptation to other grids.

Layouts read by :func:`load_ast`:

* ``{"cfg": {...}, "model": {key: tensor}}`` with unprefixed keys (our parity fixture; ``cfg`` holds the
  original constructor's arguments);
* released AST files (``audioset_10_10_0.4593.pth``, ...): a bare state dict saved from
  ``nn.DataParallel`` (``module.`` prefix), no config.  Width, depth and label count come from shapes;
  strides from the keyword, else the file name's ``_<f>_<t>_``, else the only equal-stride grid that
  fits the positional table; the length from the keyword, else the recipe length (1024, 512, 128) that
  fits.  Where none is certain, a one-line error names the keyword to pass;
* a DeiT-distilled ImageNet checkpoint (unprefixed ``pos_embed``, a 3-channel patch kernel): the
  ImageNet initialisation of :func:`ast_from_deit`, ``overrides`` being the AST wanted;
* a Hugging Face directory (``config.json`` + weights) or a state dict in its key layout (split
  q/k/v; classic ``encoder.layer.N.attention.attention.query`` and transformers-5 ``layers.N.attention.
  q_proj`` names).

DeiT's ImageNet heads (``v.head``, ``v.head_dist``) are dropped (they never reach the output); every other
key must match.  Keyword overrides describe the model wanted: when its grid differs from the file's, the
positional table is adapted as the original does for AudioSet-pretrained models (centre crop when
smaller, bilinear when larger; time axis first), and a different ``label_dim`` gets a fresh head.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from whisper_flamingo.checkpoints.io import StateDict, load_state_strict, read_checkpoint_file, strip_prefix
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.ast import AST, MODEL_SIZES, PATCH, ASTConfig, grid_size

log = logging.getLogger(__name__)

__all__ = ["load_ast", "save_ast_released", "ast_state_to_released", "ast_state_to_hf", "hf_state_to_ast",
           "save_ast_hf_dir", "read_ast_hf_dir", "ast_hf_config", "ast_from_deit", "adapt_positions",
           "infer_ast_config", "RECIPE_LENGTHS", "HF_PREFIX"]

UNUSED_PREFIXES = ("v.head.", "v.head_dist.")
CONFIG_KEYS = tuple(f.name for f in ASTConfig.__dataclass_fields__.values())
#: target lengths of the original recipes (AudioSet, ESC-50, Speech Commands)
RECIPE_LENGTHS = (1024, 512, 128)
HF_PREFIX = "audio_spectrogram_transformer."
HEAD_KEYS = ("mlp_head.0.weight", "mlp_head.0.bias", "mlp_head.1.weight", "mlp_head.1.bias")
_HINT = "the checkpoint is not an AST of this configuration"


# ------------------------------------------------------------------------------------------ loading


def load_ast(path: str | Path, **overrides: Any) -> AST:
    """An eval-mode :class:`AST` from any layout of the module doc; ``overrides`` are ``ASTConfig`` fields."""
    unknown = [k for k in overrides if k not in CONFIG_KEYS]
    if unknown:
        raise CheckpointError(f"AST.from_checkpoint: unknown keyword '{unknown[0]}' (use {', '.join(CONFIG_KEYS)})")
    source = str(path)
    if Path(path).is_dir():
        state, cfg = read_ast_hf_dir(path)
        return _build(state, cfg, overrides, source)
    ckpt = read_checkpoint_file(path)
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{source}: expected a dict checkpoint, got {type(ckpt).__name__}")
    if _is_deit(ckpt):
        return ast_from_deit(path, **overrides).eval()
    stored_cfg = ckpt.get("cfg") if isinstance(ckpt.get("cfg"), Mapping) else None
    state = ckpt
    for key in ("model", "state_dict"):
        if isinstance(ckpt.get(key), Mapping):
            state = ckpt[key]
            break
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{source}: no AST state dict (top-level keys: {sorted(map(str, ckpt))[:6]}); "
                              "expected a released AST .pth, a {'cfg', 'model'} file or a Hugging Face directory")
    state = strip_prefix(state, ("module.", "model."))
    if any(k.startswith(HF_PREFIX) for k in state):
        state = hf_state_to_ast(state, source)
    state = _drop_unused(state, source)
    if stored_cfg is not None:
        try:
            cfg = ASTConfig(**{k: stored_cfg[k] for k in CONFIG_KEYS if k in stored_cfg})
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{source}: bad AST 'cfg' ({err})") from None
    else:
        cfg = infer_ast_config(state, source, overrides)
    return _build(state, cfg, overrides, source)


def _is_deit(ckpt: Mapping[str, Any]) -> bool:
    state = ckpt.get("model", ckpt)
    kernel = state.get("patch_embed.proj.weight") if isinstance(state, Mapping) else None
    return isinstance(kernel, Tensor) and kernel.dim() == 4 and kernel.shape[1] == 3


def infer_ast_config(state: Mapping[str, Tensor], source: str = "<state_dict>",
                     hints: Mapping[str, Any] | None = None) -> ASTConfig:
    """The configuration a config-less AST state dict was trained with (see the module doc for the rules).

    ``hints`` (keyword overrides) are used where they fit the tensors, else the file is described from
    its shapes and the overrides then adapt it.
    """
    hints = dict(hints or {})
    for key in ("v.pos_embed", "v.blocks.0.attn.qkv.weight", "mlp_head.1.weight"):
        if key not in state:
            raise CheckpointError(f"{source}: missing AST key '{key}' (keys: {sorted(state)[:4]}); not an AST")
    width = state["v.pos_embed"].shape[2]
    depth = len({m.group(1) for k in state if (m := re.match(r"v\.blocks\.(\d+)\.", k))})
    sizes = [s for s, (w, d, _, _) in MODEL_SIZES.items() if (w, d) == (width, depth)]
    if not sizes:
        raise CheckpointError(f"{source}: AST of width {width} and {depth} blocks matches no model_size "
                              f"({', '.join(MODEL_SIZES)})")
    size = hints.get("model_size") if hints.get("model_size") in sizes else sizes[-1]  # base224 ≡ base384 here
    fdim = int(hints.get("input_fdim", 128))
    n = state["v.pos_embed"].shape[1] - 2
    strides = _source_strides(n, fdim, source, hints)
    f = grid_size(*strides, fdim, PATCH)[0]
    t = n // f
    lengths = [hints["input_tdim"]] if "input_tdim" in hints else []
    lengths += list(RECIPE_LENGTHS)
    fits = [T for T in lengths if T >= PATCH and grid_size(*strides, fdim, T) == (f, t)]
    if not fits:
        low = (t - 1) * strides[1] + PATCH
        raise CheckpointError(f"{source}: its {n} positions ({f} x {t} patches at strides {strides}) fit no recipe "
                              f"length {RECIPE_LENGTHS}; pass input_tdim= (between {low} and {low + strides[1] - 1})")
    cfg = ASTConfig(label_dim=state["mlp_head.1.weight"].shape[0], fstride=strides[0], tstride=strides[1],
                    input_fdim=fdim, input_tdim=fits[0], model_size=size)
    log.info("%s: AST config inferred: %s", source, asdict(cfg))
    return cfg


def _source_strides(n: int, fdim: int, source: str, hints: Mapping[str, Any]) -> tuple[int, int]:
    def fits(fs: int, ts: int) -> bool:
        return 1 <= fs <= PATCH and 1 <= ts <= PATCH and n % grid_size(fs, ts, fdim, PATCH)[0] == 0

    if "fstride" in hints or "tstride" in hints:
        if "fstride" not in hints or "tstride" not in hints:
            raise CheckpointError(f"{source}: pass both fstride= and tstride=")
        if fits(hints["fstride"], hints["tstride"]):
            return int(hints["fstride"]), int(hints["tstride"])
    named = re.search(r"_(\d+)_(\d+)_", Path(source).name)
    if named and fits(int(named.group(1)), int(named.group(2))):
        return int(named.group(1)), int(named.group(2))
    equal = [s for s in range(1, PATCH + 1) if fits(s, s)]
    if len(equal) == 1:
        return equal[0], equal[0]
    raise CheckpointError(f"{source}: cannot tell the strides of its {n} patch positions (equal strides that fit: "
                          f"{equal or 'none'}); pass fstride= and tstride=")


def _drop_unused(state: Mapping[str, Tensor], source: str) -> StateDict:
    kept = {k: v for k, v in state.items() if not k.startswith(UNUSED_PREFIXES)}
    if len(kept) < len(state):
        log.debug("%s: dropped %d unused DeiT head tensors (v.head*, never used by AST)", source,
                  len(state) - len(kept))
    return kept


def _build(state: StateDict, cfg: ASTConfig, overrides: Mapping[str, Any], source: str) -> AST:
    try:
        target = replace(cfg, **overrides)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: {err}") from None
    if MODEL_SIZES[target.model_size][:3] != MODEL_SIZES[cfg.model_size][:3]:
        raise CheckpointError(f"{source}: holds an AST {cfg.model_size} (width {cfg.width}); model_size="
                              f"{target.model_size!r} cannot be loaded from it")
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    if "v.pos_embed" in state and target.grid != cfg.grid:
        log.info("%s: positional table adapted from the %d x %d grid to %d x %d", source, *cfg.grid, *target.grid)
        state["v.pos_embed"] = adapt_positions(state["v.pos_embed"], cfg.grid, target.grid)
    fresh_head = target.label_dim != cfg.label_dim
    if fresh_head:
        log.info("%s: label_dim %d -> %d: a new, randomly initialised head", source, cfg.label_dim, target.label_dim)
        state = {k: v for k, v in state.items() if not k.startswith("mlp_head.")}
    model = AST(target)
    missing = load_state_strict(model, state, source, what=f"AST {target.model_size}", hint=_HINT,
                                allow_missing=fresh_head)
    if any(k not in HEAD_KEYS for k in missing):
        raise CheckpointError(f"{source}: does not match the AST: missing {missing[:3]}; {_HINT}")
    return model.eval()


def ast_state_to_released(state: Mapping[str, Tensor]) -> StateDict:
    """Our AST state dict in the released layout: ``module.`` prefix and DeiT's two 1000-class ImageNet
    heads, zero-filled (the original ``ASTModel`` holds them, so its strict load needs them; its forward
    never uses them)."""
    out = {f"module.{k}": v.detach() for k, v in state.items()}
    width = state["v.pos_embed"].shape[2]
    for head in ("head", "head_dist"):
        out[f"module.v.{head}.weight"] = torch.zeros(1000, width)
        out[f"module.v.{head}.bias"] = torch.zeros(1000)
    return out


def save_ast_released(model: AST, path: str | Path) -> Path:
    """Write ``model`` as the released AST files are (a bare ``module.``-prefixed state dict, no config), so
    the original ``inference.py`` / ``ASTModel.load_state_dict`` read it.  Name it like the originals
    (``<set>_<fstride>_<tstride>_<score>.pth``) so that :func:`load_ast` finds the strides again."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ast_state_to_released(model.state_dict()), path)
    log.info("wrote %s: AST %s in the released layout (%s)", path, model.cfg.model_size, asdict(model.cfg))
    return path


def adapt_positions(pos_embed: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """``[1, 2 + f·t, D]`` positions of an ``src`` patch grid → those of a ``dst`` grid (special tokens kept).

    Time axis first: centre crop (start ⌊t₀/2⌋ − ⌊t/2⌋) when shorter, bilinear resize when longer; then
    the frequency axis likewise.
    """
    (f0, t0), (f, t) = src, dst
    width = pos_embed.shape[2]
    if pos_embed.shape[1] != f0 * t0 + 2:
        raise CheckpointError(f"positional table of {pos_embed.shape[1]} rows is not a {f0} x {t0} grid + 2")
    grid = pos_embed[:, 2:].detach().transpose(1, 2).reshape(1, width, f0, t0)
    if t < t0:
        grid = grid[:, :, :, t0 // 2 - t // 2: t0 // 2 - t // 2 + t]
    elif t > t0:
        grid = F.interpolate(grid, size=(f0, t), mode="bilinear")
    if f < f0:
        grid = grid[:, :, f0 // 2 - f // 2: f0 // 2 - f // 2 + f, :]
    elif f > f0:
        grid = F.interpolate(grid, size=(f, t), mode="bilinear")
    return torch.cat([pos_embed[:, :2].detach(), grid.reshape(1, width, f * t).transpose(1, 2)], dim=1)


# ------------------------------------------------------------------------------------------ ImageNet (DeiT)


def ast_from_deit(path: str | Path, **config: Any) -> AST:
    """AST initialised from a local DeiT-distilled ImageNet checkpoint (the original's ``imagenet_pretrain``).

    The file is ``{"model": state}`` (``dl.fbaipublicfiles.com/deit``) or a bare (timm) state dict.  The RGB
    patch kernel is summed over its channels; the square positional grid is cropped/resized to the AST grid
    (:func:`adapt_positions`); the blocks and final norm are copied; the head is new.
    """
    source = str(path)
    ckpt = read_checkpoint_file(path)
    state = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping) or "pos_embed" not in strip_prefix(state, ("module.", "v.")):
        raise CheckpointError(f"{source}: no DeiT state dict (no 'pos_embed'); expected e.g. "
                              "deit_base_distilled_patch16_384-d0272ac0.pth")
    state = strip_prefix(state, ("module.", "v."))
    if "dist_token" not in state:
        raise CheckpointError(f"{source}: not a distilled DeiT (no 'dist_token'); AST starts from "
                              "deit_*_distilled_patch16_* weights")
    width = state["pos_embed"].shape[2]
    side = int(round((state["pos_embed"].shape[1] - 2) ** 0.5))
    if "model_size" not in config:  # the DeiT's own size: width and ImageNet grid (224 px: 14, 384 px: 24)
        sizes = [s for s, (w, _, _, px) in MODEL_SIZES.items() if (w, px // PATCH) == (width, side)]
        config = {**config, "model_size": sizes[0]} if sizes else config
    try:
        cfg = ASTConfig(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{source}: {err}") from None
    if width != cfg.width:
        raise CheckpointError(f"{source}: DeiT of width {width} cannot initialise AST {cfg.model_size} "
                              f"(width {cfg.width}); pass the matching model_size")
    ours = {f"v.{k}": v.float() for k, v in state.items() if not k.startswith(("head.", "head_dist."))}
    ours["v.patch_embed.proj.weight"] = ours["v.patch_embed.proj.weight"].sum(dim=1, keepdim=True)
    ours["v.pos_embed"] = adapt_positions(ours["v.pos_embed"], (side, side), cfg.grid)
    model = AST(cfg)
    load_state_strict(model, ours, source, what=f"AST {cfg.model_size} backbone", allow_missing=True,
                      hint="pick the model_size of this DeiT")
    missing = [k for k in model.state_dict() if k not in ours]
    if any(k not in HEAD_KEYS for k in missing):
        raise CheckpointError(f"{source}: DeiT checkpoint lacks {missing[:3]}; incomplete file")
    log.info("%s: AST %s initialised from ImageNet DeiT (%d x %d positions -> %d x %d)", source, cfg.model_size,
             side, side, *cfg.grid)
    return model.train()


# ------------------------------------------------------------------------------------------ Hugging Face

_HF_BLOCK = (  # (ours, classic HF, transformers-5 HF) inside block i
    ("norm1", "layernorm_before", "layernorm_before"), ("norm2", "layernorm_after", "layernorm_after"),
    ("attn.proj", "attention.output.dense", "attention.o_proj"),
    ("mlp.fc1", "intermediate.dense", "mlp.fc1"), ("mlp.fc2", "output.dense", "mlp.fc2"),
)
_HF_TOP = (
    ("v.cls_token", "embeddings.cls_token"), ("v.dist_token", "embeddings.distillation_token"),
    ("v.pos_embed", "embeddings.position_embeddings"),
    ("v.patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
    ("v.patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
    ("v.norm.weight", "layernorm.weight"), ("v.norm.bias", "layernorm.bias"),
)
_HF_HEAD = (("mlp_head.0", "classifier.layernorm"), ("mlp_head.1", "classifier.dense"))
_QKV_CLASSIC = ("attention.attention.query", "attention.attention.key", "attention.attention.value")
_QKV_NEW = ("attention.q_proj", "attention.k_proj", "attention.v_proj")


def ast_state_to_hf(state: Mapping[str, Tensor]) -> StateDict:
    """Our (or the released, unprefixed) AST keys → Hugging Face ``ASTForAudioClassification`` keys
    (classic layout, as on the Hub: ``encoder.layer.N``, split q/k/v)."""
    out: StateDict = {}
    for key, value in _drop_unused(state, "<state_dict>").items():
        m = re.match(r"v\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m:
            i, rest, kind = m.groups()
            layer = f"{HF_PREFIX}encoder.layer.{i}."
            if rest == "attn.qkv":
                for name, part in zip(_QKV_CLASSIC, value.chunk(3, dim=0), strict=True):
                    out[f"{layer}{name}.{kind}"] = part.clone()
                continue
            names = {ours: classic for ours, classic, _ in _HF_BLOCK}
            if rest in names:
                out[f"{layer}{names[rest]}.{kind}"] = value
                continue
        elif key in dict(_HF_TOP):
            out[HF_PREFIX + dict(_HF_TOP)[key]] = value
            continue
        else:
            head = [(o, h) for o, h in _HF_HEAD if key.startswith(o + ".")]
            if head:
                out[head[0][1] + key[len(head[0][0]):]] = value
                continue
        raise CheckpointError(f"no Hugging Face name for AST key {key!r}")
    return out


def hf_state_to_ast(state: Mapping[str, Tensor], source: str = "<state_dict>") -> StateDict:
    """Hugging Face ``ASTForAudioClassification`` keys (classic or transformers-5 names) → ours (q/k/v fused)."""
    top = {h: o for o, h in _HF_TOP}
    out: StateDict = {}
    qkv: dict[tuple[str, str], dict[int, Tensor]] = {}
    for key, value in state.items():
        if key.startswith(HF_PREFIX):
            name = key[len(HF_PREFIX):]
            m = re.match(r"(?:encoder\.layer|layers)\.(\d+)\.(.+)\.(weight|bias)$", name)
            if m:
                i, rest, kind = m.groups()
                if rest in _QKV_CLASSIC or rest in _QKV_NEW:
                    part = (_QKV_CLASSIC.index(rest) if rest in _QKV_CLASSIC else _QKV_NEW.index(rest))
                    qkv.setdefault((i, kind), {})[part] = value
                    continue
                ours = [o for o, classic, new in _HF_BLOCK if rest in (classic, new)]
                if ours:
                    out[f"v.blocks.{i}.{ours[0]}.{kind}"] = value
                    continue
            elif name in top:
                out[top[name]] = value
                continue
        else:
            head = [(o, h) for o, h in _HF_HEAD if key.startswith(h + ".")]
            if head:
                out[head[0][0] + key[len(head[0][1]):]] = value
                continue
        raise CheckpointError(f"{source}: unexpected key {key!r} for a Hugging Face ASTForAudioClassification")
    for (i, kind), parts in qkv.items():
        if sorted(parts) != [0, 1, 2]:
            raise CheckpointError(f"{source}: layer {i} lacks some of query/key/value.{kind}")
        out[f"v.blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[0], parts[1], parts[2]], dim=0)
    return out


def read_ast_hf_dir(path: str | Path) -> tuple[StateDict, ASTConfig]:
    """Read a Hugging Face AST directory: our state dict and the :class:`ASTConfig` of its ``config.json``."""
    from whisper_flamingo.checkpoints.hf import _read_hf_weights

    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path / 'config.json'}: unreadable ({err}); expected a Hugging Face config") from None
    if config.get("model_type") != "audio-spectrogram-transformer":
        raise CheckpointError(f"{path / 'config.json'}: model_type is {config.get('model_type')!r}; expected "
                              "'audio-spectrogram-transformer'")
    width, depth, heads = config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]
    sizes = [s for s, (w, d, h, _) in MODEL_SIZES.items() if (w, d, h) == (width, depth, heads)]
    if not sizes or config.get("patch_size", PATCH) != PATCH or config.get("intermediate_size") != 4 * width:
        raise CheckpointError(f"{path / 'config.json'}: hidden_size {width}, {depth} layers, {heads} heads, "
                              f"patch {config.get('patch_size')} is none of the AST sizes {', '.join(MODEL_SIZES)}")
    state = hf_state_to_ast(_read_hf_weights(path), str(path))
    labels = state["mlp_head.1.weight"].shape[0] if "mlp_head.1.weight" in state else 527
    cfg = ASTConfig(label_dim=labels, fstride=config.get("frequency_stride", 10),
                    tstride=config.get("time_stride", 10), input_fdim=config.get("num_mel_bins", 128),
                    input_tdim=config.get("max_length", 1024), model_size=sizes[-1])
    return state, cfg


def ast_hf_config(cfg: ASTConfig, labels: list[str] | None = None) -> dict[str, Any]:
    """The ``config.json`` of ``cfg`` as ``ASTForAudioClassification`` (LayerNorm eps 1e-6: AST's backbone
    value; HF applies it to the classifier's LayerNorm too, where AST has 1e-5)."""
    names = labels if labels is not None else [f"LABEL_{i}" for i in range(cfg.label_dim)]
    if len(names) != cfg.label_dim:
        raise CheckpointError(f"{len(names)} label names for an AST with label_dim {cfg.label_dim}")
    return {
        "architectures": ["ASTForAudioClassification"], "model_type": "audio-spectrogram-transformer",
        "hidden_size": cfg.width, "num_hidden_layers": cfg.depth, "num_attention_heads": cfg.heads,
        "intermediate_size": 4 * cfg.width, "hidden_act": "gelu", "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0, "initializer_range": 0.02, "layer_norm_eps": 1e-6,
        "patch_size": PATCH, "qkv_bias": True, "frequency_stride": cfg.fstride, "time_stride": cfg.tstride,
        "max_length": cfg.input_tdim, "num_mel_bins": cfg.input_fdim,
        "id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)},
    }


def save_ast_hf_dir(model: AST, out_dir: str | Path, labels: list[str] | None = None) -> Path:
    """Write ``config.json`` + ``model.safetensors`` loadable by ``ASTForAudioClassification.from_pretrained``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(ast_hf_config(model.cfg, labels), indent=2) + "\n")
    hf = ast_state_to_hf(model.state_dict())
    save_file({k: v.detach().cpu().contiguous() for k, v in hf.items()}, str(out / "model.safetensors"),
              metadata={"format": "pt"})
    log.info("wrote %s: Hugging Face ASTForAudioClassification (%d tensors)", out, len(hf))
    return out
