"""Stage 1: audio-only Whisper fine-tuning as a LightningModule.

The module owns the loss, the metrics, the optimizer groups and the schedule; the model is a plain
:class:`whisper_flamingo.models.whisper.Whisper` and the data come from
:class:`whisper_flamingo.data.datamodule.MuavicDataModule` batches.

Validation logs, per loader (``val``, ``val_noisy_<noise>``, ``test``, ``test_noisy_<noise>``):
teacher-forced ``loss`` and token ``acc`` and, with ``val_decode``, corpus-level ``wer``/``cer`` of
real batched greedy decoding.  Counts are summed over all batches (and DDP ranks) before dividing,
unlike the original, which averaged per-batch rates of teacher-forced argmax outputs.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from whisper_flamingo.config import Config
from whisper_flamingo.models import params
from whisper_flamingo.models.params import human

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def no_decay_parameter_names(model: nn.Module) -> set[str]:
    """Names of parameters that get no weight decay: every bias and every LayerNorm parameter.

    The original matched the substring ``LayerNorm.weight``, which no Whisper parameter contains,
    so it decayed Whisper's LayerNorm weights by accident; we match by module type.
    """
    names: set[str] = set()
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if isinstance(module, nn.LayerNorm) or p_name == "bias":
                names.add(full)
    return names


def linear_warmup_decay(warmup_steps: int, total_steps: int):
    """LR factor: linear warm-up to 1 over ``warmup_steps``, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor, skip: int) -> tuple[int, int]:
    """Correct and total predicted tokens, ignoring padding and the first ``skip`` label positions.

    The first positions of the label sequence are the language/task/no-timestamps tokens, which are
    given in the prompt at decoding time, so they are left out (as the original did).
    """
    pred = logits.argmax(-1)
    mask = labels != IGNORE_INDEX
    if skip:
        mask[:, :skip] = False
    correct = ((pred == labels) & mask).sum().item()
    return int(correct), int(mask.sum().item())


class WhisperASRTask(pl.LightningModule):
    """Fine-tune all Whisper parameters with teacher-forced cross-entropy."""

    def __init__(self, cfg: Config, model: nn.Module, tokenizer: Any, val_names: list[str]) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = model
        # the dims let `whisper-flamingo convert` rebuild the model from a Lightning checkpoint
        dims = getattr(model, "dims", None)
        self.save_hyperparameters({"dims": dataclasses.asdict(dims) if dims is not None else None,
                                   "config": cfg.to_dict()})
        self.tokenizer = tokenizer
        self.val_names = list(val_names)
        self.skipped: Counter[str] = Counter()
        self._val: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------------ training
    def forward(self, mel: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(mel, tokens)

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["mel"], batch["dec_input"])
        loss = F.cross_entropy(logits.float().transpose(1, 2), batch["labels"], ignore_index=IGNORE_INDEX)
        return loss, logits

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Tell the sampler how many batches of this epoch have been taken, so a checkpoint written
        # during this step resumes with exactly the batches that follow (prefetching makes the
        # sampler's own count run ahead).
        dm = getattr(self.trainer, "datamodule", None)
        sampler = getattr(dm, "train_sampler", None)
        if sampler is not None:
            sampler.set_consumed(batch_idx + 1)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        for _, reason in batch.get("bad", []):
            self.skipped[reason] += 1
        if batch["mel"].shape[0] == 0:
            log.warning("training batch %d has no usable sample; skipped", batch_idx)
            return None
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch["mel"].shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_skipped("train")

    def _log_skipped(self, stage: str) -> None:
        total = Counter(self.skipped)
        if self.trainer.world_size > 1:  # ranks may skip different reasons: gather them by name
            gathered: list[dict[str, int]] = [{} for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(gathered, dict(self.skipped))
            total = sum((Counter(g) for g in gathered), Counter())
        if total:
            log.warning("%s: skipped bad samples this epoch: %s", stage,
                        ", ".join(f"{k}={int(v)}" for k, v in sorted(total.items())))
            for reason, n in total.items():
                self.log(f"{stage}/skipped_{reason}", float(n), rank_zero_only=True)
        self.skipped.clear()

    # ------------------------------------------------------------------ validation
    def _name(self, dataloader_idx: int) -> str:
        if dataloader_idx < len(self.val_names):
            return self.val_names[dataloader_idx]
        return f"val{dataloader_idx}"

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        acc = self._val.setdefault(dataloader_idx, {"loss_sum": 0.0, "tokens": 0, "correct": 0,
                                                    "counted": 0, "refs": [], "hyps": [], "langs": []})
        for _, reason in batch.get("bad", []):
            self.skipped[reason] += 1
        if batch["mel"].shape[0] == 0:
            return
        logits = self.model(batch["mel"], batch["dec_input"])
        labels = batch["labels"]
        n_tok = int((labels != IGNORE_INDEX).sum().item())
        loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                               reduction="sum")
        acc["loss_sum"] += float(loss.item())
        acc["tokens"] += n_tok
        skip = max(0, min(len(p) for p in batch["prompts"]) - 1)
        correct, counted = token_accuracy(logits, labels, skip)
        acc["correct"] += correct
        acc["counted"] += counted
        if self.cfg.val_decode:
            hyps = self._greedy(batch)
            acc["hyps"].extend(hyps)
            acc["refs"].extend(batch["texts"])
            acc["langs"].extend(batch["langs"])

    @torch.no_grad()
    def _greedy(self, batch: dict[str, Any]) -> list[str]:
        from whisper_flamingo.decoding.search import SearchOptions, decode_batch

        hyps = decode_batch(self.model, batch["mel"], batch["prompts"], self.tokenizer, SearchOptions(beam_size=1),
                            mel_frames=batch["mel_frames"])
        return [h.text.strip() for h in hyps]

    def on_validation_epoch_end(self) -> None:
        from whisper_flamingo.decoding.scoring import wer_cer

        for idx in sorted(self._val):
            acc = self._gather(self._val[idx])
            name = self._name(idx)
            loss = acc["loss_sum"] / max(1, acc["tokens"])
            self.log(f"{name}/loss", loss, sync_dist=False)
            self.log(f"{name}/acc", acc["correct"] / max(1, acc["counted"]), sync_dist=False)
            if self.cfg.val_decode and acc["refs"]:
                lang = acc["langs"][0] if len(set(acc["langs"])) == 1 else "multi"
                scores = wer_cer(acc["refs"], acc["hyps"], normalizer=self.cfg.val_normalizer, lang=lang)
                self.log(f"{name}/wer", float(scores["wer"]), sync_dist=False)
                self.log(f"{name}/cer", float(scores["cer"]), sync_dist=False)
                if acc["refs"]:
                    log.info("%s example: REF: %s | HYP: %s", name, acc["refs"][0], acc["hyps"][0])
        if self.skipped:
            self._log_skipped("val")
        self._val = {}

    def _gather(self, acc: dict[str, Any]) -> dict[str, Any]:
        """Sum the numbers and concatenate the lists of ``acc`` over DDP ranks (disjoint batches)."""
        if self.trainer.world_size <= 1:
            return acc
        gathered: list[dict[str, Any]] = [{} for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather_object(gathered, acc)
        out: dict[str, Any] = {k: type(v)() for k, v in acc.items()}
        for g in gathered:
            for k in out:
                out[k] = out[k] + g.get(k, type(out[k])())
        return out

    # ------------------------------------------------------------------ optimisation
    def optimizer_groups(self) -> list[dict[str, Any]]:
        no_decay = no_decay_parameter_names(self.model)
        decay, plain = [], []
        for name, p in self.model.named_parameters():
            if not p.requires_grad:
                continue
            (plain if name in no_decay else decay).append(p)
        return [{"params": decay, "weight_decay": self.cfg.weight_decay},
                {"params": plain, "weight_decay": 0.0}]

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.optimizer_groups(), lr=self.cfg.learning_rate,
                                eps=self.cfg.adam_epsilon, betas=(0.9, 0.999))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, linear_warmup_decay(self.cfg.warmup_steps, self.cfg.num_train_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(total, trainable)`` for tasks/run.py, which the task-registry part rewrites (it should call
    :func:`whisper_flamingo.models.params.count_parameters` directly; then delete this)."""
    return params.count_parameters(model), params.count_parameters(model, trainable=True)


__all__ = ["WhisperASRTask", "no_decay_parameter_names", "linear_warmup_decay", "token_accuracy",
           "count_parameters", "human"]
