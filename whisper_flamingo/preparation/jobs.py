"""Running one preparation step over many files: input discovery, sharding, resuming, the bad-input policy.

Every ``prepare`` step that maps input files to output files (``extract-audio``, ``landmarks``,
``crop-mouth``) goes through :func:`run_step`:

* inputs are the media files under ``--src`` (recursively, sorted) or the lines of ``--list``;
  each output keeps the input's path relative to ``--src`` with the step's suffix;
* ``--rank R --nshard N`` keeps the R-th of N contiguous slices of the sorted list (as AV-HuBERT's
  preparation scripts), so N processes or jobs share the work without talking to each other;
* an output that exists is kept (resuming after an interruption); outputs are written to a
  temporary name and renamed, so a killed run never leaves a half-written file that looks done;
* a bad input raises :class:`~whisper_flamingo.errors.DataError` naming the file; with
  ``on_bad_sample="skip"`` it is counted per reason, logged, and the step continues.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from whisper_flamingo.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm", ".mov", ".flv", ".mpg", ".mpeg", ".m4v")


@dataclass
class Job:
    """One input file and the output it becomes."""

    src: Path
    out: Path
    rel: str  # the input's path relative to --src, without extension (the utterance id)


@dataclass
class StepSummary:
    """What a step did: counts per outcome, bad inputs per reason, time."""

    step: str
    total: int = 0
    done: int = 0
    kept: int = 0
    bad: Counter = field(default_factory=Counter)
    elapsed_s: float = 0.0
    extra: dict = field(default_factory=dict)

    def line(self) -> str:
        bad = sum(self.bad.values())
        reasons = f" ({', '.join(f'{k} {v}' for k, v in sorted(self.bad.items()))})" if bad else ""
        more = "".join(f", {k} {v}" for k, v in self.extra.items())
        return (f"{self.step}: {self.total} inputs in this shard: {self.done} written, {self.kept} already "
                f"done, {bad} skipped as bad{reasons}{more}; {self.elapsed_s:.1f} s")


def shard(items: Sequence, rank: int, nshard: int) -> list:
    """The ``rank``-th of ``nshard`` contiguous slices of ``items`` (slice sizes ``ceil(n / nshard)``)."""
    if nshard < 1 or not 0 <= rank < nshard:
        raise ConfigError(f"--rank {rank} / --nshard {nshard}: need 0 <= rank < nshard")
    per = math.ceil(len(items) / nshard) if items else 0
    return list(items[rank * per:(rank + 1) * per])


def find_inputs(src: Path | None, list_file: Path | None = None,
                extensions: Sequence[str] = VIDEO_EXTENSIONS) -> tuple[Path, list[Path]]:
    """The input files (sorted) and the root their relative paths are taken from.

    ``list_file`` holds one path a line (relative paths are relative to ``src``, or to the list's folder
    when ``src`` is None); otherwise every file under ``src`` whose suffix is in ``extensions``.
    """
    if list_file is not None:
        if not list_file.is_file():
            raise ConfigError(f"{list_file}: no such list file")
        root = src if src is not None else list_file.parent
        lines = [ln.strip() for ln in list_file.read_text(encoding="utf-8").splitlines()]
        files = [Path(ln) if Path(ln).is_absolute() else root / ln for ln in lines if ln and not ln.startswith("#")]
        return root, sorted(files)
    if src is None:
        raise ConfigError("give --src DIR (a folder of inputs) or --list FILE")
    if src.is_file():
        return src.parent, [src]
    if not src.is_dir():
        raise ConfigError(f"{src}: no such folder")
    exts = {e.lower() for e in extensions}
    files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    return src, files


def plan_jobs(root: Path, files: Sequence[Path], out_dir: Path, suffix: str) -> list[Job]:
    """One :class:`Job` per input: ``out_dir / <path relative to root, suffix replaced>``."""
    jobs = []
    for f in files:
        try:
            rel = f.relative_to(root).with_suffix("")
        except ValueError:
            rel = Path(f.stem)
        jobs.append(Job(src=f, out=out_dir / rel.with_suffix(suffix), rel=rel.as_posix()))
    return jobs


def temp_path(out: Path) -> Path:
    """A sibling of ``out`` to write first (same suffix, so writers that look at it still work)."""
    return out.with_name(f".{out.stem}.partial{os.getpid()}{out.suffix}")


def run_step(step: str, jobs: Sequence[Job], work: Callable[[Job, Path], dict | None], *,
             on_bad_sample: str = "error", overwrite: bool = False, progress: bool = True,
             unit: str = "file") -> StepSummary:
    """Run ``work(job, tmp_out)`` for each job whose output is missing, then rename ``tmp_out`` to ``job.out``.

    ``work`` may return a dict of numbers; they are summed into ``summary.extra``.
    """
    from tqdm import tqdm

    if on_bad_sample not in ("error", "skip"):
        raise ConfigError(f"--on-bad-sample {on_bad_sample}: use error or skip")
    summary = StepSummary(step=step, total=len(jobs))
    start = time.perf_counter()
    for job in tqdm(jobs, desc=step, unit=unit, disable=not progress, dynamic_ncols=True):
        if job.out.exists() and not overwrite:
            summary.kept += 1
            continue
        job.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(job.out)
        try:
            if not job.src.exists():
                raise DataError("no such file; fix the list or remove the entry", reason="missing_file",
                                path=job.src)
            counts = work(job, tmp)
        except DataError as err:
            tmp.unlink(missing_ok=True)
            if on_bad_sample == "error":
                raise
            summary.bad[err.reason] += 1
            logger.warning("skipped: %s", err)
            continue
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, job.out)
        summary.done += 1
        for key, value in (counts or {}).items():
            summary.extra[key] = summary.extra.get(key, 0) + value
    summary.elapsed_s = time.perf_counter() - start
    return summary
