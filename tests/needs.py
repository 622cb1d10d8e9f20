"""What a test needs from outside the repository: real media (``../shared/data``), packaged Whisper
weights, optional extras.  CI (``CI=true``) installs all of them (``make test``: every extra, the shared
data next to the checkout), so there a missing one is a failure; elsewhere the test skips saying why."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest


def in_ci() -> bool:
    """True when the environment variable ``CI`` is set to a true value (GitHub Actions, GitLab, ...)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def need(present: bool, what: str, module_level: bool = False) -> None:
    """Skip the calling test (or module) when ``what`` is not ``present`` (fail instead under ``CI=true``)."""
    if present:
        return
    if in_ci():
        pytest.fail(f"{what} is missing, and CI=true: CI must provide it (make install; ../shared/data)",
                    pytrace=False)
    pytest.skip(f"{what} is missing (with CI=true this is a failure)", allow_module_level=module_level)


def need_module(name: str, what: str, module_level: bool = False) -> ModuleType:
    """Import ``name`` or :func:`need` it (``what`` says where it comes from, e.g. ``the test extra``)."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        need(False, f"{name} ({what}: {err})", module_level)
        raise  # unreachable: need() skipped or failed
