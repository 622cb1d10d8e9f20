"""SpecAugment frequency and time masking on a (normalised) Whisper log-mel spectrogram.

Policies (the LibriSpeech policies of the SpecAugment paper, without time warping, as in the
original): ``""`` off; ``"ls-basic"`` 1 frequency mask (F = 27) + 1 time mask (T = 100);
``"ls-double"`` 2 + 2.

Each mask follows the paper: width ``w ~ U{0..F}`` (inclusive), then start ``~ U{0..dim - w}``,
and the band ``[start, start + w)`` is set to 0.  Only the first ``n_frames`` frames (the real
audio) are touched: frequency masks span those frames only, time masks lie wholly inside them
(their width is capped at ``n_frames``); padding frames keep their values.  The fill value 0 is
the original's; on Whisper's normalised log-mel ((log10 - max + 4) / 4), 0 is a mid-level value
(digital silence is about -0.5 to -0.8), the same value the collator pads with.

Difference from the original implementation: it drew two integers ``a, b`` in ``[0, F)`` per
mask, placed the start in ``[0, dim - a)`` but used ``b`` as the width, and skipped the mask when
``a = 0``.  So its width was unrelated to the range the start came from, and a time mask could
run past the real frames into the padding.  We implement the paper's definition above; mean mask
widths stay about F/2 and T/2, only the placement near the edges (and the skip rule) differ.

Masks are drawn from the given ``numpy.random.Generator`` only: the result is deterministic given
the generator's state.  The input is not modified (a masked copy is returned).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from whisper_flamingo.errors import ConfigError

logger = logging.getLogger(__name__)

#: policy -> (frequency masks, F, time masks, T)
POLICIES: dict[str, tuple[int, int, int, int]] = {
    "ls-basic": (1, 27, 1, 100),
    "ls-double": (2, 27, 2, 100),
}
VALID_POLICIES = ("", *POLICIES)


def check_policy(policy: str | None) -> str:
    """Return the policy name (``None`` -> ``""``) or raise ConfigError naming ``spec_augment``."""
    name = "" if policy is None else str(policy)
    if name and name not in POLICIES:
        valid = ", ".join(repr(p) for p in VALID_POLICIES)
        raise ConfigError(f"spec_augment: unknown policy {name!r}; use one of {valid}")
    return name


def _band(rng: np.random.Generator, max_width: int, dim: int) -> tuple[int, int]:
    """(start, width): width uniform in [0, min(max_width, dim)], start uniform in [0, dim - width]."""
    width = int(rng.integers(0, min(max_width, dim) + 1))
    start = int(rng.integers(0, dim - width + 1))
    return start, width


def spec_augment(mel: torch.Tensor, policy: str, n_frames: int,
                 rng: np.random.Generator) -> torch.Tensor:
    """Mask ``mel`` (n_mels, T) by ``policy`` within its first ``n_frames`` frames; returns a copy.

    ``policy=""`` returns ``mel`` itself.  ``n_frames`` is clamped to ``[0, T]``.
    """
    name = check_policy(policy)
    if not name:
        return mel
    if mel.dim() != 2:
        raise ValueError(f"spec_augment expects a (n_mels, frames) tensor, got shape {tuple(mel.shape)}")
    n_freq_masks, max_f, n_time_masks, max_t = POLICIES[name]
    n_mels, total = mel.shape
    frames = max(0, min(int(n_frames), total))
    out = mel.clone()
    for _ in range(n_freq_masks):
        start, width = _band(rng, max_f, n_mels)
        if width and frames:
            out[start:start + width, :frames] = 0
    for _ in range(n_time_masks):
        start, width = _band(rng, max_t, frames)
        if width:
            out[:, start:start + width] = 0
    return out
