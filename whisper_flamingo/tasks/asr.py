"""Stage 1: audio-only Whisper fine-tuning as a LightningModule.

The module owns the loss, the metrics, the optimizer groups and the schedule; the model is a plain
:class:`whisper_flamingo.models.whisper.Whisper` and the data come from
:class:`whisper_flamingo.data.datamodule.MuavicDataModule` batches.

Validation logs, per loader (``val``, ``val_noisy_<noise>``, ``test``, ``test_noisy_<noise>``):
teacher-forced ``loss`` and token ``acc`` and, with ``val_decode``, corpus-level ``wer``/``cer`` of
real batched greedy decoding.  Counts are summed over all batches (and DDP ranks) before dividing,
unlike the original, which averaged per-batch rates of teacher-forced argmax outputs.  Under DDP
each rank validates a disjoint share of every loader (the data module's evaluation sampler), so the
summed counts cover every utterance exactly once; the per-rank utterance counts are logged and kept
in :attr:`WhisperASRTask.val_utterances`.

Bad samples dropped under ``on_bad_sample: skip`` are counted per reason, separately for training
and validation, summed over ranks (every rank takes part in the gather, skips or not) and logged as
``train/skipped_<reason>`` (at the end of each training epoch) and ``val/skipped_<reason>``.  A
training batch left with no usable sample gives no step on a single device; under DDP it gives a
zero loss over every trainable parameter, so that the rank still joins the gradient all-reduce.

Key-padding masks (config key ``padding_mask``, default false as the original): the task sets the
model's ``use_padding_mask`` and hands it the batch's ``mel_frames``, so the teacher-forced loss and
the validation decoding run with the masks the decoder will use (the key is saved with the config in
the checkpoint's ``hyper_parameters``, where the decoder reads it back).
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from whisper_flamingo.config import Config
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.params import human
from whisper_flamingo.tasks.registry import register_task

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


def build_whisper(cfg: Config) -> nn.Module:
    """The Whisper model named by ``model_name``, initialised from ``pt_ckpt`` when given (the asr
    task's model builder)."""
    from whisper_flamingo.checkpoints import load_stage1_checkpoint, load_whisper

    model = load_whisper(cfg.model_name, download_root=cfg.whisper_download_root)
    if cfg.n_mels and cfg.n_mels != model.dims.n_mels:
        raise ConfigError(f"key 'n_mels' is {cfg.n_mels} but model '{cfg.model_name}' takes "
                          f"{model.dims.n_mels} mel bins; remove n_mels or set it to {model.dims.n_mels}")
    if cfg.pt_ckpt:
        load_stage1_checkpoint(model, cfg.pt_ckpt)
        log.info("initialised Whisper from %s", cfg.pt_ckpt)
    return model


def whisper_tokenizer(model: nn.Module) -> Any:
    """The model's Whisper tokenizer (multilingual or English-only, as the model)."""
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(model.is_multilingual, num_languages=model.num_languages, task="transcribe")


def asr_datamodule(cfg: Config, model: nn.Module) -> pl.LightningDataModule:
    """Audio-only data, evaluation loaders in the original stage-1 order."""
    from whisper_flamingo.data.datamodule import AUDIO_EVAL_ORDER, MuavicDataModule

    return MuavicDataModule(cfg, n_mels=model.dims.n_mels, multilingual=model.is_multilingual, video=False,
                            eval_order=AUDIO_EVAL_ORDER, noise_name="multi_babble")


def validation_search():
    """Search options of validation decoding during training: greedy with the runaway guard on, so an
    under-trained model cannot spend 224 tokens per utterance (``decode`` has it off by default)."""
    from whisper_flamingo.decoding.search import SearchOptions

    return SearchOptions(beam_size=1, runaway_guard=True)


class WhisperASRTask(pl.LightningModule):
    """Fine-tune all Whisper parameters with teacher-forced cross-entropy.

    ``tokenizer``: the model's own (:func:`whisper_tokenizer`) when not given.
    """

    def __init__(self, cfg: Config, model: nn.Module, tokenizer: Any = None, val_names: Sequence[str] = ()) -> None:
        super().__init__()
        if tokenizer is None:
            tokenizer = whisper_tokenizer(model)
        self.cfg = cfg
        self.model = model
        model.use_padding_mask = bool(cfg.padding_mask)
        # the dims let `whisper-flamingo convert` rebuild the model from a Lightning checkpoint
        dims = getattr(model, "dims", None)
        self.save_hyperparameters({"dims": dataclasses.asdict(dims) if dims is not None else None,
                                   "config": cfg.to_dict()})
        self.tokenizer = tokenizer
        self.val_names = list(val_names)
        self.skipped: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
        #: loader name -> utterances validated by each rank in the last validation
        self.val_utterances: dict[str, list[int]] = {}
        self._val: dict[Any, dict[str, Any]] = {}

    # ------------------------------------------------------------------ training
    def forward(self, mel: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.model(mel, tokens)

    def mel_kwargs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """``{"mel_frames": ...}`` for the model when masks are on (config ``padding_mask``), else ``{}``."""
        return {"mel_frames": batch["mel_frames"]} if self.cfg.padding_mask else {}

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(batch["mel"], batch["dec_input"], **self.mel_kwargs(batch))
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

    def count_bad(self, batch: dict[str, Any], stage: str) -> bool:
        """Count the batch's dropped samples under ``stage``; True when no usable sample is left."""
        for _, reason in batch.get("bad", []):
            self.skipped[stage][reason] += 1
        return batch["mel"].shape[0] == 0

    def empty_step(self, batch_idx: int) -> torch.Tensor | None:
        """What a training step returns for a batch with no usable sample (module doc)."""
        log.warning("training batch %d has no usable sample; skipped", batch_idx)
        if self.trainer.world_size <= 1:
            return None
        return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.count_bad(batch, "train"):
            return self.empty_step(batch_idx)
        loss, _ = self._loss(batch)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=batch["mel"].shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        self._log_skipped("train")

    def _log_skipped(self, stage: str) -> None:
        """Sum ``stage``'s skip counts over ranks and log them; every rank must call it (a collective)."""
        mine = self.skipped[stage]
        total = Counter(mine)
        if self.trainer.world_size > 1:  # ranks may skip different reasons, or none: gather them by name
            gathered: list[dict[str, int]] = [{} for _ in range(self.trainer.world_size)]
            torch.distributed.all_gather_object(gathered, dict(mine))
            total = sum((Counter(g) for g in gathered), Counter())
        if total:
            if self.trainer.is_global_zero:
                log.warning("%s: skipped bad samples: %s", stage,
                            ", ".join(f"{k}={int(v)}" for k, v in sorted(total.items())))
            for reason, n in total.items():
                self.log(f"{stage}/skipped_{reason}", float(n), rank_zero_only=True)
        mine.clear()

    # ------------------------------------------------------------------ validation
    def _name(self, dataloader_idx: int) -> str:
        if dataloader_idx < len(self.val_names):
            return self.val_names[dataloader_idx]
        return f"val{dataloader_idx}"

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def _new_acc(self) -> dict[str, Any]:
        return {"loss_sum": 0.0, "tokens": 0, "correct": 0, "counted": 0, "utterances": 0, "refs": [], "hyps": [],
                "langs": []}

    def num_eval_loaders(self) -> int:
        """Evaluation loaders of this run (the same on every rank, whatever each rank's share)."""
        n = len(getattr(self.trainer, "num_val_batches", []) or [])
        return max(n, len(self.val_names), 1 + max((k if isinstance(k, int) else k[0] for k in self._val),
                                                   default=-1))

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        acc = self._val.setdefault(dataloader_idx, self._new_acc())
        if self.count_bad(batch, "val"):
            return
        acc["utterances"] += int(batch["mel"].shape[0])
        logits = self.model(batch["mel"], batch["dec_input"], **self.mel_kwargs(batch))
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
        from whisper_flamingo.decoding.search import decode_batch

        hyps = decode_batch(self.model, batch["mel"], batch["prompts"], self.tokenizer, validation_search(),
                            mel_frames=batch["mel_frames"])
        return [h.text.strip() for h in hyps]

    def on_validation_epoch_end(self) -> None:
        from whisper_flamingo.decoding.scoring import wer_cer

        for idx in range(self.num_eval_loaders()):  # every rank gathers every loader, in the same order
            acc = self._gather(self._val.get(idx, self._new_acc()))
            name = self._name(idx)
            self._record_utterances(name, acc)
            loss = acc["loss_sum"] / max(1, acc["tokens"])
            self.log(f"{name}/loss", loss, sync_dist=False)
            self.log(f"{name}/acc", acc["correct"] / max(1, acc["counted"]), sync_dist=False)
            if self.cfg.val_decode and acc["refs"]:
                lang = acc["langs"][0] if len(set(acc["langs"])) == 1 else "multi"
                scores = wer_cer(acc["refs"], acc["hyps"], normalizer=self.cfg.val_normalizer, lang=lang)
                self.log(f"{name}/wer", float(scores["wer"]), sync_dist=False)
                self.log(f"{name}/cer", float(scores["cer"]), sync_dist=False)
                self._log_per_language(name, acc)
                if acc["refs"]:
                    log.info("%s example: REF: %s | HYP: %s", name, acc["refs"][0], acc["hyps"][0])
        self._log_skipped("val")
        self._val = {}

    def _log_per_language(self, name: str, acc: dict[str, Any], modality: str = "") -> None:
        """With several languages in a loader: ``<name>/wer_<lang>`` per language, and for the
        translation records of an En-X run (text not English) ``<name>/bleu_<lang>`` (sacrebleu);
        ``modality`` (stage 2): ``<name>/wer_<modality>_<lang>``."""
        from whisper_flamingo.data.manifest import resolve_selection
        from whisper_flamingo.decoding.scoring import bleu_chrf, wer_cer

        langs = list(dict.fromkeys(acc["langs"]))
        if len(langs) < 2:
            return
        task = resolve_selection(self.cfg.lang, getattr(self.cfg, "whisper_task", "auto")).task
        mod = f"{modality}_" if modality else ""
        for lang in langs:
            idx = [i for i, x in enumerate(acc["langs"]) if x == lang]
            refs, hyps = [acc["refs"][i] for i in idx], [acc["hyps"][i] for i in idx]
            if task == "transcribe" or lang == "en":
                wer = wer_cer(refs, hyps, normalizer=self.cfg.val_normalizer, lang=lang)["wer"]
                if wer is not None:
                    self.log(f"{name}/wer_{mod}{lang}", float(wer), sync_dist=False)
            else:
                self.log(f"{name}/bleu_{mod}{lang}", float(bleu_chrf(refs, hyps)["bleu"]), sync_dist=False)

    def _record_utterances(self, name: str, acc: dict[str, Any]) -> None:
        """Keep (and log) how many utterances of loader ``name`` each rank validated."""
        per_rank = list(acc.get("rank_utterances", [acc["utterances"]]))
        self.val_utterances[name] = per_rank
        if self.trainer.is_global_zero:
            log.info("%s: %d utterances validated (per rank: %s)", name, sum(per_rank),
                     " ".join(str(n) for n in per_rank))

    def _gather(self, acc: dict[str, Any]) -> dict[str, Any]:
        """Sum the numbers and concatenate the lists of ``acc`` over DDP ranks (disjoint shares);
        ``rank_utterances`` lists each rank's ``utterances``."""
        if self.trainer.world_size <= 1:
            return dict(acc, rank_utterances=[acc.get("utterances", 0)])
        gathered: list[dict[str, Any]] = [{} for _ in range(self.trainer.world_size)]
        torch.distributed.all_gather_object(gathered, acc)
        out: dict[str, Any] = {k: type(v)() for k, v in acc.items()}
        for g in gathered:
            for k in out:
                out[k] = out[k] + g.get(k, type(out[k])())
        out["rank_utterances"] = [int(g.get("utterances", 0)) for g in gathered]
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


register_task("asr", module=WhisperASRTask, datamodule=asr_datamodule, model_builder=build_whisper,
              find_unused_parameters=False, sync_batchnorm=False,
              description="stage 1: fine-tune audio-only Whisper (the original whisper_ft_muavic.py)")

__all__ = ["WhisperASRTask", "build_whisper", "whisper_tokenizer", "asr_datamodule",
           "no_decay_parameter_names", "linear_warmup_decay", "token_accuracy",
           "human"]
