"""Shared fixtures: a tiny generated MuAViC-layout corpus (see ``tests/corpus_utils.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_utils import make_tiny_corpus, tiny_config
from needs import need

torch.set_num_threads(2)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> Path:
    """English ASR + Spanish ASR + En->Es + Es->En + LRS2 + noise lists (no video), read-only."""
    root = tmp_path_factory.mktemp("tiny_corpus")
    return make_tiny_corpus(root, n_train=12, n_valid=4, n_test=4, seed=0, langs=("en", "es"),
                            en_x=("es",), x_en=("es",), lrs2=True)


@pytest.fixture(scope="session")
def tiny_video_corpus(tmp_path_factory) -> Path:
    """English ASR with 96x96 25 fps mp4 lip videos next to the wavs, read-only."""
    root = tmp_path_factory.mktemp("tiny_video_corpus")
    return make_tiny_corpus(root, n_train=6, n_valid=3, n_test=3, seed=1, video=True)


@pytest.fixture()
def tiny_cfg(tiny_corpus):
    """A Config for ``tiny_corpus`` (lang en); a fresh object per test, so tests may change it."""
    return tiny_config(tiny_corpus)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real media); skips the test when it is absent (fails under ``CI=true``)."""
    need(SHARED_DATA.is_dir(), f"{SHARED_DATA} (real test media)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """Tiny models: one torch thread is fastest (and immune to other processes on a 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
