"""Sound-tagging data shared by Whisper-AT, AST and SAT: label CSVs, JSON data lists, balanced weights,
pre-extracted feature shards, the tagging dataset (mixup, label smoothing, masking) and its batches.

* Label CSV (``index,mid,display_name``; AudioSet's 527 rows ship as
  :data:`AUDIOSET_LABELS`): :func:`read_label_csv`.
* Data lists (AST / Whisper-AT JSON): ``{"data": [{"wav": PATH, "labels": "mid1,mid2"}, ...]}``:
  :func:`read_tagging_list`; an empty list or a ``mid`` missing from the CSV is a one-line
  :class:`DataError` naming the list file and the entry.
* Balanced ("PSLA") weights (reference §0.4): class weight ``1000 / (count + 0.01)``, clip weight the
  **sum** over its labels, :func:`balanced_weights`; :func:`write_weight_file` writes them like
  ``gen_weight_file.py`` (``<list without .json>_weight.csv``, one float per line).
* Feature shards (Whisper-AT's pre-extracted encoder features): :class:`FeatureStore` reads what
  :mod:`whisper_flamingo.data.tagging_features` writes.
* Input kinds: the seam between a model family and its input.  A kind is a factory
  ``kind(cfg) -> InputLoader``; :data:`INPUT_KINDS` holds ``features`` (TL-TR: ``[L, 25, D]`` from the
  feature shards) and ``waveform`` (SAT: 16-kHz float audio); AST registers ``fbank``
  (:func:`register_input_kind`).  A loader's ``load(record)`` gives one clip's input tensor, its
  ``mix(a, b, lam)`` the mixup of two clips (default: linear in the input; AST mixes waveforms),
  its ``finish(x, train, rng)`` what follows the masking (AST: normalisation and noise; default nothing),
  its ``collate(list)`` the batch.
* :class:`TaggingDataset`: targets, feature-level mixup and label smoothing as the Whisper-AT recipe
  (§1.8), time/frequency masking on the last two axes; every random choice of a sample comes from
  ``SeedSequence([seed, epoch, index])``.  Bad clips follow ``on_bad_sample`` (error, or skip and
  count, as speech training).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from whisper_flamingo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: the 527-class AudioSet label index (the official ``class_labels_indices.csv``)
AUDIOSET_LABELS = Path(__file__).resolve().parent / "audioset_class_labels_indices.csv"


# ---------------------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelSet:
    """The classes of a label CSV, in index order."""

    path: str
    mids: tuple[str, ...]
    names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.mids)

    def index(self, mid: str) -> int | None:
        return self._lookup.get(mid)

    @property
    def _lookup(self) -> dict[str, int]:
        cache = self.__dict__.get("_cache")
        if cache is None:
            cache = {m: i for i, m in enumerate(self.mids)}
            object.__setattr__(self, "_cache", cache)
        return cache


def read_label_csv(path: str | Path = AUDIOSET_LABELS) -> LabelSet:
    """Read ``index,mid,display_name`` (header line; ``index`` must run 0..N-1)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("label CSV not found; set label_csv to an index,mid,display_name file", reason="missing_file",
                        path=p)
    mids, names = [], []
    with open(p, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or [c.strip() for c in rows[0][:3]] != ["index", "mid", "display_name"]:
        raise DataError("first line must be the header index,mid,display_name", path=p, line=1, reason="bad_header")
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 3 or not row[0].strip().isdigit() or int(row[0]) != len(mids):
            raise DataError(f"expected 'index,mid,display_name' with index {len(mids)}, got {','.join(row)!r}",
                            path=p, line=n, reason="column_count")
        mids.append(row[1].strip())
        names.append(row[2].strip())
    if not mids:
        raise DataError("label CSV has no classes", path=p, reason="empty_file")
    if len(set(mids)) != len(mids):
        dup = next(m for m in mids if mids.count(m) > 1)
        raise DataError(f"mid {dup!r} appears twice", path=p, reason="duplicate_label")
    return LabelSet(str(p), tuple(mids), tuple(names))


# ---------------------------------------------------------------------------------------------- data lists
@dataclass(frozen=True)
class TagRecord:
    """One clip of a data list: its audio path, class indices and where it was listed."""

    wav: str
    labels: tuple[int, ...]
    where: str  # "<list>: entry <n>"

    @property
    def key(self) -> str:
        """The feature key: the file name without extension (as Whisper-AT's feature loader)."""
        return Path(self.wav).stem


def read_tagging_list(path: str | Path, labels: LabelSet) -> list[TagRecord]:
    """Records of a ``{"data": [{"wav", "labels"}]}`` list; relative ``wav`` paths are taken relative to
    the list's folder.  Errors (one line, naming the list and the entry): unreadable JSON, no records,
    an entry without ``wav``/``labels``, a label ``mid`` missing from ``labels``."""
    p = Path(path)
    if not p.is_file():
        raise DataError("data list not found", reason="missing_file", path=p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"not a JSON data list ({err}); expected {{\"data\": [{{\"wav\", \"labels\"}}]}}",
                        reason="unreadable", path=p) from None
    items = data.get("data") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise DataError('expected a JSON object with a "data" list of {"wav", "labels"} records', path=p,
                        reason="unreadable")
    if not items:
        raise DataError('the "data" list is empty; give a list with at least one clip', path=p,
                        reason="empty_list")
    out = []
    for n, item in enumerate(items):
        where = f"{p}: entry {n}"
        if not isinstance(item, dict) or not isinstance(item.get("wav"), str) or \
                not isinstance(item.get("labels"), str):
            raise DataError(f"{where}: needs string fields 'wav' and 'labels' (comma-separated mids)",
                            reason="bad_entry")
        idx = []
        for mid in (m.strip() for m in item["labels"].split(",")):
            if not mid:
                continue
            i = labels.index(mid)
            if i is None:
                raise DataError(f"{where} ({item['wav']}): label {mid!r} is not in {labels.path}; fix the "
                                "entry or use the label CSV the list was made for", reason="unknown_label")
            idx.append(i)
        wav = Path(item["wav"])
        if not wav.is_absolute():
            wav = p.parent / wav
        out.append(TagRecord(str(wav), tuple(idx), where))
    return out


def multi_hot(labels: Sequence[int], n_classes: int) -> np.ndarray:
    y = np.zeros(n_classes, np.float32)
    y[list(labels)] = 1.0
    return y


# ---------------------------------------------------------------------------------------------- balanced sampling
def balanced_weights(records: Sequence[TagRecord], n_classes: int, offset: float = 0.01,
                     scale: float = 1000.0) -> np.ndarray:
    """Per-clip sampling weights (reference §0.4): class weight ``scale / (count + offset)``, clip weight the
    sum over its labels.  ``offset=0.01`` is AST / Whisper-AT, ``offset=100`` SAT."""
    counts = np.zeros(n_classes, np.float64)
    for r in records:
        for i in r.labels:
            counts[i] += 1
    class_w = scale / (counts + offset)
    return np.array([class_w[list(r.labels)].sum() for r in records], np.float64)


def weight_file_path(list_path: str | Path) -> Path:
    """``<list path without .json>_weight.csv`` (as gen_weight_file.py)."""
    s = str(list_path)
    return Path((s[:-5] if s.endswith(".json") else s) + "_weight.csv")


def write_weight_file(list_path: str | Path, weights: np.ndarray) -> Path:
    """One float per line next to the list; returns the path."""
    out = weight_file_path(list_path)
    out.write_text("".join(f"{float(w)!r}\n" for w in weights), encoding="utf-8")
    return out


class WeightedEpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys: a fresh permutation per epoch, or with ``weights`` draws with
    replacement in proportion to them (``WeightedRandomSampler(weights, num_samples or len(weights),
    replacement=True)``).  Deterministic in (seed, epoch); Lightning calls :meth:`set_epoch`."""

    def __init__(self, n: int, batch_size: int, *, weights: np.ndarray | None = None, num_samples: int = 0,
                 seed: int = 0, drop_last: bool = True) -> None:
        if n < 1 or batch_size < 1:
            raise ConfigError(f"a training list of {n} clips cannot give batches of {batch_size}")
        self.n, self.batch_size, self.seed, self.drop_last = n, int(batch_size), int(seed), drop_last
        self.weights = None if weights is None else np.asarray(weights, np.float64)
        self.num_samples = int(num_samples or n)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed % 2**63, self.epoch, 7])
        if self.weights is None:
            return rng.permutation(self.n)[: self.num_samples]
        p = self.weights / self.weights.sum()
        return rng.choice(self.n, size=self.num_samples, replace=True, p=p)

    def __len__(self) -> int:
        return self.num_samples // self.batch_size if self.drop_last else math.ceil(self.num_samples / self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        idx = self.indices()
        for s in range(0, len(idx), self.batch_size):
            chunk = idx[s:s + self.batch_size]
            if len(chunk) < self.batch_size and self.drop_last:
                return
            yield [(self.epoch, int(i)) for i in chunk]


# ---------------------------------------------------------------------------------------------- feature shards
SHARD_GLOB = "shard-*.json"


class FeatureStore:
    """Read-only view of a feature folder: ``shard-NNNNN.npy`` (float16 ``[n, L, T, D]``) with
    ``shard-NNNNN.json`` (``{"keys": [...]}``, written last: a shard without it does not exist)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DataError("feature folder not found; run `whisper-flamingo extract-tag-features` first",
                            reason="missing_file", path=self.folder)
        self.where: dict[str, tuple[Path, int]] = {}
        for meta in sorted(self.folder.glob(SHARD_GLOB)):
            keys = json.loads(meta.read_text(encoding="utf-8"))["keys"]
            for row, key in enumerate(keys):
                if key in self.where:
                    raise DataError(f"clip {key!r} is stored twice (also in {self.where[key][0].name}); "
                                    "re-extract into a new folder", path=meta, reason="duplicate_key")
                self.where[key] = (meta.with_suffix(".npy"), row)
        self._open: dict[Path, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, key: str) -> bool:
        return key in self.where

    def get(self, key: str) -> np.ndarray:
        if key not in self.where:
            raise DataError(f"no features for clip {key!r}; extract them (whisper-flamingo extract-tag-features) "
                            "or set on_bad_sample: skip", reason="missing_features", path=self.folder)
        path, row = self.where[key]
        arr = self._open.get(path)
        if arr is None:
            arr = self._open[path] = np.load(path, mmap_mode="r")
        return np.asarray(arr[row], dtype=np.float32)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the memory maps
        return {**self.__dict__, "_open": {}}


# ---------------------------------------------------------------------------------------------- input kinds
class InputLoader(ABC):
    """How one input kind reads, mixes and batches clips (see module doc); a kind defines :meth:`load`."""

    @abstractmethod
    def load(self, record: TagRecord) -> torch.Tensor:
        """One clip's input tensor."""

    def mix(self, a: TagRecord, b: TagRecord, lam: float) -> torch.Tensor:
        return lam * self.load(a) + (1.0 - lam) * self.load(b)

    def finish(self, x: torch.Tensor, train: bool, rng: np.random.Generator | None) -> torch.Tensor:
        """After masking (AST: normalisation, then Speech Commands' noise in training); default: ``x``."""
        return x

    def collate(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs) if inputs else torch.zeros(0)


class FeatureInput(InputLoader):
    """Pre-extracted Whisper features ``[L, T, D]``, zero-padded or cut to ``steps`` along time."""

    def __init__(self, feature_dir: str, steps: int = 25) -> None:
        if not feature_dir:
            raise ConfigError("key 'feature_dir' is empty but the tagging model reads Whisper features; set it to "
                              "the folder `whisper-flamingo extract-tag-features` wrote")
        self.store = FeatureStore(feature_dir)
        self.steps = steps

    def load(self, record: TagRecord) -> torch.Tensor:
        x = torch.from_numpy(self.store.get(record.key))
        t = x.shape[-2]
        if t > self.steps:
            return x[..., : self.steps, :].contiguous()
        if t < self.steps:
            return torch.nn.functional.pad(x, (0, 0, 0, self.steps - t))
        return x


class WaveformInput(InputLoader):
    """16-kHz float audio in [-1, 1], cut or zero-padded to ``seconds`` (batches are right-padded)."""

    def __init__(self, seconds: float = 10.0) -> None:
        self.samples = int(round(seconds * 16000)) if seconds else 0

    def load(self, record: TagRecord) -> torch.Tensor:
        from whisper_flamingo.data.audio import load_audio, to_unit_range

        x = torch.from_numpy(to_unit_range(load_audio(record.wav)))
        if self.samples:
            x = torch.nn.functional.pad(x[: self.samples], (0, max(0, self.samples - x.shape[0])))
        return x

    def mix(self, a: TagRecord, b: TagRecord, lam: float) -> torch.Tensor:
        xa, xb = self.load(a), self.load(b)
        xb = torch.nn.functional.pad(xb[: xa.shape[0]], (0, max(0, xa.shape[0] - xb.shape[0])))
        return lam * xa + (1.0 - lam) * xb

    def collate(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        n = max((x.shape[0] for x in inputs), default=0)
        return torch.stack([torch.nn.functional.pad(x, (0, n - x.shape[0])) for x in inputs]) if inputs \
            else torch.zeros(0, 0)


#: input kind -> factory(cfg) of its loader
INPUT_KINDS: dict[str, Callable[[Any], InputLoader]] = {
    "features": lambda cfg: FeatureInput(cfg.feature_dir),
    "waveform": lambda cfg: WaveformInput(cfg.audio_max_length / 16000),
}


def register_input_kind(name: str, factory: Callable[[Any], InputLoader]) -> None:
    """Add an input kind (e.g. AST's ``fbank``): ``factory(cfg)`` returns its :class:`InputLoader`."""
    INPUT_KINDS[name] = factory


# ---------------------------------------------------------------------------------------------- dataset
def smoothed_target(pos_a: Sequence[int], n_classes: int, smoothing: float, pos_b: Sequence[int] = (),
                    lam: float | None = None) -> np.ndarray:
    """Whisper-AT's targets: every class ``smoothing / C``; a non-mixed clip's positives *set* to
    ``1 - smoothing``; a mixed clip adds ``lam (1 - smoothing)`` to the first clip's positives and
    ``(1 - lam)(1 - smoothing)`` to the second's.  ``smoothing=0`` gives AST's ``lam y_a + (1 - lam) y_b``."""
    y = np.full(n_classes, smoothing / n_classes, np.float32)
    if lam is None:
        y[list(pos_a)] = 1.0 - smoothing
        return y
    y[list(pos_a)] += lam * (1.0 - smoothing)
    y[list(pos_b)] += (1.0 - lam) * (1.0 - smoothing)
    return y


def mask_axis(x: torch.Tensor, width_max: int, axis: int, rng: np.random.Generator) -> torch.Tensor:
    """torchaudio-style masking: width uniform in ``[0, width_max)``, start uniform, zeros on ``axis``
    (the same span over every other axis, e.g. all layers)."""
    if width_max <= 0:
        return x
    size = x.shape[axis]
    width = int(rng.random() * width_max)
    start = int(rng.random() * (size - width)) if size > width else 0
    if width == 0:
        return x
    x = x.clone()
    index = [slice(None)] * x.dim()
    index[axis] = slice(start, start + width)
    x[tuple(index)] = 0.0
    return x


@dataclass(frozen=True)
class BadClip:
    """A clip that could not be loaded (``on_bad_sample: skip``)."""

    key: str
    reason: str


class TaggingDataset(Dataset):
    """``(input, target)`` per clip (module doc).  ``train`` turns on mixup, smoothing and masking."""

    def __init__(self, records: Sequence[TagRecord], loader: InputLoader, n_classes: int, *, train: bool = False,
                 mixup: float = 0.0, label_smoothing: float = 0.0, timem: int = 0, freqm: int = 0, seed: int = 0,
                 on_bad_sample: str = "error") -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ConfigError(f"on_bad_sample: unknown value {on_bad_sample!r}; use error or skip")
        self.records, self.loader, self.n_classes = list(records), loader, int(n_classes)
        self.train, self.mixup, self.smoothing = bool(train), float(mixup), float(label_smoothing)
        self.timem, self.freqm, self.seed, self.on_bad_sample = int(timem), int(freqm), int(seed), on_bad_sample
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | BadClip:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (self.epoch, int(key))
        rec = self.records[index]
        try:
            return self._load(rec, epoch, index)
        except DataError as err:
            if self.on_bad_sample == "error":
                raise DataError(f"{err} ({rec.where})", reason=err.reason) from None
            log.warning("skipping bad clip %s (%s): %s", rec.wav, err.reason, err)
            return BadClip(rec.key, err.reason)

    def _load(self, rec: TagRecord, epoch: int, index: int) -> dict[str, Any]:
        if not self.train:
            x = self.loader.finish(self.loader.load(rec), False, None)
            y = multi_hot(rec.labels, self.n_classes)
            return {"input": x, "target": torch.from_numpy(y), "key": rec.key}
        mix_rng, mask_rng, finish_rng = (np.random.default_rng(s) for s in
                                         np.random.SeedSequence([self.seed % 2**63, epoch, index]).spawn(3))
        if self.mixup > 0 and len(self.records) > 1 and mix_rng.random() < self.mixup:
            other = self.records[int(mix_rng.integers(len(self.records)))]
            lam = float(mix_rng.beta(10.0, 10.0))
            x = self.loader.mix(rec, other, lam)
            y = smoothed_target(rec.labels, self.n_classes, self.smoothing, other.labels, lam)
        else:
            x = self.loader.load(rec)
            y = smoothed_target(rec.labels, self.n_classes, self.smoothing)
        if x.dim() >= 2:
            x = mask_axis(x, self.freqm, -1, mask_rng)
            x = mask_axis(x, self.timem, -2, mask_rng)
        x = self.loader.finish(x, True, finish_rng)
        return {"input": x, "target": torch.from_numpy(y), "key": rec.key}


@dataclass
class TagCollator:
    """Picklable collate: ``{"input", "target" [B, C], "keys", "bad": [(key, reason)]}``."""

    loader: InputLoader
    n_classes: int

    def __call__(self, items: Sequence[dict[str, Any] | BadClip]) -> dict[str, Any]:
        good = [it for it in items if isinstance(it, dict)]
        return {"input": self.loader.collate([it["input"] for it in good]),
                "target": torch.stack([it["target"] for it in good]) if good else torch.zeros(0, self.n_classes),
                "keys": [it["key"] for it in good],
                "bad": [(it.key, it.reason) for it in items if isinstance(it, BadClip)]}


__all__ = ["AUDIOSET_LABELS", "LabelSet", "read_label_csv", "TagRecord", "read_tagging_list", "multi_hot",
           "balanced_weights", "weight_file_path", "write_weight_file", "WeightedEpochBatchSampler", "FeatureStore",
           "InputLoader", "FeatureInput", "WaveformInput", "INPUT_KINDS", "register_input_kind", "smoothed_target",
           "mask_axis", "TaggingDataset", "TagCollator", "BadClip"]
