"""``whisper-flamingo demo-tag``: Whisper-AT end to end on generated data, offline, on a CPU.

1. ``prepare synthetic-tagging``: 10-s clips mixing eSpeak speech with generated sounds, AudioSet labels;
2. ``extract-tag-features``: frozen ``tiny.en`` encoder layers, pooled to ``[4, 25, 384]`` per clip;
3. ``train config/tagging/whisper_at_demo.yaml``: a TL-TR head (weight-averaged over its last epochs) over the 8
   classes the set uses (``class_labels_used.csv``: a 527-way BCE learns them far more slowly than a CPU demo
   allows), then expanded to the 527 AudioSet outputs (the trained rows at their AudioSet indices, every other
   class a constant logit of -30), so the head works with ``transcribe`` / ``parse_at_label``;
4. mAP on the held-out eval split (classes present there; voices unseen in training);
5. ``transcribe(..., at_head=head, at_time_res=10)`` of ``../shared/data/jfk.flac`` and its top tag per
   10-s segment.

Finished steps are reused when run again (``--fresh`` starts over).  The head is left at
``<out>/at_head.pt`` (``TLTR.from_checkpoint`` loads it).  Last line:
``map=<x> jfk_top1=<label> wall_s=<y>``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from whisper_flamingo.commands.demo import ROOT, _cli, output_dir
from whisper_flamingo.errors import WFError

log = logging.getLogger(__name__)

DEMO_CONFIG = ROOT / "config" / "tagging" / "whisper_at_demo.yaml"
JFK = ROOT.parent / "shared" / "data" / "jfk.flac"


EXAMPLES = """examples:
  whisper-flamingo demo-tag
  whisper-flamingo demo-tag --out demo_out_tag --fresh
  whisper-flamingo demo-tag --steps 300 --model base
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo_out_tag", help="output folder (default: demo_out_tag)")
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="training config (default: whisper_at_demo.yaml)")
    parser.add_argument("--seed", type=int, default=0, help="data and training seed (default: 0)")
    parser.add_argument("--train", type=int, default=240, help="training clips (default: 240)")
    parser.add_argument("--valid", type=int, default=40, help="validation clips (default: 40)")
    parser.add_argument("--eval", type=int, default=60, help="held-out evaluation clips (default: 60)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the config's)")
    parser.add_argument("--model", default="tiny.en", help="frozen Whisper (default: tiny.en)")
    parser.add_argument("--audio", default=str(JFK), help="clip to tag at the end (default: ../shared/data/jfk.flac)")
    parser.add_argument("--fresh", action="store_true", help="delete --out first and redo every step")


def _prepare(data: Path, args: argparse.Namespace) -> None:
    stamp = data / "tagging.json"
    want = {"seed": args.seed, "sizes": {"train": args.train, "valid": args.valid, "eval": args.eval}}
    have = json.loads(stamp.read_text()) if stamp.is_file() else {}
    if {k: have.get(k) for k in want} != want or not (data / "class_labels_used.csv").is_file():
        _cli(["prepare", "synthetic-tagging", "--out", str(data), "--seed", str(args.seed), "--train",
              str(args.train), "--valid", str(args.valid), "--eval", str(args.eval), "--no-progress"])
    else:
        log.info("reusing the tagging set in %s", data)


def expand_classes(head, labels, target, floor: float = -30.0):
    """A copy of TL-TR ``head`` (trained on ``labels``) with ``target``'s classes: the trained output rows at
    the target indices of their mids, other classes weight 0 and bias ``floor``."""
    import dataclasses

    import torch

    from whisper_flamingo.models.whisper_at import TLTR

    big = TLTR(dataclasses.replace(head.cfg, label_dim=len(target))).eval()
    state = {k: v for k, v in head.state_dict().items() if not k.startswith("mlp_layer.1.")}
    weight = torch.zeros_like(big.mlp_layer[1].weight)
    bias = torch.full_like(big.mlp_layer[1].bias, floor)
    for i, mid in enumerate(labels.mids):
        j = target.index(mid)
        if j is None:
            raise WFError(f"{labels.path}: class {mid!r} is not in {target.path}")
        weight[j], bias[j] = head.mlp_layer[1].weight[i], head.mlp_layer[1].bias[i]
    big.load_state_dict({**state, "mlp_layer.1.weight": weight, "mlp_layer.1.bias": bias})
    return big


def run(args: argparse.Namespace) -> int:
    import torch

    from whisper_flamingo.checkpoints import load_whisper
    from whisper_flamingo.checkpoints.io import load_state_strict, read_checkpoint_file, strip_prefix
    from whisper_flamingo.checkpoints.whisper_at import save_tltr
    from whisper_flamingo.data.tagging import FeatureInput, multi_hot, read_label_csv, read_tagging_list
    from whisper_flamingo.decoding.tagging_metrics import tagging_metrics
    from whisper_flamingo.decoding.tags import parse_at_label
    from whisper_flamingo.decoding.transcribe import transcribe
    from whisper_flamingo.models.whisper_at import TLTR

    t0 = time.perf_counter()
    out = output_dir(args.out, args.fresh)
    data, feat, run_id = out / "data", out / "features", f"demo_{args.model}"
    timings: dict[str, float] = {}

    t = time.perf_counter()
    _prepare(data, args)
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    lists = [str(data / f"{s}.json") for s in ("train", "valid", "eval")]
    _cli(["extract-tag-features", "--list", *lists, "--model", args.model, "--out", str(feat), "--shard-size", "64"])
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    overrides = [f"data_train={lists[0]}", f"data_val={lists[1]}", f"data_eval={lists[2]}", f"feature_dir={feat}",
                 f"label_csv={data / 'class_labels_used.csv'}", f"log_output_dir={out / 'logs'}",
                 f"check_output_dir={out / 'checkpoints'}", f"train_id={run_id}", f"seed={args.seed}",
                 f"model_name={args.model}", "resume_training=true"]
    if args.steps:
        overrides.append(f"num_train_steps={args.steps}")
    _cli(["train", str(args.config), *overrides])
    timings["train"] = time.perf_counter() - t

    # the trained head: weight-averaged when the config averages, else the last step's
    ckpt = out / "checkpoints" / run_id
    from whisper_flamingo.config import load_config
    from whisper_flamingo.models.registry import create

    cfg = load_config(args.config, overrides)
    used = read_label_csv(cfg.label_csv)
    head = create(cfg.tagging_model, label_dim=len(used))
    if (ckpt / "head_wa.pt").is_file():
        load_state_strict(head, read_checkpoint_file(ckpt / "head_wa.pt"), str(ckpt / "head_wa.pt"))
    else:
        state = read_checkpoint_file(ckpt / "last.ckpt")["state_dict"]
        load_state_strict(head, strip_prefix(state, "model.", keep_others=False), str(ckpt / "last.ckpt"))
    head_path = save_tltr(expand_classes(head.eval(), used, read_label_csv()), out / "at_head.pt")
    head = TLTR.from_checkpoint(head_path)

    t = time.perf_counter()
    labels = read_label_csv(data / "class_labels_indices.csv")
    records = read_tagging_list(lists[2], labels)
    loader = FeatureInput(str(feat))
    with torch.no_grad():
        scores = torch.cat([head(torch.stack([loader.load(r) for r in records[i:i + 32]]))
                            for i in range(0, len(records), 32)]).numpy()
    targets = [multi_hot(r.labels, len(labels)) for r in records]
    import numpy as np

    m = tagging_metrics(scores, np.stack(targets))
    timings["eval"] = time.perf_counter() - t

    t = time.perf_counter()
    if not Path(args.audio).is_file():
        raise WFError(f"{args.audio}: audio to tag not found; pass --audio PATH")
    whisper = load_whisper(args.model, download_root=str(out / "models"))
    result = transcribe(whisper, args.audio, at_head=head, at_time_res=10)
    segments = parse_at_label(result, top_k=3)
    timings["tag"] = time.perf_counter() - t

    wall = time.perf_counter() - t0
    lines = ["", f"held-out eval ({len(records)} clips, {int(m['classes'])} classes present): mAP {m['mAP']:.3f}  "
             f"mAUC {m['mAUC']:.3f}  d' {m['dprime']:.2f}", f"{args.audio}: {result['text'].strip()}"]
    for seg in segments:
        tags = ", ".join(f"{name} {logit:.2f}" for name, logit in seg["audio tags"])
        lines.append(f"  [{seg['time']['start']:g}s-{seg['time']['end']:g}s] {tags}")
    tops = [seg["audio tags"][0][0] if seg["audio tags"] else "-" for seg in segments]
    ok = m["mAP"] >= 0.9 and all(top == "Speech" for top in tops)
    lines += ["step times: " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
              f"head: {head_path}   TensorBoard: {out / 'logs'}",
              f"check: held-out mAP >= 0.9 and Speech on top of every segment: {'yes' if ok else 'NO'}",
              f"map={m['mAP']:.3f} jfk_top1={tops[0].replace(' ', '_')} wall_s={wall:.0f}"]
    sys.stdout.write("\n".join(lines) + "\n")
    sys.stdout.flush()
    return 0 if ok else 1
