"""``whisper-flamingo extract-tag-features``: Whisper-AT's training features, once, into resumable shards.

The reference's research extraction (audio_tagging.md §1.2): each clip is cut or zero-padded to
``--clip-seconds`` (10 s), its log-mel (1000 frames) goes through the frozen Whisper encoder with the
positional table sliced to its length (our encoder takes any length), the output of every block before
``ln_post`` is mean-pooled by 20 along time: ``[L, 25, D]`` per clip, stored as float16.

Layout of ``--out`` (read by :class:`whisper_flamingo.data.tagging.FeatureStore`): ``features.json``
(model and settings; a later run with other settings is refused), then ``shard-NNNNN.npy``
(``[n, L, T, D]``) and ``shard-NNNNN.json`` (``{"keys": [...], "bad": [...]}``).  Both are written to
temporary names and renamed, the ``.json`` last, so a shard exists only once complete.

Resume: a run extracts only the clips not yet in a complete shard and appends new shards after the
last one, so a killed run (or one given more lists later) continues without duplicates or gaps; the
clips of a shard that was being written when the run died are simply extracted again.  A clip is
keyed by its file name without extension (as Whisper-AT's loader); two different files with one key
are an error.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from whisper_flamingo.data.tagging import AUDIOSET_LABELS, SHARD_GLOB, TagRecord, read_label_csv, read_tagging_list
from whisper_flamingo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

META_FILE = "features.json"
FORMAT_VERSION = 1
POOL = 20

#: ``tap(model, mel [B, n_mels, T]) -> [B, L, T/2, D]``: every encoder block's output before ln_post
Tap = Callable[[nn.Module, torch.Tensor], torch.Tensor]


def block_outputs(model: nn.Module, mel: torch.Tensor) -> torch.Tensor:
    """The output of every encoder block (before ``ln_post``), stacked: ``[B, L, T', D]``.

    The model's own tap (``embed_audio_layers``, the one transcription with tags uses), else forward hooks."""
    if hasattr(model, "embed_audio_layers"):
        return model.embed_audio_layers(mel)[1]
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda _m, _i, o: outs.append(o)) for b in model.encoder.blocks]
    try:
        model.encoder(mel)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(outs, dim=1)


def pool_time(x: torch.Tensor, pool: int = POOL) -> torch.Tensor:
    """Non-overlapping mean over ``pool`` steps of axis -2 (an incomplete last group is dropped)."""
    t = x.shape[-2] // pool * pool
    return x[..., :t, :].reshape(*x.shape[:-2], t // pool, pool, x.shape[-1]).mean(-2)


def clip_mel(path: str, clip_samples: int, n_mels: int) -> torch.Tensor:
    """Log-mel of a clip cut or zero-padded to ``clip_samples``."""
    from whisper_flamingo.data.audio import load_audio, log_mel, pad_or_trim, to_unit_range

    return log_mel(pad_or_trim(to_unit_range(load_audio(path)), clip_samples), n_mels)


@dataclass
class ExtractInfo:
    out: Path
    extracted: int
    reused: int
    bad: int
    shards: int


def stored_keys(out: Path) -> tuple[set[str], int]:
    """Keys (and bad keys) of the complete shards in ``out``, and the next shard number."""
    keys: set[str] = set()
    last = -1
    for meta in sorted(out.glob(SHARD_GLOB)):
        data = json.loads(meta.read_text(encoding="utf-8"))
        keys.update(data["keys"])
        keys.update(k for k, _ in data.get("bad", []))
        last = max(last, int(meta.stem.split("-")[1]))
    return keys, last + 1


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _check_meta(out: Path, meta: dict) -> None:
    path = out / META_FILE
    if path.is_file():
        have = json.loads(path.read_text(encoding="utf-8"))
        diff = [k for k in meta if have.get(k) != meta[k]]
        if diff:
            raise ConfigError(f"{path}: features there were extracted with {diff[0]}={have.get(diff[0])!r}, this run "
                              f"has {meta[diff[0]]!r}; use another --out")
    else:
        out.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, json.dumps(meta, indent=1).encode())


def unique_records(records: Sequence[TagRecord]) -> list[TagRecord]:
    """One record per key, in order; one key for two different files is a ConfigError."""
    seen: dict[str, TagRecord] = {}
    for r in records:
        old = seen.get(r.key)
        if old is not None and Path(old.wav).resolve() != Path(r.wav).resolve():
            raise ConfigError(f"{r.where}: clip key {r.key!r} ({r.wav}) is also {old.wav} ({old.where}); features are "
                              "keyed by file name, so give the files distinct names")
        seen.setdefault(r.key, r)
    return list(seen.values())


def extract_features(records: Sequence[TagRecord], model: nn.Module, out: str | Path, *, model_id: str,
                     clip_seconds: float = 10.0, shard_size: int = 256, batch_size: int = 8,
                     on_bad_sample: str = "error", progress: bool = True, tap: Tap = block_outputs,
                     device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ExtractInfo:
    """Extract the clips of ``records`` not yet stored in ``out`` (module doc)."""
    out = Path(out)
    clip_samples = int(round(clip_seconds * 16000))
    n_mels = int(model.dims.n_mels)
    _check_meta(out, {"format": FORMAT_VERSION, "model": model_id, "clip_seconds": float(clip_seconds),
                      "pool": POOL, "layers": "blocks before ln_post"})
    records = unique_records(records)
    done, shard_no = stored_keys(out)
    todo = [r for r in records if r.key not in done]
    info = ExtractInfo(out, 0, len(records) - len(todo), 0, 0)
    bar = tqdm(total=len(records), initial=info.reused, desc="features", unit="clip", disable=not progress)
    model.eval()
    for s in range(0, len(todo), shard_size):
        chunk = todo[s:s + shard_size]
        feats, keys, bad = [], [], []
        for b in range(0, len(chunk), batch_size):
            mels, batch_keys = [], []
            for r in chunk[b:b + batch_size]:
                try:
                    mels.append(clip_mel(r.wav, clip_samples, n_mels))
                    batch_keys.append(r.key)
                except DataError as err:
                    if on_bad_sample == "error":
                        raise DataError(f"{err} ({r.where}); fix the clip or pass --on-bad-sample skip",
                                        reason=err.reason) from None
                    log.warning("skipping %s (%s): %s", r.wav, err.reason, err)
                    bad.append((r.key, err.reason))
            if mels:
                with torch.no_grad():
                    x = tap(model, torch.stack(mels).to(device=device, dtype=dtype))
                    feats.append(pool_time(x.float()).to(torch.float16).cpu().numpy())
                keys += batch_keys
            bar.update(len(chunk[b:b + batch_size]))
        name = f"shard-{shard_no:05d}"
        arr = np.concatenate(feats) if feats else np.zeros((0,), np.float16)
        buf = io.BytesIO()
        np.save(buf, arr)
        _atomic_write(out / f"{name}.npy", buf.getvalue())
        _atomic_write(out / f"{name}.json", json.dumps({"keys": keys, "bad": bad}).encode())
        info.extracted += len(keys)
        info.bad += len(bad)
        info.shards += 1
        shard_no += 1
    bar.close()
    return info


EXAMPLES = """examples:
  whisper-flamingo extract-tag-features --list data/tag/train.json data/tag/valid.json --out feats/tiny.en
  whisper-flamingo extract-tag-features --list audioset_bal.json --model base --out feats/base --batch-size 16
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--list", nargs="+", required=True, dest="lists",
                        help="JSON data lists ({\"data\": [{\"wav\", \"labels\"}]}) whose clips to extract")
    parser.add_argument("--model", default="tiny.en", help="Whisper name or path (default: tiny.en)")
    parser.add_argument("--download-root", default="models", help="where Whisper .pt files are looked for")
    parser.add_argument("--out", required=True, help="feature folder (the config's feature_dir)")
    parser.add_argument("--label-csv", default=str(AUDIOSET_LABELS), help="label CSV the lists use (default AudioSet)")
    parser.add_argument("--clip-seconds", type=float, default=10.0, help="cut/pad every clip to this (default 10)")
    parser.add_argument("--batch-size", type=int, default=8, help="clips per encoder pass (default 8)")
    parser.add_argument("--shard-size", type=int, default=256, help="clips per shard (default 256)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:1, ... "
                                                          "(default: auto)")
    parser.add_argument("--on-bad-sample", choices=["error", "skip"], default="error",
                        help="error: stop at an unreadable clip; skip: log, count and go on")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from whisper_flamingo.checkpoints import load_whisper

    if args.shard_size < 1 or args.batch_size < 1 or args.clip_seconds <= 0:
        raise ConfigError("--shard-size and --batch-size must be >= 1 and --clip-seconds > 0")
    labels = read_label_csv(args.label_csv)
    records = [r for lst in args.lists for r in read_tagging_list(lst, labels)]
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    model = load_whisper(args.model, download_root=args.download_root).to(device)
    info = extract_features(records, model, args.out, model_id=str(args.model), clip_seconds=args.clip_seconds,
                            shard_size=args.shard_size, batch_size=args.batch_size, on_bad_sample=args.on_bad_sample,
                            progress=not args.no_progress, device=device)
    print(f"features in {info.out}: {info.extracted} extracted, {info.reused} already there, "  # noqa: T201
          f"{info.bad} bad clips skipped, {info.shards} new shards")
    return 0
