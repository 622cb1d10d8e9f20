"""``whisper-flamingo prepare``: make data sets; ``prepare synthetic`` writes the demo corpus.

Example::

    whisper-flamingo prepare synthetic --out data/synthetic --train 300 --valid 40 --test 40 --jobs 2
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _add_synthetic(sub) -> None:
    from whisper_flamingo.preparation.synthetic.grammar import LANGS

    p = sub.add_parser(
        "synthetic", help="generate a synthetic audio-visual corpus in the MuAViC layout",
        description="Generate English sentences from a small grammar (with aligned translations), "
                    "speak them with eSpeak NG voice variants, draw a 96x96 talking mouth that follows "
                    "the phonemes, and write MuAViC-format manifests, labels and noise lists.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks for errors")
    p.add_argument("--out", type=Path, required=True,
                   help="corpus directory (the muavic_root of the configs); new, empty or a previous "
                        "synthetic corpus, which is replaced")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed and sizes: same files)")
    p.add_argument("--train", type=int, default=300, help="train utterances (default: 300)")
    p.add_argument("--valid", type=int, default=40, help="valid utterances (default: 40)")
    p.add_argument("--test", type=int, default=40, help="test utterances (default: 40)")
    p.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1),
                   help="worker processes (default: min(4, CPUs)); does not change the output")
    p.add_argument("--langs", nargs="*", default=["fr"], choices=list(LANGS), metavar="LANG",
                   help=f"En-X translation targets among {', '.join(LANGS)} (default: fr; none: no En-X)")
    p.add_argument("--min-words", type=int, default=5, help="shortest sentence in words (default: 5)")
    p.add_argument("--max-words", type=int, default=11, help="longest sentence in words (default: 11)")
    p.add_argument("--relative-paths", action="store_true",
                   help="manifests start with the corpus root and list paths relative to it "
                        "(default: '/' then absolute paths, as MuAViC)")
    p.add_argument("--no-noise", action="store_true",
                   help="skip the babble and training noise files (faster; noisy evaluation needs them)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    _add_synthetic(sub)
    _add_extract_audio(sub)


def run(args: argparse.Namespace) -> int:
    if args.what in _STEPS:
        return _STEPS[args.what](args)
    if args.what != "synthetic":  # pragma: no cover - argparse restricts the choices
        raise SystemExit(f"unknown prepare target {args.what}")
    from whisper_flamingo.errors import ConfigError
    from whisper_flamingo.preparation.synthetic import generate_corpus

    if args.min_words < 3 or args.max_words < args.min_words:
        raise ConfigError(f"--min-words {args.min_words} / --max-words {args.max_words}: need "
                          "3 <= min-words <= max-words")
    info = generate_corpus(args.out, seed=args.seed, n_train=args.train, n_valid=args.valid,
                           n_test=args.test, jobs=args.jobs, en_x_langs=tuple(args.langs),
                           min_words=args.min_words, max_words=args.max_words,
                           relative_paths=args.relative_paths, noise=not args.no_noise,
                           progress=not args.no_progress)
    sizes = ", ".join(f"{s} {n} ({info.audio_seconds[s]:.0f} s)" for s, n in info.sizes.items())
    lines = [f"synthetic corpus in {info.root} ({info.elapsed_s:.1f} s): {sizes}; "
             f"En-X: {', '.join(info.langs) or 'none'}", f"  muavic_root: {info.root}"]
    if info.babble_wav is not None:
        lines += [f"  babble (valid/test): {info.babble_tsv['valid']} {info.babble_tsv['test']}",
                  f"  training noise: {info.train_noise_tsv}"]
    print("\n".join(lines))  # noqa: T201 - the command's user-facing summary
    return 0


# ------------------------------------------------------------------ real-data steps (issue 13)


def _add_common(p, suffix_help: str) -> None:
    """Arguments shared by the per-file steps: inputs, outputs, sharding, resuming, bad inputs."""
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="show tracebacks for errors")
    p.add_argument("--src", type=Path, default=None,
                   help="input folder (searched recursively) or one file")
    p.add_argument("--list", type=Path, default=None,
                   help="a file of input paths, one a line (relative ones are relative to --src)")
    p.add_argument("--out", type=Path, required=True, help=f"output folder: {suffix_help}")
    p.add_argument("--rank", type=int, default=0, help="this process's shard (default: 0)")
    p.add_argument("--nshard", type=int, default=1, help="number of shards (default: 1)")
    p.add_argument("--overwrite", action="store_true", help="redo outputs that exist (default: keep them)")
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                   help="a bad input stops the step with a one-line error (default) or is counted and skipped")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _jobs(args: argparse.Namespace, suffix: str, extensions=None):
    from whisper_flamingo.preparation.jobs import VIDEO_EXTENSIONS, find_inputs, plan_jobs, shard

    root, files = find_inputs(args.src, args.list, extensions or VIDEO_EXTENSIONS)
    return shard(plan_jobs(root, files, args.out, suffix), args.rank, args.nshard)


def _add_extract_audio(sub) -> None:
    p = sub.add_parser("extract-audio", help="video (mp4/mkv/avi/webm/...) -> 16 kHz mono int16 wav",
                       description="Decode the first audio stream of each input with PyAV (no ffmpeg binary) "
                                   "and write <out>/<relative path>.wav, 16 kHz mono int16.")
    _add_common(p, "<out>/<path relative to --src>.wav")
    p.add_argument("--extensions", nargs="*", default=None, metavar="EXT",
                   help="input suffixes to look for under --src (default: the usual video containers)")


def _run_extract_audio(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.extract_audio import extract_one
    from whisper_flamingo.preparation.jobs import run_step

    exts = tuple(e if e.startswith(".") else f".{e}" for e in args.extensions) if args.extensions else None
    jobs = _jobs(args, ".wav", exts)
    summary = run_step("extract-audio", jobs, lambda job, tmp: extract_one(job.src, tmp),
                       on_bad_sample=args.on_bad_sample, overwrite=args.overwrite,
                       progress=not args.no_progress)
    print(summary.line())  # noqa: T201 - the command's user-facing summary
    return 0


_STEPS = {
    "extract-audio": _run_extract_audio,
}
