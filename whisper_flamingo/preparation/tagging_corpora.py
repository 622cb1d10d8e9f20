"""ESC-50 and Speech Commands V2 as a user has them on disk → AST's JSON lists and label CSVs
(``whisper-flamingo prepare esc50`` / ``prepare speechcommands``; reference §0.1, §2.4).

ESC-50 (the GitHub archive ``ESC-50-master``): ``audio/*.wav`` (44.1 kHz) and ``meta/esc50.csv`` with the
columns ``filename,fold,target,category,esc10,src_file,take``.  Every clip is resampled to 16 kHz with our
polyphase resampler (:func:`whisper_flamingo.data.audio.load_audio`; AST uses sox) into
``<out>/audio_16k/``; fold k's clips are ``esc_eval_data_<k>.json`` and the other four folds
``esc_train_data_<k>.json``; ``esc_class_labels_indices.csv`` has AST's dummy mids ``/m/07rwj00`` …
``/m/07rwj49`` (index = ``target``) named by ``category``.

Speech Commands V2 (``speech_commands_v0.02``): one folder per word, ``validation_list.txt`` and
``testing_list.txt`` (paths ``word/file.wav`` relative to the root), ``_background_noise_`` (not a class, not
listed).  ``speechcommand_valid_data.json`` / ``speechcommand_eval_data.json`` are the two lists, and
``speechcommand_train_data.json`` every other clip; labels are AST's 35 dummy mids ``/m/spcmd00`` …
(:data:`SPEECHCOMMANDS_WORDS` order) in ``speechcommands_class_labels_indices.csv``.  The clips are 16 kHz
already and are listed in place; one at another rate is resampled into ``<out>/audio_16k/``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["prepare_esc50", "prepare_speechcommands", "SPEECHCOMMANDS_WORDS", "ESC50_COLUMNS", "PreparedSet"]

ESC50_COLUMNS = ("filename", "fold", "target", "category")
#: AST's Speech Commands V2-35 class order (``speechcommands_class_labels_indices.csv``)
SPEECHCOMMANDS_WORDS = (
    "backward", "follow", "five", "bed", "zero", "on", "learn", "two", "house", "tree", "dog", "stop", "seven",
    "eight", "down", "six", "forward", "cat", "right", "visual", "four", "wow", "no", "nine", "off", "three",
    "left", "marvin", "yes", "up", "sheila", "happy", "bird", "go", "one")


@dataclass
class PreparedSet:
    """What a preparation wrote: the lists (name → path), the label CSV and clip counts per list."""

    lists: dict[str, Path] = field(default_factory=dict)
    label_csv: Path | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    resampled: int = 0


def _write_list(path: Path, records: list[dict[str, str]]) -> Path:
    path.write_text(json.dumps({"data": records}, indent=1), encoding="utf-8")
    return path


def _write_labels(path: Path, mids: list[str], names: list[str]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, quoting=csv.QUOTE_MINIMAL)
        fh.write("index,mid,display_name\n")
        for i, (m, n) in enumerate(zip(mids, names, strict=True)):
            w.writerow([i, m, n])
    return path


def _resample(src: Path, dst: Path) -> None:
    import soundfile as sf

    from whisper_flamingo.data.audio import load_audio

    x = load_audio(src)  # mono 16 kHz, int16 units
    dst.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(dst), np.clip(np.round(x), -32768, 32767).astype(np.int16), 16000, subtype="PCM_16", format="WAV")


def prepare_esc50(src: str | Path, out: str | Path) -> PreparedSet:
    """ESC-50 download → 16-kHz clips, 5 train/eval list pairs and the label CSV (module doc)."""
    src, out = Path(src), Path(out)
    meta = src / "meta" / "esc50.csv"
    if not meta.is_file():
        raise DataError("ESC-50 metadata not found; --src must be the unpacked ESC-50 download (ESC-50-master, "
                        "holding audio/ and meta/esc50.csv)", reason="missing_file", path=meta)
    with open(meta, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header = [c.strip() for c in rows[0]] if rows else []
    missing = [c for c in ESC50_COLUMNS if c not in header]
    if missing:
        raise DataError(f"header lacks column(s) {', '.join(missing)}; expected ESC-50's "
                        "filename,fold,target,category,esc10,src_file,take", path=meta, line=1, reason="bad_header")
    col = {c: header.index(c) for c in ESC50_COLUMNS}
    folds: dict[int, list[dict[str, str]]] = {k: [] for k in range(1, 6)}
    names: dict[int, str] = {}
    todo = []
    for n, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        try:
            name, fold, target, category = (row[col[c]].strip() for c in ESC50_COLUMNS)
            fold_i, target_i = int(fold), int(target)
        except (IndexError, ValueError):
            raise DataError(f"expected filename,fold (1-5),target (0-49),category; got {','.join(row)!r}", path=meta,
                            line=n, reason="column_count") from None
        if fold_i not in folds or not 0 <= target_i < 50:
            raise DataError(f"fold {fold_i} / target {target_i} out of range (folds 1-5, targets 0-49)", path=meta,
                            line=n, reason="column_count")
        if names.setdefault(target_i, category) != category:
            raise DataError(f"target {target_i} is {category!r} here but {names[target_i]!r} earlier", path=meta,
                            line=n, reason="bad_entry")
        wav = src / "audio" / name
        if not wav.is_file():
            raise DataError(f"clip listed on line {n} of {meta} is missing; re-download ESC-50",
                            reason="missing_file", path=wav)
        todo.append((wav, out / "audio_16k" / name))
        folds[fold_i].append({"wav": f"audio_16k/{name}", "labels": f"/m/07rwj{target_i:02d}"})
    if sorted(names) != list(range(len(names))) or not names:
        raise DataError(f"targets {sorted(set(range(max(names, default=0) + 1)) - set(names))} never occur; "
                        "expected all of 0..49", path=meta, reason="bad_entry")
    out.mkdir(parents=True, exist_ok=True)
    for wav, dst in todo:
        _resample(wav, dst)
    result = PreparedSet(resampled=len(todo))
    for k in range(1, 6):
        train = [r for f in range(1, 6) if f != k for r in folds[f]]
        result.lists[f"train_{k}"] = _write_list(out / f"esc_train_data_{k}.json", train)
        result.lists[f"eval_{k}"] = _write_list(out / f"esc_eval_data_{k}.json", folds[k])
        result.sizes[f"train_{k}"], result.sizes[f"eval_{k}"] = len(train), len(folds[k])
    result.label_csv = _write_labels(out / "esc_class_labels_indices.csv",
                                     [f"/m/07rwj{i:02d}" for i in sorted(names)], [names[i] for i in sorted(names)])
    log.info("ESC-50: %d clips resampled to 16 kHz in %s", len(todo), out / "audio_16k")
    return result


def _read_split_list(path: Path) -> set[str]:
    if not path.is_file():
        raise DataError("Speech Commands list missing; --src must be the unpacked speech_commands_v0.02 folder "
                        "(word folders, validation_list.txt, testing_list.txt)", reason="missing_file", path=path)
    return {line.strip().replace("\\", "/") for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()}


def prepare_speechcommands(src: str | Path, out: str | Path) -> PreparedSet:
    """Speech Commands V2 download → train/valid/eval lists and the 35-class label CSV (module doc)."""
    import soundfile as sf

    src, out = Path(src), Path(out)
    valid, test = _read_split_list(src / "validation_list.txt"), _read_split_list(src / "testing_list.txt")
    word_index = {w: i for i, w in enumerate(SPEECHCOMMANDS_WORDS)}
    folders = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
    unknown = [p.name for p in folders if p.name not in word_index]
    if unknown:
        raise DataError(f"folder(s) {', '.join(unknown[:5])} are not Speech Commands V2-35 words; --src must be "
                        "speech_commands_v0.02 (V1 is not supported by this recipe)", reason="bad_entry", path=src)
    if not folders:
        raise DataError("no word folders; --src must be the unpacked speech_commands_v0.02 folder",
                        reason="missing_file", path=src)
    out.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[dict[str, str]]] = {"train": [], "valid": [], "eval": []}
    seen: Counter[str] = Counter()
    resampled = 0
    for folder in folders:
        for wav in sorted(folder.glob("*.wav")):
            rel = f"{folder.name}/{wav.name}"
            split = "valid" if rel in valid else "eval" if rel in test else "train"
            seen[split] += 1
            path = wav.resolve()
            if sf.info(str(wav)).samplerate != 16000:
                path = (out / "audio_16k" / rel).resolve()
                _resample(wav, path)
                resampled += 1
            splits[split].append({"wav": str(path), "labels": f"/m/spcmd{word_index[folder.name]:02d}"})
    for split, listed in (("valid", valid), ("eval", test)):
        if seen[split] != len(listed):
            raise DataError(f"{len(listed) - seen[split]} clip(s) of the {split} list are not on disk (e.g. "
                            f"{sorted(p for p in listed if not (src / p).is_file())[:1]}); re-download the set",
                            reason="missing_file", path=src / ("validation_list.txt" if split == "valid"
                                                               else "testing_list.txt"))
    result = PreparedSet(resampled=resampled)
    for split, records in splits.items():
        result.lists[split] = _write_list(out / f"speechcommand_{split}_data.json", records)
        result.sizes[split] = len(records)
    result.label_csv = _write_labels(out / "speechcommands_class_labels_indices.csv",
                                     [f"/m/spcmd{i:02d}" for i in range(len(SPEECHCOMMANDS_WORDS))],
                                     list(SPEECHCOMMANDS_WORDS))
    return result
