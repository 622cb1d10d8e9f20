"""Opening a media file with PyAV for the preparation steps: one-line errors naming the file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from whisper_flamingo.errors import DataError


def open_container(path: str | Path, what: str = "media file", advice: str = "re-download it or leave it out"
                   ) -> Any:
    """``av.open(path)``; an empty file or one FFmpeg cannot read is a :class:`DataError`
    (``empty_file`` / ``unreadable``) saying it is not a readable ``what`` and ``advice``."""
    import av

    path = Path(path)
    if path.stat().st_size == 0:
        raise DataError("empty file (0 bytes); re-download it or leave it out", reason="empty_file", path=path)
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise DataError(f"not a {what} FFmpeg can read ({err}); {advice}", reason="unreadable", path=path) from None


__all__ = ["open_container"]
