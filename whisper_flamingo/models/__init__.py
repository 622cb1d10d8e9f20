"""Plain PyTorch models (no Lightning) and the registry of their named configurations."""

from whisper_flamingo.models.avhubert import AVHubert, AVHubertConfig  # noqa: F401
from whisper_flamingo.models.params import count_parameters, human  # noqa: F401
from whisper_flamingo.models.registry import create, list_models, model_info, register_model  # noqa: F401
from whisper_flamingo.models.whisper import KVCache, ModelDimensions, Whisper  # noqa: F401
from whisper_flamingo.models.whisper_at import TLTR, TLTRConfig  # noqa: F401
