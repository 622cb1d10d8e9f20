"""whisper-flamingo: noise-robust audio and audio-visual speech recognition with Whisper."""

__version__ = "0.1.0"

# Lazy exports: ``import whisper_flamingo`` stays cheap (no torch until one of these is used).
_LAZY = {
    "transcribe": "whisper_flamingo.decoding.transcribe",
    "parse_at_label": "whisper_flamingo.decoding.tags",
    "load_model": "whisper_flamingo.commands.api",
    "Model": "whisper_flamingo.commands.api",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'whisper_flamingo' has no attribute {name!r}")


__all__ = ["__version__", "transcribe", "parse_at_label", "load_model", "Model"]
