"""``whisper-flamingo decode``: decode test sets over languages, modalities, noise lists and SNRs.

Every flag of the original ``whisper_decode_video.py`` keeps its meaning and spelling (``--av_fusion``,
``--use_av_hubert_encoder``, 0/1 switches), and every flag also has a dashed spelling; switches take
0/1, true/false, yes/no or on/off (alone: on).  ``--lang``, ``--modalities``, ``--noise-snr`` and
``--noise-fn`` take several values (one output directory per combination).  ``--lang`` is required;
the model defaults to the packaged ``tiny.en`` (works offline).  ``--config FILE.yaml`` supplies any
option (keys are the option names, ``-`` or ``_``); flags given on the command line win.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path

from whisper_flamingo.errors import ConfigError, WFError

EXAMPLES = """examples:
  # zero-shot Whisper (the packaged tiny.en) on the English test manifest under ./my_data/muavic/en/
  whisper-flamingo decode --lang en --muavic-root my_data --decode-path decode/
  # a fine-tuned checkpoint, clean and 0 dB babble noise, beam 5
  whisper-flamingo decode --lang en --checkpoint-path models/whisper-flamingo_en_large.pt \\
      --noise-snr 0 1000 --noise-fn noise/babble/lrs3/test.tsv --beam-size 5 --muavic-root .
  # utterances over 30 s decoded whole, in windows of at most 30 s
  whisper-flamingo decode --lang en --muavic-root my_data --long-form window
"""

_TRUE, _FALSE = ("1", "true", "yes", "on", "y", "t"), ("0", "false", "no", "off", "n", "f")


def switch(value: str) -> int:
    """A switch value: 1/true/yes/on or 0/false/no/off (any case) -> 1 or 0."""
    text = str(value).strip().lower()
    if text in _TRUE:
        return 1
    if text in _FALSE:
        return 0
    raise argparse.ArgumentTypeError(f"{value!r} is not a switch value; use 1/0, true/false, yes/no or on/off")


#: config-key advice in error messages of the data layer -> the flag of this command
_FLAG_ADVICE = ((re.compile(r"\bset on_bad_sample: skip\b"), "pass --on-bad-sample skip"),
                (re.compile(r"\bon_bad_sample: (error|skip)\b"), r"--on-bad-sample \1"),
                (re.compile(r"\bcheck muavic_root / lang / task\b"), "check --muavic-root / --lang / --task"),
                (re.compile(r"\bmuavic_root\b"), "--muavic-root"), (re.compile(r"\blrs2_root\b"), "--lrs2-root"))


def flag_advice(message: str) -> str:
    """``message`` with the config keys it names replaced by this command's flags."""
    for pattern, repl in _FLAG_ADVICE:
        message = pattern.sub(repl, message)
    return message


class _OneOrMore(argparse.Action):
    """``nargs="+"`` that keeps a single value as a string (the original's ``--task X``)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values[0] if len(values) == 1 else list(values))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("original flags (whisper_decode_video.py)")
    g.add_argument("--lang", nargs="+", default=None,
                   help="required: language code(s) of the manifests (en, es, fr, ...); 'lrs2' = LRS2 English "
                        "test; a '-visible' suffix only changes the output path (visible-1)")
    g.add_argument("--model-type", default="tiny.en",
                   help="Whisper name (tiny.en, base, small, medium, large-v3, ...) or a .pt path, decoded "
                        "zero-shot when no --checkpoint-path is given (default: tiny.en, packaged, works "
                        "offline; others are looked up in --whisper-path, then downloaded)")
    g.add_argument("--noise-snr", nargs="+", type=float, default=[1000.0],
                   help="SNR(s) in dB, e.g. -10 -5 0 5 10 1000; 1000 = clean (default: 1000)")
    g.add_argument("--noise-fn", nargs="+", default=None,
                   help="noise list(s) (.tsv, one wav per line); the list's parent folder names the output "
                        "folder (e.g. noise/babble/lrs3/test.tsv -> lrs3)")
    g.add_argument("--beam-size", type=int, default=1, help="1 = greedy, >1 = beam search (default: 1)")
    g.add_argument("--modalities", nargs="+", default=["asr"], choices=["asr", "avsr", "vsr"],
                   help="asr (audio), avsr (audio-visual), vsr (video only) (default: asr; the original "
                        "defaulted to avsr)")
    g.add_argument("--use_av_hubert_encoder", "--use-av-hubert-encoder", type=switch, default=None, nargs="?",
                   const=1, metavar="0|1",
                   help="1 = AV-HuBERT video encoder, 0 = ResNet front end / audio model; the checkpoint "
                        "decides, a value that disagrees with it is refused (default: not checked)")
    g.add_argument("--av_fusion", "--av-fusion", default="",
                   help="'separate' = Whisper-Flamingo gated cross-attention; 'None' = audio model")
    g.add_argument("--fp16", type=switch, default=1, nargs="?", const=1, metavar="0|1",
                   help="1 = half precision on GPU (CPU always fp32) (default: 1)")
    g.add_argument("--checkpoint-path", default=None,
                   help="fine-tuned checkpoint (decoded at variable length); its file name names the output "
                        "folder (with a short hash when another checkpoint of that name is already there)")
    g.add_argument("--decode-path", default="decode/",
                   help="output root (default: decode/); results go to <root>/<model name>/<lang>/<split>/"
                        "<modality>/snr-<N>/visible-<0|1>/beam-<B>/<noise|none>/")
    g.add_argument("--whisper-path", default="models/",
                   help="folder of OpenAI Whisper <name>.pt files looked up for --model-type (default: models/; "
                        "never created)")
    g.add_argument("--av-hubert-path", default=None,
                   help="(original) fairseq user dir: refused, fairseq is not used (AV-HuBERT is built in)")
    g.add_argument("--av-hubert-ckpt", default=None,
                   help="(original) AV-HuBERT file that chose the code path ('ft' in the name = fine-tuned); "
                        "the checkpoint decides, a file that disagrees with it is refused")
    g.add_argument("--task", nargs="+", default="transcribe", choices=["transcribe", "En-X", "X-En"],
                   action=_OneOrMore,
                   help="transcribe, En-X or X-En (only X-En uses <|translate|>); several in one run, e.g. "
                        "--lang en ar de el es fr it pt ru --task transcribe En-X: each further task decodes the "
                        "--lang values that have its manifests (En-X: muavic/en/<X>/, X-En: muavic/<X>/en/) "
                        "into <decode-path>/<task>/")
    g.add_argument("--normalizer", default="fairseq", choices=["fairseq", "whisper", "muavic", "none"],
                   help="text normaliser for WER (default: fairseq; muavic: fairseq for en, the mTEDx label rules "
                        "for the other languages)")
    g.add_argument("--use-original-whisper", type=switch, default=0, nargs="?", const=1,
                   metavar="0|1", help="1 = zero-shot OpenAI Whisper --model-type (ignores --checkpoint-path; "
                                       "30-s padded input) (default: 0; zero-shot anyway without --checkpoint-path)")
    g.add_argument("--long-form", default="off", choices=["off", "window"],
                   help="utterances over 30 s: off = decode their first 30 s (flagged over_30s in "
                        "utterances.jsonl), window = cut them at quiet points into windows of at most 30 s, "
                        "decode each and join the text (asr only) (default: off)")
    n = parser.add_argument_group("data, batching, output")
    n.add_argument("--config", default=None, help="YAML file with any of these options")
    n.add_argument("--muavic-root", default="",
                   help="folder holding muavic/ (manifests and media) (default: the working directory)")
    n.add_argument("--lrs2-root", default="", help="LRS2 folder (for --lang lrs2)")
    n.add_argument("--split", default="test", choices=["test", "valid", "train"],
                   help="which manifest to decode: test.tsv, valid.tsv or train.tsv (default: test)")
    n.add_argument("--batch-bins", type=int, default=640000,
                   help="audio samples per batch, padding included (default: 640000 = 40 s)")
    n.add_argument("--max-utterances", type=int, default=None, help="decode only the first N utterances")
    n.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default: 0)")
    n.add_argument("--num-workers", type=int, default=0, help="data loader workers (default: 0)")
    n.add_argument("--on-bad-sample", default="error", choices=["error", "skip"],
                   help="an unreadable or mismatching audio file or manifest row: error = stop with one line "
                        "naming it, skip = leave it out and count it in summary.json (default: error)")
    n.add_argument("--overwrite", action="store_true", help="decode again instead of resuming")
    n.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ... "
                                                     "(default: auto)")
    t = parser.add_argument_group("sound tags (Whisper-AT)")
    t.add_argument("--at-checkpoint", default=None,
                   help="a Whisper-AT head: each utterance's JSONL record gets audio_tags (top 5 per segment)")
    t.add_argument("--at-time-res", type=float, default=10.0,
                   help="seconds per tag segment, a multiple of 0.4 (default: 10)")
    s = parser.add_argument_group("search")
    s.add_argument("--patience", type=float, default=None, help="beam patience (default: 1.0)")
    s.add_argument("--length-penalty", type=float, default=None,
                   help="GNMT alpha in [0, 1]; default: divide by the length")
    s.add_argument("--max-new-tokens", type=int, default=224,
                   help="new tokens per utterance (default: 224, openai-whisper's and the original's)")
    s.add_argument("--runaway-guard", action="store_true",
                   help="ours, off by default (the original always allows 224 tokens): a token budget from the "
                        "duration and a stop for hypotheses caught in an n-gram loop; changes WER, recorded "
                        "in summary.json")
    s.add_argument("--tokens-per-second", type=float, default=None,
                   help="with --runaway-guard: budget = min(cap, 20 + this x seconds); 0 = always the cap "
                        "(default: 15)")
    s.add_argument("--loop-repeats", type=int, default=None,
                   help="with --runaway-guard: stop a hypothesis repeating one n-gram this many times; "
                        "0 = no loop stop (default: 4)")


def _defaults() -> dict:
    p = argparse.ArgumentParser(add_help=False)
    add_arguments(p)
    return vars(p.parse_args([]))


def apply_yaml(args: argparse.Namespace) -> argparse.Namespace:
    """Fill options left at their defaults from ``args.config`` (a YAML mapping)."""
    if not getattr(args, "config", None):
        return args
    import yaml

    path = Path(args.config)
    if not path.is_file():
        raise ConfigError(f"--config {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option: value")
    defaults = _defaults()
    known = sorted(k for k in defaults if k != "config")
    list_keys = {"lang", "noise_snr", "noise_fn", "modalities"}
    for raw_key, value in data.items():
        key = str(raw_key).replace("-", "_")
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{path}: unknown option {raw_key!r}" + (f"; did you mean {hint[0]!r}?" if hint else
                                                                          f"; known: {', '.join(known)}"))
        if key in list_keys and value is not None and not isinstance(value, list):
            value = [value]
        if key == "noise_snr":
            value = [float(v) for v in value]
        if key in ("fp16", "use_original_whisper", "use_av_hubert_encoder") and value is not None:
            try:
                value = switch(str(int(value)) if isinstance(value, bool) else str(value))
            except argparse.ArgumentTypeError as err:
                raise ConfigError(f"{path}: {raw_key}: {err}") from None
        if getattr(args, key) == defaults[key]:
            setattr(args, key, value)
    return args


def settings_from_args(args: argparse.Namespace):
    from whisper_flamingo.decoding.runner import DecodeSettings
    from whisper_flamingo.decoding.search import SearchOptions

    if not args.lang:
        raise ConfigError("--lang is required: the language code(s) of the manifests to decode, e.g. --lang en")
    if args.av_hubert_path is not None:
        raise ConfigError(f"--av-hubert-path {args.av_hubert_path}: fairseq is not used (AV-HuBERT is built in and "
                          "its code path follows the checkpoint); leave the flag out")
    guard = bool(args.runaway_guard)
    for flag, value in (("--tokens-per-second", args.tokens_per_second), ("--loop-repeats", args.loop_repeats)):
        if value is not None and not guard:
            raise ConfigError(f"{flag} {value}: tunes the runaway guard, which is off; add --runaway-guard")
    task = args.task
    if not isinstance(task, str):
        if len(task) != 1:
            raise ConfigError(f"--task {' '.join(task)}: one task per decode run (task_runs splits several)")
        task = task[0]
    defaults = SearchOptions()
    tps = defaults.budget_per_second if args.tokens_per_second is None else args.tokens_per_second or None
    search = SearchOptions(beam_size=args.beam_size, patience=args.patience, length_penalty=args.length_penalty,
                           max_new_tokens=args.max_new_tokens, runaway_guard=guard, budget_per_second=tps,
                           loop_repeats=defaults.loop_repeats if args.loop_repeats is None else args.loop_repeats)
    return DecodeSettings(
        langs=list(args.lang), model_type=args.model_type, checkpoint_path=args.checkpoint_path,
        use_original_whisper=bool(args.use_original_whisper), noise_snrs=list(args.noise_snr),
        noise_fns=list(args.noise_fn) if args.noise_fn else [None], modalities=list(args.modalities),
        task=task, normalizer=args.normalizer, fp16=bool(args.fp16), decode_path=args.decode_path,
        whisper_path=args.whisper_path, muavic_root=args.muavic_root, lrs2_root=args.lrs2_root,
        split=args.split, batch_bins=args.batch_bins, max_utterances=args.max_utterances, seed=args.seed,
        num_workers=args.num_workers, on_bad_sample=args.on_bad_sample, overwrite=args.overwrite,
        device=args.device, search=search, av_fusion=args.av_fusion,
        use_av_hubert_encoder=None if args.use_av_hubert_encoder is None else bool(args.use_av_hubert_encoder),
        av_hubert_ckpt=args.av_hubert_ckpt, long_form=args.long_form, at_checkpoint=args.at_checkpoint,
        at_time_res=args.at_time_res)


def _task_dir(base: Path, task: str, lang: str) -> Path:
    """The folder holding ``task``'s manifests for ``lang`` under ``<muavic_root>/muavic``."""
    return {"En-X": base / "en" / lang, "X-En": base / lang / "en"}.get(task, base / lang)


def task_runs(args: argparse.Namespace) -> list[argparse.Namespace]:
    """One namespace per ``--task`` value.  A single task decodes every ``--lang`` into ``--decode-path``
    (the original's behaviour); with several, the first decodes every ``--lang`` there and each further
    task decodes the ``--lang`` values whose manifests it has (En-X: ``muavic/en/<X>/``, X-En:
    ``muavic/<X>/en/``; never ``en``) into ``<decode-path>/<task>/``."""
    tasks = [args.task] if isinstance(args.task, str) else list(dict.fromkeys(args.task))
    base = Path(args.muavic_root or ".") / "muavic"
    runs = []
    for k, task in enumerate(tasks):
        ns = argparse.Namespace(**vars(args))
        ns.task = task
        if k:
            ns.lang = [x for x in (args.lang or []) if x != "en" and _task_dir(base, task, x).is_dir()]
            ns.decode_path = str(Path(args.decode_path) / task)
            if not ns.lang:
                raise ConfigError(f"--task {task}: none of --lang {' '.join(args.lang or [])} has {task} manifests "
                                  f"under {base}")
        runs.append(ns)
    return runs


def run(args: argparse.Namespace) -> int:
    from whisper_flamingo.decoding.runner import run_decode

    summaries = []
    try:
        for ns in task_runs(apply_yaml(args)):
            summaries += run_decode(settings_from_args(ns))
    except WFError as err:  # advice of the data layer names config keys: name this command's flags
        err.args = (flag_advice(str(err)),)
        raise
    for s in summaries:
        score = "n/a" if s["score"] is None else f"{s['score']:.2f}"
        sys.stdout.write(f"{s['lang_arg']}\t{s['modality']}\tsnr {s['snr']:g}\t{s['noise_name']}\t"
                         f"beam {s['beam']}\t{s['metric'].upper()} {score}\t({s['utterances']} utts)\n")
    return 0
