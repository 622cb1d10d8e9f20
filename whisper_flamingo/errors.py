"""One family of errors whose message is a single actionable line.

The command line prints ``error: <message>`` for any :class:`WFError` and exits with status 2
(``--debug`` shows the traceback instead).  Messages name the file (and line) or the key that is
wrong and say what to do about it.
"""

from __future__ import annotations

from pathlib import Path


def located(path: str | Path | None, line: int | None, message: str) -> str:
    """Format ``<path>:<line>: <message>`` (parts that are unknown are left out)."""
    if path is None:
        return message
    return f"{path}:{line}: {message}" if line is not None else f"{path}: {message}"


def one_line(err: BaseException) -> str:
    """The user-facing line of an error.

    An error raised in a DataLoader worker comes back wrapped ("Caught DataError in DataLoader
    worker process 0. Original Traceback ..."); its last line holds the original message.
    """
    text = str(err).strip()
    if "\n" not in text:
        return text
    last = text.splitlines()[-1]
    name = type(err).__name__
    for prefix in (f"{type(err).__module__}.{name}: ", f"{name}: "):
        if last.startswith(prefix):
            return last[len(prefix):]
    return last


class WFError(Exception):
    """Base class: ``str(err)`` is the one-line message shown to the user."""


class ConfigError(WFError):
    """A config file, key or value is wrong."""


class CheckpointError(WFError):
    """A checkpoint cannot be found, read or matched to the model."""


class DataError(WFError):
    """A sample, manifest or media file is unusable.

    ``reason`` is a short machine-readable tag (``missing_file``, ``empty_file``, ``unreadable``,
    ``truncated``, ``nan_samples``, ``sample_count_mismatch``, ``column_count``,
    ``label_count_mismatch``, ``empty_transcript``, ``unknown_language``, ...) used to count skipped
    samples per reason when ``on_bad_sample: skip``.
    """

    def __init__(self, message: str, reason: str = "bad_sample", path: str | Path | None = None,
                 line: int | None = None) -> None:
        super().__init__(located(path, line, message))
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line


class NoiseError(DataError):
    """A noise list or noise file is unusable (never skipped: it would bias every sample)."""
