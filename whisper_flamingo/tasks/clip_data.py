"""What the clip-list data modules (``task: tagging``, ``task: mae``) share.

Both read ``data_train`` / ``data_val`` lists of clips, draw whole training batches of ``batch_size`` with a
:class:`~whisper_flamingo.data.tagging.WeightedEpochBatchSampler` (``samples_per_epoch`` draws per pass,
deterministic in ``seed``) and load with ``num_worker`` workers.  Whole batches only: a pass of fewer draws
than one batch would train nothing, so that is a one-line error at setup.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
from torch.utils.data import DataLoader, Dataset

from whisper_flamingo.config import Config
from whisper_flamingo.data.tagging import WeightedEpochBatchSampler
from whisper_flamingo.errors import ConfigError


class ClipDataModule(pl.LightningDataModule):
    """Base of the clip-list data modules: ``setup`` fills ``datasets`` (``"train"`` at least) and sets
    ``collator``, then calls :meth:`make_train_sampler`."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.datasets: dict[str, Dataset] = {}
        self.collator: Callable[[list[Any]], Any] | None = None

    @property
    def batch_size(self) -> int:
        return max(1, int(self.cfg.batch_size))

    def require_lists(self, what: str) -> None:
        """One-line error for an empty ``data_train`` or ``data_val``; ``what`` says what the task needs."""
        for key in ("data_train", "data_val"):
            if not getattr(self.cfg, key):
                raise ConfigError(f"key '{key}' is empty; {what}")

    def make_train_sampler(self, weights: np.ndarray | None = None) -> WeightedEpochBatchSampler:
        """``self.train_sampler`` over ``datasets["train"]``; refuses a pass shorter than one batch."""
        cfg = self.cfg
        sampler = WeightedEpochBatchSampler(len(self.datasets["train"]), self.batch_size, weights=weights,
                                            num_samples=cfg.samples_per_epoch, seed=cfg.seed)
        if len(sampler) == 0:  # every batch is whole: fewer draws than one batch train nothing
            raise ConfigError(f"{cfg.data_train}: {sampler.num_samples} training clips per pass, fewer "
                              f"than batch_size {self.batch_size}; lower batch_size (or raise samples_per_epoch)")
        self.train_sampler = sampler
        return sampler

    def _loader(self, dataset: Dataset, **kw: Any) -> DataLoader:
        workers = self.cfg.num_worker
        return DataLoader(dataset, collate_fn=self.collator, num_workers=workers,
                          persistent_workers=workers > 0, **kw)

    def _eval_loader(self, name: str) -> DataLoader:
        return self._loader(self.datasets[name], batch_size=self.batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["train"], batch_sampler=self.train_sampler)


__all__ = ["ClipDataModule"]
