"""``whisper-flamingo tag AUDIO_OR_VIDEO... --model NAME_OR_PATH --at-checkpoint PATH``: transcript and
AudioSet tags per segment, from one Whisper encoder pass per 30-s window (Whisper-AT).

Per file it prints the transcript, then one line per ``--at-time-res`` segment with its top tags;
``--json`` prints one JSON object per file per line: ``{"file", "text", "language", "segments": [{"start",
"end", "tags": [[name, logit], ...]}]}``.  ``--model`` is a Whisper name or checkpoint; without it, the
Whisper weights of a released Whisper-AT file given as ``--at-checkpoint`` are used.  Taggers are chosen
by :func:`tagger_for` (Whisper-AT today; other tagging families plug in there).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from whisper_flamingo.errors import ConfigError

#: a tagger: audio/video path -> {"text", "language", "segments": [{"start", "end", "tags"}]}
Tagger = Callable[[Path], dict[str, Any]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="audio or video files")
    parser.add_argument("--model", default=None,
                        help="Whisper name (tiny.en, base, ...) or checkpoint (default: the Whisper weights in a "
                             "released Whisper-AT --at-checkpoint)")
    parser.add_argument("--at-checkpoint", default=None,
                        help="Whisper-AT head: released file (at_model. keys), training checkpoint or saved head")
    parser.add_argument("--at-time-res", type=float, default=10.0,
                        help="seconds per tag segment, a multiple of 0.4 (default: 10, what the heads were trained on)")
    parser.add_argument("--top-k", type=int, default=5, help="tags per segment (default: 5)")
    parser.add_argument("--threshold", type=float, default=-1.0,
                        help="only tags whose logit is above this (default: -1, about probability 0.27)")
    parser.add_argument("--language", default=None,
                        help="language of the speech (default: detected; English-only models: en); tags are "
                             "named in it")
    parser.add_argument("--beam-size", type=int, default=1, help="beam size of the transcription (default: 1)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda when available)")
    parser.add_argument("--json", action="store_true", help="print JSON Lines, one object per file")


def whisper_at_tagger(args: argparse.Namespace) -> Tagger:
    """A Whisper-AT tagger from ``--model`` / ``--at-checkpoint``."""
    from whisper_flamingo.checkpoints.names import load_whisper
    from whisper_flamingo.checkpoints.whisper_at import load_released
    from whisper_flamingo.decoding.runner import pick_device
    from whisper_flamingo.decoding.search import SearchOptions
    from whisper_flamingo.decoding.tags import tag_segments
    from whisper_flamingo.decoding.transcribe import transcribe
    from whisper_flamingo.models.whisper_at import TLTR, window_steps

    if not args.at_checkpoint:
        raise ConfigError("tag: pass --at-checkpoint PATH (a Whisper-AT head; the model registry lists them: "
                          "whisper-flamingo models --family whisper-at)")
    try:
        window_steps(args.at_time_res)
    except ValueError as err:
        raise ConfigError(f"--at-time-res: {err}") from None
    device = pick_device(args.device)
    if args.model is None:
        model, head = load_released(args.at_checkpoint)
    else:
        model, head = load_whisper(args.model), TLTR.from_checkpoint(args.at_checkpoint)
    model, head = model.to(device), head.to(device)
    if head.cfg.rep_dim != model.dims.n_audio_state:
        raise ConfigError(f"{args.at_checkpoint}: the head reads width-{head.cfg.rep_dim} features but --model "
                          f"{args.model} has width {model.dims.n_audio_state}; pick the matching Whisper size")
    options = SearchOptions(beam_size=args.beam_size)

    def tag(path: Path) -> dict[str, Any]:
        result = transcribe(model, path, at_head=head, at_time_res=args.at_time_res, language=args.language,
                            options=options)
        return {"text": result["text"], "language": result["language"],
                "segments": tag_segments(result, top_k=args.top_k, p_threshold=args.threshold)}

    return tag


def tagger_for(args: argparse.Namespace) -> Tagger:
    """The tagger ``--model`` asks for (the one dispatch point: AST/SAT models plug in here)."""
    return whisper_at_tagger(args)


def run(args: argparse.Namespace) -> int:
    missing = [p for p in args.inputs if not Path(p).is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: no such file; pass audio or video files")
    tag = tagger_for(args)
    for name in args.inputs:
        out = tag(Path(name))
        if args.json:
            sys.stdout.write(json.dumps({"file": name, **out}, ensure_ascii=False) + "\n")
            continue
        sys.stdout.write(f"{name} [{out['language']}]: {out['text']}\n")
        for seg in out["segments"]:
            tags = ", ".join(f"{n} ({v:.2f})" for n, v in seg["tags"]) or "-"
            sys.stdout.write(f"  {seg['start']:7.1f}-{seg['end']:7.1f} s  {tags}\n")
        sys.stdout.flush()
    return 0
