"""Every import and export of weights (key maps live in this package only)."""

from whisper_flamingo.checkpoints.whisper import (  # noqa: F401
    load_stage1_checkpoint,
    load_whisper,
    resolve_whisper,
)
