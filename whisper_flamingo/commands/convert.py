"""``whisper-flamingo convert SRC DST``: Whisper weights between formats.

SRC: a CTranslate2 directory, a Hugging Face Whisper directory, an openai-whisper ``.pt``, a Lightning
stage-1 checkpoint (``state_dict``), or a model name resolvable offline (e.g. ``tiny.en``).
DST: an openai-whisper checkpoint (default; ``whisper.load_model(DST)`` loads it), a Hugging Face
directory (``--to hf``) or a CTranslate2 directory (``--to ct2``).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from whisper_flamingo.checkpoints import (
    export_ctranslate2,
    resolve_whisper,
    save_hf_dir,
    save_openai_checkpoint,
)
from whisper_flamingo.errors import CheckpointError
from whisper_flamingo.models.params import count_parameters
from whisper_flamingo.models.whisper import Whisper

log = logging.getLogger(__name__)


EXAMPLES = """examples:
  whisper-flamingo convert tiny.en models/tiny.en.pt    # the packaged tiny.en as an openai-whisper .pt
  whisper-flamingo convert runs/stage1/last.ckpt exported_hf/ --to hf
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="source: CTranslate2 dir, Hugging Face dir, openai .pt, Lightning "
                                    "checkpoint, or a model name such as tiny.en")
    parser.add_argument("dst", help="destination file (openai .pt) or directory (--to hf / ct2)")
    parser.add_argument("--to", choices=["openai", "hf", "ct2"], default="openai",
                        help="output format (default: openai)")
    parser.add_argument("--dtype", choices=["auto", "float32", "float16"], default="auto",
                        help="tensor dtype of an openai .pt (auto: float16 when the source is float16, "
                             "else float32)")
    parser.add_argument("--quantization", default="float16",
                        help="CTranslate2 weight type for --to ct2 (float32, float16, int8, int8_float16, "
                             "int16, ...; default float16)")
    parser.add_argument("--download-root", default=None, help="where model names look for <name>.pt")
    parser.add_argument("--heads", type=int, default=None,
                        help="attention heads for a Lightning checkpoint that does not record them "
                             "(default: d_model // 64, true for every OpenAI Whisper size)")
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")


def run(args: argparse.Namespace) -> int:
    dst = Path(args.dst)
    if dst.exists() and not args.force and (dst.is_file() or any(dst.iterdir())):
        raise CheckpointError(f"{dst}: already exists; pass --force to overwrite")
    dims, sd, info = resolve_whisper(args.src, args.download_root, allow_download=False, n_head=args.heads)
    log.info("source %s: %s", args.src, info.get("source"))
    if info.get("padding_mask") and args.to != "openai":
        log.warning("%s was trained with key-padding masks (padding_mask: true), which the %s format cannot "
                    "record: decode the original checkpoint or an openai .pt to keep them", args.src, args.to)
    if args.to == "openai":
        fp16_source = info.get("ct2_dtypes") == ["float16"] or all(
            v.dtype == torch.float16 for v in sd.values() if v.is_floating_point())
        half = args.dtype == "float16" or (args.dtype == "auto" and fp16_source)
        dtype = torch.float16 if half else torch.float32
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
        extra: dict[str, object] = {k: str(info[k]) for k in ("source", "note") if info.get(k)}
        if info.get("padding_mask"):
            extra["padding_mask"] = True  # decode follows it; whisper.load_model ignores the key
        save_openai_checkpoint(dst, dims, sd, **extra)
        what = f"openai-whisper checkpoint ({str(dtype).removeprefix('torch.')})"
    elif args.to == "hf":
        save_hf_dir(dst, dims, {k: v.float() for k, v in sd.items()})
        what = "Hugging Face Whisper directory"
    else:
        export_ctranslate2(dims, sd, dst, quantization=args.quantization)
        what = f"CTranslate2 Whisper directory ({args.quantization})"
    with torch.device("meta"):
        n_params = count_parameters(Whisper(dims))
    log.info("wrote %s to %s: %d tensors, %d parameters, dims %s", what, dst, len(sd), n_params, dims)
    if info.get("note"):
        log.info("note: %s", info["note"])
    print(f"wrote {dst} ({what})")  # noqa: T201 - the CLI's final user-facing line
    return 0
