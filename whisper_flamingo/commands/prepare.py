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


def _add_synthetic_tagging(sub) -> None:
    p = sub.add_parser(
        "synthetic-tagging", help="generate a synthetic multi-label sound-tagging set with AudioSet labels",
        description="10-s clips mixing eSpeak NG speech with generated sounds (music, sine, beeps, dial tone, "
                    "white and pink noise; silence), labelled with real AudioSet mids; train/valid/eval JSON "
                    "lists and the AudioSet label CSV.")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--out", type=Path, required=True, help="output directory (new, empty, or a previous set)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--train", type=int, default=240, help="training clips (default: 240)")
    p.add_argument("--valid", type=int, default=40, help="validation clips (default: 40)")
    p.add_argument("--eval", type=int, default=60, help="held-out evaluation clips (default: 60)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    _add_synthetic(sub)
    _add_synthetic_tagging(sub)


def _run_tagging(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.synthetic.tagging import generate_tagging_set

    info = generate_tagging_set(args.out, seed=args.seed, n_train=args.train, n_valid=args.valid,
                                n_eval=args.eval, progress=not args.no_progress)
    sizes = ", ".join(f"{s} {n}" for s, n in info.sizes.items())
    print(f"synthetic tagging set in {info.root} ({info.elapsed_s:.1f} s): {sizes}\n"  # noqa: T201
          f"  lists: {' '.join(str(p) for p in info.lists.values())}\n  label_csv: {info.label_csv}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.what == "synthetic-tagging":
        return _run_tagging(args)
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
