"""LengthBatchSampler: batch_bins rule, ordering, DDP split and resume."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from whisper_flamingo.data.sampler import LengthBatchSampler, batch_bins_from_config, build_batches
from whisper_flamingo.errors import ConfigError


def make(lengths, bins, **kw):
    kw.setdefault("shuffle", False)
    kw.setdefault("drop_last", False)
    return LengthBatchSampler(lengths, bins, **kw)


def test_bins_rule_by_hand():
    # sorted ascending (stable): 1(i1) 2(i5) 3(i2) 3(i3) 5(i0) 7(i6) 10(i4); budget 8
    # +i1: 1*1=1  +i5: 2*2=4  +i2: 3*3=9>8 -> close [1,5,2]
    # +i3: 1*3=3  +i0: 2*5=10>8 -> close [3,0]
    # +i6: 1*7=7  +i4: 2*10=20>8 -> close [6,4]  (the over-long 10 joins the open batch)
    lengths = [5, 1, 3, 3, 10, 2, 7]
    s = make(lengths, 8, order="ascending")
    assert s.batches == [[2, 5, 1], [0, 3], [4, 6]]
    assert list(s) == [[2, 5, 1], [0, 3], [4, 6]]
    assert list(make(lengths, 8, order="descending")) == [[4, 6], [0, 3], [2, 5, 1]]
    assert len(s) == 3
    assert s.padding_efficiency() == pytest.approx((3 + 2 + 1 + 5 + 3 + 10 + 7) / (3 * 3 + 2 * 5 + 2 * 10))


def test_overlong_item_alone_when_batch_empty():
    # budget 5: +4 -> 4; +6 -> 12>5 close [0,1]; +7 -> 7>5 close [2] alone; +9 alone
    assert build_batches([4, 6, 7, 9], 5, drop_last=False) == [[1, 0], [2], [3]]
    # batch_bins=1: every item (length >= 2) is its own batch
    assert build_batches([3, 2, 5], 1, drop_last=True) == [[1], [0], [2]]


def test_drop_last_and_leftover():
    # budget 8: +4 +4 (8, not > 8) +4 -> 12 close [0,1,2]; leftover [3,4]
    lengths = [4, 4, 4, 4, 4]
    assert build_batches(lengths, 8, drop_last=False) == [[2, 1, 0], [4, 3]]
    assert build_batches(lengths, 8, drop_last=True) == [[2, 1, 0]]
    # leftover is kept when it is the only batch, even with drop_last
    assert build_batches([1, 1], 100, drop_last=True) == [[1, 0]]
    assert build_batches([], 100, drop_last=False) == []
    assert len(make([], 100)) == 0 and list(make([], 100, num_replicas=2, rank=1)) == []


def test_min_batch_size_redistributes_last_batch():
    # budget 3, min 2: +1 +2 (4>3) close [0,1]; +3 (3) +4 (8>3) close [2,3]; +5 (5>3 but count 1) leftover
    # sizes [2,2,1] -> last (1 < 2) dissolved -> [2,3] -> [0,1],[2,3,4]
    assert build_batches([1, 2, 3, 4, 5], 3, drop_last=False, min_batch_size=2) == [[1, 0], [4, 3, 2]]


def test_every_item_once_without_drop_last():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1000, 160000, size=500).tolist()
    s = make(lengths, 640000, shuffle=True)
    flat = [i for b in s for i in b]
    assert sorted(flat) == list(range(500))
    for b in s:
        lens = [lengths[i] for i in b]
        assert lens == sorted(lens, reverse=True)
        # the budget is exceeded only by the batch's closing item
        assert (len(b) - 1) * max(lens[1:], default=0) <= 640000


def test_shuffle_deterministic_and_changes_with_epoch():
    rng = np.random.default_rng(1)
    lengths = rng.integers(100, 1000, size=400).tolist()
    a, b = make(lengths, 2000, shuffle=True, seed=3), make(lengths, 2000, shuffle=True, seed=3)
    assert list(a) == list(b)
    e0 = list(a)
    a.set_epoch(1)
    e1 = list(a)
    assert e0 != e1 and sorted(map(tuple, e0)) == sorted(map(tuple, e1))
    a.set_epoch(0)
    assert list(a) == e0
    c = make(lengths, 2000, shuffle=True, seed=4)
    assert list(c) != e0


@pytest.mark.parametrize("replicas", [2, 3])
def test_ranks_disjoint_equal_length_full_coverage(replicas):
    rng = np.random.default_rng(2)
    lengths = rng.integers(100, 1000, size=300).tolist()
    ref = make(lengths, 1500, shuffle=True, seed=7)
    n = len(ref.batches)
    for epoch in (0, 1):
        per_rank = []
        for r in range(replicas):
            s = make(lengths, 1500, shuffle=True, seed=7, num_replicas=replicas, rank=r)
            s.set_epoch(epoch)
            per_rank.append([tuple(b) for b in s])
            assert len(s) == len(per_rank[-1]) == -(-n // replicas)
        all_batches = [b for rb in per_rank for b in rb]
        pad = len(all_batches) - n
        assert 0 <= pad < replicas
        # every batch of the epoch is served, and only the padding repeats batches
        assert set(all_batches) == {tuple(b) for b in ref.batches}
        assert len(set(all_batches)) == n
        ref.set_epoch(epoch)
        padding = [tuple(b) for b in ref.epoch_batches()[:pad]]
        for r1 in range(replicas):
            for r2 in range(r1 + 1, replicas):
                assert set(per_rank[r1]) & set(per_rank[r2]) <= set(padding)
        covered = {i for b in all_batches for i in b}
        assert covered == set(range(len(lengths)))


def test_ranks_strictly_disjoint_when_divisible():
    lengths = [10] * 12
    per_rank = [list(make(lengths, 20, num_replicas=3, rank=r)) for r in range(3)]  # 4 batches of 3
    assert [len(x) for x in per_rank] == [2, 2, 2]  # 4 batches -> padded to 6
    lengths = [10] * 18  # 6 batches of 3
    per_rank = [{tuple(b) for b in make(lengths, 20, num_replicas=3, rank=r)} for r in range(3)]
    assert all(len(x) == 2 for x in per_rank)
    assert not (per_rank[0] & per_rank[1] or per_rank[0] & per_rank[2] or per_rank[1] & per_rank[2])


def test_fewer_batches_than_ranks():
    per_rank = [list(make([5, 6], 1, order="ascending", num_replicas=3, rank=r)) for r in range(3)]
    assert per_rank == [[[0]], [[1]], [[0]]]


def test_resume_yields_exactly_the_remaining_batches():
    rng = np.random.default_rng(3)
    lengths = rng.integers(100, 1000, size=200).tolist()
    kw = dict(shuffle=True, seed=5, num_replicas=2, rank=1)
    s = make(lengths, 1500, **kw)
    s.set_epoch(4)
    full = list(s)
    it = iter(s)
    seen = [next(it) for _ in range(3)]
    assert seen == full[:3]
    state = s.state_dict()
    assert state["epoch"] == 4 and state["consumed"] == 3

    t = make(lengths, 1500, **kw)
    t.load_state_dict(state)
    t.set_epoch(4)  # Lightning sets the (same) epoch again before iterating
    assert list(t) == full[3:]
    assert list(t) == full  # the skip applies once

    # the trainer's exact count wins over the iterator's (prefetch runs ahead)
    s.set_consumed(2)
    u = make(lengths, 1500, **kw)
    u.load_state_dict(s.state_dict())
    assert list(u) == full[2:]

    # a saved state for another epoch is not applied to a different epoch
    v = make(lengths, 1500, **kw)
    v.load_state_dict(state)
    v.set_epoch(5)
    assert len(list(v)) == len(v)


def test_resume_with_changed_setup_restarts_epoch(caplog):
    lengths = list(range(100, 1100, 10))
    s = make(lengths, 1500, shuffle=True, num_replicas=2, rank=0)
    it = iter(s)
    next(it)
    state = s.state_dict()
    t = make(lengths, 1500, shuffle=True, num_replicas=3, rank=0)
    with caplog.at_level(logging.WARNING):
        t.load_state_dict(state)
    assert "does not match" in caplog.text
    assert len(list(t)) == len(t)


def test_validation():
    with pytest.raises(ConfigError, match="batch_size"):
        make([1, 2], 0)
    with pytest.raises(ConfigError, match="ascending"):
        make([1, 2], 10, order="random")
    with pytest.raises(ValueError):
        make([1, 2], 10, num_replicas=2, rank=2)


def test_batch_bins_from_config():
    assert batch_bins_from_config(320000, 0.6) == 192000
    assert batch_bins_from_config(160000, 4) == 640000
    assert batch_bins_from_config(320000, 1.6) == 512000
    with pytest.raises(ConfigError, match="batch_size"):
        batch_bins_from_config(160000, 0)
    with pytest.raises(ConfigError, match="audio_max_length"):
        batch_bins_from_config(-1, 4)


class _Lengths(Dataset):
    def __init__(self, lengths):
        self.lengths = lengths

    def __len__(self):
        return len(self.lengths)

    def __getitem__(self, i):
        return torch.zeros(self.lengths[i])


def test_works_as_dataloader_batch_sampler():
    lengths = [3, 9, 4, 8, 1, 7]
    s = make(lengths, 16, shuffle=True, drop_last=True)
    dl = DataLoader(_Lengths(lengths), batch_sampler=s,
                    collate_fn=lambda items: [len(x) for x in items])
    got = list(dl)
    assert len(got) == len(s)
    assert got == [[lengths[i] for i in b] for b in s]
