"""``whisper-flamingo transcribe FILE... --model NAME|PATH``: openai-whisper's ``whisper FILE`` for audio and
video files, with lips (Whisper-Flamingo checkpoints), sound tags (Whisper-AT heads) and noise mixing.

Per file it prints the segments (``[MM:SS.mmm --> MM:SS.mmm] text``) and the modality used, and writes
``<output-dir>/<stem>.{txt,srt,vtt,tsv,json}`` (``--output-format``).  The options and their defaults are
openai-whisper's CLI ones; ``--quantize int8`` runs the linear layers in int8 on CPU.  Everything is
:meth:`whisper_flamingo.commands.api.Model.transcribe` (the Python API).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from whisper_flamingo.errors import ConfigError

EXAMPLES = """examples:
  whisper-flamingo transcribe talk.flac --model base --language auto --output-format srt
  whisper-flamingo transcribe talk.mp4 --model models/stage2.ckpt --modality auto --noise babble.wav --snr 0
  whisper-flamingo transcribe clip.mkv --model tiny.en --at-checkpoint at_head.pt --tags-in-subtitles
"""

AUDIO_SUFFIXES = (".wav", ".flac", ".mp3", ".ogg", ".m4a", ".opus", ".aac")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")


def _bool(value: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{value!r}: use True or False")


def _optional_float(value: str) -> float | None:
    return None if value.lower() == "none" else float(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from whisper_flamingo.decoding.subtitles import OUTPUT_FORMATS

    parser.add_argument("inputs", nargs="+", metavar="FILE",
                        help=f"audio ({', '.join(s[1:] for s in AUDIO_SUFFIXES)}) or video "
                             f"({', '.join(s[1:] for s in VIDEO_SUFFIXES)}) files")
    parser.add_argument("--model", default="base",
                        help="a Whisper name (tiny.en, base, ...) or a checkpoint path: openai .pt, CTranslate2 or "
                             "Hugging Face folder, our Lightning checkpoint, a Whisper-Flamingo stage-2 checkpoint "
                             "(default: base)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--output-dir", "-o", default=".", help="folder for the output files (default: .)")
    parser.add_argument("--output-format", "-f", default="all", choices=[*OUTPUT_FORMATS, "all"],
                        help="file format(s) to write (default: all)")
    parser.add_argument("--verbose", type=_bool, default=True, help="print the segments as they are decoded "
                                                                    "(default: True)")
    parser.add_argument("--task", default="transcribe", choices=["transcribe", "translate"],
                        help="transcribe, or translate into English (default: transcribe)")
    parser.add_argument("--language", default="auto",
                        help="spoken language code (en, de, ...), or auto: detected from the first 30 s with the "
                             "model's language-token probabilities (default: auto)")
    parser.add_argument("--temperature", type=float, default=0.0, help="first sampling temperature (default: 0)")
    parser.add_argument("--temperature-increment-on-fallback", type=_optional_float, default=0.2,
                        help="temperature step when a window fails the thresholds below, up to 1.0; None: no "
                             "fallback (default: 0.2)")
    parser.add_argument("--best-of", type=int, default=5, help="candidates when sampling above 0 (default: 5)")
    parser.add_argument("--beam-size", type=int, default=5, help="beams at temperature 0; 1 = greedy (default: 5)")
    parser.add_argument("--patience", type=float, default=None, help="beam search patience (default: 1.0)")
    parser.add_argument("--length-penalty", type=float, default=None,
                        help="None: rank by log-probability / length; a value in [0, 1]: the GNMT penalty")
    parser.add_argument("--compression-ratio-threshold", type=_optional_float, default=2.4,
                        help="fall back when the text's gzip compression ratio is above this (default: 2.4)")
    parser.add_argument("--logprob-threshold", type=_optional_float, default=-1.0,
                        help="fall back when the average log-probability is below this (default: -1.0)")
    parser.add_argument("--no-speech-threshold", type=_optional_float, default=0.6,
                        help="a window with <|nospeech|> probability above this and a failed log-probability "
                             "check is silence (default: 0.6)")
    parser.add_argument("--condition-on-previous-text", type=_bool, default=True,
                        help="prompt each window with the text before it (default: True)")
    parser.add_argument("--initial-prompt", default=None, help="text to prompt the first window with")
    parser.add_argument("--word-timestamps", type=_bool, default=False,
                        help="word timings from cross-attention (alignment heads), in the json (default: False)")
    parser.add_argument("--long-form", default="auto", choices=["auto", "seek", "window"],
                        help="seek: openai's timestamp algorithm; window: energy cut points <= 30 s (models without "
                             "timestamps); auto: seek for OpenAI's weights, window for fine-tuned checkpoints")
    parser.add_argument("--modality", default="auto", choices=["auto", "asr", "avsr", "vsr"],
                        help="Whisper-Flamingo with a video: auto = avsr when a face is found, else asr")
    parser.add_argument("--at-checkpoint", default=None, help="a Whisper-AT head: sound tags from the same encoder "
                                                              "pass, in the json")
    parser.add_argument("--at-time-res", type=float, default=10.0,
                        help="seconds per tag row, a multiple of 0.4 (default: 10)")
    parser.add_argument("--tags-in-subtitles", action="store_true", help="add the tags as cues to srt/vtt")
    parser.add_argument("--top-k", type=int, default=3, help="tags per row in the outputs (default: 3)")
    parser.add_argument("--noise", default=None, help="a noise file mixed in first (with --snr)")
    parser.add_argument("--snr", type=float, default=None, help="signal-to-noise ratio of --noise in dB")
    parser.add_argument("--quantize", default="none", choices=["none", "int8"],
                        help="int8: every linear layer in int8, activations scaled per row (CPU)")


def _temperatures(args: argparse.Namespace) -> tuple[float, ...]:
    step = args.temperature_increment_on_fallback
    if step is None or step <= 0:
        return (args.temperature,)
    n = int(round((1.0 - args.temperature) / step))
    return tuple(round(args.temperature + i * step, 6) for i in range(n + 1)) or (args.temperature,)


def run(args: argparse.Namespace) -> int:
    from whisper_flamingo.commands.api import load_model
    from whisper_flamingo.decoding.subtitles import OUTPUT_FORMATS, format_timestamp, write_result

    for name in args.inputs:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{name}: no such file; pass audio or video files")
        if path.suffix.lower() not in AUDIO_SUFFIXES + VIDEO_SUFFIXES:
            raise ConfigError(f"{name}: unknown file type {path.suffix!r}; use audio "
                              f"({', '.join(AUDIO_SUFFIXES)}) or video ({', '.join(VIDEO_SUFFIXES)})")
    if (args.noise is None) != (args.snr is None):
        raise ConfigError("--noise and --snr go together: pass both (e.g. --noise babble.wav --snr 0)")
    if args.tags_in_subtitles and not args.at_checkpoint:
        raise ConfigError("--tags-in-subtitles: pass --at-checkpoint (a Whisper-AT head) too")
    model = load_model(args.model, args.device, at_checkpoint=args.at_checkpoint,
                       quantize=None if args.quantize == "none" else args.quantize,
                       long_form=None if args.long_form == "auto" else args.long_form)
    formats = OUTPUT_FORMATS if args.output_format == "all" else (args.output_format,)
    for name in args.inputs:
        result = model.transcribe(
            name, modality=args.modality, beam_size=args.beam_size, patience=args.patience,
            length_penalty=args.length_penalty, at_time_res=args.at_time_res,
            language=None if args.language == "auto" else args.language, task=args.task,
            temperature=_temperatures(args), best_of=args.best_of,
            compression_ratio_threshold=args.compression_ratio_threshold, logprob_threshold=args.logprob_threshold,
            no_speech_threshold=args.no_speech_threshold, condition_on_previous_text=args.condition_on_previous_text,
            initial_prompt=args.initial_prompt, word_timestamps=args.word_timestamps, noise=args.noise, snr=args.snr)
        sys.stdout.write(f"{name}: language {result['language']}, modality {result['modality']} "
                         f"({result['modality_note']})\n")
        if args.verbose:
            for seg in result["segments"]:
                if seg["text"].strip():
                    sys.stdout.write(f"[{format_timestamp(seg['start'])} --> {format_timestamp(seg['end'])}] "
                                     f"{seg['text'].strip()}\n")
        written = write_result(result, name, args.output_dir, formats, args.tags_in_subtitles, args.top_k)
        sys.stdout.write(f"wrote {', '.join(str(p) for p in written)}\n")
        sys.stdout.flush()
    return 0
