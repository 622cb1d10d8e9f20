"""The ``whisper-flamingo`` command: one entry point, one module per subcommand.

Each subcommand lives in ``whisper_flamingo/commands/<name>.py`` and defines
``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import textwrap

from whisper_flamingo.errors import WFError, one_line
from whisper_flamingo.logs import setup_logging  # noqa: F401 - whisper_decode_video.py imports it from here

# subcommand name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train from a YAML config (stage 1 audio-only or stage 2 audio-visual)"),
    "decode": ("decode", "decode manifests over SNRs and modalities and score WER/CER/BLEU"),
    "results": ("results", "tabulate and plot decode outputs"),
    "convert": ("convert", "convert Whisper weights between openai-whisper, CTranslate2 and Hugging Face"),
    "prepare": ("prepare", "prepare data (e.g. the synthetic MuAViC-format demo corpus)"),
    "demo": ("demo", "run the end-to-end demo on generated data"),
    "demo-tag": ("demo_tag", "run the Whisper-AT tagging demo (synthetic clips, tiny.en features, TL-TR, jfk.flac)"),
    "demo-av": ("demo_av", "run the audio-visual (stage 1 + stage 2) demo on generated data"),
    "demo-multi": ("demo_multi", "run the multilingual demo (nine languages + En->X, base) on generated data"),
    "extract-video-features": ("extract_video_features",
                               "run a frozen video encoder over a manifest and store per-utterance features"),
    "extract-tag-features": ("extract_tag_features",
                             "run a frozen Whisper over tagging lists and store pooled encoder-layer features"),
    "models": ("models", "list the registered model configurations (family, parameters, where weights come from)"),
    "tensorboard": ("tensorboard", "serve training runs' TensorBoard logs (scalars, validation WER) on 127.0.0.1"),
    "tag": ("tag", "tag sound events (AudioSet classes) with Whisper-AT (and transcribe), AST or SAT (also live)"),
    "transcribe": ("transcribe", "transcribe or translate audio/video files into txt/srt/vtt/tsv/json (lips, tags)"),
    "serve": ("serve", "a local web page (127.0.0.1) to upload or record audio/video and see transcript, tags, lips"),
}

log = logging.getLogger(__name__)


def _load(name: str):
    module, _ = SUBCOMMANDS[name]
    return importlib.import_module(f"whisper_flamingo.commands.{module}")


DESCRIPTION = ("Speech recognition and translation with Whisper, robust to noise, optionally helped by lip video "
               "(Whisper-Flamingo): fine-tune models, transcribe test sets or your own recordings, score them "
               "and tabulate the results. Run 'whisper-flamingo COMMAND --help' for a command's options and "
               "examples.")

EXAMPLES = """examples:
  whisper-flamingo decode --lang en --muavic-root my_data     # transcribe my_data/muavic/en/test.tsv
  whisper-flamingo train config/audio/demo.yaml muavic_root=data/synthetic
  whisper-flamingo results decode/ --out decode/results
  whisper-flamingo serve --model tiny.en                      # web page on http://127.0.0.1:7860
"""

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _log_level(value: str) -> str:
    level = value.upper()
    if level not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{value!r}: use one of {', '.join(LOG_LEVELS)}")
    return level


def build_parser(available: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisper-flamingo", description=textwrap.fill(DESCRIPTION, 88),
                                     epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    parser.add_argument("--log-level", default="INFO", type=_log_level, metavar="LEVEL",
                        help=f"logging level: {', '.join(LOG_LEVELS)} (default: INFO)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in available or list(SUBCOMMANDS):
        try:
            mod = _load(name)
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("whisper_flamingo.commands"):
                continue  # subcommand not part of this build
            raise
        p = sub.add_parser(name, help=SUBCOMMANDS[name][1], description=SUBCOMMANDS[name][1],
                           epilog=getattr(mod, "EXAMPLES", None), formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks for errors")
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def close_progress_bars() -> None:
    """Close every open tqdm bar, so that a message printed next starts a line of its own (a bar left
    open by an exception would otherwise share its line)."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return
    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def run_guarded(fn, args, debug: bool) -> int:
    """Run ``fn(args)``; turn a :class:`WFError` into one ``error:`` line and exit status 2."""
    try:
        return int(fn(args) or 0)
    except WFError as err:
        if debug:
            raise
        close_progress_bars()
        print(f"error: {one_line(err)}", file=sys.stderr)  # noqa: T201 - the one user-facing line
        return 2
    except KeyboardInterrupt:
        close_progress_bars()
        print("error: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # import only the requested subcommand (the others pull in torch, Lightning, ...)
    wanted = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser([wanted] if wanted in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    return run_guarded(args._run, args, bool(getattr(args, "debug", False)))


if __name__ == "__main__":
    sys.exit(main())
