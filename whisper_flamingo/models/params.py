"""The package's one parameter counter (works on the meta device: nothing is allocated)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn


def count_parameters(module: nn.Module, prefixes: Sequence[str] = (), trainable: bool = False) -> int:
    """Parameter elements of ``module``: only names starting with one of ``prefixes`` when given,
    only those with ``requires_grad`` when ``trainable``.  Shared parameters count once."""
    return sum(p.numel() for n, p in module.named_parameters()
               if (not prefixes or n.startswith(tuple(prefixes))) and (p.requires_grad or not trainable))


def human(n: int) -> str:
    """``37.8 M`` / ``1.54 B`` for large counts, the plain number below 100 000."""
    if n >= 1e9:
        return f"{n / 1e9:.2f} B"
    return f"{n / 1e6:.1f} M" if n >= 1e5 else str(n)


__all__ = ["count_parameters", "human"]
