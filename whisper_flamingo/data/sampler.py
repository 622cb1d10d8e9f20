"""Length-bucketed batches under a padded-size budget (``batch_bins``), DDP-aware and resumable.

Batch construction keeps the original (ESPnet) ``batch_bins`` rule exactly:

1. sort the items by length, ascending and stable (ties keep dataset order);
2. add items one by one; after adding item ``k`` (the longest so far) the padded size is
   ``bins = count * length[k]``; when ``bins > batch_bins`` and ``count >= min_batch_size`` the
   batch is closed **including** ``k``.  So a batch may exceed the budget by its last item, and an
   item longer than the budget closes whatever batch is open (it is alone when that batch was
   empty, which holds for every over-long item after the first);
3. the items left over at the end form a last batch, unless ``drop_last`` and at least one batch
   exists (then they, the longest items, are dropped: the same ones every epoch, as originally);
   a kept last batch smaller than ``min_batch_size`` is dissolved: the preceding batches grow by
   one item each (last batch first) and are re-cut from the sorted order;
4. every batch lists its indices longest-first.

The batch *list* is built once.  Per epoch it is ordered: ``shuffle=True`` permutes it with
``numpy.random.default_rng([seed, epoch])`` (identical on every rank, different each epoch);
otherwise ``order="ascending"`` (shortest batches first) or ``"descending"`` (longest first, for
validation, test and decoding).

Distributed: the ordered list is split across ``num_replicas`` ranks by striding (rank ``r`` takes
batches ``r, r + R, ...``).  For training (``even=True``), when the count is not divisible by ``R``
the list is first padded by repeating batches from its start (as
``DistributedSampler(drop_last=False)`` does), so every rank has the same number of batches, ranks
are disjoint apart from those few repeated batches, and no batch is ever left out.  For evaluation
(``even=False``) nothing is repeated: the ranks' shares are disjoint and together hold every item
exactly once (counts summed over ranks are exact), and the first ``count % R`` ranks get one batch
more than the others; a rank whose share is empty gets one empty batch, so that every rank runs the
evaluation loop (and the collectives at its end).

Resuming: :meth:`state_dict` records the epoch and how many batches this rank has consumed in it;
after :meth:`load_state_dict` the next iteration of that epoch skips those batches.  The iterator
counts the batches it has *yielded*; with DataLoader prefetching that runs ahead of training, so
the trainer should report the exact count with :meth:`set_consumed` before saving.  ``len()``
stays the full epoch length while resuming (the trainer's restored progress counts the rest).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from whisper_flamingo.errors import ConfigError

logger = logging.getLogger(__name__)

ORDERS = ("ascending", "descending")


def batch_bins_from_config(audio_max_length: float, batch_size: float) -> int:
    """Padded audio samples per batch: ``int(audio_max_length * batch_size)`` (the original rule).

    Truncation does not change which batches are built: padded sizes are integers, and for an
    integer ``b``, ``b > x`` iff ``b > floor(x)``.
    """
    if audio_max_length <= 0:
        raise ConfigError(f"audio_max_length: must be positive, got {audio_max_length}")
    if batch_size <= 0:
        raise ConfigError(f"batch_size: must be positive, got {batch_size}")
    bins = int(audio_max_length * batch_size)
    if bins < 1:
        raise ConfigError(f"batch_size: audio_max_length x batch_size = {audio_max_length * batch_size} "
                          "is below one sample; raise batch_size")
    return bins


def build_batches(lengths: Sequence[int], batch_bins: float, *, drop_last: bool,
                  min_batch_size: int = 1) -> list[list[int]]:
    """The ``batch_bins`` batches in ascending length order, each listed longest-first."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    sizes: list[int] = []
    count = 0
    for i in order:
        count += 1
        if count * lengths[i] > batch_bins and count >= min_batch_size:
            sizes.append(count)
            count = 0
    if count and (not drop_last or not sizes):
        sizes.append(count)
    if len(sizes) > 1 and sizes[-1] < min_batch_size:
        for j in range(sizes.pop()):
            sizes[-(j % len(sizes)) - 1] += 1
    batches, start = [], 0
    for size in sizes:
        batches.append(order[start:start + size][::-1])
        start += size
    return batches


class LengthBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices whose padded length fits ``batch_bins`` (see module doc).

    ``lengths[i]`` is item ``i``'s length (audio samples).  ``len(sampler)`` is the number of
    batches of *this* rank per epoch (the same on every rank when ``even``).  Call :meth:`set_epoch` before each
    epoch (Lightning does when it finds the method on the batch sampler).
    """

    def __init__(self, lengths: Sequence[int], batch_bins: float, *, shuffle: bool, drop_last: bool,
                 seed: int = 0, num_replicas: int = 1, rank: int = 0, min_batch_size: int = 1,
                 order: str = "descending", even: bool = True) -> None:
        if batch_bins <= 0:
            raise ConfigError(f"batch_size: batch_bins must be positive, got {batch_bins}")
        if order not in ORDERS:
            raise ConfigError(f"batch order {order!r} is unknown; use one of {', '.join(ORDERS)}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1} (num_replicas={num_replicas})")
        if min_batch_size < 1:
            raise ValueError(f"min_batch_size must be >= 1, got {min_batch_size}")
        lens = [int(x) for x in lengths]
        if any(x < 0 for x in lens):
            raise ValueError("lengths must be non-negative")
        self.lengths = lens
        self.batch_bins = batch_bins
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed) % 2**64
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.min_batch_size = int(min_batch_size)
        self.order = order
        self.even = bool(even)
        self.batches = build_batches(lens, batch_bins, drop_last=self.drop_last,
                                     min_batch_size=self.min_batch_size)
        self.epoch = 0
        self._consumed = 0
        self._resume: tuple[int, int] | None = None  # (epoch, batches to skip)
        if not self.batches:
            logger.warning("LengthBatchSampler: no batches (the dataset is empty)")

    # ----------------------------------------------------------------------------- epoch layout
    def epoch_batches(self) -> list[list[int]]:
        """All ranks' batches for the current epoch, in order, before the split across ranks."""
        if self.shuffle:
            perm = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.batches))
            return [self.batches[int(j)] for j in perm]
        return list(self.batches) if self.order == "ascending" else self.batches[::-1]

    def rank_batches(self) -> list[list[int]]:
        """This rank's batches for the current epoch (with ``even``, padded so that all ranks have
        ``len(self)``; without, a disjoint share)."""
        batches = self.epoch_batches()
        if self.num_replicas == 1:
            return batches
        if not self.even:
            return batches[self.rank::self.num_replicas] or [[]]
        if not batches:
            return batches
        total = len(self) * self.num_replicas
        padded = (batches * math.ceil(total / len(batches)))[:total]
        return padded[self.rank::self.num_replicas]

    def __len__(self) -> int:
        if not self.even and self.num_replicas > 1:
            return max(1, len(range(self.rank, len(self.batches), self.num_replicas)))
        return math.ceil(len(self.batches) / self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.rank_batches()
        skip = 0
        if self._resume is not None and self._resume[0] == self.epoch:
            skip = min(self._resume[1], len(batches))
            logger.info("LengthBatchSampler: resuming epoch %d after %d of %d batches", self.epoch,
                        skip, len(batches))
        self._resume = None
        self._consumed = skip
        for batch in batches[skip:]:
            self._consumed += 1
            yield list(batch)

    # ----------------------------------------------------------------------------- state
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration uses."""
        if int(epoch) != self.epoch:
            self._consumed = 0
        self.epoch = int(epoch)

    def set_consumed(self, n: int) -> None:
        """Record that ``n`` batches of this epoch were trained (overrides the iterator's count)."""
        self._consumed = max(0, min(int(n), len(self)))

    def state_dict(self) -> dict:
        """``{"epoch", "consumed", ...}``; the other keys let a resume detect a changed setup."""
        return {"epoch": self.epoch, "consumed": self._consumed, "seed": self.seed,
                "num_replicas": self.num_replicas, "num_batches": len(self.batches),
                "shuffle": self.shuffle}

    def load_state_dict(self, state: dict) -> None:
        """Restore the epoch; the next iteration of it skips the ``consumed`` batches, then resets."""
        self.epoch = int(state["epoch"])
        consumed = int(state.get("consumed", 0))
        setup = {k: state[k] for k in ("seed", "num_replicas", "num_batches", "shuffle") if k in state}
        mine = {k: v for k, v in self.state_dict().items() if k in setup}
        if setup != mine:
            logger.warning("LengthBatchSampler: saved sampler state %s does not match this run %s "
                           "(data, batch size, seed or GPU count changed); restarting epoch %d "
                           "from its first batch", setup, mine, self.epoch)
            consumed = 0
        self._consumed = consumed
        self._resume = (self.epoch, consumed) if consumed else None

    # ----------------------------------------------------------------------------- statistics
    def padding_efficiency(self) -> float:
        """Real samples / padded samples over all batches of an epoch (1.0 = no padding)."""
        real = sum(self.lengths[i] for batch in self.batches for i in batch)
        padded = sum(self.lengths[batch[0]] * len(batch) for batch in self.batches)
        return real / padded if padded else 1.0
