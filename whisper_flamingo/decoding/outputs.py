"""What a decode condition writes, and how a run resumes from it.

* ``utterances.jsonl``: one JSON object per utterance, appended, flushed and fsync'ed after every
  batch (:class:`UtteranceWriter`); :func:`read_done` reads it back for a resume (a torn last line is
  cut off);
* ``run.json``: the settings that must not change between a run and its resume (:func:`claim_dir`);
* ``summary.json`` (scores with provenance) and the original's files ``pred.txt`` (``HYPO:``/``REF:``
  lines), ``wer.368862`` or ``bleu.368862`` (``WER: x.xxxx``) and ``wer.json`` / ``bleu.json``
  (``{"pred": [...], "refs": [...]}``), all written by :func:`write_outputs` from the JSONL rows alone.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from whisper_flamingo.decoding.scoring import bleu_chrf, wer_cer
from whisper_flamingo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

JSONL = "utterances.jsonl"
RUN_JSON = "run.json"
SUMMARY = "summary.json"


def read_done(path: Path) -> dict[str, dict]:
    """Objects already in ``utterances.jsonl`` by id; a torn last line is cut off the file."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    data = path.read_bytes()
    good_end = 0
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if not raw.strip():
            if not last:
                good_end += len(raw) + 1
            continue
        try:
            if last:
                raise ValueError("no line end")
            obj = json.loads(raw)
        except ValueError as err:
            if last or all(not x.strip() for x in lines[i + 1:]):
                log.warning("%s: dropping a torn last line (%d bytes)", path, len(raw))
                break
            raise DataError(f"line is not JSON ({err}); delete the file to decode this condition again",
                            reason="unreadable", path=path, line=i + 1) from None
        done[obj["id"]] = obj
        good_end += len(raw) + 1
    if good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


def claim_dir(out_dir: Path, key: dict[str, Any], overwrite: bool) -> dict[str, dict]:
    """Prepare ``out_dir`` for a decode with settings ``key``: start afresh (``overwrite``), or refuse
    a folder holding a decode with other settings; record ``key`` in ``run.json``.  Returns the
    utterances already decoded (by id)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl, run_json = out_dir / JSONL, out_dir / RUN_JSON
    if overwrite:
        for name in (JSONL, RUN_JSON, SUMMARY):
            (out_dir / name).unlink(missing_ok=True)
    if run_json.exists() and jsonl.exists():
        old = json.loads(run_json.read_text())
        if old != key:
            diff = sorted(k for k in key if old.get(k) != key[k])
            raise ConfigError(f"{out_dir}: holds a decode with other settings ({', '.join(diff)}); pass "
                              "--overwrite or another --decode-path")
    atomic_write(run_json, json.dumps(key, indent=2) + "\n")
    return read_done(jsonl)


class UtteranceWriter:
    """Appends utterance objects to ``utterances.jsonl``; :meth:`commit` makes a batch durable."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "a", encoding="utf-8")

    def write(self, obj: dict) -> None:
        self._f.write(json.dumps(obj, ensure_ascii=False) + "\n")

    def commit(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> UtteranceWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def last_timing(out_dir: Path) -> dict | None:
    """The timing block of an existing ``summary.json`` (None when absent or unreadable)."""
    try:
        return json.loads((out_dir / SUMMARY).read_text())["timing"]
    except (OSError, ValueError, KeyError):
        return None


def versions() -> dict[str, str]:
    """Versions of Python, torch and the packages that shape the scores."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("whisper-flamingo", "openai-whisper", "jiwer", "sacrebleu", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def write_outputs(out_dir: Path, rows: Sequence[dict], metric: str, lang: str, normalizer: str,
                  extra: dict[str, Any]) -> dict:
    """Score ``rows`` (utterance objects in dataset order) and write summary + the original files."""
    refs = [r["ref"] for r in rows]
    hyps = [r["hyp"] for r in rows]
    words = wer_cer(refs, hyps, normalizer, lang)
    scores: dict[str, Any] = {"wer": words}
    if metric == "bleu":
        scores["bleu"] = bleu_chrf(refs, hyps)
        score = scores["bleu"]["bleu"]
    else:
        score = words["wer"]
    flags = Counter(f for r in rows for f in r.get("flags", []))
    summary = {"metric": metric, "score": score, **extra, "utterances": len(rows),
               "audio_seconds": round(sum(r.get("audio_seconds", 0.0) for r in rows), 3),
               "flags": dict(flags), "scores": scores,
               "sacrebleu_signature": scores["bleu"]["bleu_signature"] if metric == "bleu" else None}
    atomic_write(out_dir / SUMMARY, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    atomic_write(out_dir / "pred.txt", "".join(f"HYPO: {h}\nREF: {r}\n" for h, r in zip(hyps, refs)))
    value = 0.0 if score is None else score
    atomic_write(out_dir / f"{metric}.368862", f"{metric.upper()}: {value:.4f}\n")
    atomic_write(out_dir / f"{metric}.json", json.dumps({"pred": hyps, "refs": refs}, ensure_ascii=False) + "\n")
    return summary


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


__all__ = ["read_done", "claim_dir", "UtteranceWriter", "last_timing", "versions", "write_outputs",
           "atomic_write", "JSONL", "RUN_JSON", "SUMMARY"]
