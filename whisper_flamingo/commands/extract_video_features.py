"""``whisper-flamingo extract-video-features``: run a frozen video encoder once, keep its features.

For every utterance of the selected manifests (``--lang``/``--task``/``--split`` as in training) the lip
video is read with the evaluation transform (centre 88x88 crop), trimmed to the audio duration and
encoded by AV-HuBERT (or the ResNet front end, ``--encoder resnet``) in eval mode; the output
``(T, D)`` is written as float16 ``<out>/<utterance id>.npy`` (ids with ``/`` become sub-folders; read
with :func:`whisper_flamingo.data.video.load_video_features`).  A stage-2 run with
``video_feature_dir: <out>`` then skips the video encoder.

Differences from running the encoder during training: no random crop / flip augmentation and no
train-mode dropout or batch-norm statistic updates (the original kept a frozen AV-HuBERT in train
mode).  Utterances are encoded one at a time by default, so a feature never depends on its batch.

Resumable: existing feature files are skipped; ``<out>/video_features.json`` records the encoder and
the run refuses to add features from a different encoder to the same folder.  The same id in several
manifests (e.g. the En-X sets, which share the English videos) is encoded once; the same id naming two
different videos is an error (use one ``--out`` per language then).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from pathlib import Path

import torch
from tqdm import tqdm

from whisper_flamingo.data.manifest import Record, manifest_spec, read_manifest, resolve_selection
from whisper_flamingo.data.video import (
    collate_video,
    load_video,
    resolve_video_path,
    save_video_features,
    video_feature_path,
)
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.models.resnet import ResEncoder

log = logging.getLogger(__name__)

META_FILE = "video_features.json"
FORMAT_VERSION = 1


EXAMPLES = """examples:
  whisper-flamingo extract-video-features --muavic-root . --lang en --split test valid \\
      --video-model-ckpt models/large_noise_pt_noise_ft_433h_only_weights.pt --out features/en
  whisper-flamingo extract-video-features --muavic-root data/synthetic --lang en --encoder resnet \\
      --video-model-ckpt runs/av/last.ckpt --out features/synthetic --device cpu
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--muavic-root", required=True, help="folder holding muavic/ (as muavic_root)")
    parser.add_argument("--lang", default="en", help="data selection as the lang key (en, es, multi-all, "
                                                     "multi_en-st, lrs2, ...; default en)")
    parser.add_argument("--task", default="auto", help="auto, transcribe, En-X or X-En (as whisper_task in a config)")
    parser.add_argument("--split", nargs="+", default=["test"], choices=["train", "valid", "test"],
                        help="split(s) to extract (default: test)")
    parser.add_argument("--lrs2-root", default="", help="LRS2 folder (for --lang lrs2)")
    parser.add_argument("--video-model-ckpt", required=True,
                        help="AV-HuBERT checkpoint (fairseq file or a Whisper-Flamingo .pt holding one)")
    parser.add_argument("--mode", choices=["auto", "finetuned", "pretrained"], default="auto",
                        help="AV-HuBERT code path (default: detected from the checkpoint)")
    parser.add_argument("--encoder", choices=["avhubert", "resnet"], default="avhubert",
                        help="avhubert (default) or the ResNet-18 front end alone (use_av_hubert_encoder: false)")
    parser.add_argument("--out", required=True, help="output folder (= video_feature_dir)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                        help="compute dtype of the encoder (features are stored as float16 either way)")
    parser.add_argument("--batch-size", type=int, default=1,
                        help="utterances per forward pass (default 1: features independent of batching; "
                             "larger batches zero-pad, which slightly changes the last frames)")
    parser.add_argument("--on-bad-sample", choices=["error", "skip"], default="error",
                        help="error: stop at the first unusable video; skip: log it and go on")
    parser.add_argument("--limit", type=int, default=0, help="only the first N utterances (0 = all)")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_encoder(ckpt: str, encoder: str = "avhubert", mode: str = "auto") -> tuple[torch.nn.Module, dict]:
    """The eval-mode video encoder and the metadata identifying it."""
    from whisper_flamingo.checkpoints import load_avhubert, load_resencoder

    if encoder == "resnet":
        model = load_resencoder(ckpt)
        meta = {"encoder": "resnet", "mode": None, "dim": model.out_dim}
    else:
        model = load_avhubert(ckpt, mode=None if mode == "auto" else mode)
        meta = {"encoder": "avhubert", "mode": model.mode, "dim": model.out_dim,
                "layers": model.config.encoder_layers}
    meta["video_model_ckpt"] = str(Path(ckpt).resolve())
    return model.eval(), meta


def select_records(args: argparse.Namespace) -> list[Record]:
    """Records of the selected manifests, each id once (see the module doc)."""
    sel = resolve_selection(args.lang, args.task, reduce_val=0)
    records: list[Record] = []
    seen: dict[str, str] = {}
    for split in args.split:
        for lang in sel.langs:
            spec = manifest_spec(sel, lang, split, args.muavic_root, args.lrs2_root)
            for rec in read_manifest(spec, args.on_bad_sample, need_video=True):
                video = resolve_video_path(rec.video_path, rec.audio_path)
                first = seen.get(rec.id)
                if first is None:
                    seen[rec.id] = video
                    rec.video_path = video
                    records.append(rec)
                elif os.path.normpath(first) != os.path.normpath(video):
                    raise DataError(f"utterance id {rec.id!r} names two videos ({first} and {video}); "
                                    "extract each language into its own --out folder",
                                    reason="duplicate_id", path=rec.tsv_path, line=rec.line)
    return records


def _check_meta(out: Path, meta: dict) -> None:
    path = out / META_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(f"{path}: unreadable ({err}); delete it (and the features) or use another "
                              "--out") from None
        keys = ("encoder", "mode", "dim", "video_model_ckpt")
        if any(old.get(k) != meta.get(k) for k in keys):
            diff = ", ".join(f"{k} {old.get(k)!r} vs {meta.get(k)!r}" for k in keys if old.get(k) != meta.get(k))
            raise ConfigError(f"{path}: features in this folder come from another video encoder ({diff}); "
                              "use another --out or delete the folder")
        return
    out.mkdir(parents=True, exist_ok=True)
    info = dict(meta, format_version=FORMAT_VERSION, dtype="float16", fps=25,
                transform="centre 88x88 crop, (x/255 - 0.421) / 0.165, trimmed to round(n_samples/640) frames")
    path.write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")


def extract(records: list[Record], model: torch.nn.Module, out: Path, device: torch.device,
            dtype: torch.dtype = torch.float32, batch_size: int = 1, on_bad_sample: str = "error"
            ) -> tuple[int, int, Counter]:
    """Encode and write the records whose feature file is missing; ``(written, existing, skipped)``."""
    todo = [r for r in records if not video_feature_path(out, r.id).is_file()]
    existing = len(records) - len(todo)
    if existing:
        log.info("%d of %d utterances already have features in %s (skipped)", existing, len(records), out)
    todo.sort(key=lambda r: r.n_samples)  # similar lengths together when batching
    model = model.to(device=device, dtype=dtype).eval()
    skipped: Counter = Counter()
    written = 0
    bar = tqdm(total=len(todo), desc="video features", unit="utt")
    for start in range(0, len(todo), max(1, batch_size)):
        batch = todo[start: start + max(1, batch_size)]
        clips, kept = [], []
        for rec in batch:
            try:
                clips.append(load_video(rec.video_path, rec.n_samples))
                kept.append(rec)
            except DataError as err:
                if on_bad_sample == "error":
                    raise DataError(f"{err} (row {rec.id} of {rec.where})", reason=err.reason) from None
                skipped[err.reason] += 1
                log.warning("skipping %s (%s): %s", rec.id, err.reason, err)
        if kept:
            video, mask = collate_video(clips)
            video, mask = video.to(device=device, dtype=dtype), mask.to(device)
            with torch.inference_mode():
                if isinstance(model, ResEncoder):  # the front end takes no padding mask
                    feats = model(video)
                else:
                    feats = model(video, mask if len(kept) > 1 else None)
            for rec, clip, f in zip(kept, clips, feats):
                save_video_features(out, rec.id, f[: clip.shape[0]])
                written += 1
        bar.update(len(batch))
    bar.close()
    return written, existing, skipped


def run(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    out = Path(args.out)
    records = select_records(args)
    if args.limit:
        records = records[: args.limit]
    if not records:
        raise ConfigError(f"no utterances selected (lang {args.lang}, split {' '.join(args.split)}); check "
                          "--muavic-root / --lang / --split")
    model, meta = load_encoder(args.video_model_ckpt, args.encoder, args.mode)
    _check_meta(out, meta)
    dtype = getattr(torch, args.dtype)
    written, existing, skipped = extract(records, model, out, _device(args.device), dtype, args.batch_size,
                                         args.on_bad_sample)
    extra = f", {sum(skipped.values())} skipped {dict(skipped)}" if skipped else ""
    print(f"wrote {written} feature files to {out} ({existing} already there{extra})")  # noqa: T201
    return 0
