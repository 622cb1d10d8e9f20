"""Logging set-up shared by the command line and the training job (a base module: imports nothing of ours).

:func:`setup_logging` installs one stderr handler on the root logger; :func:`route_library_logs`
sends the records of Lightning and friends through it (call it again after importing them).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings

LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric",
                   "torchmetrics")


#: Lightning's messages that tell a user of this command nothing: its cloud-logger and model-registry tips, the
#: ``srun`` hint (we do not launch through SLURM's srun unless the user does), a deprecation inside Lightning
#: (LeafSpec), "checkpoint directory exists and is not empty" (our config.yaml is written there first; a
#: stale last.ckpt gets our own warning) and the weights_only default on resume.  Log records matching
#: them are shown only at --log-level debug; warnings matching them are ignored.
LIBRARY_NOISE = (
    r".*litlogger.*", r".*litmodels.*", r"The `srun` command is available on your system.*",
    r".*LeafSpec.* is deprecated.*", r"Checkpoint directory .* exists and is not empty.*",
    r"`weights_only` was not set.*",
)
_NOISE = re.compile("|".join(f"(?:{p})" for p in LIBRARY_NOISE), re.DOTALL)


def is_library_noise(message: str) -> bool:
    """Whether ``message`` is one of :data:`LIBRARY_NOISE`."""
    return _NOISE.match(message.strip()) is not None


class _DropLibraryNoise(logging.Filter):
    """Let :data:`LIBRARY_NOISE` records through only when the root logger is at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if logging.getLogger().level <= logging.DEBUG:
            return True
        return not is_library_noise(record.getMessage())


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
        handler.addFilter(_DropLibraryNoise())
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
    if logging.getLogger().level > logging.DEBUG:
        for pattern in LIBRARY_NOISE:
            warnings.filterwarnings("ignore", message=pattern)


__all__ = ["LIBRARY_LOGGERS", "LIBRARY_NOISE", "is_library_noise", "setup_logging", "route_library_logs"]
