"""``whisper-flamingo tag FILE... --model NAME_OR_PATH [--checkpoint PATH | --at-checkpoint PATH]``: AudioSet
sound tags with Whisper-AT (with the transcript), AST or SAT, and SAT's live streaming tags.

Which tagger runs (the one rule, in :func:`tagger_for`):

1. ``--at-checkpoint`` given: Whisper-AT; ``--model`` is a Whisper name or checkpoint (default: the
   Whisper weights inside a released Whisper-AT file).
2. ``--model`` is a registered AST/SAT name (``ast-tiny224``, ``sat-t-2s``, ``sat-vit-t``, ...;
   ``whisper-flamingo models --family ast|sat``): that exact configuration, its weights from
   ``--checkpoint PATH`` (strict: a file of another size or length is an error; nothing is downloaded).
3. ``--model`` (or, without ``--model``, ``--checkpoint``) is a path: the file says its family (AST or
   SAT, configuration from the file) and is loaded by that family's ``from_checkpoint``.

Output per file: Whisper-AT prints the transcript, then one line per ``--at-time-res`` segment; AST one
line per window of the model's length (10.24 s for the AudioSet models; a longer clip is tagged window by
window, the last window zero-padded; the original tags only the first); SAT one line for the whole clip.
``--json`` prints one JSON object per file per line, for every family ``{"file", "text", "language",
"segments": [{"start", "end", "tags": [[name, value], ...]}]}``: Whisper-AT values are logits, AST/SAT
values probabilities, and AST/SAT have ``"text": null, "language": null``.

``--stream`` (SAT): the upstream ``inference.py`` lines per ``--chunk`` seconds, flushed per chunk;
``-`` as the file reads raw 16-kHz mono s16le PCM from standard input (``arecord -f S16_LE -r 16000 -c
1 | whisper-flamingo tag - --model sat-t-2s --checkpoint X --stream``).  The memory starts from
silence and is carried from one file to the next as the upstream CLI does (``--reset-memory``: each
file starts from silence).  Audio files not at 16 kHz are resampled (a warning says so once per file).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_flamingo.errors import ConfigError

log = logging.getLogger(__name__)

EXAMPLES = """examples:
  whisper-flamingo tag ../shared/data/jfk.flac --model tiny.en --at-checkpoint at_head.pt
  whisper-flamingo tag dog.wav --model ast-base384 --checkpoint audioset_10_10_0.4593.pth --json
  whisper-flamingo tag rain.wav --model sat-t-2s --checkpoint SAT_T_stream2s_mAP_43_34.pt --stream --chunk 1
  arecord -f S16_LE -r 16000 -c 1 | whisper-flamingo tag - --model sat-t-2s --checkpoint sat_t_2s.pt --stream
"""

#: a tagger: audio/video path ("-": raw PCM on stdin) -> {"text", "language", "segments": [{"start", "end", "tags"}]}
Tagger = Callable[[str], dict[str, Any]]
STDIN = "-"
#: --top-k default per family (Whisper-AT's parse_at_label, AST's and SAT's inference.py)
TOP_K = {"whisper-at": 5, "ast": 10, "sat": 3}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+",
                        help="audio or video files; '-' reads raw 16-kHz mono s16le PCM from standard input "
                             "(AST/SAT)")
    parser.add_argument("--model", default=None,
                        help="Whisper-AT: a Whisper name (tiny.en, base, ...) or checkpoint (default: the Whisper "
                             "weights in a released --at-checkpoint); AST/SAT: a registered name (ast-tiny224, "
                             "sat-t-2s, ...; see 'whisper-flamingo models') with --checkpoint, or an AST/SAT "
                             "checkpoint path")
    parser.add_argument("--checkpoint", default=None,
                        help="AST/SAT weights for a registered --model name (a released file or a {cfg, model} "
                             "file); alone, the file says its family")
    parser.add_argument("--at-checkpoint", default=None,
                        help="Whisper-AT head: released file (at_model. keys), training checkpoint or saved head")
    parser.add_argument("--at-time-res", type=float, default=10.0,
                        help="Whisper-AT: seconds per tag segment, a multiple of 0.4 (default: 10, what the heads "
                             "were trained on)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="tags per segment or chunk (default: 5 Whisper-AT, 10 AST, 3 SAT, as their originals)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="only tags above this value: a logit for Whisper-AT (default: -1, about probability "
                             "0.27), a probability for AST/SAT (default: none)")
    parser.add_argument("--language", default=None,
                        help="Whisper-AT: language of the speech (default: detected; English-only models: en), tags "
                             "are named in it; AST/SAT: language of the tag names (default: en)")
    parser.add_argument("--labels", default=None,
                        help="AST/SAT: label CSV (index,mid,display_name) for models whose classes are not the 527 "
                             "AudioSet ones (e.g. ESC-50)")
    parser.add_argument("--norm-stats", default="audioset",
                        help="AST: fbank normalisation, audioset, esc50, speechcommands or MEAN,STD (default: "
                             "audioset)")
    parser.add_argument("--stream", action="store_true",
                        help="SAT: tag chunk by chunk with the memory, printing the upstream inference.py lines "
                             "as each chunk arrives")
    parser.add_argument("--chunk", type=float, default=2.0, help="--stream: seconds per chunk (default: 2.0)")
    parser.add_argument("--reset-memory", action="store_true",
                        help="--stream: start every file from the silence memory (default: carry the memory from "
                             "one file to the next, as the upstream CLI)")
    parser.add_argument("--beam-size", type=int, default=1,
                        help="Whisper-AT: beam size of the transcription (default: 1)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ... "
                        "(default: auto)")
    parser.add_argument("--json", action="store_true", help="print JSON Lines, one object per file (--stream: "
                        "per chunk)")


# ------------------------------------------------------------------------------------------ Whisper-AT


def whisper_at_tagger(args: argparse.Namespace) -> Tagger:
    """A Whisper-AT tagger from ``--model`` / ``--at-checkpoint``."""
    from whisper_flamingo.checkpoints.names import load_whisper
    from whisper_flamingo.checkpoints.whisper_at import load_released
    from whisper_flamingo.commands.api import check_at_head
    from whisper_flamingo.decoding.runner import pick_device
    from whisper_flamingo.decoding.search import SearchOptions
    from whisper_flamingo.decoding.tags import tag_segments
    from whisper_flamingo.decoding.transcribe import transcribe
    from whisper_flamingo.models.whisper_at import TLTR, window_steps

    if not args.at_checkpoint:
        raise ConfigError("tag: pass --at-checkpoint PATH (a Whisper-AT head; the model registry lists them: "
                          "whisper-flamingo models --family whisper-at), or an AST/SAT --model with --checkpoint")
    if args.checkpoint:
        raise ConfigError("tag: --checkpoint is for AST/SAT models; a Whisper-AT head is --at-checkpoint")
    if args.stream:
        raise ConfigError("tag: --stream is for SAT models (--model sat-...); Whisper-AT tags whole files")
    if STDIN in args.inputs:
        raise ConfigError("tag: '-' (PCM on standard input) is for AST/SAT models; Whisper-AT reads files")
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
    check_at_head(head, model, args.at_checkpoint, f"--model {args.model}")
    options = SearchOptions(beam_size=args.beam_size)
    top_k = TOP_K["whisper-at"] if args.top_k is None else args.top_k
    threshold = -1.0 if args.threshold is None else args.threshold

    def tag(path: str) -> dict[str, Any]:
        result = transcribe(model, Path(path), at_head=head, at_time_res=args.at_time_res, language=args.language,
                            options=options)
        return {"text": result["text"], "language": result["language"],
                "segments": tag_segments(result, top_k=top_k, p_threshold=threshold)}

    return tag


# ------------------------------------------------------------------------------------------ AST / SAT


@dataclass
class Loaded:
    """An AST/SAT model ready to tag, with the names of its classes."""

    family: str  # "ast" or "sat"
    model: Any
    names: list[str]
    source: str


def _registered_family(name: str) -> str | None:
    """``"ast"``/``"sat"`` when ``name`` is a registered AST/SAT tagger configuration, else None."""
    from whisper_flamingo.models.registry import get_entry, list_models

    if name not in list_models():
        return None
    family = get_entry(name).family
    return family if family in ("ast", "sat") and not name.startswith("sat-mae") else None


def _family_of(path: str, wanted: str | None, what: str) -> str:
    from whisper_flamingo.checkpoints.tagging import FAMILY_NAMES, tagging_family
    from whisper_flamingo.errors import CheckpointError

    if not Path(path).exists():
        raise CheckpointError(f"{path}: no such checkpoint file ({what})")
    family = tagging_family(path)
    if family in ("whisper-at", "whisper"):
        raise ConfigError(f"{path}: holds {FAMILY_NAMES[family]}; for Whisper-AT pass the head as --at-checkpoint "
                          "(and the Whisper model as --model)")
    if family is None:
        raise CheckpointError(f"{path}: neither an AST nor a SAT checkpoint (no v.pos_embed / time_pos_embed "
                              "tensors); pass an AST or SAT file")
    if wanted is not None and family != wanted:
        raise ConfigError(f"{path}: holds {FAMILY_NAMES[family]} checkpoint, but --model {what} is "
                          f"{FAMILY_NAMES[wanted]}; pass a {family}-... --model name or the path alone as --model")
    return family


def load_tagging_model(args: argparse.Namespace) -> Loaded | None:
    """The AST/SAT model ``--model``/``--checkpoint`` ask for (None: they ask for Whisper-AT)."""
    if args.at_checkpoint:
        return None
    name = args.model
    family = _registered_family(name) if name else None
    if family is not None:
        if not args.checkpoint:
            raise ConfigError(f"--model {name}: pass its weights as --checkpoint PATH (nothing is downloaded at run "
                              "time; 'whisper-flamingo models --family "
                              f"{family}' says where they come from)")
        _family_of(args.checkpoint, family, name)
        from whisper_flamingo.models.registry import create

        model, source = create(name, checkpoint=args.checkpoint), f"{name} from {args.checkpoint}"
    elif name is not None and (Path(name).exists() or name.endswith((".pt", ".pth", ".ckpt"))):
        if args.checkpoint:
            raise ConfigError(f"--model {name} is a checkpoint path already; drop --checkpoint (or give a "
                              "registered name as --model)")
        family = _family_of(name, None, "path")
        model, source = _load_path(name, family), name
    elif name is None and args.checkpoint:
        family = _family_of(args.checkpoint, None, "path")
        model, source = _load_path(args.checkpoint, family), args.checkpoint
    elif name is not None and (name.startswith(("ast-", "sat-")) or args.checkpoint):
        from whisper_flamingo.models.registry import get_entry

        get_entry(name)  # unknown name: the registry's error with the nearest names
        raise ConfigError(f"--model {name} is not an AST/SAT tagger; use ast-... or sat-... "
                          "(whisper-flamingo models --family ast|sat)")
    else:
        return None
    from whisper_flamingo.decoding.runner import pick_device

    model = model.to(pick_device(args.device)).eval()
    n_classes = model.cfg.label_dim if family == "ast" else model.cfg.outputdim
    if args.labels:
        from whisper_flamingo.decoding.clip_tags import read_label_names

        names = read_label_names(args.labels)
    else:
        from whisper_flamingo.decoding.tags import label_names

        names = label_names(args.language or "en")
    if len(names) != n_classes:
        raise ConfigError(f"{source}: the model has {n_classes} classes but {len(names)} label names; pass --labels "
                          "CSV (index,mid,display_name) of its label set")
    log.info("tagging with %s (%s)", source, type(model).__name__)
    return Loaded(family, model, names, source)


def _load_path(path: str, family: str) -> Any:
    if family == "ast":
        from whisper_flamingo.models.ast import AST

        return AST.from_checkpoint(path)
    from whisper_flamingo.checkpoints.sat import load_sat

    return load_sat(path)


def read_waveform(name: str):
    """1-D float32 16-kHz waveform in [-1, 1) of a file (resampled when needed, with a warning once per
    file), or of all raw s16le PCM on standard input for ``-``."""
    import torch

    if name == STDIN:
        from whisper_flamingo.data.pcm import read_pcm_chunks

        chunks = list(read_pcm_chunks(sys.stdin.buffer, 16000))
        return torch.cat(chunks) if chunks else torch.zeros(0)
    from whisper_flamingo.decoding.transcribe import load_media_audio

    return torch.from_numpy(load_media_audio(name))


def clip_tagger(loaded: Loaded, args: argparse.Namespace) -> Tagger:
    """An AST (per window) or SAT (whole clip) tagger."""
    from whisper_flamingo.decoding.clip_tags import ast_window_probs, parse_norm_stats, sat_clip_probs, top_tags

    top_k = TOP_K[loaded.family] if args.top_k is None else args.top_k
    stats = parse_norm_stats(args.norm_stats)

    def tag(name: str) -> dict[str, Any]:
        wav = read_waveform(name)
        if loaded.family == "ast":
            probs, spans = ast_window_probs(loaded.model, wav, stats)
        else:
            probs, spans = sat_clip_probs(loaded.model, wav)[None], [(0.0, round(wav.numel() / 16000, 3))]
        return {"text": None, "language": None,
                "segments": [{"start": s, "end": e, "tags": top_tags(p, loaded.names, top_k, args.threshold)}
                             for p, (s, e) in zip(probs, spans)]}

    return tag


def tagger_for(args: argparse.Namespace) -> Tagger:
    """The tagger ``--model``/``--checkpoint``/``--at-checkpoint`` ask for (the rule of the module doc)."""
    loaded = load_tagging_model(args)
    if loaded is None:
        return whisper_at_tagger(args)
    if args.stream:
        raise ConfigError("tag: --stream is for SAT models; AST tags whole clips (drop --stream)")
    return clip_tagger(loaded, args)


# ------------------------------------------------------------------------------------------ streaming


def stream_chunks(name: str, chunk_samples: int) -> Iterator[Any]:
    """The 1-D chunks of a file, or of standard input as they arrive (``-``)."""
    if name == STDIN:
        from whisper_flamingo.data.pcm import read_pcm_chunks

        yield from read_pcm_chunks(sys.stdin.buffer, chunk_samples)
        return
    yield from read_waveform(name).split(chunk_samples)


def run_stream(args: argparse.Namespace) -> int:
    """``--stream``: per file, the upstream header and, per chunk, its top-k lines and a blank line."""
    from whisper_flamingo.decoding.clip_tags import top_tags
    from whisper_flamingo.decoding.sat_stream import chunk_lines, file_header
    from whisper_flamingo.models.sat import Streamer

    loaded = load_tagging_model(args)
    if loaded is None or loaded.family != "sat":
        raise ConfigError("tag: --stream needs a SAT model (--model sat-t-2s --checkpoint PATH, or a SAT file)")
    if args.chunk <= 0:
        raise ConfigError(f"--chunk {args.chunk}: give a positive number of seconds")
    chunk_samples = int(args.chunk * 16000)
    top_k = TOP_K["sat"] if args.top_k is None else args.top_k
    device = next(loaded.model.parameters()).device
    streamer = None
    for name in args.inputs:
        if streamer is None or args.reset_memory:
            streamer = Streamer(loaded.model, "silence")
        if not args.json:
            sys.stdout.write(file_header(name) + "\n")
        for index, chunk in enumerate(stream_chunks(name, chunk_samples)):
            probs = streamer(chunk.to(device))
            if probs is None:  # shorter than one patch: nothing to tag
                continue
            probs = probs.float().cpu()
            if args.json:
                tags = top_tags(probs, loaded.names, top_k, args.threshold)
                seg = {"start": index * args.chunk, "end": (index + 1) * args.chunk, "tags": tags}
                sys.stdout.write(json.dumps({"file": name, "text": None, "language": None, "segments": [seg]},
                                            ensure_ascii=False) + "\n")
            else:
                shown = top_k if args.threshold is None else min(top_k, int((probs > args.threshold).sum()))
                lines = chunk_lines(index, args.chunk, probs, loaded.names, shown) if shown > 0 else []
                sys.stdout.write("".join(line + "\n" for line in lines) + "\n")
            sys.stdout.flush()
    return 0


def run(args: argparse.Namespace) -> int:
    if args.inputs.count(STDIN) > 1:
        raise ConfigError("tag: '-' (standard input) can be given once")
    missing = [p for p in args.inputs if p != STDIN and not Path(p).is_file()]
    if missing:
        raise ConfigError(f"{missing[0]}: no such file; pass audio or video files (or '-' for PCM on standard input)")
    if args.stream:
        return run_stream(args)
    tag = tagger_for(args)
    for name in args.inputs:
        out = tag(name)
        if args.json:
            sys.stdout.write(json.dumps({"file": name, **out}, ensure_ascii=False) + "\n")
            continue
        if out["text"] is None:
            sys.stdout.write(f"{name}:\n")
        else:
            sys.stdout.write(f"{name} [{out['language']}]: {out['text']}\n")
        digits = 2 if out["text"] is not None else 4  # logits (Whisper-AT) vs probabilities (AST/SAT)
        for seg in out["segments"]:
            tags = ", ".join(f"{n} ({v:.{digits}f})" for n, v in seg["tags"]) or "-"
            sys.stdout.write(f"  {seg['start']:7.1f}-{seg['end']:7.1f} s  {tags}\n")
        sys.stdout.flush()
    return 0
