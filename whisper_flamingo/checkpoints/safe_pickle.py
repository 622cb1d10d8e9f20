"""Restricted unpickling of fairseq / Whisper-Flamingo checkpoints, with neither fairseq nor omegaconf.

``torch.load(weights_only=True)`` refuses fairseq checkpoints: their ``task_state`` holds pickled
``fairseq`` objects (dictionaries, a SentencePiece wrapper) and old ones hold an ``argparse.Namespace``
or pickled omegaconf ``DictConfig``.  This module is a drop-in ``pickle_module`` for ``torch.load``
whose unpickler

* resolves only an allow-list of globals: plain containers, tensor / storage rebuild functions,
  dtypes, ``argparse.Namespace``, ``collections.OrderedDict`` and friends, numpy array rebuilding;
* maps ``fairseq.*``, ``avhubert.*``, ``omegaconf.*`` and ``sentencepiece.*`` classes onto inert
  stand-in classes that only record their constructor arguments and state (no third-party code is
  imported, nothing pickled is executed);
* refuses any other global, and any ``BUILD`` on an object that is not a plain data instance
  (no monkey-patching of classes or modules), with :class:`~whisper_flamingo.errors.CheckpointError`.

:func:`safe_load` is the entry point; :func:`to_plain` turns stand-ins back into plain containers.
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import copyreg
import logging
import pickle
import struct
import sys
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whisper_flamingo.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["Unpickler", "load", "safe_load", "to_plain", "StandIn", "RefusedGlobal"]

# Module prefixes whose classes become inert stand-ins (never imported).
STAND_IN_MODULES = ("fairseq", "avhubert", "omegaconf", "sentencepiece")


class RefusedGlobal(pickle.UnpicklingError):
    """Raised inside the unpickler; :func:`safe_load` turns it into a CheckpointError naming the file."""

    def __init__(self, what: str, action: str = "unpickle") -> None:
        super().__init__(f"refuses to {action} {what}")
        self.what = what
        self.action = action


class StandIn:
    """Inert placeholder for a class of a third-party package (fairseq, omegaconf, sentencepiece).

    ``args`` holds constructor / reduce arguments, ``state`` whatever ``BUILD`` passed.  The
    class name it stands for is ``qualname``.  Subclasses are created per pickled name.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> StandIn:
        obj = super().__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # arguments were recorded by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"StandIn({self.qualname})"


_stand_in_classes: dict[str, type[StandIn]] = {}


def _stand_in(qualname: str) -> type[StandIn]:
    cls = _stand_in_classes.get(qualname)
    if cls is None:
        cls = type(qualname.rsplit(".", 1)[-1], (StandIn,), {"qualname": qualname, "__module__": __name__})
        _stand_in_classes[qualname] = cls
    return cls


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _allowed_globals() -> dict[str, Any]:
    """The globals a checkpoint may name, as ``"module.name" -> object``."""
    allowed: dict[str, Any] = {
        "collections.OrderedDict": collections.OrderedDict,
        "collections.defaultdict": collections.defaultdict,
        "collections.Counter": collections.Counter,
        "argparse.Namespace": argparse.Namespace,
        "copyreg._reconstructor": copyreg._reconstructor,
        "_codecs.encode": __import__("codecs").encode,
        "typing.Any": typing.Any,
        "typing.Dict": typing.Dict,  # noqa: UP006 - omegaconf writes these names into its metadata
        "typing.List": typing.List,  # noqa: UP006
        "typing.Tuple": typing.Tuple,  # noqa: UP006
        "torch.Size": torch.Size,
        "torch.Tensor": torch.Tensor,
        "torch.device": torch.device,
        "torch.nn.parameter.Parameter": torch.nn.Parameter,
        "torch._tensor._rebuild_from_type_v2": torch._tensor._rebuild_from_type_v2,
        "torch.serialization._get_layout": torch.serialization._get_layout,
    }
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytes", "bytearray", "str", "int", "float",
                 "complex", "bool", "slice", "range", "object"):
        allowed[f"builtins.{name}"] = getattr(__import__("builtins"), name)
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                 "_rebuild_parameter_with_state", "_rebuild_meta_tensor_no_storage",
                 "_rebuild_device_tensor_from_numpy", "_rebuild_device_tensor_from_cpu_tensor"):
        if hasattr(torch._utils, name):
            allowed[f"torch._utils.{name}"] = getattr(torch._utils, name)
    for name in dir(torch):
        value = getattr(torch, name, None)
        if isinstance(value, torch.dtype) or (name.endswith("Storage") and isinstance(value, type)):
            allowed[f"torch.{name}"] = value
    multiarray = _numpy_multiarray()
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[f"{module}._reconstruct"] = multiarray._reconstruct
        allowed[f"{module}.scalar"] = multiarray.scalar
    allowed["numpy.ndarray"] = np.ndarray
    allowed["numpy.dtype"] = np.dtype
    for name in dir(getattr(np, "dtypes", None)):  # numpy >= 1.25 pickles dtypes as numpy.dtypes.XDType
        if name.endswith("DType"):
            allowed[f"numpy.dtypes.{name}"] = getattr(np.dtypes, name)
    return allowed


_ALLOWED: dict[str, Any] | None = None
# Instances whose state a BUILD opcode may set (besides stand-ins).
_BUILDABLE = (collections.OrderedDict, collections.defaultdict, collections.Counter, argparse.Namespace,
              torch.Tensor, np.ndarray, np.dtype)


def _resolve(module: str, name: str) -> Any:
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed_globals()
    qualname = f"{module}.{name}"
    if qualname in _ALLOWED:
        return _ALLOWED[qualname]
    if module.split(".", 1)[0] in STAND_IN_MODULES and name.isidentifier():
        log.debug("unpickling %s as an inert stand-in", qualname)
        return _stand_in(qualname)
    raise RefusedGlobal(qualname)


class Unpickler(pickle._Unpickler):  # the pure-Python unpickler lets us vet the BUILD opcode
    """Unpickler that resolves only allow-listed globals and builds only plain data instances."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        if self.proto < 3 and self.fix_imports:  # protocol-2 pickles use Python 2 names (__builtin__, ...)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        return _resolve(module, name)

    def load_build(self) -> None:
        inst = self.stack[-2]  # [-1] is the state
        if not isinstance(inst, (StandIn, *_BUILDABLE)) or isinstance(inst, type):
            raise RefusedGlobal(f"{type(inst).__module__}.{type(inst).__qualname__}", "set the state of")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build

    def load_global(self) -> None:
        module, name = self.readline(), self.readline()
        if not (module.endswith(b"\n") and name.endswith(b"\n")):  # a name cut short: the file ends here
            raise EOFError("the file ends inside a global name")
        self.append(self.find_class(module[:-1].decode("utf-8"), name[:-1].decode("utf-8")))

    dispatch[pickle.GLOBAL[0]] = load_global


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` through the restricted :class:`Unpickler` (used by ``torch.load``)."""
    return Unpickler(file, **kwargs).load()


def safe_load(path: str | Path, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load`` a checkpoint with the restricted unpickler; a refused global, a truncated and a
    corrupt file each become their own CheckpointError naming the file.

    Use :func:`whisper_flamingo.checkpoints.io.read_checkpoint_file` (weights-only first) in the package.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; check the path")
    try:
        return torch.load(path, map_location=map_location, weights_only=False, mmap=mmap,
                          pickle_module=sys.modules[__name__])
    except RefusedGlobal as err:
        raise CheckpointError(
            f"{path}: {err.args[0]}; this is not an AV-HuBERT/Whisper checkpoint or it contains code (only "
            "tensors, plain Python types and fairseq/omegaconf configs are read)"
        ) from None
    except (EOFError, struct.error, IndexError) as err:  # reading past the end (``read(1)[0]`` of b"")
        if isinstance(err, IndexError) and str(err) != "index out of range":
            raise CheckpointError(f"{path}: corrupt checkpoint, cannot unpickle it ({_first_line(err)}); fetch "
                                  "or save it again") from None
        raise CheckpointError(f"{path}: truncated ({type(err).__name__}: {_first_line(err)}); the download or "
                              "save did not finish: fetch or save it again") from None
    except (pickle.UnpicklingError, RuntimeError, ValueError, OSError, AttributeError, TypeError,
            KeyError) as err:
        first = _first_line(err)
        what = "truncated" if "truncated" in first or "EOF" in first else "corrupt"
        raise CheckpointError(f"{path}: {what} checkpoint, cannot unpickle it ({type(err).__name__}: {first}); "
                              "fetch or save it again") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def to_plain(obj: Any) -> Any:
    """Convert stand-ins (omegaconf containers and nodes, enums, fairseq objects) and Namespaces to
    plain dicts / lists / scalars, recursively.  Tensors and other values are returned unchanged."""
    if isinstance(obj, StandIn):
        return _stand_in_to_plain(obj)
    if isinstance(obj, argparse.Namespace):
        return {k: to_plain(v) for k, v in vars(obj).items()}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if type(obj) is list:
        return [to_plain(v) for v in obj]
    if type(obj) is tuple:
        return tuple(to_plain(v) for v in obj)
    return obj


def _stand_in_to_plain(obj: StandIn) -> Any:
    state = obj.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):  # (dict, slots)
        state = {**(state[0] or {}), **state[1]}
    if obj.qualname.startswith("omegaconf.") and isinstance(state, dict):
        if "_content" in state:  # DictConfig / ListConfig
            return to_plain(state["_content"])
        if "_val" in state:  # a value node
            return to_plain(state["_val"])
    if state is None and len(obj.args) == 1 and not obj.kwargs:  # an enum member: Class(value)
        return to_plain(obj.args[0])
    plain: dict[str, Any] = {"__class__": obj.qualname}
    if isinstance(state, dict):
        plain.update(to_plain(state))
    elif state is not None:
        plain["__state__"] = to_plain(state)
    if obj.args:
        plain["__args__"] = to_plain(list(obj.args))
    return plain
