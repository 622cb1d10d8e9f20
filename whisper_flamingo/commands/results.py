"""``whisper-flamingo results DIR... [--out DIR]``: tables (Markdown, CSV) and WER-vs-SNR plots."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXAMPLES = """examples:
  whisper-flamingo results decode/                      # tables and plots into decode/results/
  whisper-flamingo results decode/ old_decode/ --out cmp/ --normalizer whisper
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dirs", nargs="+", help="folders holding decode outputs (searched recursively)")
    parser.add_argument("--out", default=None, help="output folder (default: <first DIR>/results)")
    parser.add_argument("--decimals", type=int, default=2, help="decimals in the tables (default: 2)")
    parser.add_argument("--normalizer", default=None, choices=["fairseq", "whisper", "muavic", "none"],
                        help="re-score WER from the saved wer.json with this normaliser")


def run(args: argparse.Namespace) -> int:
    from whisper_flamingo.decoding.results import write_results

    out = Path(args.out) if args.out else Path(args.dirs[0]) / "results"
    res = write_results(args.dirs, out, decimals=args.decimals, normalizer=args.normalizer)
    sys.stdout.write(res["markdown"])
    sys.stdout.write("\nwrote " + ", ".join(str(p) for p in res["files"]) + "\n")
    return 0
