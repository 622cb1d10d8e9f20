"""SpecAugment masks: policies, widths, placement inside the real frames, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from whisper_flamingo.data.specaug import spec_augment
from whisper_flamingo.errors import ConfigError


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensor ops: thread start-up would dominate on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def bands(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, width) of each run of True."""
    runs, start = [], None
    for i, v in enumerate(list(mask) + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def masked(out: torch.Tensor, n_frames: int):
    """Rows zeroed over all real frames, and columns zeroed over all mel bins."""
    z = (out == 0).numpy()
    rows = z[:, :n_frames].all(axis=1)
    cols = z.all(axis=0)
    return rows, cols, z


def test_off_and_unknown_policy():
    mel = torch.rand(80, 50)
    assert spec_augment(mel, "", 50, np.random.default_rng(0)) is mel
    with pytest.raises(ConfigError) as info:
        spec_augment(mel, "ls-triple", 50, np.random.default_rng(0))
    msg = str(info.value)
    assert "spec_augment" in msg and "ls-basic" in msg and "ls-double" in msg and "ls-triple" in msg


@pytest.mark.parametrize("policy, n_masks", [("ls-basic", 1), ("ls-double", 2)])
def test_masks_bounded_inside_real_frames(policy, n_masks):
    total = 600
    widths_f, widths_t = [], []
    for seed in range(150):
        n_frames = [450, 37, 600][seed % 3]
        mel = torch.rand(80, total) + 0.5  # never 0 before masking
        out = spec_augment(mel, policy, n_frames, np.random.default_rng(seed))
        assert torch.all(mel > 0.4)  # input untouched
        assert torch.equal(out[:, n_frames:], mel[:, n_frames:])  # padding untouched
        rows, cols, z = masked(out, n_frames)
        # zeros are exactly the union of full-height time bands and frequency bands over the real frames
        expect = cols[None, :] | (rows[:, None] & (np.arange(total) < n_frames)[None, :])
        np.testing.assert_array_equal(z, expect)
        assert not cols[n_frames:].any()
        fb, tb = bands(rows), bands(cols)
        if n_frames > 100:  # time masks cannot cover all real frames, so masked rows are freq masks
            assert len(fb) <= n_masks and rows.sum() <= 27 * n_masks
            widths_f += [w for _, w in fb] if n_masks == 1 else []
        assert len(tb) <= n_masks and cols.sum() <= min(100 * n_masks, n_frames)
        if n_masks == 1:
            widths_t += [w for _, w in tb]
    if n_masks == 1:
        # widths follow U{0..F}: both small and near-maximal widths occur, mean near F/2
        assert max(widths_f) >= 24 and 9 <= np.mean(widths_f) <= 18
        assert max(widths_t) >= 90


def test_widths_uniform_including_zero():
    zero_f = 0
    for seed in range(300):
        out = spec_augment(torch.ones(80, 400), "ls-basic", 400, np.random.default_rng(seed))
        rows, _, _ = masked(out, 400)
        zero_f += rows.sum() == 0
    # P(width 0) = 1/28 per mask: expect about 11 of 300
    assert 2 <= zero_f <= 25


def test_tiny_spectrograms():
    out = spec_augment(torch.ones(10, 20), "ls-double", 5, np.random.default_rng(1))
    assert torch.equal(out[:, 5:], torch.ones(10, 15))
    out = spec_augment(torch.ones(10, 20), "ls-basic", 0, np.random.default_rng(1))
    assert torch.equal(out, torch.ones(10, 20))
    out = spec_augment(torch.ones(10, 20), "ls-basic", 999, np.random.default_rng(1))  # clamped
    assert out.shape == (10, 20)


def test_deterministic_given_rng():
    mel = torch.randn(80, 3000)
    a = spec_augment(mel, "ls-double", 2000, np.random.default_rng(42))
    b = spec_augment(mel, "ls-double", 2000, np.random.default_rng(42))
    assert torch.equal(a, b)
    others = [spec_augment(mel, "ls-double", 2000, np.random.default_rng(s)) for s in range(5)]
    assert any(not torch.equal(a, o) for o in others)
