"""Plain PyTorch models (no Lightning)."""

from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig  # noqa: F401
from whisper_flamingo.models.whisper import KVCache, ModelDimensions, Whisper  # noqa: F401
