"""``whisper-flamingo demo-multi``: mWhisper-Flamingo's multilingual stage 1 on generated data, on a CPU.

1. generate the nine-language synthetic corpus (``prepare synthetic --langs en,ar,de,el,es,fr,it,pt,ru``:
   eSpeak NG voices per language, talking mouths, En->X pairs for el es fr it pt ru, multilingual babble);
2. convert the packaged multilingual ``base`` to an openai-whisper checkpoint;
3. decode zero-shot (30 s padding, as the original decodes OpenAI models): ASR in the nine languages
   and En->X, clean and at 0 dB multilingual babble;
4. stage 1 ``multi-all`` (``config/audio/demo_multi.yaml``), then the En-X task (``lang=multi_en-st``,
   initialised from the multi-all model), both with noise, per-language validation WER/BLEU in TensorBoard;
5. decode the fine-tuned models (variable length) under the same conditions;
6. ``whisper-flamingo results``' paper-shaped tables (rows modality x noise, columns languages, average
   over non-English), a per-language WER plot, and a check: the fine-tuned average WER at 0 dB babble is
   below zero-shot's and the fine-tuned En->X BLEU (0 dB babble, mean of the six targets) above zero-shot's.

Scores use the ``muavic`` normaliser (fairseq for English, the mTEDx label rules for the others) and
sacrebleu's defaults (its signature is in every ``summary.json``).  Finished steps are reused when run
again (``--fresh`` starts over).  The last line is
``zero_shot_avg_wer=<x> finetuned_avg_wer=<y> en_x_bleu=<z> wall_s=<w>`` (averages over the nine
languages at 0 dB babble; ``en_x_bleu`` = the fine-tuned model's, averaged over the six targets).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from whisper_flamingo.commands.demo import (
    ROOT,
    _cli,
    convert_model,
    new_figure,
    output_dir,
    save_figure,
    train_stage,
)
from whisper_flamingo.errors import WFError

log = logging.getLogger(__name__)

DEMO_CONFIG = ROOT / "config" / "audio" / "demo_multi.yaml"
LANGS = ("en", "ar", "de", "el", "es", "fr", "it", "pt", "ru")
EN_X = ("el", "es", "fr", "it", "pt", "ru")

EXAMPLES = """examples:
  whisper-flamingo demo-multi                             # everything in demo_out_multi/
  whisper-flamingo demo-multi --out /tmp/dm --steps 40 --en-x-steps 10 --train 12 --test 4 --fresh
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out_multi", help="output folder (default: demo_out_multi)")
    parser.add_argument("--config", default=str(DEMO_CONFIG),
                        help="stage-1 config (default: config/audio/demo_multi.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and training seed (default: 0)")
    parser.add_argument("--train", type=int, default=40, help="training utterances per language (default: 40)")
    parser.add_argument("--valid", type=int, default=4, help="validation utterances per language (default: 4)")
    parser.add_argument("--test", type=int, default=4, help="test utterances per language (default: 4)")
    parser.add_argument("--steps", type=int, default=None, help="multi-all training steps (default: the config's)")
    parser.add_argument("--en-x-steps", type=int, default=50, help="En-X training steps (default: 50)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes (default: 2)")
    parser.add_argument("--model", default="base", help="pretrained multilingual model (default: base)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and redo every step")


class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds in a daemon thread (to report how busy
    the machine was during the run)."""

    def __init__(self, every: float = 15.0) -> None:
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(every,), daemon=True)

    def _loop(self, every: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(every)

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        return (f"mean {sum(self.samples) / len(self.samples):.1f}, max {max(self.samples):.1f} "
                f"({len(self.samples)} samples, {os.cpu_count()} CPUs)")


def prepare_multi_corpus(corpus: Path, seed: int, train: int, valid: int, test: int, jobs: int) -> Path:
    """The nine-language corpus (reused when one with the same seed, sizes and languages is there);
    returns the multilingual babble test list."""
    stamp = corpus / "corpus.json"
    want = {"seed": seed, "sizes": {"train": train, "valid": valid, "test": test}}
    have = json.loads(stamp.read_text(encoding="utf-8")) if stamp.is_file() else {}
    if {k: have.get(k) for k in want} != want or have.get("extra", {}).get("asr_langs") != list(LANGS):
        _cli(["prepare", "synthetic", "--out", str(corpus), "--langs", ",".join(LANGS), "--seed", str(seed),
              "--train", str(train), "--valid", str(valid), "--test", str(test), "--jobs", str(jobs)])
    else:
        log.info("reusing the corpus in %s", corpus)
    babble = corpus / "noise" / "babble" / "muavic" / "test.tsv"
    if not babble.is_file():
        raise WFError(f"{babble}: the corpus has no multilingual babble list; rerun with --fresh")
    return babble


def named(last: Path) -> Path:
    """``checkpoints/<run>/last.ckpt`` as ``checkpoints/<run>.ckpt`` (a hard link, else a copy), so that
    decode folders and result tables name the run instead of ``last.ckpt``."""
    import shutil

    dst = last.parent.parent / f"{last.parent.name}.ckpt"
    dst.unlink(missing_ok=True)
    try:
        os.link(last, dst)
    except OSError:
        shutil.copyfile(last, dst)
    return dst


def scores(decode_dir: Path, task: str = "transcribe") -> dict[tuple[str, str], float | None]:
    """``{(lang, 'clean'|'0'): score}`` of ``task`` from the ``summary.json`` files under ``decode_dir``."""
    out: dict[tuple[str, str], float | None] = {}
    for path in decode_dir.rglob("summary.json"):
        s = json.loads(path.read_text(encoding="utf-8"))
        if s.get("task", "transcribe") != task:
            continue
        snr = float(s["snr"])
        out[(s["lang"], "clean" if snr >= 1000 else f"{snr:g}")] = s.get("score")
    return out


def average(table: dict[tuple[str, str], float | None], langs: tuple[str, ...], cond: str) -> float:
    """Mean score over ``langs`` under ``cond``; every language must have a score."""
    vals = [table.get((lang, cond)) for lang in langs]
    if any(v is None for v in vals):
        missing = [lang for lang, v in zip(langs, vals) if v is None]
        raise WFError(f"no {cond} score for {missing}; the decoding step did not finish")
    return sum(vals) / len(vals)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    with LoadSampler() as load:
        rc, lines = _run(args, t0)
        lines.insert(-1, f"machine load during the run (1-min load average): {load.summary()}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return rc


def _run(args: argparse.Namespace, t0: float) -> tuple[int, list[str]]:
    out = output_dir(args.out, args.fresh)
    corpus, models, decode = out / "corpus", out / "models", out / "decode"
    timings: dict[str, float] = {}

    def step(name: str, t: float) -> None:
        timings[name] = time.perf_counter() - t
        log.info("demo-multi: %s done in %.0f s", name, timings[name])

    t = time.perf_counter()
    babble = prepare_multi_corpus(corpus, args.seed, args.train, args.valid, args.test, args.jobs)
    step("corpus", t)
    t = time.perf_counter()
    model_pt = convert_model(models, args.model)
    step("convert", t)

    common = ["--muavic-root", str(corpus), "--noise-snr", "1000", "0", "--noise-fn", str(babble),
              "--beam-size", "1", "--fp16", "0", "--normalizer", "muavic", "--runaway-guard"]
    asr = ["--lang", *LANGS, *common]
    en_x = ["--task", "En-X", "--lang", *EN_X, *common]
    zs = ["--model-type", args.model, "--use-original-whisper", "1", "--whisper-path", str(models)]
    t = time.perf_counter()
    # one run: ASR in the nine languages, then En-X for the --lang values with En-X manifests (-> En-X/)
    _cli(["decode", *zs, "--decode-path", str(decode / "zero_shot"), "--lang", *LANGS, "--task", "transcribe",
          "En-X", *common])
    step("decode zero-shot", t)

    noise = corpus / "noise" / "babble" / "muavic"
    lists = [f"noise_fn_val={noise / 'valid.tsv'}", f"noise_fn_test={noise / 'test.tsv'}"]
    run_id = f"demo_multi-all_{args.model}"
    t = time.perf_counter()
    every = [f"validate_every_n_batches={args.steps}"] if args.steps else []  # validate once, at the end
    multi = train_stage(args.config, out, corpus, model_pt, run_id, args.seed, args.steps, lists + every)
    step("train multi-all", t)
    t = time.perf_counter()
    en_x_ckpt = train_stage(args.config, out, corpus, model_pt, f"demo_en-x_{args.model}", args.seed,
                            args.en_x_steps, [*lists, "lang=multi_en-st", f"pt_ckpt={multi}",
                                              f"validate_every_n_batches={args.en_x_steps}"])
    step("train En-X", t)

    multi, en_x_ckpt = named(multi), named(en_x_ckpt)
    t = time.perf_counter()
    _cli(["decode", "--model-type", args.model, "--checkpoint-path", str(multi), "--decode-path",
          str(decode / "fine_tuned"), *asr])
    _cli(["decode", "--model-type", args.model, "--checkpoint-path", str(en_x_ckpt), "--decode-path",
          str(decode / "fine_tuned_en-x"), *en_x])
    step("decode fine-tuned", t)

    _cli(["results", str(decode), "--out", str(out / "results")])
    zs_asr, ft_asr = scores(decode / "zero_shot"), scores(decode / "fine_tuned")
    zs_bleu, ft_bleu = scores(decode / "zero_shot", "En-X"), scores(decode / "fine_tuned_en-x", "En-X")
    plot = _plot(zs_asr, ft_asr, out / "results" / "demo_multi_wer.png")
    wall = time.perf_counter() - t0

    def row(name: str, table: dict, langs: tuple[str, ...], cond: str) -> str:
        cells = " | ".join(f"{table[(lang, cond)]:.1f}" for lang in langs)
        non_en = [lang for lang in langs if lang != "en"]
        return f"| {name} | {cells} | {average(table, tuple(non_en), cond):.1f} | {average(table, langs, cond):.1f} |"

    lines = ["", f"| {args.model}, WER % (muavic normaliser) | " + " | ".join(LANGS) + " | Avg non-En | Avg all |",
             "|---" * (len(LANGS) + 3) + "|"]
    for name, table in (("zero-shot", zs_asr), ("fine-tuned multi-all", ft_asr)):
        for cond, label in (("clean", "clean"), ("0", "0 dB babble")):
            lines.append(row(f"{name}, {label}", table, LANGS, cond))
    lines += ["", f"| {args.model}, En->X BLEU (sacrebleu 13a) | " + " | ".join(EN_X) + " | Avg non-En | Avg all |",
              "|---" * (len(EN_X) + 3) + "|"]
    for name, table in (("zero-shot", zs_bleu), ("fine-tuned En-X", ft_bleu)):
        for cond, label in (("clean", "clean"), ("0", "0 dB babble")):
            lines.append(row(f"{name}, {label}", table, EN_X, cond))
    zs_w, ft_w = average(zs_asr, LANGS, "0"), average(ft_asr, LANGS, "0")
    zs_b, ft_b = average(zs_bleu, EN_X, "0"), average(ft_bleu, EN_X, "0")
    ok = ft_w < zs_w and ft_b > zs_b
    lines += ["", "step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
              f"tables: {out / 'results' / 'results.md'}   plot: {plot}   TensorBoard: {out / 'logs'}",
              f"check: fine-tuned avg WER at 0 dB babble ({ft_w:.1f}) {'<' if ft_w < zs_w else 'NOT <'} zero-shot "
              f"({zs_w:.1f}); En->X BLEU ({ft_b:.1f}) {'>' if ft_b > zs_b else 'NOT >'} zero-shot ({zs_b:.1f})"
              f" -> {'pass' if ok else 'FAIL'}",
              f"zero_shot_avg_wer={zs_w:.2f} finetuned_avg_wer={ft_w:.2f} en_x_bleu={ft_b:.2f} wall_s={wall:.0f}"]
    return (0 if ok else 1), lines


def _plot(zs: dict, ft: dict, path: Path) -> Path:
    """Per-language WER at clean and 0 dB babble, zero-shot vs fine-tuned (WER against SNR per language)."""
    plt, fig, axes = new_figure((10, 3.6))
    plt.close(fig)
    fig, axes = plt.subplots(1, len(LANGS), figsize=(13, 3.2), sharey=True)
    for ax, lang in zip(axes, LANGS):
        for name, table, style in (("zero-shot", zs, "o--"), ("fine-tuned", ft, "s-")):
            ys = [table.get((lang, c)) for c in ("0", "clean")]
            ax.plot([0, 1], [float("nan") if y is None else y for y in ys], style, label=name)
        ax.set_xticks([0, 1], ["0 dB", "clean"])
        ax.set_title(lang)
    axes[0].set_ylabel("WER (%)")
    axes[-1].legend(fontsize=7)
    fig.suptitle("multilingual babble: WER against SNR per language")
    return save_figure(plt, fig, path)
