"""Stage 2: Whisper-Flamingo training (gated cross-attention over lip video) as a LightningModule.

Model (``checkpoints.flamingo.build_stage2_model``): the stage-1 Whisper (``model_name`` + ``pt_ckpt``) wrapped in a
:class:`~whisper_flamingo.models.flamingo.WhisperFlamingo` whose video encoder comes from
``video_model_ckpt`` (AV-HuBERT or the ResNet front end), or is randomly initialised from a named
size (``video_model_config``: tiny / base / large, trained from scratch), or is absent when
precomputed features (``video_feature_dir``) are read.

Freezing (:func:`configure_trainable`): every Whisper parameter gets ``requires_grad=False``; the
gated layers, the video projection and its scalar are trained, plus the video encoder when
``freeze_video_model`` is false.  (Legacy models without gated layers train Whisper too, or only the
projection with ``video_projection_train_only``, as the original.)  ``freeze_video_batch_norm_stats``
keeps the video encoder in eval mode during training.  The optimizer is stage 1's AdamW over the
trainable parameters, with its no-decay rule (biases and LayerNorms); the original put all of them in
one group with weight decay 0.01.

Modality dropout: one draw per training batch, ``draw_modality(prob_use_av, prob_use_a,
modality_rng(seed, global_step))``: the same on every DDP rank and after a resume.

Validation, for every loader and each modality ``av`` (audio + video), ``a`` (video zeroed) and ``v``
(audio zeroed): teacher-forced ``{prefix}/loss_<m>``, ``acc_<m>`` and, with ``val_decode``, corpus-level
``wer_<m>`` / ``cer_<m>`` of batched greedy decoding; on the clean ``val`` loader also ``val/x_norm``,
``val/x_v_norm_pre`` and ``val/x_v_norm_post`` (mean L2 norm per frame of the audio encoder output and
of the video features before / after the projection).
"""

from __future__ import annotations

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
from whisper_flamingo.models.flamingo import (
    MODALITIES,
    WhisperFlamingo,
    draw_modality,
    modality_rng,
)
from whisper_flamingo.models.params import count_parameters, human
from whisper_flamingo.models.video_encoders import CTC_CLASSES
from whisper_flamingo.tasks.asr import IGNORE_INDEX, WhisperASRTask, build_whisper, token_accuracy, validation_search
from whisper_flamingo.tasks.registry import register_task

log = logging.getLogger(__name__)

#: ``modality`` -> the number logged as ``train/modality``
MODALITY_CODES = {"av": 0, "a": 1, "v": 2}


# ---------------------------------------------------------------------------------------------- model


def trainable_parameter_names(model: WhisperFlamingo, cfg: Config) -> list[str]:
    """Names of the parameters stage 2 trains (module doc)."""
    names = [n for n, _ in model.named_parameters()]
    projection = [n for n in names if n.startswith("encoder.video_projection")]
    video = [n for n in names if n.startswith("encoder.video_model.")]
    if model.gated:
        keep = set(model.gated_parameter_names()) | set(projection)
    elif cfg.video_projection_train_only:
        keep = set(projection)
    else:  # legacy audio-visual model without gated layers: Whisper is fine-tuned as well
        keep = {n for n in names if not n.startswith("encoder.video_model.")}
    if not cfg.freeze_video_model:
        keep |= set(video)
    return [n for n in names if n in keep]


def configure_trainable(model: WhisperFlamingo, cfg: Config) -> list[str]:
    """Set ``requires_grad`` (True only for :func:`trainable_parameter_names`); return those names."""
    keep = set(trainable_parameter_names(model, cfg))
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    return [n for n, _ in model.named_parameters() if n in keep]


# ---------------------------------------------------------------------------------------------- task


def video_ctc_loss(logits: torch.Tensor, padding_mask: torch.Tensor | None, texts: list[str]) -> torch.Tensor:
    """Mean per-byte CTC loss of per-frame byte ``logits (B, T, 257)`` against the lower-cased ``texts``,
    over the utterances whose transcript fits in their frames (0 with no gradient when none does)."""
    b, t = logits.shape[:2]
    if padding_mask is not None and padding_mask.shape[1] == t:
        lengths = (~padding_mask).sum(1).to(torch.long)
    else:
        lengths = torch.full((b,), t, dtype=torch.long)
    targets = [torch.tensor([c + 1 for c in text.strip().lower().encode("utf-8")], dtype=torch.long)
               for text in texts]
    target_lengths = torch.tensor([len(x) for x in targets])
    repeats = torch.tensor([int((x[1:] == x[:-1]).sum()) for x in targets])
    feasible = (lengths.cpu() >= target_lengths + repeats) & (target_lengths > 0)
    if not feasible.any():
        return logits.sum() * 0.0
    log_probs = logits.float().log_softmax(-1).transpose(0, 1)  # (T, B, C)
    losses = F.ctc_loss(log_probs, torch.cat(targets).to(logits.device), lengths.cpu(), target_lengths,
                        blank=0, reduction="none", zero_infinity=True)
    per_byte = losses / target_lengths.clamp(min=1).to(losses.device)
    return per_byte[feasible.to(losses.device)].mean()



def build_flamingo(cfg: Config) -> WhisperFlamingo:
    """The flamingo task's model: the asr task's Whisper (``model_name`` + ``pt_ckpt``) wrapped by
    :func:`~whisper_flamingo.checkpoints.flamingo.build_stage2_model`."""
    from whisper_flamingo.checkpoints.flamingo import build_stage2_model

    return build_stage2_model(cfg, build_whisper(cfg))


def flamingo_datamodule(cfg: Config, model: nn.Module) -> pl.LightningDataModule:
    """Audio + lip video (or video features), evaluation loaders in the original stage-2 order."""
    from whisper_flamingo.data.datamodule import AV_EVAL_ORDER, MuavicDataModule

    return MuavicDataModule(cfg, n_mels=model.dims.n_mels, multilingual=model.is_multilingual, video=True,
                            eval_order=AV_EVAL_ORDER, noise_name="en_babble")


class WhisperFlamingoTask(WhisperASRTask):
    """Train the gated layers + video projection (+ video encoder) of a Whisper-Flamingo model."""

    def __init__(self, cfg: Config, model: WhisperFlamingo, tokenizer: Any = None,
                 val_names: Sequence[str] = ()) -> None:
        super().__init__(cfg, model, tokenizer, val_names)
        self.trainable_names = configure_trainable(model, cfg)
        total, trainable = count_parameters(model), count_parameters(model, trainable=True)
        log.info("stage 2: %s parameters, %s trainable (%d tensors: gated layers, video projection%s)",
                 human(total), human(trainable), len(self.trainable_names),
                 "" if cfg.freeze_video_model else ", video encoder")
        self.modality_counts: Counter[str] = Counter()
        self.video_ctc_head: nn.Linear | None = None
        if cfg.video_ctc_weight > 0:
            video_model = model.video_model
            if video_model is None or cfg.freeze_video_model:
                raise ConfigError("video_ctc_weight > 0 trains the video encoder with a CTC loss: it needs a video "
                                  "encoder and freeze_video_model: false (set video_ctc_weight: 0 otherwise)")
            self.video_ctc_head = nn.Linear(video_model.out_dim, CTC_CLASSES)

    # ------------------------------------------------------------------ inputs
    @staticmethod
    def video_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        """``video`` / ``padding_mask`` / ``video_features`` keyword arguments of the model."""
        return {"video": batch.get("video"), "padding_mask": batch.get("video_padding_mask"),
                "video_features": batch.get("video_features")}

    def modality_for_step(self, step: int) -> str:
        """The modality-dropout draw of optimizer step ``step`` (same on every rank and after a resume)."""
        return draw_modality(self.cfg.prob_use_av, self.cfg.prob_use_a, modality_rng(self.cfg.seed, step))

    # ------------------------------------------------------------------ training
    def forward(self, mel: torch.Tensor, tokens: torch.Tensor, video: torch.Tensor | None = None,
                padding_mask: torch.Tensor | None = None, modality: str = "av",
                video_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(mel, tokens, video, padding_mask, modality, video_features)

    def _loss(self, batch: dict[str, Any], modality: str = "av", video_features: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced CE and logits; ``video_features`` (already encoded) replace the batch's video."""
        video = self.video_inputs(batch)
        if video_features is not None:  # the padding mask stays for the key masks (unused without them)
            video = {"video": None, "padding_mask": video["padding_mask"] if self.cfg.padding_mask else None,
                     "video_features": video_features}
        logits = self.model(batch["mel"], batch["dec_input"], modality=modality, **video, **self.mel_kwargs(batch))
        loss = F.cross_entropy(logits.float().transpose(1, 2), batch["labels"], ignore_index=IGNORE_INDEX)
        return loss, logits

    def _loss_with_video_ctc(self, batch: dict[str, Any], modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE, CTC): the video encoder runs once; its features feed both the decoder and the CTC head."""
        feats = self.model.video_features(batch["video"], batch.get("video_padding_mask"))
        ce, _ = self._loss(batch, modality, feats)
        return ce, video_ctc_loss(self.video_ctc_head(feats), batch.get("video_padding_mask"), batch["texts"])

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_start(batch, batch_idx)
        video_model = self.model.video_model
        if self.cfg.freeze_video_batch_norm_stats and video_model is not None and video_model.training:
            video_model.eval()  # running BN statistics kept (and dropout off), as the original flag

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if self.count_bad(batch, "train"):
            return self.empty_step(batch_idx)
        modality = self.modality_for_step(self.global_step)
        self.modality_counts[modality] += 1
        n = batch["mel"].shape[0]
        self.log("train/modality", float(MODALITY_CODES[modality]), on_step=True, batch_size=n)
        if self.video_ctc_head is not None and batch.get("video") is not None:
            loss, ctc = self._loss_with_video_ctc(batch, modality)
            self.log("train/video_ctc", ctc, on_step=True, batch_size=n)
            self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=n)
            return loss + self.cfg.video_ctc_weight * ctc
        loss, _ = self._loss(batch, modality)
        self.log("train/loss", loss, on_step=True, prog_bar=True, batch_size=n)
        return loss

    # ------------------------------------------------------------------ validation
    def _new_acc(self) -> dict[str, Any]:
        return {"loss_sum": 0.0, "tokens": 0, "correct": 0, "counted": 0, "utterances": 0, "refs": [], "hyps": [],
                "langs": [], "x_norm": 0.0, "x_v_norm_pre": 0.0, "x_v_norm_post": 0.0, "x_frames": 0, "v_frames": 0}

    @torch.no_grad()
    def encode_modalities(self, batch: dict[str, Any]) -> tuple[dict[str, tuple[torch.Tensor, ...]],
                                                                   dict[str, float]]:
        """``{modality: (xa, xv, xa_valid, xv_valid)}`` for av / a / v (the key masks None without
        ``padding_mask``), and the norms of the streams.

        With the ``separate`` fusion each encoder runs once and the dropped stream is a zero tensor
        (exactly what :meth:`WhisperFlamingo.encode` gives); the lip-reader fusion encodes per modality.
        """
        model: WhisperFlamingo = self.model
        video = self.video_inputs(batch)
        frames = self.mel_kwargs(batch).get("mel_frames")
        if model.fusion != "separate":
            out = {}
            for m in MODALITIES:
                xa, xv = model.encode(batch["mel"], video["video"], video["padding_mask"], m, video["video_features"],
                                      mel_frames=frames)
                out[m] = (xa, xv, *model.stream_masks(xa, xv, frames, video["padding_mask"], m))
            return out, {}
        xa = model.embed_audio(batch["mel"], frames)
        feats = video["video_features"]
        if feats is None:
            feats = model.video_features(video["video"], video["padding_mask"])
        xv = model.project_video(feats, video["padding_mask"])
        zeros_v = torch.zeros(xa.shape[0], 1, xa.shape[2], dtype=xa.dtype, device=xa.device)
        xa_valid, xv_valid = model.stream_masks(xa, xv, frames, video["padding_mask"], "av")
        out = {"av": (xa, xv, xa_valid, xv_valid), "a": (xa, zeros_v, xa_valid, None),
               "v": (torch.zeros_like(xa), xv, xa_valid, xv_valid)}
        mask = video["padding_mask"]
        real = ~mask if mask is not None and mask.shape[1] == feats.shape[1] else \
            torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        frames = batch["mel_frames"].to(xa.device).add(1).div(2, rounding_mode="floor").clamp(max=xa.shape[1])
        audio_real = torch.arange(xa.shape[1], device=xa.device)[None, :] < frames[:, None]
        norms = {"x_norm": float(xa.float().norm(dim=-1)[audio_real].sum()),
                 "x_v_norm_pre": float(feats.float().norm(dim=-1)[real].sum()),
                 "x_v_norm_post": float(xv.float().norm(dim=-1)[real].sum()),
                 "x_frames": int(audio_real.sum()), "v_frames": int(real.sum())}
        return out, norms

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.count_bad(batch, "val"):
            return
        streams, norms = self.encode_modalities(batch)
        labels = batch["labels"]
        n_tok = int((labels != IGNORE_INDEX).sum().item())
        skip = max(0, min(len(p) for p in batch["prompts"]) - 1)
        for modality, (xa, xv, xa_valid, xv_valid) in streams.items():
            acc = self._val.setdefault((dataloader_idx, modality), self._new_acc())
            logits = self.model.logits(batch["dec_input"], xa, xv=xv, xa_valid=xa_valid, xv_valid=xv_valid)
            loss = F.cross_entropy(logits.float().transpose(1, 2), labels, ignore_index=IGNORE_INDEX,
                                   reduction="sum")
            acc["loss_sum"] += float(loss.item())
            acc["tokens"] += n_tok
            acc["utterances"] += int(labels.shape[0])
            correct, counted = token_accuracy(logits, labels, skip)
            acc["correct"] += correct
            acc["counted"] += counted
            if modality == "av":
                for key, value in norms.items():
                    acc[key] += value
            if self.cfg.val_decode:
                acc["hyps"].extend(self._greedy_av(batch, xa, xv, xa_valid, xv_valid))
                acc["refs"].extend(batch["texts"])
                acc["langs"].extend(batch["langs"])

    @torch.no_grad()
    def _greedy_av(self, batch: dict[str, Any], xa: torch.Tensor, xv: torch.Tensor,
                   xa_valid: torch.Tensor | None = None, xv_valid: torch.Tensor | None = None) -> list[str]:
        from whisper_flamingo.decoding.search import decode_batch

        hyps = decode_batch(self.model, None, batch["prompts"], self.tokenizer, validation_search(),
                            mel_frames=batch["mel_frames"], audio_features=xa, xv=xv, xa_valid=xa_valid,
                            xv_valid=xv_valid)
        return [h.text.strip() for h in hyps]

    def on_validation_epoch_end(self) -> None:
        from whisper_flamingo.decoding.scoring import wer_cer

        # every rank gathers the same (loader, modality) keys in the same order
        for idx in range(self.num_eval_loaders()):
            for modality in MODALITIES:
                acc = self._gather(self._val.get((idx, modality), self._new_acc()))
                name = self._name(idx)
                if modality == "av":
                    self._record_utterances(name, acc)
                if acc["tokens"] == 0:
                    continue
                self.log(f"{name}/loss_{modality}", acc["loss_sum"] / acc["tokens"], sync_dist=False)
                self.log(f"{name}/acc_{modality}", acc["correct"] / max(1, acc["counted"]), sync_dist=False)
                if self.cfg.val_decode and acc["refs"]:
                    lang = acc["langs"][0] if len(set(acc["langs"])) == 1 else "multi"
                    scores = wer_cer(acc["refs"], acc["hyps"], normalizer=self.cfg.val_normalizer, lang=lang)
                    self.log(f"{name}/wer_{modality}", float(scores["wer"]), sync_dist=False)
                    self.log(f"{name}/cer_{modality}", float(scores["cer"] or 0.0), sync_dist=False)
                    self._log_per_language(name, acc, modality)
                    log.info("%s (%s) example: REF: %s | HYP: %s", name, modality, acc["refs"][0], acc["hyps"][0])
                if name == "val" and modality == "av" and acc["x_frames"]:
                    self.log("val/x_norm", acc["x_norm"] / acc["x_frames"], sync_dist=False)
                    if acc["v_frames"]:
                        self.log("val/x_v_norm_pre", acc["x_v_norm_pre"] / acc["v_frames"], sync_dist=False)
                        self.log("val/x_v_norm_post", acc["x_v_norm_post"] / acc["v_frames"], sync_dist=False)
        self._log_skipped("val")
        self._val = {}

    # ------------------------------------------------------------------ optimisation
    def optimizer_groups(self) -> list[dict[str, Any]]:
        """Stage 1's groups over the trainable parameters; the legacy ``video_projection_separate_lr``
        (models without gated layers) puts the projection in groups of its own."""
        groups = super().optimizer_groups()
        if self.video_ctc_head is not None:
            groups += [{"params": [self.video_ctc_head.weight], "weight_decay": self.cfg.weight_decay},
                       {"params": [self.video_ctc_head.bias], "weight_decay": 0.0}]
        lr = self.cfg.video_projection_separate_lr
        if self.model.gated or lr in ("", None):
            return groups
        projection = {id(p) for n, p in self.model.named_parameters() if n.startswith("encoder.video_projection")}
        out = []
        for g in groups:
            rest = [p for p in g["params"] if id(p) not in projection]
            proj = [p for p in g["params"] if id(p) in projection]
            out.append(dict(g, params=rest))
            if proj:
                out.append(dict(g, params=proj, lr=float(lr)))
        return out


# a dropped modality leaves parameters without gradients: DDP must allow it (as the original);
# the original also set sync_batchnorm for this stage
register_task("flamingo", module=WhisperFlamingoTask, datamodule=flamingo_datamodule, model_builder=build_flamingo,
              find_unused_parameters=True, sync_batchnorm=True,
              description="stage 2: Whisper-Flamingo, gated cross-attention over lip video "
                          "(the original whisper_ft_muavic_video.py)")

__all__ = ["WhisperFlamingoTask", "build_flamingo", "flamingo_datamodule",
           "configure_trainable", "trainable_parameter_names", "MODALITY_CODES",
           "video_ctc_loss", "CTC_CLASSES"]
