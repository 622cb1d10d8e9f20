"""The config schema: every key of the original Whisper-Flamingo configs plus ours.

A config is a flat YAML mapping.  :func:`load_config` reads it, applies ``key=value`` overrides,
checks every key and value (unknown keys get a "did you mean" suggestion, wrongly typed values name
the expected type) and resolves relative paths against the current directory.

Keys the original read but its configs forgot (``prob_use_a``, ``vc2``, ``vc2_path``) have
defaults here, so every original config loads unchanged.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from whisper_flamingo.errors import ConfigError

log = logging.getLogger(__name__)

#: keys holding file system paths; resolved relative to the current directory
PATH_KEYS = (
    "work_dir", "muavic_root", "lrs2_root", "whisper_download_root", "vc2_path", "noise_fn", "noise_fn_val",
    "noise_fn_test", "log_output_dir", "check_output_dir", "pt_ckpt", "video_model_ckpt",
    "video_feature_dir", "trace_batches_dir", "label_csv", "data_train", "data_val", "data_eval", "feature_dir",
    "ast_init", "psl_table", "init_from",
)

#: ``lang`` values with a special meaning (anything else is a single language code)
LANG_MODES = ("en", "lrs2", "multi_en-st", "multi-all", "multi")

#: ``whisper_task`` values (the original's ``--task``); a ``task`` key with one of these (our
#: earlier meaning of ``task``) is read as ``whisper_task``
WHISPER_TASKS = ("auto", "transcribe", "En-X", "X-En")

CHOICES: dict[str, tuple[Any, ...]] = {
    "whisper_task": WHISPER_TASKS,
    "spec_augment": ("", "ls-basic", "ls-double"),
    "on_bad_sample": ("error", "skip"),
    "noise_offset_train": ("zero", "random"),
    "noise_offset_eval": ("zero", "random"),
    "precision": ("auto", "32", "32-true", "16-mixed", "bf16-mixed", "16", "bf16"),
    "av_fusion": ("", "separate", "lip-reader", "early", "None"),
    "accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "monitor_mode": ("max", "min"),
    "val_normalizer": ("fairseq", "whisper", "muavic", "none"),
    "video_model_config": ("", "tiny", "base", "large", "lip2d"),
    "video_model_mode": ("auto", "finetuned", "pretrained"),
    "tagging_input": ("auto", "features", "fbank", "waveform"),
    "tagging_loss": ("BCE", "CE"),
    "lr_schedule": ("multistep", "cosine"),
}


def _doc(text: str) -> dict[str, str]:
    return {"doc": text}


@dataclass
class Config:
    """All training keys.  ``help(Config)`` or ``whisper-flamingo train --help-keys`` lists them."""

    # ----- experiment, logging, checkpoints -----
    work_dir: str = field(default="", metadata=_doc(
        "Ours: a folder other keys can derive from, written ${work_dir} in their values (any key can be "
        "referenced so: ${key}); the demo configs put every path under it, so work_dir=... moves them all."))
    train_name: str = field(default="whisper", metadata=_doc(
        "TensorBoard run name (sub-folder of log_output_dir)."))
    train_id: str = field(default="whisper", metadata=_doc(
        "Experiment id: checkpoint sub-folder and TensorBoard version."))
    log_output_dir: str = field(default="slurm/train_audio_slurm", metadata=_doc(
        "TensorBoard root; logs go to <log_output_dir>/<train_name>/<train_id>."))
    check_output_dir: str = field(default="models/checkpoint", metadata=_doc(
        "Checkpoint root; checkpoints go to <check_output_dir>/<train_id>/."))
    resume_training: bool = field(default=False, metadata=_doc(
        "Resume from <check_output_dir>/<train_id>/last.ckpt when it exists."))
    seed: int = field(default=3407, metadata=_doc("Global seed (data order, noise, augmentation)."))

    # ----- what is trained -----
    task: str = field(default="auto", metadata=_doc(
        "Training task (whisper_flamingo.tasks.registry): asr (stage 1, audio-only Whisper) or flamingo "
        "(stage 2, Whisper-Flamingo) or tagging (sound-event tags, config/tagging/) or mae (SAT's ViT "
        "pre-training) or vsr (lip reading: a video encoder trained with byte CTC for stage 2); auto = flamingo when "
        "add_gated_x_attn is set or av_fusion is separate / "
        "lip-reader, else asr (as the original chose its script)."))

    # ----- model -----
    model_name: str = field(default="small", metadata=_doc(
        "OpenAI Whisper name (tiny.en ... large-v3) or path of an openai-whisper .pt / CTranslate2 / "
        "Hugging Face Whisper directory."))
    whisper_download_root: str = field(default="models", metadata=_doc(
        "Where OpenAI Whisper .pt files are looked for (and downloaded where the network allows)."))
    pt_ckpt: str = field(default="", metadata=_doc(
        "Stage-1 checkpoint (Lightning 'state_dict' with 'model.' prefix) to initialise Whisper; '' skips."))
    n_mels: int = field(default=0, metadata=_doc(
        "Mel bins; 0 takes the model's own (80, or 128 for large-v3)."))
    padding_mask: bool = field(default=False, metadata=_doc(
        "Ours: key-padding masks for variable-length batches (encoder self-attention and its convolutions' "
        "boundary, decoder cross-attention to audio and video), so a model's outputs do not depend on what "
        "shares its batch; training and validation use them, the decoder reads the key from the checkpoint. "
        "false = the original (no masks; released checkpoints were trained so)."))
    dropout_rate: float = field(default=0.0, metadata=_doc(
        "Only 0 (every original config): the original built Dropout modules it never called."))

    # ----- data -----
    muavic_root: str = field(default="data", metadata=_doc(
        "Folder that holds the MuAViC 'muavic/' tree (manifests and media)."))
    lrs2_root: str = field(default="data/lrs2", metadata=_doc(
        "Folder with LRS2 {train,valid,test}.tsv and .wrd label files (lang: lrs2)."))
    lang: str = field(default="en", metadata=_doc(
        "Data selection: en, lrs2, multi_en-st, multi-all, multi, or one language code."))
    whisper_task: str = field(default="auto", metadata=_doc(
        "What Whisper is asked to do: transcribe, En-X or X-En; auto = En-X for multi_en-st, else transcribe."))
    vc2: bool = field(default=False, metadata=_doc("Use a VoxCeleb2-augmented training manifest."))
    vc2_path: str = field(default="", metadata=_doc("Folder of the VoxCeleb2-augmented train.tsv/.en."))
    audio_max_length: int = field(default=480000, metadata=_doc(
        "Training filter in samples (16 kHz) and the unit of batch_bins."))
    text_max_length: int = field(default=350, metadata=_doc("Training filter on label characters."))
    audio_max_length_val: int = field(default=480000, metadata=_doc(
        "Validation filter in samples (30 s: Whisper's positional limit)."))
    reduce_val: int | None = field(default=None, metadata=_doc(
        "Cut the validation set (and test sets in training) to this many utterances per run; "
        "null = the original per-mode value (300 multi-all/multi, 200 multi_en-st); 0 = no cut."))
    on_bad_sample: str = field(default="error", metadata=_doc(
        "error: stop at the first bad sample with file:line; skip: drop it and count it per reason."))
    num_worker: int = field(default=4, metadata=_doc("DataLoader worker processes."))
    video_feature_dir: str = field(default="", metadata=_doc(
        "Stage 2: read precomputed video features from here instead of running the video encoder."))

    # ----- noise and augmentation -----
    noise_prob: float = field(default=1.0, metadata=_doc("Probability a training sample gets noise."))
    noise_snr_train: float | list[float] = field(default=0.0, metadata=_doc(
        "Training SNR in dB, or [low, high] for an integer SNR drawn per sample."))
    noise_snr_eval: float = field(default=0.0, metadata=_doc("SNR of the noisy validation/test sets."))
    noise_fn: str = field(default="", metadata=_doc("Training noise list (one wav path per line)."))
    noise_fn_val: str = field(default="", metadata=_doc("Noise list of the noisy validation set."))
    noise_fn_test: str = field(default="", metadata=_doc("Noise list of the noisy test set."))
    noise_offset_train: str = field(default="random", metadata=_doc(
        "Where the noise excerpt starts in training: random or zero (the original always used 0)."))
    noise_offset_eval: str = field(default="zero", metadata=_doc(
        "Where the noise excerpt starts in evaluation: zero (reproducible, as the original) or random."))
    val_noise_name: str = field(default="", metadata=_doc(
        "Name of the noisy sets in metric names; '' = original (multi_babble stage 1, en_babble stage 2)."))
    spec_augment: str = field(default="", metadata=_doc("'' (off), ls-basic (1+1 masks), ls-double (2+2)."))

    # ----- optimisation -----
    learning_rate: float = field(default=1.25e-5, metadata=_doc("Peak learning rate after warm-up."))
    weight_decay: float = field(default=0.01, metadata=_doc(
        "AdamW weight decay (never applied to biases and LayerNorm parameters)."))
    adam_epsilon: float = field(default=1e-8, metadata=_doc("AdamW epsilon."))
    batch_size: float = field(default=4.0, metadata=_doc(
        "Dynamic batch, a MULTIPLIER of audio_max_length (not a count of utterances): each device batch holds "
        "up to audio_max_length * batch_size padded samples (4.0 with 480000 = 120 s of audio). "
        "Alias: batch_seconds (seconds of padded audio per device batch)."))
    val_batch_bins_multiplier: float = field(default=8.0, metadata=_doc(
        "Validation batch: padded samples = audio_max_length * this (8 stage 1, 16 stage 2)."))
    num_train_steps: int = field(default=90000, metadata=_doc("Optimizer steps (Trainer max_steps)."))
    warmup_steps: int = field(default=1000, metadata=_doc("Linear warm-up steps."))
    gradient_accumulation_steps: int = field(default=1, metadata=_doc("Batches per optimizer step."))
    gradient_clip_val: float = field(default=0.0, metadata=_doc("Gradient norm clipping; 0 = off."))

    # ----- trainer -----
    accelerator: str = field(default="auto", metadata=_doc("auto, cpu or gpu (the original forced gpu)."))
    num_devices: int = field(default=1, metadata=_doc("Devices per node; >1 uses DDP."))
    num_nodes: int = field(default=1, metadata=_doc("Nodes (SLURM sets the rest)."))
    precision: str = field(default="auto", metadata=_doc(
        "auto = 16-mixed on GPU, 32 on CPU; or any Lightning precision string."))
    validate_every_n_batches: int = field(default=1000, metadata=_doc(
        "Validation interval in OPTIMIZER STEPS despite the original name (batches = steps * "
        "gradient_accumulation_steps). Alias: validate_every_n_steps."))
    validate_before_training: bool = field(default=True, metadata=_doc(
        "Run a full validation pass before training (skipped when resuming)."))
    limit_val_batches: int = field(default=0, metadata=_doc("Validation batches per loader; 0 = all."))
    val_decode: bool = field(default=True, metadata=_doc(
        "Validation also runs batched greedy decoding and logs corpus-level WER/CER."))
    val_normalizer: str = field(default="fairseq", metadata=_doc(
        "Text normaliser for validation WER/CER: fairseq, whisper or none (as the decode command)."))
    monitor: str = field(default="val_noisy_multi_babble/acc", metadata=_doc(
        "Metric that picks the best checkpoint."))
    monitor_mode: str = field(default="max", metadata=_doc("max or min for monitor."))
    checkpoint_every_n_steps: int = field(default=5000, metadata=_doc(
        "Rewrite last.ckpt (the one full, resumable checkpoint) every N optimizer steps; it is also written "
        "at the end and on SIGTERM."))
    save_top_k: int = field(default=1, metadata=_doc(
        "Keep the k best checkpoints by monitor, weights only (step-<step>-<metric>=<value>.ckpt); older "
        "ones are deleted; 0 = none (last.ckpt only)."))
    sync_batchnorm: bool | None = field(default=None, metadata=_doc(
        "Synchronise BatchNorm statistics across DDP ranks (the video encoder's); null = the task's default, "
        "as the original: on for flamingo, off for asr. It takes effect on GPUs only (torch's SyncBatchNorm)."))
    log_every_n_steps: int = field(default=50, metadata=_doc("Training-loss logging interval."))
    trace_batches_dir: str = field(default="", metadata=_doc(
        "Debugging data order: append the ids of every training batch to <dir>/rank<k>.txt."))

    # ----- stage 2: audio-visual (Whisper-Flamingo) -----
    video_model_ckpt: str = field(default="", metadata=_doc(
        "AV-HuBERT checkpoint; with video_model_config: a lip reader of that size (task: vsr checkpoint)."))
    video_model_config: str = field(default="", metadata=_doc(
        "Without video_model_ckpt: tiny, base or large = a randomly initialised AV-HuBERT (the ResNet front end "
        "alone without use_av_hubert_encoder) trained from scratch; tiny also narrows the ResNet (CPU demos); "
        "lip2d = a per-frame 2D CNN + temporal convolutions (models/lip_frontends.py, CPU demos; "
        "use_av_hubert_encoder does not apply).  With video_model_ckpt: the size of that lip reader, whose "
        "encoder weights are loaded.  task: vsr: the size of the encoder it trains."))
    video_model_mode: str = field(default="auto", metadata=_doc(
        "AV-HuBERT code path: finetuned, pretrained, or auto (from the checkpoint's keys)."))
    freeze_video_model: bool = field(default=True, metadata=_doc("Keep AV-HuBERT frozen."))
    freeze_video_batch_norm_stats: bool = field(default=False, metadata=_doc(
        "Keep AV-HuBERT in eval mode while training (BN statistics and dropout off)."))
    video_projection_train_only: bool = field(default=False, metadata=_doc(
        "Legacy: train only the video projection (ignored with add_gated_x_attn)."))
    video_projection_separate_lr: str | float = field(default="", metadata=_doc(
        "Legacy: separate learning rate for the video projection; '' = off."))
    video_projection_lr: float = field(default=0.0, metadata=_doc(
        "Legacy, only 0: the original's projection-only optimizer is not ported (learning_rate applies)."))
    video_projection_linear_scale: float = field(default=1.0, metadata=_doc(
        "Legacy, only 1: the original's projection-only optimizer is not ported."))
    prob_use_av: float = field(default=1.0, metadata=_doc("Modality dropout: P(audio + video) per batch."))
    prob_use_a: float = field(default=0.0, metadata=_doc(
        "Modality dropout: P(audio only); the rest is video only."))
    use_av_hubert_encoder: bool = field(default=False, metadata=_doc(
        "AV-HuBERT video encoder (else the ResNet-18 front end only)."))
    add_gated_x_attn: int = field(default=0, metadata=_doc(
        "1: gated cross-attention over video in every decoder block (Whisper-Flamingo)."))
    av_fusion: str = field(default="", metadata=_doc(
        "separate (Whisper-Flamingo) or lip-reader (video replaces the encoder input)."))
    video_ctc_weight: float = field(default=0.0, metadata=_doc(
        "Ours: auxiliary CTC lip-reading loss on the trained video encoder's output (UTF-8 bytes of the "
        "lower-cased transcript), loss = CE + weight * CTC. A video encoder trained from scratch needs it to "
        "learn lip reading before the gates open (the CPU demo); 0 = off (the original)."))

    # ----- sound tagging (task: tagging; Whisper-AT, AST, SAT) -----
    tagging_model: str = field(default="", metadata=_doc(
        "Tagging head, a registry name (`whisper-flamingo models`), e.g. whisper-at-tltr-tiny.en; model_name is "
        "then the frozen Whisper whose features it reads. An 'epoch' of the tagging task is "
        "validate_every_n_batches optimizer steps (Whisper-AT's 10 % of a pass); batch_size is clips per batch."))
    tagging_input: str = field(default="auto", metadata=_doc(
        "What the head reads: features (pre-extracted Whisper encoder layers, feature_dir), fbank (AST), "
        "waveform (SAT); auto = by the model's family."))
    label_csv: str = field(default="", metadata=_doc(
        "Label index CSV (index,mid,display_name); '' = the 527 AudioSet classes shipped with the package."))
    data_train: str = field(default="", metadata=_doc(
        "Tagging training list (JSON {\"data\": [{\"wav\", \"labels\"}]}, labels = comma-separated mids)."))
    data_val: str = field(default="", metadata=_doc("Tagging validation list (same format)."))
    data_eval: str = field(default="", metadata=_doc(
        "Optional held-out tagging list, scored at every validation (with the checkpoint ensemble, cum_*)."))
    feature_dir: str = field(default="", metadata=_doc(
        "Folder of pre-extracted Whisper features (whisper-flamingo extract-tag-features) for tagging_input: "
        "features."))
    mixup: float = field(default=0.0, metadata=_doc(
        "Tagging: probability that a training clip is mixed with a random other one, lambda ~ Beta(10, 10) "
        "(Whisper-AT: on the features, 0.5)."))
    label_smoothing: float = field(default=0.0, metadata=_doc(
        "Tagging: label smoothing as Whisper-AT (every class s/C, positives 1-s; 0.1 in its recipe)."))
    timem: int = field(default=0, metadata=_doc("Tagging: time-mask width bound (uniform in [0, timem)); 0 = off."))
    freqm: int = field(default=0, metadata=_doc(
        "Tagging: mask width bound on the last (feature / frequency) axis; 0 = off."))
    balanced_sampling: bool = field(default=False, metadata=_doc(
        "Tagging: draw training clips with the balanced (PSLA) weights, written next to data_train as "
        "<list>_weight.csv."))
    lrscheduler_start: int = field(default=15, metadata=_doc(
        "Tagging: first epoch milestone of the multistep schedule (lr *= lrscheduler_decay after it)."))
    lrscheduler_step: int = field(default=5, metadata=_doc("Tagging: epochs between milestones."))
    lrscheduler_decay: float = field(default=0.75, metadata=_doc("Tagging: lr factor at each milestone."))
    wa_start: int = field(default=0, metadata=_doc(
        "Tagging: first epoch of weight averaging after training (0 = off)."))
    wa_end: int = field(default=0, metadata=_doc("Tagging: last epoch of weight averaging (inclusive)."))
    tagging_loss: str = field(default="BCE", metadata=_doc(
        "Tagging loss: BCE (multi-label, soft targets) or CE (single-label, target = argmax)."))
    # AST (tagging_input: fbank; config/tagging/ast_*.yaml)
    target_length: int = field(default=1024, metadata=_doc(
        "AST: fbank frames per clip (cut or zero-padded; AudioSet 1024, ESC-50 512, Speech Commands 128); the "
        "AST head is built for this length."))
    norm_mean: float = field(default=-4.2677393, metadata=_doc(
        "AST: dataset fbank mean for (x - mean) / (2 std) (AudioSet -4.2677393, ESC-50 -6.6268077, Speech "
        "Commands -6.845978)."))
    norm_std: float = field(default=4.5689974, metadata=_doc(
        "AST: dataset fbank std (AudioSet 4.5689974, ESC-50 5.358466, Speech Commands 5.5654526)."))
    noise_aug: bool = field(default=False, metadata=_doc(
        "AST (Speech Commands): in training add uniform noise x U[0,1) x U[0,0.1) to the normalised fbank and "
        "roll it by U{-10..9} frames."))
    ast_init: str = field(default="", metadata=_doc(
        "AST: checkpoint the head starts from (DeiT ImageNet, released AST AudioSet .pth, Hugging Face dir; "
        "AST.from_checkpoint adapts length and label count); '' = random init."))
    folds: int = field(default=0, metadata=_doc(
        "Cross-validation: train once per fold k = 1..folds with '{fold}' in data_train/data_val/data_eval "
        "replaced by k, into <train_id>/fold<k>; then acc_fold.csv (the best fold-averaged epoch) and the "
        "fold-averaged result.csv. 0 = one run."))
    average_best: int = field(default=0, metadata=_doc(
        "Tagging: after training, average the state dicts of the N epochs with the best monitor value (a val/* "
        "metric) into averaged.pt (SAT: the 4 best by mAP); 0 = off."))
    psl_table: str = field(default="", metadata=_doc(
        "SAT training: pseudo-strong-label table (filename, start, end, prob, idxs; .tsv/.csv, or .parquet with "
        "pyarrow); data_train is then SAT's clip table (filename, labels as ;-joined indices) and every training "
        "example is one PSL chunk with its soft labels."))
    samples_per_epoch: int = field(default=0, metadata=_doc(
        "Tagging: clips drawn per pass of the training sampler (SAT: 200000, with replacement); 0 = the list size."))
    lr_schedule: str = field(default="multistep", metadata=_doc(
        "Tagging/MAE: multistep (AST/Whisper-AT, per epoch) or cosine (SAT/MAE: linear warm-up from 0 over "
        "warmup_steps, then cosine per step to lr_min_ratio * learning_rate at num_train_steps)."))
    lr_min_ratio: float = field(default=0.1, metadata=_doc(
        "Tagging/MAE cosine schedule: final lr as a fraction of learning_rate (SAT 0.1, MAE 0.01)."))
    adam_beta1: float = field(default=0.95, metadata=_doc(
        "Tagging/MAE: Adam beta1 (AST/Whisper-AT 0.95; SAT/MAE, whose Adam8bit keeps the default, 0.9)."))
    init_from: str = field(default="", metadata=_doc(
        "SAT training: a ViT/MAE checkpoint (task: mae output, a released AudioTransformer, a state dict) whose "
        "encoder initialises the SAT (load_vit_into_sat; the head stays fresh). '' = random init."))

    # ------------------------------------------------------------------ derived values
    @property
    def is_audio_visual(self) -> bool:
        """Stage 2 (a video branch) rather than stage 1."""
        return bool(self.add_gated_x_attn) or self.av_fusion in ("separate", "lip-reader")

    @property
    def task_name(self) -> str:
        """The training task: ``task``, or for ``auto`` the one the audio-visual keys imply."""
        if self.task != "auto":
            return self.task
        return "flamingo" if self.is_audio_visual else "asr"

    @property
    def resolved_whisper_task(self) -> str:
        if self.whisper_task != "auto":
            return self.whisper_task
        return "En-X" if self.lang == "multi_en-st" else "transcribe"

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.check_output_dir) / self.train_id

    @property
    def log_dir(self) -> Path:
        return Path(self.log_output_dir) / self.train_name / self.train_id

    def missing_paths(self) -> list[str]:
        """``key=path`` for every input path of this config that does not exist (model, data, noise, ...)."""
        want: list[str] = []
        name = str(self.model_name)
        if "/" in name or "\\" in name or name.endswith((".pt", ".ckpt")):
            want.append("model_name")
        if self.task_name in ("asr", "flamingo"):
            want.append("lrs2_root" if "lrs2" in self.lang else "muavic_root")
        if self.vc2:
            want.append("vc2_path")
        want += [k for k in ("noise_fn", "noise_fn_val", "noise_fn_test", "pt_ckpt", "video_model_ckpt", "ast_init",
                             "video_feature_dir", "psl_table", "init_from") if getattr(self, k)]
        return [f"{k}={getattr(self, k)}" for k in want if not Path(str(getattr(self, k))).expanduser().exists()]

    def check_paths(self) -> None:
        """One error listing every missing input path at once (not one run per missing path)."""
        missing = self.missing_paths()
        if missing:
            base = f" (work_dir={self.work_dir})" if self.work_dir else ""
            raise ConfigError(f"{len(missing)} input path(s) do not exist: {'; '.join(missing)}; fix these keys"
                              f"{', or work_dir where they derive from it' + base if base else ''}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


# ---------------------------------------------------------------------- typing and checking
_HINTS = typing.get_type_hints(Config)
KEYS: tuple[str, ...] = tuple(f.name for f in fields(Config))


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return {"str": "string", "int": "integer", "float": "number", "bool": "true/false"}.get(
            tp.__name__, tp.__name__)
    args = typing.get_args(tp)
    origin = typing.get_origin(tp)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if args:
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    return str(tp)


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """Return ``(ok, value)``: ``value`` converted to ``tp`` where that is lossless."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, None
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            return False, value
        out = []
        for v in value:
            ok, c = _coerce(v, item_tp)
            if not ok:
                return False, value
            out.append(c)
        return True, out
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        if isinstance(value, bool):
            return False, value
        if isinstance(value, int):
            return True, value
        if isinstance(value, float) and value.is_integer():
            return True, int(value)
        return False, value
    if tp is float:
        if isinstance(value, bool):
            return False, value
        return (True, float(value)) if isinstance(value, (int, float)) else (False, value)
    if tp is str:
        return isinstance(value, str), value
    return isinstance(value, tp), value


def suggest(key: str) -> str:
    close = difflib.get_close_matches(key, KEYS, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else " (see `whisper-flamingo train --help-keys`)"


def legacy_key(key: str, value: Any) -> str:
    """The key a value belongs to: ``task: transcribe | En-X | X-En`` (our earlier meaning of ``task``)
    is ``whisper_task``; everything else is itself."""
    if key == "task" and isinstance(value, str) and value in WHISPER_TASKS[1:]:
        log.info("key 'task: %s' is read as 'whisper_task: %s' (task now names the training task)", value, value)
        return "whisper_task"
    return key


def check_value(key: str, value: Any, where: str, from_cli: bool = False) -> Any:
    """Check one key/value pair; return the value converted to the key's type."""
    if key not in _HINTS:
        raise ConfigError(f"{where}unknown key '{key}'{suggest(key)}")
    tp = _HINTS[key]
    if from_cli and tp is str and not isinstance(value, str):
        value = "" if value is None else str(value)
    if from_cli and tp == (str | float) and value is None:
        value = ""
    ok, out = _coerce(value, tp)
    if not ok:
        raise ConfigError(f"{where}key '{key}' expects {_type_name(tp)}, got {value!r} "
                          f"({type(value).__name__})")
    if key in CHOICES and out not in CHOICES[key]:
        raise ConfigError(f"{where}key '{key}' must be one of {', '.join(map(repr, CHOICES[key]))}, "
                          f"got {out!r}")
    return out


#: keys of the original that nothing here reads: refused at any value but their no-op default
REFUSED_KEYS: dict[str, tuple[Any, str]] = {
    "dropout_rate": (0.0, "the original built Dropout modules it never called (all its configs say 0); use 0"),
    "video_projection_lr": (0.0, "the original's projection-only optimizer (video_projection_train_only "
                                 "without gated layers) is not ported; remove it (learning_rate applies)"),
    "video_projection_linear_scale": (1.0, "it scaled video_projection_scalar when the original's "
                                           "projection-only optimizer started, which is not ported; remove it"),
}


#: clearer names accepted for keys of the original: alias -> (key, conversion note for --help-keys)
ALIASES: dict[str, tuple[str, str]] = {
    "validate_every_n_steps": ("validate_every_n_batches", "the same number (optimizer steps)"),
    "batch_seconds": ("batch_size", "batch_size = batch_seconds * 16000 / audio_max_length"),
}


def _set(values: dict[str, Any], where_of: dict[str, str], source: set[str], key: str, value: Any,
         where: str, from_cli: bool = False) -> None:
    """Store one checked key of a source (the YAML file, then the overrides; a later source wins).

    An alias stands for its key; the alias and its key in the same source are refused.  ``batch_seconds``
    is kept as given and converted once ``audio_max_length`` is final (:func:`_finish_aliases`).
    """
    if key in ALIASES:
        target = ALIASES[key][0]
        if target in source:
            raise ConfigError(f"{where}'{key}' and '{target}' are the same setting; give only one")
        if key == "batch_seconds":
            ok, secs = _coerce(value, float)
            if not ok or secs <= 0:
                raise ConfigError(f"{where}key 'batch_seconds' expects a positive number of seconds, got {value!r}")
            values.pop(target, None)
            values["batch_seconds"], where_of["batch_seconds"] = secs, where
            source.add(key)
            return
        source.add(key)
        key = target
    elif any(a in source for a, (t, _) in ALIASES.items() if t == key):
        raise ConfigError(f"{where}'{key}' and its alias are the same setting; give only one")
    if key == "batch_size":
        values.pop("batch_seconds", None)
    values[key] = check_value(key, value, where, from_cli)
    where_of[key] = where
    source.add(key)


def _finish_aliases(values: dict[str, Any], where_of: dict[str, str]) -> None:
    """``batch_seconds`` -> ``batch_size = batch_seconds * 16000 / audio_max_length``."""
    if "batch_seconds" in values:
        secs = values.pop("batch_seconds")
        where = where_of.pop("batch_seconds")
        length = values.get("audio_max_length", Config.audio_max_length)
        values["batch_size"] = check_value("batch_size", secs * 16000 / length, where)
        where_of["batch_size"] = where


_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _interpolate(values: dict[str, Any], where_of: dict[str, str]) -> None:
    """Replace ``${key}`` in string values by that key's value (given or default), references nested."""
    defaults = {f.name: f.default for f in fields(Config)}

    def expand(key: str, stack: tuple[str, ...]) -> Any:
        value = values.get(key, defaults.get(key))
        if not isinstance(value, str) or "${" not in value:
            return value

        def sub(m: re.Match) -> str:
            ref = m.group(1)
            if ref not in defaults:
                raise ConfigError(f"{where_of.get(key, '')}key '{key}': ${{{ref}}} names no key{suggest(ref)}")
            if ref in stack:
                raise ConfigError(f"{where_of.get(key, '')}key '{key}': ${{{ref}}} refers back to itself "
                                  f"({' -> '.join((*stack, ref))})")
            out = expand(ref, (*stack, ref))
            if out in ("", None):
                raise ConfigError(f"{where_of.get(key, '')}key '{key}' uses ${{{ref}}} but {ref} is empty; "
                                  f"set it (e.g. {ref}=demo_out on the command line)")
            return str(out)

        return _REF.sub(sub, value)

    for key in list(values):
        values[key] = expand(key, (key,))


def _validate(cfg: Config, where: str) -> None:
    """Checks across keys and value ranges."""
    for key in ("noise_prob", "prob_use_av", "prob_use_a", "mixup", "label_smoothing", "lr_min_ratio"):
        v = getattr(cfg, key)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{where}key '{key}' must lie in [0, 1], got {v}")
    if cfg.prob_use_av + cfg.prob_use_a > 1.0 + 1e-9:
        raise ConfigError(f"{where}prob_use_av + prob_use_a must not exceed 1, got "
                          f"{cfg.prob_use_av} + {cfg.prob_use_a}")
    if cfg.video_ctc_weight < 0:
        raise ConfigError(f"{where}key 'video_ctc_weight' must be >= 0, got {cfg.video_ctc_weight}")
    if isinstance(cfg.noise_snr_train, list) and len(cfg.noise_snr_train) != 2:
        raise ConfigError(f"{where}key 'noise_snr_train' takes a number or [low, high], "
                          f"got {cfg.noise_snr_train}")
    if isinstance(cfg.noise_snr_train, list) and cfg.noise_snr_train[0] > cfg.noise_snr_train[1]:
        raise ConfigError(f"{where}key 'noise_snr_train' range must be [low, high] with low <= high")
    for key in ("audio_max_length", "num_train_steps", "gradient_accumulation_steps", "num_devices",
                "validate_every_n_batches", "num_nodes", "checkpoint_every_n_steps"):
        if getattr(cfg, key) < 1:
            raise ConfigError(f"{where}key '{key}' must be at least 1, got {getattr(cfg, key)}")
    for key in ("batch_size", "learning_rate", "val_batch_bins_multiplier"):
        if getattr(cfg, key) <= 0:
            raise ConfigError(f"{where}key '{key}' must be positive, got {getattr(cfg, key)}")
    if cfg.samples_per_epoch < 0 or cfg.average_best < 0 or not 0.0 <= cfg.adam_beta1 < 1.0:
        bad = "samples_per_epoch" if cfg.samples_per_epoch < 0 else "average_best" if cfg.average_best < 0 \
            else "adam_beta1"
        raise ConfigError(f"{where}key '{bad}' has an invalid value {getattr(cfg, bad)} (samples_per_epoch, "
                          "average_best >= 0; 0 <= adam_beta1 < 1)")
    if cfg.save_top_k < 0:
        raise ConfigError(f"{where}key 'save_top_k' must be >= 0, got {cfg.save_top_k}")
    if cfg.target_length < 16 or cfg.norm_std <= 0 or cfg.folds < 0:
        bad = "target_length" if cfg.target_length < 16 else "norm_std" if cfg.norm_std <= 0 else "folds"
        raise ConfigError(f"{where}key '{bad}' has an invalid value {getattr(cfg, bad)} (target_length >= 16 "
                          "frames, norm_std > 0, folds >= 0)")
    if cfg.warmup_steps < 0 or cfg.num_worker < 0 or cfg.n_mels not in (0, 80, 128):
        bad = "warmup_steps" if cfg.warmup_steps < 0 else "num_worker" if cfg.num_worker < 0 else "n_mels"
        raise ConfigError(f"{where}key '{bad}' has an invalid value {getattr(cfg, bad)}")


def _key_lines(text: str) -> dict[str, int]:
    """Line number (1-based) of every top-level key in a YAML mapping."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` with the value read as YAML (``lr=1e-4``, ``noise_snr_train=[-5,5]``)."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key=value")
    key, raw = item.split("=", 1)
    key = key.strip().lstrip("-").replace("-", "_") if key.startswith("--") else key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() != "" else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def resolve_paths(cfg: Config, base: Path | None = None) -> Config:
    """Make relative path keys absolute against ``base`` (default: the current directory)."""
    base = Path.cwd() if base is None else base
    for key in PATH_KEYS:
        value = getattr(cfg, key)
        if value and not Path(value).expanduser().is_absolute():
            setattr(cfg, key, str((base / Path(value).expanduser()).resolve()))
        elif value:
            setattr(cfg, key, str(Path(value).expanduser()))
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                resolve: bool = True) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, check everything, resolve paths."""
    values: dict[str, Any] = {}
    where_of: dict[str, str] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found; pass the path of a YAML config "
                              f"(e.g. config/audio/demo.yaml)")
        text = p.read_text(encoding="utf-8")
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            line = f"{mark.line + 1}:" if mark is not None else ""
            problem = getattr(err, "problem", err)
            raise ConfigError(f"{p}:{line} invalid YAML ({problem}); fix the syntax") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: a config must be a mapping of key: value lines")
        lines = _key_lines(text)
        source: set[str] = set()
        for key, value in raw.items():
            where = f"{p}:{lines[key]}: " if key in lines else f"{p}: "
            _set(values, where_of, source, legacy_key(str(key), value), value, where)
    source = set()
    for item in overrides:
        key, value = parse_override(item)
        _set(values, where_of, source, legacy_key(key, value), value, f"override '{item}': ", from_cli=True)
    _finish_aliases(values, where_of)
    _interpolate(values, where_of)
    cfg = Config(**values)
    for key, (default, why) in REFUSED_KEYS.items():
        if getattr(cfg, key) != default:
            raise ConfigError(f"{where_of.get(key, '')}key '{key}': {getattr(cfg, key)!r} is not supported: {why}")
    _validate(cfg, f"{path}: " if path is not None else "")
    if resolve:
        resolve_paths(cfg)
    return cfg


def save_config(cfg: Config, directory: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config (atomically) next to the checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    tmp = out.with_suffix(out.suffix + ".tmp")
    tmp.write_text(cfg.to_yaml(), encoding="utf-8")
    tmp.replace(out)
    return out


def describe_keys() -> str:
    """Every key with its type, default and meaning (for --help-keys and the README)."""
    rows = []
    for f in fields(Config):
        default = f.default if f.default is not dataclasses.MISSING else None
        rows.append(f"{f.name:32s} {_type_name(_HINTS[f.name]):24s} default={default!r}\n"
                    f"    {f.metadata.get('doc', '')}")
    for alias, (key, how) in ALIASES.items():
        rows.append(f"{alias:32s} {'alias of ' + key:24s}\n    {how}")
    return "\n".join(rows)

