"""MAE pre-training of SAT's ViT backbone (``task: mae``; reference §3.5, stage 1).

A task of its own rather than a ``tagging`` variant: it has no labels, no label CSV, no mAP and no
balanced sampling; it validates a loss, not tags, and its product is an encoder, not a head.  What it
shares with tagging (Adam, the cosine schedule) it imports from :mod:`whisper_flamingo.tasks.tagging`; its data
module is a :class:`~whisper_flamingo.tasks.clip_data.ClipDataModule`, as tagging's is (whole batches only: a
pass of fewer clips than ``batch_size`` is an error).

* Model: a registry :class:`~whisper_flamingo.models.sat_mae.AudioMAE` (``tagging_model: sat-mae-t``,
  ``-s``, ``-b``): mask ratio 0.75, per-patch normalised MSE on the masked patches.
* Data: ``data_train`` / ``data_val`` are JSON data lists (labels ignored) or tables with a ``filename``
  column; every training example is a random ``audio_max_length``-sample crop (zero-padded when shorter),
  validation takes the start of each clip with fixed masks (seeded per batch), so ``val/loss`` is
  comparable between validations.
* Optimiser: Adam (``adam_beta1``), ``lr_schedule: cosine`` with warm-up (reference: lr 2e-4, weight decay
  5e-7, 3 warm-up epochs, cosine to 1 %; Adam8bit replaced by fp32 Adam).
* Output: the ``save_top_k`` best checkpoints by ``val/loss`` (monitor ``val/loss``, mode ``min``) and, at
  the end, ``encoder_avg.pt`` (the average of those checkpoints' encoders, as the reference averages its 4
  best) and ``encoder_last.pt``: plain AudioTransformer state dicts that ``init_from`` (SAT training) and
  :func:`~whisper_flamingo.checkpoints.sat.load_vit_into_sat` load.  ``result.csv`` has one row per epoch.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from whisper_flamingo.config import Config
from whisper_flamingo.data.sat_psl import CropDataset, read_wav_list
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.tasks.clip_data import ClipDataModule
from whisper_flamingo.tasks.registry import register_task
from whisper_flamingo.tasks.tagging import tagging_optimizer

log = logging.getLogger(__name__)

RESULT_COLUMNS = ["epoch", "step", "train_loss", "valid_loss", "lr"]


def build_mae_model(cfg: Config) -> nn.Module:
    """The registry AudioMAE named by ``tagging_model``."""
    from whisper_flamingo.models.registry import create
    from whisper_flamingo.models.sat_mae import AudioMAE

    if not cfg.tagging_model:
        raise ConfigError("key 'tagging_model' is empty; task: mae needs an MAE model (sat-mae-t, -s or -b)")
    if cfg.monitor != "val/loss" or cfg.monitor_mode != "min":
        raise ConfigError(f"key 'monitor' is {cfg.monitor!r} ({cfg.monitor_mode}); task: mae logs val/loss: set "
                          "monitor=val/loss and monitor_mode=min")
    model = create(cfg.tagging_model)
    if not isinstance(model, AudioMAE):
        raise ConfigError(f"key 'tagging_model': {cfg.tagging_model!r} is not an MAE model; use sat-mae-t/s/b")
    return model


class MAEDataModule(ClipDataModule):
    """Random crops of the training clips, the first ``audio_max_length`` samples of the validation clips."""

    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.val_names = ["val"]
        self.collator = torch.stack

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        cfg = self.cfg
        self.require_lists("task: mae needs a list of audio clips")
        self.datasets["train"] = CropDataset(read_wav_list(cfg.data_train), cfg.audio_max_length, True, cfg.seed)
        self.datasets["val"] = CropDataset(read_wav_list(cfg.data_val), cfg.audio_max_length, False, cfg.seed)
        self.make_train_sampler()

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")


def mae_datamodule(cfg: Config, model: nn.Module) -> MAEDataModule:
    return MAEDataModule(cfg)


class MAETask(pl.LightningModule):
    """Train an AudioMAE (module doc)."""

    def __init__(self, cfg: Config, model: nn.Module, tokenizer: Any = None,
                 val_names: Sequence[str] = ("val",)) -> None:
        super().__init__()
        self.cfg, self.model = cfg, model
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.history: list[dict[str, float]] = []
        self._train_losses: list[float] = []
        self._val: list[tuple[float, int]] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        loss, _, _ = self.model(batch)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch.shape[0])
        self._train_losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> Any:
        return tagging_optimizer(self.cfg, [p for p in self.model.parameters() if p.requires_grad],
                                 self.cfg.validate_every_n_batches)

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        gen = torch.Generator(device=batch.device).manual_seed(self.cfg.seed * 100003 + batch_idx)
        loss, _, _ = self.model(batch, generator=gen)
        self._val.append((float(loss), batch.shape[0]))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        value = sum(v * n for v, n in self._val) / sum(n for _, n in self._val)
        self.log("val/loss", value, sync_dist=False)
        step = int(self.trainer.global_step)
        if step > 0 and self.trainer.is_global_zero:
            lr = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else 0.0
            train_loss = float(np.mean(self._train_losses)) if self._train_losses else float("nan")
            self.history.append({"epoch": step // self.cfg.validate_every_n_batches, "step": step,
                                 "train_loss": train_loss, "valid_loss": value, "lr": lr})
            self._train_losses = []
            path = self.cfg.checkpoint_dir / "result.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS)
                w.writeheader()
                w.writerows(self.history)

    def on_train_end(self) -> None:
        if not self.trainer.is_global_zero:
            return
        out = self.cfg.checkpoint_dir
        out.mkdir(parents=True, exist_ok=True)
        encoder = self.model.encoder
        torch.save({k: v.detach().cpu() for k, v in encoder.state_dict().items()}, out / "encoder_last.pt")
        best = [Path(p) for c in self.trainer.checkpoint_callbacks for p in getattr(c, "best_k_models", {})]
        best = [p for p in best if p.is_file()]
        if not best:
            log.info("MAE: no best checkpoints to average; encoder_last.pt written")
            return
        from whisper_flamingo.checkpoints.averaging import average_state_dicts
        from whisper_flamingo.checkpoints.io import read_checkpoint_file

        states = []
        for p in best:
            sd = read_checkpoint_file(p)["state_dict"]
            states.append({k[len("model.encoder."):]: v for k, v in sd.items() if k.startswith("model.encoder.")})
        torch.save(average_state_dicts(states), out / "encoder_avg.pt")
        log.info("MAE: encoder_avg.pt = average of the %d best checkpoints by val/loss (%s)", len(states),
                 ", ".join(p.name for p in best))


register_task("mae", module=MAETask, datamodule=mae_datamodule, model_builder=build_mae_model,
              description="MAE pre-training of SAT's ViT backbone (mask ratio 0.75, masked-patch MSE)")

__all__ = ["MAETask", "MAEDataModule", "build_mae_model", "mae_datamodule"]
