"""``whisper-flamingo prepare``: make data sets; ``prepare synthetic`` writes the demo corpus, ``prepare
manifest`` a manifest from a folder of audio files with transcripts.

Examples::

    whisper-flamingo prepare synthetic --out data/synthetic --train 300 --valid 40 --test 40 --jobs 2
    whisper-flamingo prepare manifest --layout audio --src my_recordings/train --out data/mine/muavic/en
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


def _add_manifest(sub) -> None:
    p = sub.add_parser(
        "manifest", help="{split}.tsv + labels from a folder of audio files with transcripts (--layout audio)",
        description="Write <out>/<split>.tsv and <out>/<split>.<lang> from a folder of audio files, each with a "
                    "<name>.txt transcript next to it or one --transcripts TSV.  Rows are audio-only (video '-', "
                    "0 frames: stage 1) with the 16 kHz sample count.  Training reads English manifests from "
                    "<muavic_root>/muavic/en, another language X from <muavic_root>/muavic/X/muavic_normalized.",
        epilog="examples:\n  whisper-flamingo prepare manifest --layout audio --src rec/train --out data/mine/muavic/en"
               " --split train\n  whisper-flamingo prepare manifest --layout audio --src rec/valid "
               "--out data/mine/muavic/es/muavic_normalized --split valid --lang es --transcripts rec/valid.tsv",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
    p.add_argument("--layout", choices=("audio",), required=True,
                   help="audio: a folder of audio files (searched recursively) with transcripts")
    p.add_argument("--src", type=Path, required=True, help="the folder of audio files")
    p.add_argument("--out", type=Path, required=True,
                   help="where the tsv and label files go (English: <muavic_root>/muavic/en)")
    p.add_argument("--split", choices=("train", "valid", "test"), default="train", help="split (default: train)")
    p.add_argument("--lang", default="en", help="language code of the transcripts, the label extension (default: en)")
    p.add_argument("--transcripts", type=Path, default=None,
                   help="one TSV of <name><TAB><transcript> lines (name: the audio path relative to --src, "
                        "with or without extension) instead of <name>.txt files")
    p.add_argument("--on-bad-sample", choices=("error", "skip"), default="error",
                   help="a file without transcript or with unreadable audio: stop (error, default) or leave "
                        "it out and count it (skip)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing manifest of this split")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="what", required=True, metavar="WHAT")
    _add_synthetic(sub)
    _add_manifest(sub)


def run_manifest(args: argparse.Namespace) -> int:
    from whisper_flamingo.preparation.manifest import manifest_from_folder, muavic_root_of

    info = manifest_from_folder(args.src, args.out, split=args.split, lang=args.lang,
                                transcripts=args.transcripts, on_bad_sample=args.on_bad_sample,
                                overwrite=args.overwrite)
    skipped = f"; left out {dict(info.skipped)}" if info.skipped else ""
    root = muavic_root_of(args.out, args.split, args.lang)
    hint = (f"train with: muavic_root={root} lang={args.lang}" if root is not None else
            f"note: training reads <muavic_root>/muavic/{args.lang}"
            f"{'' if args.lang == 'en' else '/muavic_normalized'}/{args.split}.tsv; move the files there")
    print(f"{info.rows} rows ({info.seconds / 3600:.2f} h) written to {info.tsv} and {info.labels}{skipped}\n"  # noqa: T201
          f"  {hint}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.what == "manifest":
        return run_manifest(args)
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
