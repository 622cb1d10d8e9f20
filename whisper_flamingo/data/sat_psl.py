"""SAT's training data (reference §3.5): the clip table, the pseudo-strong-label (PSL) table, chunk
examples, and the waveform lists of MAE pre-training.

* Clip table (``data_train`` with ``psl_table`` set): TSV/CSV/parquet with columns ``filename``,
  ``labels`` (``;``-joined class indices: the hard labels, used only by the balanced sampler) and the
  optional ``duration``, ``hdf5path`` (we read audio files, not HDF5: ``filename`` is the audio path,
  relative paths taken from the table's folder).
* PSL table (``psl_table``): columns ``filename``, ``start``, ``end`` (seconds), ``prob`` and ``idxs``
  (``;``-joined teacher probabilities and their class indices, e.g. the top 10).  Rows are merged with the
  clip table on ``filename``.
* :class:`PSLDataset`: one example per PSL row, the waveform slice ``[start, end)`` (zero-padded when the
  file is shorter) and the soft target (the probabilities scattered into a zero vector).
* :func:`psl_weights`: SAT's balanced weights, ``1000 / (count + 100)`` per class summed over the clip's
  hard labels (counted over the PSL rows, each of which carries its clip's labels).

A ``.parquet`` table needs pyarrow (optional); ``.tsv``/``.csv`` need nothing.  Errors are one line naming
the file, the line and the column.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from whisper_flamingo.data.tagging import BadClip, TagRecord, balanced_weights
from whisper_flamingo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SR = 16000
CLIP_COLUMNS = ("filename", "labels")
PSL_COLUMNS = ("filename", "start", "end", "prob", "idxs")

__all__ = ["CLIP_COLUMNS", "PSL_COLUMNS", "PSLRow", "PSLDataset", "read_table", "read_clip_table", "read_psl",
           "psl_weights", "read_wav_list", "CropDataset"]


def read_table(path: str | Path, required: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    """(line number, row as strings) of a ``.tsv`` / ``.csv`` / ``.parquet`` table with a header; a missing
    required column is a one-line :class:`DataError` naming the file and the columns it has."""
    p = Path(path)
    if not p.is_file():
        raise DataError("table not found", reason="missing_file", path=p)
    if p.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise DataError("reading parquet needs pyarrow (pip install pyarrow), or convert the table to TSV",
                            reason="unreadable", path=p) from None
        data = pq.read_table(p).to_pydict()
        columns = list(data)
        n = len(next(iter(data.values()), []))
        rows = [(i + 2, {c: "" if data[c][i] is None else str(data[c][i]) for c in columns}) for i in range(n)]
    else:
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, delimiter="," if p.suffix == ".csv" else "\t")
            lines = [r for r in reader]
        if not lines:
            raise DataError("empty table; expected a header line", reason="empty_file", path=p)
        columns = [c.strip() for c in lines[0]]
        rows = []
        for n, r in enumerate(lines[1:], start=2):
            if not r or not any(c.strip() for c in r):
                continue
            if len(r) > len(columns):
                raise DataError(f"{len(r)} fields but the header has {len(columns)}", reason="column_count",
                                path=p, line=n)
            rows.append((n, {c: (r[i].strip() if i < len(r) else "") for i, c in enumerate(columns)}))
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(f"no column '{missing[0]}' (columns: {', '.join(columns) or 'none'}); the table needs "
                        f"{', '.join(required)}", reason="missing_column", path=p, line=1)
    if not rows:
        raise DataError("the table has no rows", reason="empty_list", path=p)
    return rows


def _indices(text: str, n_classes: int, path: Path, line: int, column: str) -> tuple[int, ...]:
    out = []
    for part in (t.strip() for t in text.replace(",", ";").split(";")):
        if not part:
            continue
        try:
            i = int(float(part)) if float(part).is_integer() else -1
        except ValueError:
            i = -1
        if not 0 <= i < n_classes:
            raise DataError(f"column '{column}': unknown label {part!r} (class indices run 0..{n_classes - 1} in the "
                            "label CSV); fix the row or use the label CSV the table was made for",
                            reason="unknown_label", path=path, line=line)
        out.append(i)
    return tuple(out)


def read_clip_table(path: str | Path, n_classes: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``filename`` → (audio path, hard labels) of SAT's clip table."""
    p = Path(path)
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    for line, row in read_table(p, CLIP_COLUMNS):
        name = row["filename"]
        if not name:
            raise DataError("column 'filename' is empty", reason="bad_entry", path=p, line=line)
        wav = Path(name)
        out[name] = (str(wav if wav.is_absolute() else p.parent / wav),
                     _indices(row["labels"], n_classes, p, line, "labels"))
    return out


@dataclass(frozen=True)
class PSLRow:
    """One PSL chunk: its clip's audio, the span in seconds, the soft labels and the clip's hard labels."""

    wav: str
    start: float
    end: float
    idxs: tuple[int, ...]
    probs: tuple[float, ...]
    labels: tuple[int, ...]
    where: str

    @property
    def key(self) -> str:
        return f"{Path(self.wav).stem}@{self.start:g}-{self.end:g}"


def read_psl(psl_path: str | Path, clip_table: str | Path, n_classes: int) -> list[PSLRow]:
    """The PSL rows merged with the clip table on ``filename`` (module doc); bad rows are one-line errors."""
    clips = read_clip_table(clip_table, n_classes)
    p = Path(psl_path)
    out = []
    for line, row in read_table(p, PSL_COLUMNS):
        name = row["filename"]
        if name not in clips:
            raise DataError(f"filename {name!r} is not in the clip table {clip_table}; list the clip there or drop "
                            "the row", reason="unknown_clip", path=p, line=line)
        try:
            start, end = float(row["start"]), float(row["end"])
            probs = tuple(float(v) for v in row["prob"].replace(",", ";").split(";") if v.strip())
        except ValueError as err:
            raise DataError(f"start/end/prob must be numbers ({err})", reason="bad_entry", path=p, line=line) from None
        if not 0 <= start < end:
            raise DataError(f"start {start:g} / end {end:g}: need 0 <= start < end (seconds)", reason="bad_entry",
                            path=p, line=line)
        idxs = _indices(row["idxs"], n_classes, p, line, "idxs")
        if len(idxs) != len(probs) or not all(0.0 <= v <= 1.0 for v in probs):
            raise DataError(f"'prob' has {len(probs)} values and 'idxs' {len(idxs)}: need one probability in [0, 1] "
                            "per class index", reason="label_count_mismatch", path=p, line=line)
        wav, labels = clips[name]
        out.append(PSLRow(wav, start, end, idxs, probs, labels, f"{p}: line {line}"))
    return out


def psl_weights(rows: Sequence[PSLRow], n_classes: int) -> np.ndarray:
    """SAT's balanced weights (reference §0.4): ``1000 / (count + 100)`` per class, summed per row."""
    return balanced_weights([TagRecord(r.wav, r.labels, r.where) for r in rows], n_classes, offset=100.0)


def _read_span(path: str, start: float, end: float) -> np.ndarray:
    """16-kHz float samples of ``[start, end)`` seconds (zero-padded past the file's end)."""
    from whisper_flamingo.data.audio import load_audio, to_unit_range

    audio = to_unit_range(load_audio(path))
    a, b = int(round(start * SR)), int(round(end * SR))
    piece = audio[a:b]
    if len(piece) < b - a:
        piece = np.pad(piece, (0, b - a - len(piece)))
    return np.ascontiguousarray(piece, dtype=np.float32)


class PSLDataset(Dataset):
    """``{"input": waveform slice, "target": soft [C], "key"}`` per PSL row (keys ``(epoch, index)`` or
    ``index``); no augmentation (the reference's wave/spectrogram transforms are empty in every config)."""

    def __init__(self, rows: Sequence[PSLRow], n_classes: int, on_bad_sample: str = "error") -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ConfigError(f"on_bad_sample: unknown value {on_bad_sample!r}; use error or skip")
        self.rows, self.n_classes, self.on_bad_sample = list(rows), int(n_classes), on_bad_sample
        self.records = self.rows  # the sampler's view (hard labels)

    def __len__(self) -> int:
        return len(self.rows)

    def target(self, row: PSLRow) -> torch.Tensor:
        y = torch.zeros(self.n_classes)
        y[list(row.idxs)] = torch.tensor(row.probs, dtype=torch.float32)
        return y

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | BadClip:
        row = self.rows[int(key[1]) if isinstance(key, tuple) else int(key)]
        try:
            x = torch.from_numpy(_read_span(row.wav, row.start, row.end))
        except DataError as err:
            if self.on_bad_sample == "error":
                raise DataError(f"{err} ({row.where})", reason=err.reason) from None
            log.warning("skipping bad clip %s (%s): %s", row.wav, err.reason, err)
            return BadClip(row.key, err.reason)
        return {"input": x, "target": self.target(row), "key": row.key}


# ---------------------------------------------------------------------------------------------- MAE data
def read_wav_list(path: str | Path) -> list[str]:
    """Audio paths of a JSON data list (``{"data": [{"wav"}]}``, labels ignored) or a table with a
    ``filename`` column (SAT's clip table); relative paths from the list's folder."""
    p = Path(path)
    if p.suffix == ".json":
        if not p.is_file():
            raise DataError("data list not found", reason="missing_file", path=p)
        try:
            items = json.loads(p.read_text(encoding="utf-8")).get("data")
        except (json.JSONDecodeError, AttributeError, UnicodeDecodeError):
            items = None
        if not isinstance(items, list) or not items:
            raise DataError('expected {"data": [{"wav": ...}, ...]} with at least one clip', reason="unreadable",
                            path=p)
        names = []
        for n, it in enumerate(items):
            if not isinstance(it, dict) or not isinstance(it.get("wav"), str):
                raise DataError(f"entry {n} has no string field 'wav'", reason="bad_entry", path=p)
            names.append(it["wav"])
    else:
        names = [row["filename"] for _, row in read_table(p, ("filename",))]
    return [str(Path(n) if Path(n).is_absolute() else p.parent / n) for n in names]


class CropDataset(Dataset):
    """MAE examples: a random ``samples``-long crop of each clip (zero-padded when shorter), the crop start
    drawn from ``SeedSequence([seed, epoch, index])``; ``train=False`` takes the start of the clip."""

    def __init__(self, wavs: Sequence[str], samples: int, train: bool = True, seed: int = 0) -> None:
        self.wavs, self.samples, self.train, self.seed = list(wavs), int(samples), bool(train), int(seed)

    def __len__(self) -> int:
        return len(self.wavs)

    def __getitem__(self, key: int | tuple[int, int]) -> torch.Tensor:
        epoch, index = (int(key[0]), int(key[1])) if isinstance(key, tuple) else (0, int(key))
        from whisper_flamingo.data.audio import load_audio, to_unit_range

        audio = to_unit_range(load_audio(self.wavs[index]))
        extra = len(audio) - self.samples
        start = 0
        if extra > 0 and self.train:
            start = int(np.random.default_rng([self.seed % 2**63, epoch, index]).integers(extra + 1))
        piece = audio[start:start + self.samples]
        return torch.from_numpy(np.pad(piece, (0, self.samples - len(piece))).astype(np.float32))
