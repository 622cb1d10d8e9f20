"""``whisper-flamingo demo-av``: stage 1 and stage 2 (Whisper-Flamingo) on generated data, on a CPU.

1. generate the synthetic audio-visual corpus (eSpeak NG speech + drawn talking mouths, babble);
2. convert the real pretrained ``tiny.en``;
3. stage 1: fine-tune it with noise (``config/audio/demo.yaml``);
4. lip reading: train a small AV-HuBERT from scratch on the lip videos alone with a byte-level CTC loss
   (``task: vsr``, ``config/audio-visual/demo_vsr.yaml``);
5. stage 2: freeze Whisper and that lip reader and train the gated cross-attention layers
   (``config/audio-visual/demo.yaml``), as the original's English models freeze an AV-HuBERT fine-tuned
   for lip reading;
6. decode the test set at clean, 0 dB and -5 dB babble: the stage-1 model (audio, the model a user
   has without video), and the stage-2 model with the video (``avsr``) and, for reference, with the
   video zeroed (``asr``, the original's ``test_a``);
7. print the WER table, write Markdown/CSV tables and a WER-vs-SNR plot, and check that at -5 dB
   babble the audio-visual WER is at most ``--target`` (0.85) times the stage-1 model's.

Tune ``config/audio-visual/demo.yaml`` on the valid split (``whisper-flamingo decode --split valid``);
the check reads only the test split.  Finished steps are
reused when run again (``--fresh`` starts over).  The last line is
``audio_wer_m5db=<x> av_wer_m5db=<y> wall_s=<z>`` (audio = the stage-1 model).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from whisper_flamingo.commands.demo import (
    ROOT,
    _cli,
    _wer,
    convert_model,
    new_figure,
    output_dir,
    prepare_corpus,
    save_figure,
    train_stage,
)

log = logging.getLogger(__name__)

STAGE1_CONFIG = ROOT / "config" / "audio" / "demo.yaml"
STAGE2_CONFIG = ROOT / "config" / "audio-visual" / "demo.yaml"
VSR_CONFIG = ROOT / "config" / "audio-visual" / "demo_vsr.yaml"
SNRS = ("1000", "0", "-5")
SNR_NAMES = {"1000": "clean", "0": "0 dB babble", "-5": "-5 dB babble"}


EXAMPLES = """examples:
  whisper-flamingo demo-av                              # stage 1 + stage 2 in demo_out_av/
  whisper-flamingo demo-av --stage1-steps 50 --stage2-steps 50 --fresh
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out_av", help="output folder (default: demo_out_av)")
    parser.add_argument("--stage1-config", default=str(STAGE1_CONFIG),
                        help="stage-1 config (default: config/audio/demo.yaml)")
    parser.add_argument("--stage2-config", default=str(STAGE2_CONFIG),
                        help="stage-2 config (default: config/audio-visual/demo.yaml)")
    parser.add_argument("--vsr-config", default=str(VSR_CONFIG),
                        help="lip-reading config (default: config/audio-visual/demo_vsr.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and training seed (default: 0)")
    parser.add_argument("--train", type=int, default=2400, help="training utterances (default: 2400)")
    parser.add_argument("--valid", type=int, default=40, help="validation utterances (default: 40)")
    parser.add_argument("--test", type=int, default=60, help="test utterances (default: 60)")
    parser.add_argument("--stage1-steps", type=int, default=None, help="stage-1 steps (default: the config's)")
    parser.add_argument("--vsr-steps", type=int, default=None, help="lip-reading steps (default: the config's)")
    parser.add_argument("--stage2-steps", type=int, default=None, help="stage-2 steps (default: the config's)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes (default: 2)")
    parser.add_argument("--model", default="tiny.en", help="pretrained model name (default: tiny.en)")
    parser.add_argument("--target", type=float, default=0.85,
                        help="pass when the audio-visual WER at -5 dB <= target x the stage-1 model's (default: 0.85)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and redo every step")


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = output_dir(args.out, args.fresh)
    corpus, decode = out / "corpus", out / "decode"
    timings: dict[str, float] = {}

    t = time.perf_counter()
    babble_test = prepare_corpus(corpus, args.seed, args.train, args.valid, args.test, args.jobs)
    timings["corpus"] = time.perf_counter() - t
    t = time.perf_counter()
    model_pt = convert_model(out / "models", args.model)
    timings["convert"] = time.perf_counter() - t

    # stage 1: audio-only fine-tuning with noise
    t = time.perf_counter()
    stage1 = train_stage(args.stage1_config, out, corpus, model_pt, f"demo_{args.model}", args.seed,
                         args.stage1_steps)
    timings["stage 1"] = time.perf_counter() - t

    # lip reading: a small AV-HuBERT from scratch, byte CTC on the videos alone
    t = time.perf_counter()
    vsr = train_stage(args.vsr_config, out, corpus, model_pt, "demo_vsr_tiny", args.seed, args.vsr_steps)
    timings["lip reading"] = time.perf_counter() - t

    # stage 2: Whisper and the lip reader frozen; the gated cross-attention layers learn
    t = time.perf_counter()
    stage2 = train_stage(args.stage2_config, out, corpus, model_pt, f"demo_flamingo_{args.model}", args.seed,
                         args.stage2_steps, [f"pt_ckpt={stage1}", f"video_model_ckpt={vsr}"])
    timings["stage 2"] = time.perf_counter() - t

    # decoding: clean, 0 dB and -5 dB babble
    t = time.perf_counter()
    common = ["--lang", "en", "--muavic-root", str(corpus), "--noise-snr", *SNRS, "--noise-fn", str(babble_test),
              "--beam-size", "1", "--fp16", "0", "--normalizer", "fairseq", "--model-type", args.model,
              "--overwrite", "--runaway-guard"]
    runs = {"stage 1, audio (asr)": (decode / "stage1", stage1, "asr"),
            "stage 2, video zeroed (asr)": (decode / "stage2", stage2, "asr"),
            "stage 2, audio-visual (avsr)": (decode / "stage2", stage2, "avsr")}
    _cli(["decode", "--checkpoint-path", str(stage1), "--decode-path", str(decode / "stage1"),
          "--modalities", "asr", *common])
    _cli(["decode", "--checkpoint-path", str(stage2), "--decode-path", str(decode / "stage2"),
          "--modalities", "asr", "avsr", "--av_fusion", "separate", *common])
    timings["decode"] = time.perf_counter() - t

    from whisper_flamingo.decoding.results import write_results

    write_results([decode / "stage1", decode / "stage2"], out / "results")
    rows: dict[str, dict[str, float]] = {}
    for name, (d, _, modality) in runs.items():
        rows[name] = {snr: _wer(next(p for p in d.rglob(f"{modality}/snr-{snr}") if p.is_dir())) for snr in SNRS}
    plot = _plot(rows, out / "results" / "demo_av_wer.png")
    wall = time.perf_counter() - t0
    header = " | ".join(SNR_NAMES[s] for s in SNRS)
    lines = ["", f"| {args.model} on the synthetic test set, WER % (fairseq normaliser) | {header} |",
             "|---|" + "---|" * len(SNRS)]
    lines += [f"| {name} | " + " | ".join(f"{r[s]:.1f}" for s in SNRS) + " |" for name, r in rows.items()]
    lines += ["", "step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
              f"tables: {out / 'results' / 'results.md'}   plot: {plot}   TensorBoard: {out / 'logs'}"]
    ok, line, audio, av = check(rows, args.target)
    lines.append(line)
    lines.append(f"audio_wer_m5db={audio:.2f} av_wer_m5db={av:.2f} wall_s={wall:.0f}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0 if ok else 1


def check(rows: dict[str, dict[str, float]], target: float) -> tuple[bool, str, float, float]:
    """``(passed, message, stage-1 WER, audio-visual WER)`` at -5 dB babble: the stage-2 ``avsr`` WER must
    be at most ``target`` x the stage-1 audio model's (not the stage-2 model with its video zeroed)."""
    audio, av = rows["stage 1, audio (asr)"]["-5"], rows["stage 2, audio-visual (avsr)"]["-5"]
    zeroed = rows["stage 2, video zeroed (asr)"]["-5"]
    ok = av <= target * audio
    ratio = av / audio if audio else float("nan")
    line = (f"check: audio-visual WER at -5 dB babble ({av:.1f}) is {ratio:.2f} x the stage-1 audio model's "
            f"({audio:.1f}; target <= {target:.2f}: {'met' if ok else 'NOT met'}; stage 2 with the video zeroed "
            f"{zeroed:.1f})")
    return ok, line, audio, av


def _plot(rows: dict[str, dict[str, float]], path: Path) -> Path:
    xs = [float(s) if s != "1000" else 5.0 for s in SNRS]
    plt, fig, ax = new_figure((5.8, 3.8))
    for name, r in rows.items():
        ax.plot(xs, [r[s] for s in SNRS], marker="o", label=name)
    ax.set_xticks(xs, [SNR_NAMES[s].replace(" babble", "") for s in SNRS])
    ax.set_xlabel("babble SNR")
    ax.set_ylabel("WER (%)")
    ax.set_title("Whisper-Flamingo demo: test WER vs noise")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(plt, fig, path)
