"""Lip reading (``task: vsr``): train a video encoder with a byte-level CTC loss on the lip videos alone.

The product is a lip-reading video encoder for stage 2.  The original's English Whisper-Flamingo models
use an AV-HuBERT that was pre-trained and then fine-tuned for lip reading (``large_noise_pt_noise_ft_433h``)
and keep it frozen in stage 2; where no such checkpoint exists (the synthetic demo corpus, a new
language without one), this task trains one: ``video_model_config`` names the encoder (``tiny``,
``base``, ``large`` AV-HuBERT sizes, ``lip2d``), a linear CTC head reads blank + the 256 UTF-8 byte
values of the lower-cased transcript.  Stage 2 then sets ``video_model_config`` to the same size and
``video_model_ckpt`` to this task's checkpoint (the encoder's weights are loaded, the head is not).

Data: the stage-1/2 manifests (``MuavicDataModule`` with video; the audio is read but not used, so no noise
keys are needed); training takes random crops + flips as stage 2 does.  Validation on the clean ``val``
split logs ``val/loss`` (CTC, per byte) and, with ``val_decode``, ``val/cer`` and ``val/wer`` of greedy CTC
decoding (normaliser ``val_normalizer``).  Everything else (AdamW, warm-up + linear decay, checkpoints, resume,
bad-sample skipping) is stage 1's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from whisper_flamingo.config import Config
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.video_encoders import CTCLipReader, build_lip_reader
from whisper_flamingo.tasks.asr import WhisperASRTask
from whisper_flamingo.tasks.flamingo import video_ctc_loss
from whisper_flamingo.tasks.registry import register_task

log = logging.getLogger(__name__)


def build_vsr_model(cfg: Config) -> CTCLipReader:
    """The config's lip reader: a randomly initialised encoder of size ``video_model_config`` + CTC head."""
    if not cfg.video_model_config:
        raise ConfigError("key 'video_model_config' is empty; task: vsr trains a video encoder of that size "
                          "(tiny, base, large or lip2d)")
    return build_lip_reader(cfg.video_model_config, cfg.use_av_hubert_encoder)


def vsr_datamodule(cfg: Config, model: nn.Module) -> pl.LightningDataModule:
    """The manifests with lip video; one evaluation loader, the clean ``val`` split."""
    from whisper_flamingo.data.datamodule import MuavicDataModule

    return MuavicDataModule(cfg, n_mels=80, multilingual=False, video=True, eval_order=("val",))


class LipReadingTask(WhisperASRTask):
    """CTC training of a :class:`~whisper_flamingo.models.video_encoders.CTCLipReader` (module doc)."""

    def __init__(self, cfg: Config, model: CTCLipReader, tokenizer: Any = None,
                 val_names: Sequence[str] = ()) -> None:
        super().__init__(cfg, model, tokenizer="bytes", val_names=val_names)  # no Whisper tokenizer: bytes

    def _ctc(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean per-byte CTC loss, logits) of a batch."""
        mask = batch.get("video_padding_mask")
        logits = self.model(batch["video"], mask)
        return video_ctc_loss(logits, mask, batch["texts"]), logits

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.count_bad(batch, "train"):
            return self.empty_step(batch_idx)
        loss, _ = self._ctc(batch)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch["video"].shape[0])
        return loss

    def _new_acc(self) -> dict[str, Any]:
        return {"loss_sum": 0.0, "utterances": 0, "refs": [], "hyps": []}

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        from whisper_flamingo.decoding.ctc import ctc_greedy_texts

        acc = self._val.setdefault(dataloader_idx, self._new_acc())
        if self.count_bad(batch, "val"):
            return
        loss, logits = self._ctc(batch)
        acc["loss_sum"] += float(loss) * int(batch["video"].shape[0])
        acc["utterances"] += int(batch["video"].shape[0])
        if self.cfg.val_decode:
            acc["hyps"].extend(ctc_greedy_texts(logits, batch.get("video_padding_mask")))
            acc["refs"].extend(batch["texts"])

    def on_validation_epoch_end(self) -> None:
        from whisper_flamingo.decoding.scoring import wer_cer

        for idx in range(self.num_eval_loaders()):
            acc = self._gather(self._val.get(idx, self._new_acc()))
            name = self._name(idx)
            self._record_utterances(name, acc)
            if not acc["utterances"]:
                continue
            self.log(f"{name}/loss", acc["loss_sum"] / max(1, acc["utterances"]), sync_dist=False)
            if not acc["refs"]:
                continue
            scores = wer_cer(acc["refs"], acc["hyps"], normalizer=self.cfg.val_normalizer, lang="en")
            self.log(f"{name}/wer", float(scores["wer"]), sync_dist=False)
            self.log(f"{name}/cer", float(scores["cer"]), sync_dist=False)
            log.info("%s lip reading: CER %.1f %% WER %.1f %%; REF: %s | HYP: %s", name, scores["cer"],
                     scores["wer"], acc["refs"][0], acc["hyps"][0])
        self._log_skipped("val")
        self._val = {}


register_task("vsr", module=LipReadingTask, datamodule=vsr_datamodule, model_builder=build_vsr_model,
              sync_batchnorm=True,
              description="lip reading: a video encoder trained with byte CTC on the lip videos (stage 2 loads "
                          "it as a frozen video encoder)")

__all__ = ["LipReadingTask", "build_vsr_model", "vsr_datamodule"]
