"""Logging set-up shared by the command line and the training job (a base module: imports nothing of ours).

:func:`setup_logging` installs one stderr handler on the root logger; :func:`route_library_logs`
sends the records of Lightning and friends through it (call it again after importing them).
"""

from __future__ import annotations

import logging
import sys

LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric",
                   "torchmetrics")


class _StderrHandler(logging.StreamHandler):
    """A stream handler that always writes to the *current* ``sys.stderr`` (which tests may swap)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(level: str = "INFO") -> None:
    """Root logger at ``level`` with one stderr handler (``HH:MM:SS LEVEL name: message``)."""
    root = logging.getLogger()
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
    route_library_logs()


def route_library_logs() -> None:
    """Lightning and friends install their own stderr handlers at import; send their records through ours.

    Call again after importing them (their handlers would otherwise print every line twice, or
    write to a stream that no longer exists).
    """
    for name in LIBRARY_LOGGERS:
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.propagate = True


__all__ = ["LIBRARY_LOGGERS", "setup_logging", "route_library_logs"]
