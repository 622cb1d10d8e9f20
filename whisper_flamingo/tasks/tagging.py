"""Sound tagging (Whisper-AT's TL-TR, and the seam for AST and SAT) as a LightningModule.

The head is a registry model (config ``tagging_model``); what it reads is its *input kind*
(``tagging_input``, or by family: ``whisper-at`` -> ``features`` (pre-extracted Whisper encoder layers),
``ast`` -> ``fbank``, ``sat`` -> ``waveform``; a model may also say ``input_kind`` itself).  The kind's
loader comes from :data:`whisper_flamingo.data.tagging.INPUT_KINDS`, so a new family registers a model
(and, if new, an input kind) and trains here unchanged.  A model whose output is already a probability
(SAT) says ``outputs_probabilities = True``; the loss is then BCE on probabilities.

Recipe (reference §1.8 / §2.3): BCE with logits (``tagging_loss: CE`` for single-label sets),
Adam(lr, weight_decay, betas (0.95, 0.999)), a multistep schedule stepped per *epoch* (milestones
``lrscheduler_start``, +``lrscheduler_step``, ..., factor ``lrscheduler_decay``; the decay after
milestone m takes effect from epoch m+1), AST's optional warm-up (``warmup_steps``: every 50 steps
lr = step / warmup_steps * lr).  An epoch is ``validate_every_n_batches`` optimizer steps (Whisper-AT's
"epoch" is 10 % of a pass).  After every epoch the head's state dict is kept
(``<checkpoint_dir>/epochs/epoch-NNN.pt``), metrics (mAP, mAUC, d-prime, accuracy; see
:mod:`whisper_flamingo.decoding.tagging_metrics`) go to TensorBoard and to ``result.csv``, and the
held-out list ``data_eval`` (logged as ``test/*``; without it ``test/*`` repeats ``val/*``, as Whisper-AT
validates on its eval set) is also scored with the checkpoint ensemble (``test/cum_mAP``; without ``data_eval``
the validation list is, as AST's eval loader; ``cum_acc`` too).  With ``data_eval``, ``eval_result.csv`` holds
the validation and held-out scores of the best-validation epoch (AST's Speech Commands).  AST heads are built for
``target_length`` frames, from ``ast_init`` when set.  With ``wa_start``
the epochs ``wa_start..wa_end`` are averaged at the end of training, the model takes the averaged
weights (saved as ``head_wa.pt``) and is scored again (``wa_result.csv``).

SAT (reference §3.5): with ``psl_table`` the training examples are the chunks of a pseudo-strong-label
table (:mod:`whisper_flamingo.data.sat_psl`; ``data_train`` is then SAT's clip table), the target is the
chunk's soft teacher probabilities, the balanced weights are SAT's (``1000 / (count + 100)``), drawn
``samples_per_epoch`` times per pass; ``lr_schedule: cosine`` (linear warm-up, cosine to
``lr_min_ratio``) and ``adam_beta1: 0.9`` give SAT's optimiser; ``init_from`` loads a ViT/MAE encoder
into the SAT before training (upstream never loads its MAE weights); ``average_best: 4`` averages the 4
best epochs by the monitor into ``averaged.pt``, as SAT does.
"""

from __future__ import annotations

import csv
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from whisper_flamingo.config import Config
from whisper_flamingo.data import fbank_input as _fbank_input  # noqa: F401  (registers AST's input kind "fbank")
from whisper_flamingo.data.tagging import (
    AUDIOSET_LABELS,
    INPUT_KINDS,
    TagCollator,
    TaggingDataset,
    balanced_weights,
    read_label_csv,
    read_tagging_list,
    write_weight_file,
)
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.tasks.clip_data import ClipDataModule
from whisper_flamingo.tasks.registry import register_task

log = logging.getLogger(__name__)

#: model family -> the input kind its heads read
FAMILY_INPUT = {"whisper-at": "features", "ast": "fbank", "sat": "waveform"}
RESULT_COLUMNS = ["epoch", "step", "mAP", "mAUC", "dprime", "acc", "train_loss", "valid_loss", "cum_mAP", "cum_mAUC",
                  "lr", "cum_acc"]


def labels_of(cfg: Config):
    return read_label_csv(cfg.label_csv or AUDIOSET_LABELS)


def input_kind(cfg: Config, model: nn.Module | None = None) -> str:
    """The config's ``tagging_input``, or the model's ``input_kind``, or its family's kind."""
    if cfg.tagging_input != "auto":
        return cfg.tagging_input
    kind = getattr(model, "input_kind", None)
    if kind:
        return str(kind)
    from whisper_flamingo.models.registry import get_entry

    family = get_entry(cfg.tagging_model).family
    if family not in FAMILY_INPUT:
        raise ConfigError(f"key 'tagging_input': model family {family!r} has no known input kind; set tagging_input "
                          f"to one of {', '.join(sorted(INPUT_KINDS))}")
    return FAMILY_INPUT[family]


def build_tagging_model(cfg: Config) -> nn.Module:
    """The head named by ``tagging_model``, with as many outputs as the label CSV has classes."""
    from whisper_flamingo.models.registry import create, get_entry

    if not cfg.tagging_model:
        raise ConfigError("key 'tagging_model' is empty; name a tagging head (e.g. whisper-at-tltr-tiny.en; "
                          "`whisper-flamingo models` lists them)")
    if not cfg.monitor.startswith(("val/", "test/")):
        raise ConfigError(f"key 'monitor' is {cfg.monitor!r}, which the tagging task does not log; use e.g. val/mAP "
                          "(or val/acc)")
    n = len(labels_of(cfg))
    entry = get_entry(cfg.tagging_model)
    overrides = {"label_dim": n} if "label_dim" in entry.config and entry.config["label_dim"] != n else {}
    if entry.family == "ast":  # AST is built for the recipe's fbank length, optionally from a checkpoint
        overrides["input_tdim"] = cfg.target_length
        if cfg.ast_init:
            from whisper_flamingo.models.ast import AST

            size = entry.config.get("model_size")
            return AST.from_checkpoint(cfg.ast_init, label_dim=n, input_tdim=cfg.target_length,
                                       **({"model_size": size} if size else {})).train()
    if entry.family == "sat" and entry.config.get("outputdim", 527) != n:  # SATConfig.outputdim: 527
        overrides = {"outputdim": n}
    model = create(cfg.tagging_model, **overrides)
    if cfg.init_from:
        init_from_vit(model, cfg.init_from)
    return model


def init_from_vit(model: nn.Module, path: str) -> None:
    """Load the ViT/MAE encoder of ``path`` into the SAT ``model`` (key ``init_from``)."""
    from whisper_flamingo.checkpoints.sat import load_vit_into_sat
    from whisper_flamingo.models.sat import SAT

    if not isinstance(model, SAT):
        raise ConfigError(f"key 'init_from' loads a ViT/MAE encoder into a SAT, but tagging_model is a "
                          f"{type(model).__name__}; clear init_from or train a sat-* model")
    left = load_vit_into_sat(model, path)
    log.info("init_from %s: SAT initialised from its encoder (%d SAT tensors kept their init: %s)", path, len(left),
             ", ".join(left) or "none")


class TaggingDataModule(ClipDataModule):
    """Training/validation/eval clips of the JSON lists, read by the model's input kind."""

    def __init__(self, cfg: Config, kind: str) -> None:
        super().__init__(cfg)
        if kind not in INPUT_KINDS:
            raise ConfigError(f"tagging input kind {kind!r} is not available here (known: "
                              f"{', '.join(sorted(INPUT_KINDS))}); the model family that needs it registers it")
        self.kind = kind
        self.val_names: list[str] = ["val"] + (["test"] if cfg.data_eval else [])
        self.datasets: dict[str, TaggingDataset] = {}  # type: ignore[assignment]

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        cfg = self.cfg
        self.require_lists("the tagging task needs a JSON data list")
        labels = labels_of(cfg)
        self.labels = labels
        loader = INPUT_KINDS[self.kind](cfg)
        self.collator = TagCollator(loader, len(labels))
        lists = {"train": cfg.data_train, "val": cfg.data_val, "test": cfg.data_eval}
        if cfg.psl_table:  # SAT: training examples are the chunks of the pseudo-strong-label table
            from whisper_flamingo.data.sat_psl import PSLDataset, read_psl

            if cfg.mixup or cfg.timem or cfg.freqm or cfg.label_smoothing:
                log.warning("mixup/timem/freqm/label_smoothing are not applied to PSL chunks (SAT uses none)")
            rows = read_psl(cfg.psl_table, lists.pop("train"), len(labels))
            self.datasets["train"] = PSLDataset(rows, len(labels), cfg.on_bad_sample)  # type: ignore[assignment]
            log.info("SAT training on %d pseudo-strong-label chunks of %s", len(rows), cfg.psl_table)
        for name, path in lists.items():
            if not path:
                continue
            records = read_tagging_list(path, labels)
            self.datasets[name] = TaggingDataset(
                records, loader, len(labels), train=name == "train", mixup=cfg.mixup,
                label_smoothing=cfg.label_smoothing, timem=cfg.timem, freqm=cfg.freqm, seed=cfg.seed,
                on_bad_sample=cfg.on_bad_sample)
        weights = None
        if cfg.balanced_sampling and cfg.psl_table:
            from whisper_flamingo.data.sat_psl import psl_weights

            weights = psl_weights(self.datasets["train"].records, len(labels))  # type: ignore[arg-type]
        elif cfg.balanced_sampling:
            weights = balanced_weights(self.datasets["train"].records, len(labels))
            log.info("balanced sampling weights written to %s", write_weight_file(cfg.data_train, weights))
        self.make_train_sampler(weights)

    def val_dataloader(self) -> list[DataLoader]:
        return [self._eval_loader(n) for n in self.val_names]


def tagging_datamodule(cfg: Config, model: nn.Module) -> TaggingDataModule:
    return TaggingDataModule(cfg, input_kind(cfg, model))


def multistep_factor(step: int, epoch_steps: int, start: int, every: int, decay: float, warmup: int = 0) -> float:
    """LR factor at optimizer step ``step``: ``decay`` per milestone passed (milestones start, start+every, ...
    < 1000, counted in finished epochs of ``epoch_steps``), times AST's stepwise warm-up."""
    done = step // max(1, epoch_steps)
    passed = 0 if done < start else min(1 + (done - start) // max(1, every), len(range(start, 1000, max(1, every))))
    factor = decay ** passed
    if warmup and step < warmup:
        factor *= (step // 50 * 50) / warmup
    return factor


def cosine_factor(step: int, warmup: int, total: int, floor: float) -> float:
    """LR factor at ``step``: linear from 0 over ``warmup`` steps, then cosine from 1 to ``floor`` at ``total``
    (SAT and its MAE, per iteration)."""
    if warmup and step < warmup:
        return step / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def tagging_optimizer(cfg: Config, params: Any, epoch_steps: int) -> dict[str, Any]:
    """Adam(lr, weight_decay, betas (adam_beta1, 0.999)) with the ``lr_schedule`` stepped per optimizer step."""
    opt = torch.optim.Adam(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
                           betas=(cfg.adam_beta1, 0.999), eps=cfg.adam_epsilon)
    if cfg.lr_schedule == "cosine":
        def factor(s: int) -> float:
            return cosine_factor(s, cfg.warmup_steps, cfg.num_train_steps, cfg.lr_min_ratio)
    else:
        def factor(s: int) -> float:
            return multistep_factor(s, epoch_steps, cfg.lrscheduler_start, cfg.lrscheduler_step,
                                    cfg.lrscheduler_decay, cfg.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class TaggingTask(pl.LightningModule):
    """Train a tagging head (module doc)."""

    def __init__(self, cfg: Config, model: nn.Module, tokenizer: Any = None,
                 val_names: Sequence[str] = ("val",)) -> None:
        super().__init__()
        self.cfg, self.model = cfg, model
        self.save_hyperparameters({"config": cfg.to_dict()})
        self.val_names = list(val_names)
        self.probabilities = bool(getattr(model, "outputs_probabilities", False))
        self.skipped: dict[str, Counter[str]] = {"train": Counter(), "val": Counter()}
        self.ensemble: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []
        self._val: dict[int, dict[str, list]] = {}
        self._train_losses: list[float] = []

    # ------------------------------------------------------------------ loss
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out, target = out.float(), target.float()
        if self.cfg.tagging_loss == "CE":
            if self.probabilities:
                return F.nll_loss(torch.log(out.clamp_min(1e-7)), target.argmax(-1))
            return F.cross_entropy(out, target.argmax(-1))
        if self.probabilities:
            return F.binary_cross_entropy(out.clamp(1e-7, 1 - 1e-7), target)
        return F.binary_cross_entropy_with_logits(out, target)

    @property
    def epoch_steps(self) -> int:
        return self.cfg.validate_every_n_batches

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        for _, reason in batch["bad"]:
            self.skipped["train"][reason] += 1
        if not batch["keys"]:
            log.warning("training batch %d has no usable clip; skipped", batch_idx)
            return None
        loss = self.loss(self.model(batch["input"]), batch["target"])
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=len(batch["keys"]))
        self._train_losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self) -> Any:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return tagging_optimizer(self.cfg, params, self.epoch_steps)

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        acc = self._val.setdefault(dataloader_idx, {"scores": [], "targets": [], "loss": []})
        for _, reason in batch["bad"]:
            self.skipped["val"][reason] += 1
        if not batch["keys"]:
            return
        out = self.model(batch["input"]).float()
        acc["loss"].append(float(self.loss(out, batch["target"])) * len(batch["keys"]))
        acc["scores"].append(out.cpu().numpy())
        acc["targets"].append(batch["target"].cpu().numpy())

    def score(self, name: str, scores: np.ndarray, targets: np.ndarray) -> dict[str, float]:
        from whisper_flamingo.decoding.tagging_metrics import tagging_metrics

        return tagging_metrics(scores, targets)

    def on_validation_epoch_end(self) -> None:
        from whisper_flamingo.decoding.tagging_metrics import RunningMean

        step = int(self.trainer.global_step)
        epoch = step // self.epoch_steps
        fitting = bool(self.trainer.training or self.trainer.state.fn == "fit") and step > 0
        row: dict[str, float] = {"epoch": epoch, "step": step}
        for i, name in enumerate(self.val_names):
            acc = self._val.get(i)
            if not acc or not acc["scores"]:
                continue
            scores, targets = np.concatenate(acc["scores"]), np.concatenate(acc["targets"])
            m = self.score(name, scores, targets)
            m["loss"] = sum(acc["loss"]) / len(scores)
            if name == self.val_names[-1] and fitting:  # the eval set (AST: the validation list when no data_eval)
                ens = self.ensemble.setdefault(name, RunningMean())
                cum = self.score(name, ens.add(scores), targets)
                m["cum_mAP"], m["cum_mAUC"], m["cum_acc"] = cum["mAP"], cum["mAUC"], cum["acc"]
            # without data_eval the validation list is also the test set (Whisper-AT validates on its eval set);
            # the trainer keeps the best checkpoint by val/<metric> and by test/<metric>
            for prefix in [name] + (["test"] if name == "val" and "test" not in self.val_names else []):
                for k, v in m.items():
                    self.log(f"{prefix}/{k}", float(v), add_dataloader_idx=False, sync_dist=False)
            if name == "val":
                row.update({k: m[k] for k in ("mAP", "mAUC", "dprime", "acc")}, valid_loss=m["loss"])
            if name == "test":
                row.update({f"test_{k}": m[k] for k in ("mAP", "mAUC", "dprime", "acc")})
            if "cum_mAP" in m:
                row.update(cum_mAP=m["cum_mAP"], cum_mAUC=m["cum_mAUC"], cum_acc=m["cum_acc"])
        for reason, n in self.skipped["val"].items():
            self.log(f"val/skipped_{reason}", float(n), add_dataloader_idx=False)
        if fitting and self.trainer.is_global_zero:
            row["train_loss"] = float(np.mean(self._train_losses)) if self._train_losses else float("nan")
            row["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"]) if self.trainer.optimizers else 0.0
            self._train_losses = []
            self.history.append(row)
            self.save_epoch(epoch)
            self.write_csv(self.cfg.checkpoint_dir / "result.csv", self.history)

    # ------------------------------------------------------------------ epochs, weight averaging
    @property
    def epoch_dir(self) -> Path:
        return self.cfg.checkpoint_dir / "epochs"

    def save_epoch(self, epoch: int) -> None:
        from whisper_flamingo.checkpoints.averaging import epoch_state_path

        self.epoch_dir.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.detach().cpu() for k, v in self.model.state_dict().items()},
                   epoch_state_path(self.epoch_dir, epoch))

    @staticmethod
    def write_csv(path: Path, rows: list[dict[str, float]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k, "") for k in RESULT_COLUMNS})

    def write_eval_result(self) -> None:
        """AST's ``eval_result.csv`` (Speech Commands): the held-out scores of the best epoch by ``monitor``
        (val/acc or val/mAP), i.e. the best-validation checkpoint evaluated on ``data_eval``."""
        metric = self.cfg.monitor.split("/")[-1]
        rows = [r for r in self.history if metric in r and "test_acc" in r]
        if not rows:
            return
        best = (max if self.cfg.monitor_mode == "max" else min)(rows, key=lambda r: r[metric])
        cols = ["epoch", "val_acc", "val_mAUC", "eval_acc", "eval_mAUC", "val_mAP", "eval_mAP"]
        vals = [best["epoch"], best["acc"], best["mAUC"], best["test_acc"], best["test_mAUC"], best["mAP"],
                best["test_mAP"]]
        with open(self.cfg.checkpoint_dir / "eval_result.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(cols)
            w.writerow(vals)
        log.info("best epoch %d by %s: val acc %.4f, eval acc %.4f (eval_result.csv)", best["epoch"],
                 self.cfg.monitor, best["acc"], best["test_acc"])

    def average_best_epochs(self, n: int) -> list[int]:
        """Average the ``n`` epochs with the best ``monitor`` value (SAT keeps its 4 best by mAP and averages
        them) into ``averaged.pt``; returns the epochs used."""
        from whisper_flamingo.checkpoints.averaging import average_state_dicts, epoch_state_path
        from whisper_flamingo.checkpoints.io import read_checkpoint_file

        key = self.cfg.monitor.split("/", 1)[-1]
        key = "valid_loss" if key == "loss" else key  # the result.csv column
        rows = [r for r in self.history if key in r and not math.isnan(float(r[key]))]
        if not self.cfg.monitor.startswith("val/") or not rows:
            log.warning("average_best: no val/%s values to rank the epochs by; nothing averaged", key)
            return []
        rows.sort(key=lambda r: float(r[key]), reverse=self.cfg.monitor_mode == "max")
        epochs = [int(r["epoch"]) for r in rows[:n]]
        state = average_state_dicts([read_checkpoint_file(epoch_state_path(self.epoch_dir, e)) for e in epochs])
        torch.save(state, self.cfg.checkpoint_dir / "averaged.pt")
        log.info("averaged.pt = mean of epochs %s (best %d by %s)", epochs, n, self.cfg.monitor)
        return epochs

    def on_train_end(self) -> None:
        cfg = self.cfg
        for reason, n in self.skipped["train"].items():
            log.info("training skipped %d bad clips (%s)", n, reason)
        if self.trainer.is_global_zero and "test" in self.val_names and self.history:
            self.write_eval_result()
        if cfg.average_best and self.trainer.is_global_zero:
            self.average_best_epochs(cfg.average_best)
        if not cfg.wa_start or not self.trainer.is_global_zero:
            return
        from whisper_flamingo.checkpoints.averaging import average_epochs, epoch_state_path

        if not any(epoch_state_path(self.epoch_dir, e).is_file() for e in range(cfg.wa_start, cfg.wa_end + 1)):
            log.warning("weight averaging skipped: training ended before epoch %d (wa_start); no head_wa.pt, "
                        "the last weights are in last.ckpt", cfg.wa_start)
            return
        state, used = average_epochs(self.epoch_dir, cfg.wa_start, cfg.wa_end)
        self.model.load_state_dict(state)
        torch.save(state, cfg.checkpoint_dir / "head_wa.pt")
        dm = self.trainer.datamodule
        rows = []
        for name, loader in zip(self.val_names, dm.val_dataloader(), strict=True):
            scores, targets = predict(self.model, loader, self.device)
            m = self.score(name, scores, targets)
            log.info("weight averaging of epochs %s: %s mAP %.4f mAUC %.4f d' %.3f acc %.4f", used, name, m["mAP"],
                     m["mAUC"], m["dprime"], m["acc"])
            rows.append({"set": name, **m})
        with open(cfg.checkpoint_dir / "wa_result.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(fh, fieldnames=["set", "mAP", "mAUC", "dprime", "acc"], extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        self.wa_metrics = {r["set"]: r for r in rows}


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Scores and targets of every usable clip of ``loader`` (model in eval mode, restored afterwards)."""
    was = model.training
    model.eval()
    scores, targets = [], []
    for batch in loader:
        if batch["keys"]:
            scores.append(model(batch["input"].to(device)).float().cpu().numpy())
            targets.append(batch["target"].numpy())
    model.train(was)
    return np.concatenate(scores), np.concatenate(targets)


register_task("tagging", module=TaggingTask, datamodule=tagging_datamodule, model_builder=build_tagging_model,
              description="sound-event tagging head (Whisper-AT TL-TR; AST, SAT) on JSON data lists")

__all__ = ["TaggingTask", "TaggingDataModule", "build_tagging_model", "tagging_datamodule", "input_kind",
           "multistep_factor", "cosine_factor", "tagging_optimizer", "init_from_vit", "predict", "FAMILY_INPUT"]
