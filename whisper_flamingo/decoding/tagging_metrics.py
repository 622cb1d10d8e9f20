"""Sound-tagging metrics as AST's and Whisper-AT's ``stats.py`` define them (reference §0.3), without scikit-learn.

For scores ``P`` (N x C; logits or probabilities, the metrics are rank-based) and targets ``Y`` (N x C, 0/1):

* AP of class k: scikit-learn's ``average_precision_score`` = sum over distinct score thresholds (high to
  low) of (recall step) x precision; a class without positives has AP 0 (scikit-learn's value).
* AUC of class k: the ROC area with tied scores counted half (= scikit-learn's ``roc_auc_score``); a class
  without positives or without negatives gets the reference's sentinel -1.
* ``mAP`` / ``mAUC``: plain means over all C classes (``classes="all"``, the reference, sentinels included),
  or over the classes that have positives (and, for AUC, negatives) in the evaluated set
  (``classes="present"``; the two agree on AudioSet's eval set, where every class occurs).  Training logs
  ``present`` (a small set covers few of the 527 classes) and ``mAP_all`` next to it.
* ``dprime`` = sqrt(2) * inverse-normal-CDF(mAUC) (of the *mean* AUC).
* ``acc`` = fraction of clips whose target argmax equals the score argmax (single-label sets).

:class:`RunningMean` is AST's checkpoint ensemble ("cum_" columns): the mean of the predictions of every
epoch so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["average_precision", "roc_auc", "class_stats", "tagging_metrics", "d_prime", "RunningMean"]


def _steps(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold (scores high to low)."""
    order = np.argsort(-scores, kind="mergesort")
    s, t = scores[order], truth[order]
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]  # last index of each run of equal scores
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    return tps.astype(np.float64), fps.astype(np.float64)


def average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """scikit-learn's ``average_precision_score`` for one class (0.0 without positives)."""
    truth = np.asarray(truth) > 0.5
    n_pos = int(truth.sum())
    if n_pos == 0:
        return 0.0
    tps, fps = _steps(np.asarray(scores, np.float64), truth)
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(scores: np.ndarray, truth: np.ndarray) -> float:
    """ROC area (ties count half); -1 when the class has no positive or no negative (the reference's sentinel)."""
    truth = np.asarray(truth) > 0.5
    n_pos = int(truth.sum())
    n_neg = truth.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return -1.0
    tps, fps = _steps(np.asarray(scores, np.float64), truth)
    tpr, fpr = np.r_[0.0, tps / n_pos], np.r_[0.0, fps / n_neg]
    return float(np.trapezoid(tpr, fpr))


def class_stats(scores: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class AP and AUC arrays (C,)."""
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets)
    if scores.shape != targets.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be N x C")
    ap = np.array([average_precision(scores[:, k], targets[:, k]) for k in range(scores.shape[1])])
    auc = np.array([roc_auc(scores[:, k], targets[:, k]) for k in range(scores.shape[1])])
    return ap, auc


def d_prime(auc: float) -> float:
    """sqrt(2) * Phi^-1(auc) (+-inf at 1 and 0)."""
    if auc >= 1.0:
        return math.inf
    if auc <= 0.0:
        return -math.inf
    return math.sqrt(2.0) * NormalDist().inv_cdf(auc)


def tagging_metrics(scores: np.ndarray, targets: np.ndarray, classes: str = "present") -> dict[str, float]:
    """``mAP``, ``mAUC``, ``dprime``, ``acc`` (module doc), plus ``mAP_all`` (the reference's plain mean over
    every class) and ``classes`` (how many classes the ``present`` means cover)."""
    if classes not in ("all", "present"):
        raise ValueError(f"classes must be 'all' or 'present', got {classes!r}")
    scores, targets = np.asarray(scores, np.float64), np.asarray(targets, np.float64)
    hard = targets > 0.5
    ap, auc = class_stats(scores, hard)
    if classes == "all":
        ap_sel, auc_sel = ap, auc
    else:
        ap_sel, auc_sel = ap[hard.any(0)], auc[auc >= 0]
    m_ap = float(ap_sel.mean()) if ap_sel.size else float("nan")
    m_auc = float(auc_sel.mean()) if auc_sel.size else float("nan")
    acc = float(np.mean(targets.argmax(1) == scores.argmax(1))) if len(scores) else float("nan")
    return {"mAP": m_ap, "mAUC": m_auc, "dprime": d_prime(m_auc) if not math.isnan(m_auc) else float("nan"),
            "acc": acc, "mAP_all": float(ap.mean()), "classes": float(ap_sel.size)}


@dataclass
class RunningMean:
    """Mean of successive prediction arrays (AST's checkpoint ensemble)."""

    total: np.ndarray | None = None
    count: int = 0

    def add(self, scores: np.ndarray) -> np.ndarray:
        scores = np.asarray(scores, np.float64)
        self.total = scores.copy() if self.total is None else self.total + scores
        self.count += 1
        return self.total / self.count
