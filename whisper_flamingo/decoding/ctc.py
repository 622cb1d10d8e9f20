"""Greedy CTC decoding of a byte-level lip reader's output (the ``vsr`` task's validation, lip-reading demos)."""

from __future__ import annotations

import torch


def ctc_greedy_texts(logits: torch.Tensor, padding_mask: torch.Tensor | None = None) -> list[str]:
    """Best path of per-frame logits ``(B, T, 257)`` (blank 0, byte ``b`` = class ``b + 1``): repeats merged,
    blanks dropped, bytes decoded as UTF-8 (invalid sequences replaced); padded frames ignored."""
    best = logits.argmax(-1).cpu()
    texts = []
    for i, row in enumerate(best):
        if padding_mask is not None and padding_mask.shape[1] == row.shape[0]:
            row = row[~padding_mask[i].cpu()]
        keep = torch.ones_like(row, dtype=torch.bool)
        keep[1:] = row[1:] != row[:-1]
        out = row[keep & (row != 0)] - 1
        texts.append(bytes(out.tolist()).decode("utf-8", "replace"))
    return texts


__all__ = ["ctc_greedy_texts"]
