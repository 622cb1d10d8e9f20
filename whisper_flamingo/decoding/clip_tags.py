"""Clip-level sound tags from AST and SAT, as ``whisper-flamingo tag`` prints them.

* AST (:func:`ast_window_probs`): the original ``inference.py`` pipeline (waveform mean removed, Kaldi
  fbank, cut/zero-pad to the model's ``input_tdim`` frames, (x − mean)/(2·std), sigmoid).  A clip longer
  than ``input_tdim`` frames (10.24 s for the AudioSet models) is not cut as the original does: its
  fbank is split into consecutive windows of ``input_tdim`` frames, the last zero-padded like a short
  clip, and each window is tagged (one segment each; window 0 is exactly the original's output).
* SAT (:func:`sat_clip_probs`): ``model(waveform)``, the whole-clip forward of the original (SAT:
  empty memory, ``target_length`` pieces with the memory, a partial last piece dropped, mean of the
  pieces; the offline ViT: its pieces averaged).
* :func:`top_tags`: ``[[name, probability], ...]`` best first; :func:`read_label_names` reads an
  AudioSet-style ``index,mid,display_name`` CSV for models with other label sets (ESC-50, Speech Commands).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from whisper_flamingo.data.fbank import NORM_STATS, kaldi_fbank, normalise
from whisper_flamingo.errors import ConfigError, DataError

__all__ = ["ast_window_probs", "sat_clip_probs", "top_tags", "read_label_names", "parse_norm_stats", "FRAME_S"]

#: seconds per AST fbank frame (10-ms shift)
FRAME_S = 0.01


def parse_norm_stats(text: str) -> tuple[float, float]:
    """``audioset`` / ``esc50`` / ``speechcommands`` or ``MEAN,STD`` → (mean, std)."""
    if text in NORM_STATS:
        return NORM_STATS[text]
    try:
        mean, std = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--norm-stats {text!r}: use one of {', '.join(NORM_STATS)} or MEAN,STD "
                          "(e.g. -4.27,4.57)") from None
    if std <= 0:
        raise ConfigError(f"--norm-stats {text!r}: the std must be positive")
    return mean, std


@torch.no_grad()
def ast_window_probs(model: torch.nn.Module, waveform: Tensor, stats: tuple[float, float] = NORM_STATS["audioset"],
                     batch: int = 8) -> tuple[Tensor, list[tuple[float, float]]]:
    """(probabilities ``[windows, label_dim]``, ``[(start_s, end_s), ...]``) of a 1-D 16-kHz waveform in
    [-1, 1] under an :class:`~whisper_flamingo.models.ast.AST` (windows as the module doc says)."""
    if waveform.numel() < 400:
        raise DataError(f"{waveform.numel()} samples is shorter than one 25-ms fbank frame (400 samples)",
                        reason="too_short")
    length = model.cfg.input_tdim
    device = next(model.parameters()).device
    fbank = kaldi_fbank((waveform - waveform.mean()).float(), num_mel_bins=model.cfg.input_fdim)
    n_windows = -(-fbank.shape[0] // length)
    fbank = torch.nn.functional.pad(fbank, (0, 0, 0, n_windows * length - fbank.shape[0]))
    windows = normalise(fbank, *stats).reshape(n_windows, length, -1)
    probs = torch.cat([model(w.to(device)).sigmoid().float().cpu() for w in windows.split(batch)])
    seconds = waveform.numel() / 16000
    spans = [(round(i * length * FRAME_S, 3), round(min((i + 1) * length * FRAME_S, seconds), 3))
             for i in range(n_windows)]
    return probs, spans


@torch.no_grad()
def sat_clip_probs(model: torch.nn.Module, waveform: Tensor) -> Tensor:
    """Clip probabilities ``[label_dim]`` of a 1-D 16-kHz waveform under a SAT or SAT ViT."""
    if waveform.numel() < 2400:
        raise DataError(f"{waveform.numel()} samples is shorter than one 16-frame patch (2400 samples, 0.15 s)",
                        reason="too_short")
    device = next(model.parameters()).device
    return model(waveform[None].to(device))[0].float().cpu()


def top_tags(probs: Tensor, names: Sequence[str], top_k: int, threshold: float | None = None) -> list[list]:
    """``[[name, probability (4 decimals)], ...]``: the ``top_k`` best classes whose probability is above
    ``threshold`` (None: no threshold), best first."""
    if len(names) != probs.shape[-1]:
        raise ConfigError(f"{len(names)} label names for a model with {probs.shape[-1]} classes; pass --labels CSV "
                          "(index,mid,display_name) of its label set")
    keep = torch.ones_like(probs, dtype=torch.bool) if threshold is None else probs > threshold
    idx = keep.nonzero().flatten()
    order = idx[probs[idx].argsort(descending=True, stable=True)][: max(0, top_k)]
    return [[names[int(i)], round(float(probs[i]), 4)] for i in order]


def read_label_names(path: str | Path) -> list[str]:
    """The ``display_name`` column of a label CSV (``index,mid,display_name``, AudioSet's format), in index order."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the label CSV ({err.strerror})") from None
    if not rows or "display_name" not in rows[0] or "index" not in rows[0]:
        raise ConfigError(f"{path}: a label CSV needs the header index,mid,display_name (AudioSet's "
                          "class_labels_indices.csv format)")
    try:
        ordered = sorted(rows, key=lambda r: int(r["index"]))
    except ValueError:
        bad = next(i for i, r in enumerate(rows, start=2) if not str(r["index"]).strip().isdigit())
        raise ConfigError(f"{path}:{bad}: index is not an integer") from None
    if [int(r["index"]) for r in ordered] != list(range(len(ordered))):
        raise ConfigError(f"{path}: indices must be 0..{len(ordered) - 1} without gaps")
    return [r["display_name"] for r in ordered]
