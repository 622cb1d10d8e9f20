"""K-fold cross-validation (AST's ESC-50 recipe): one training run per fold, then the fold summary.

``folds: K`` in a config makes ``whisper-flamingo train`` call :func:`train_folds`: for k = 1..K the
``{fold}`` in ``data_train`` / ``data_val`` / ``data_eval`` becomes k and the run goes to
``<train_id>/fold<k>`` (checkpoints and TensorBoard).  Then :func:`summarise_folds` does what AST's
``get_esc_result.py`` does: average every column of the folds' ``result.csv`` per epoch (→ ``result.csv`` in
``<train_id>``), take the epoch with the best *fold-averaged* main metric (accuracy when ``monitor`` ends
in ``acc``, else mAP; not each fold's own best) and write ``acc_fold.csv``: ``fold,epoch,<metric>`` per
fold, then ``mean,epoch,<metric>``.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from pathlib import Path

import numpy as np

from whisper_flamingo.config import Config
from whisper_flamingo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

__all__ = ["fold_config", "train_folds", "summarise_folds"]

FOLD = "{fold}"


def fold_config(cfg: Config, k: int) -> Config:
    """The config of fold ``k``: ``{fold}`` replaced in the data lists, ``train_id`` ``<train_id>/fold<k>``."""
    lists = {key: getattr(cfg, key).replace(FOLD, str(k)) for key in ("data_train", "data_val", "data_eval")}
    return dataclasses.replace(cfg, folds=0, train_id=f"{cfg.train_id}/fold{k}", **lists)


def train_folds(cfg: Config) -> Path:
    """Train every fold (module doc) and summarise; returns the path of ``acc_fold.csv``."""
    from whisper_flamingo.tasks.run import train

    if FOLD not in cfg.data_train or FOLD not in cfg.data_val:
        raise ConfigError(f"key 'folds' is {cfg.folds} but data_train/data_val do not contain '{FOLD}' "
                          "(e.g. data/esc50/esc_train_data_{fold}.json); set folds: 0 for one run")
    for k in range(1, cfg.folds + 1):
        log.info("fold %d of %d", k, cfg.folds)
        train(fold_config(cfg, k))
    return summarise_folds(cfg.checkpoint_dir, cfg.folds, _metric(cfg))


def _metric(cfg: Config) -> str:
    return "acc" if cfg.monitor.split("/")[-1].endswith("acc") else "mAP"


def _read_result(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise DataError("fold result missing; train the fold first", reason="missing_file", path=path)
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def summarise_folds(root: str | Path, folds: int, metric: str = "acc") -> Path:
    """Fold-averaged ``result.csv`` and ``acc_fold.csv`` in ``root`` from ``root/fold<k>/result.csv``."""
    root = Path(root)
    results = [_read_result(root / f"fold{k}" / "result.csv") for k in range(1, folds + 1)]
    n = min(len(r) for r in results)
    if n == 0:
        raise DataError("a fold's result.csv has no epoch", reason="empty_file", path=root)
    columns = list(results[0][0])
    mean_rows = []
    for e in range(n):
        row: dict[str, float | str] = {}
        for c in columns:
            if c in ("epoch", "step"):
                row[c] = results[0][e][c]
                continue
            vals = [float(r[e][c]) for r in results if r[e].get(c, "") != ""]
            row[c] = float(np.mean(vals)) if vals else ""
        mean_rows.append(row)
    with open(root / "result.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=columns)
        w.writeheader()
        w.writerows(mean_rows)
    best = int(np.argmax([float(r[metric]) for r in mean_rows]))
    per_fold = [float(r[best][metric]) for r in results]
    epoch = results[0][best]["epoch"]
    out = root / "acc_fold.csv"
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["fold", "epoch", metric])
        for k, v in enumerate(per_fold, start=1):
            w.writerow([k, epoch, f"{v:.6f}"])
        w.writerow(["mean", epoch, f"{float(np.mean(per_fold)):.6f}"])
    log.info("best fold-averaged epoch %s: %s per fold %s, mean %.4f (%s)", epoch, metric,
             " ".join(f"{v:.4f}" for v in per_fold), float(np.mean(per_fold)), out)
    return out
