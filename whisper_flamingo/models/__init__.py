"""Plain PyTorch models (no Lightning)."""

from whisper_flamingo.models.whisper import KVCache, ModelDimensions, Whisper  # noqa: F401
