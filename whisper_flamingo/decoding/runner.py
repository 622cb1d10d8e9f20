"""Decode manifests over languages × modalities × noise lists × SNRs, score, and write the results.

One *condition* (:mod:`~whisper_flamingo.decoding.conditions`) = (language, modality, noise list, SNR),
decoded into its own folder (what it holds, and how a run resumes from it:
:mod:`~whisper_flamingo.decoding.outputs`).  This module holds the settings, the model and data
loading, and the loop.

Resuming: the ids already in ``utterances.jsonl`` are skipped.  Batches are always built over the
whole condition and a batch with any missing utterance is decoded whole, so padding — and therefore
every hypothesis — is the same as in an uninterrupted run; the final scores are computed from the
JSONL alone.  ``run.json`` records the settings of the first run; a resume with different settings is
refused.

Key-padding masks follow the checkpoint: a model trained with the config key ``padding_mask: true``
(saved in the checkpoint's ``hyper_parameters``) decodes with masks, anything else (released
checkpoints, converted directories, OpenAI models zero-shot on 30-s windows) without, as trained;
``summary.json`` says which under ``provenance.padding_mask``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from whisper_flamingo.decoding.conditions import CLEAN_SNR, Condition, condition_dir, conditions
from whisper_flamingo.decoding.outputs import (
    JSONL,
    UtteranceWriter,
    claim_dir,
    last_timing,
    versions,
    write_outputs,
)
from whisper_flamingo.decoding.scoring import utterance_counts
from whisper_flamingo.decoding.search import SearchOptions, decode_batch
from whisper_flamingo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

N_SAMPLES_30S = 480000
#: the original's --av-hubert-ckpt default; its "ft" rule: a file name with "ft" = a fine-tuned AV-HuBERT
ORIGINAL_AV_HUBERT_CKPT = "models/large_noise_pt_noise_ft_433h_only_weights.pt"

#: called after every batch with the number of batches written so far in the current condition
AfterBatch = Callable[[int], None]


@dataclass
class DecodeSettings:
    """Everything a decode run needs (the CLI flags; see ``whisper-flamingo decode --help``)."""

    langs: list[str] = field(default_factory=lambda: ["en"])
    model_type: str = "tiny.en"
    checkpoint_path: str | None = None
    use_original_whisper: bool = False
    noise_snrs: list[float] = field(default_factory=lambda: [CLEAN_SNR])
    noise_fns: list[str | None] = field(default_factory=lambda: [None])
    modalities: list[str] = field(default_factory=lambda: ["asr"])
    task: str = "transcribe"
    normalizer: str = "fairseq"
    fp16: bool = True
    decode_path: str = "decode/"
    whisper_path: str = "models/"
    muavic_root: str = ""
    lrs2_root: str = ""
    split: str = "test"
    batch_bins: int = 640000
    max_utterances: int | None = None
    seed: int = 0
    num_workers: int = 0
    on_bad_sample: str = "error"
    overwrite: bool = False
    device: str | None = None
    search: SearchOptions = field(default_factory=SearchOptions)
    # audio-visual flags of the original command line; the checkpoint decides the architecture, and
    # these, when given, must agree with it (see check_video_flags)
    av_fusion: str = ""
    use_av_hubert_encoder: bool | None = None
    av_hubert_ckpt: str | None = None
    #: utterances over 30 s: "off" (the first 30 s are decoded, the row flagged ``over_30s``) or
    #: "window" (decoded in windows of at most 30 s, texts joined; see decoding/longform.py)
    long_form: str = "off"
    # Whisper-AT: a TL-TR head tags every utterance from the same encoder pass (audio-only Whisper only)
    at_checkpoint: str | None = None
    at_time_res: float = 10.0

    @property
    def model_id(self) -> str:
        """What identifies the decoded model: a model name as given, or the absolute path of a checkpoint."""
        name = str(self.checkpoint_path if self.checkpoint_path and not self.use_original_whisper
                   else self.model_type)
        path = Path(name).expanduser()
        return str(path.resolve()) if "/" in name or path.exists() else name

    @property
    def model_label(self) -> str:
        """The folder naming the model under the decode path: the checkpoint's (or model's) name, as the
        original's released checkpoints gave it; ``<name>-<hash>`` when the folder of that name already
        holds the decodes of another checkpoint (e.g. the ``last.ckpt`` of two runs)."""
        ident = self.model_id
        base = Path(ident).name if "/" in ident else ident
        if base in ("", ".", ".."):
            base = "checkpoint"
        owner = _label_owner(Path(self.decode_path) / base)
        if owner is not None and owner != ident:
            return f"{base}-{hashlib.sha256(ident.encode()).hexdigest()[:8]}"
        return base

    @property
    def audio_visual(self) -> bool:
        """A Whisper-Flamingo decode: ``--av_fusion separate`` or a video modality was asked for."""
        return self.av_fusion == "separate" or any(m != "asr" for m in self.modalities)

    @property
    def padded(self) -> bool:
        """Original Whisper decodes 30-s padded windows; fine-tuned checkpoints variable length."""
        return self.use_original_whisper or not self.checkpoint_path


MODEL_MARKER = "model.json"


def _label_owner(folder: Path) -> str | None:
    """The model id recorded in ``folder/model.json`` (None when the folder is not claimed)."""
    import json

    try:
        return str(json.loads((folder / MODEL_MARKER).read_text(encoding="utf-8"))["model"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def claim_model_folder(settings: DecodeSettings) -> Path:
    """Create the model's folder under the decode path and record which model it holds."""
    import json

    folder = Path(settings.decode_path) / settings.model_label
    folder.mkdir(parents=True, exist_ok=True)
    if _label_owner(folder) is None:
        (folder / MODEL_MARKER).write_text(json.dumps({"model": settings.model_id}) + "\n", encoding="utf-8")
    return folder


# --------------------------------------------------------------------------------------------- model
def file_sha256(path: str | os.PathLike, short: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:short]


def trained_padding_mask(ckpt: object) -> bool:
    """Whether a checkpoint's model was trained with key-padding masks: the ``padding_mask`` key of the
    config saved in its ``hyper_parameters``, or ``padding_mask: True`` in an openai ``.pt`` written by
    ``convert`` (absent, e.g. in released checkpoints: False)."""
    if isinstance(ckpt, dict) and ckpt.get("padding_mask") is True:
        return True
    hp = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    config = hp.get("config") if isinstance(hp, dict) else None
    return bool(config.get("padding_mask", False)) if isinstance(config, dict) else False


def load_model(settings: DecodeSettings, device: torch.device):
    """The model to decode with and its provenance (``padding_mask``: as the checkpoint was trained)."""
    from whisper_flamingo.checkpoints import is_whisper_flamingo_state, load_whisper, read_checkpoint_file

    if settings.av_fusion == "None" and settings.audio_visual:
        raise ConfigError("--av_fusion None builds an audio-only model: it decodes --modalities asr only")
    if settings.padded:
        if settings.audio_visual:
            raise ConfigError("--modalities avsr/vsr (or --av_fusion separate) decode a Whisper-Flamingo model: "
                              "pass its checkpoint with --checkpoint-path (and not --use-original-whisper)")
        model = load_whisper(settings.model_type, settings.whisper_path or None)
        info = {"model": settings.model_type, "checkpoint": None, "checkpoint_sha256": None, "padding_mask": False}
        return model.to(device).eval(), info
    path = Path(settings.checkpoint_path)
    if not path.exists():
        raise ConfigError(f"--checkpoint-path {path}: file not found")
    info = {"model": settings.model_type, "checkpoint": str(path),
            "checkpoint_sha256": file_sha256(path) if path.is_file() else None}
    ckpt = read_checkpoint_file(path, mmap=True) if path.is_file() else None  # a directory: CTranslate2 / Hugging Face
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    masked = trained_padding_mask(ckpt)
    info["padding_mask"] = masked
    if isinstance(state, dict) and is_whisper_flamingo_state(state):
        from whisper_flamingo.checkpoints import load_stage2_checkpoint

        model = load_stage2_checkpoint(path, device, ckpt=ckpt).eval()
        model.use_padding_mask = masked
        if settings.av_fusion == "None":  # the original: an audio model, the checkpoint loaded non-strictly
            return model.audio_only().eval(), {**info, "architecture": "whisper (the audio part of a "
                                                                        "whisper-flamingo checkpoint)"}
        return model, {**info, "architecture": "whisper-flamingo"}
    if settings.audio_visual:
        raise ConfigError(f"--checkpoint-path {path}: an audio-only Whisper checkpoint (no gated cross-attention "
                          "layers) cannot decode --modalities avsr/vsr; use asr, or a stage-2 checkpoint")
    del ckpt, state
    model = load_whisper(path).to(device).eval()
    model.use_padding_mask = masked
    return model, info


def check_video_flags(settings: DecodeSettings, model) -> None:
    """``--use_av_hubert_encoder`` and ``--av-hubert-ckpt`` chose the video encoder the original built
    before loading the checkpoint over it; here the checkpoint decides, and a flag that disagrees with
    it is refused (the original then loaded mismatching weights non-strictly)."""
    kind = model.video_encoder_kind  # None: an audio-only model
    what = "an audio-only model (no video encoder)" if kind is None else f"video encoder {kind!r}"
    if settings.use_av_hubert_encoder is not None:
        has_avhubert = kind is not None and kind.startswith("avhubert")
        if bool(settings.use_av_hubert_encoder) != has_avhubert:
            raise ConfigError(f"--use_av_hubert_encoder {int(settings.use_av_hubert_encoder)}: the model is {what}; "
                              f"pass {int(has_avhubert)} or leave the flag out (the checkpoint decides)")
    if settings.av_hubert_ckpt is not None:
        if kind is None or not kind.startswith("avhubert"):
            raise ConfigError(f"--av-hubert-ckpt {settings.av_hubert_ckpt}: the model is {what}; the flag only "
                              "chose the AV-HuBERT code path, leave it out")
        implied = "avhubert-finetuned" if "ft" in Path(settings.av_hubert_ckpt).name else "avhubert-pretrained"
        if implied != kind:
            raise ConfigError(f"--av-hubert-ckpt {settings.av_hubert_ckpt}: names a {implied.split('-')[1]} "
                              f"AV-HuBERT (the original's 'ft' in the name rule) but the checkpoint holds "
                              f"{kind!r}; pass the matching file or leave the flag out")


# ---------------------------------------------------------------------------------------------- data
def load_records(settings: DecodeSettings, lang: str) -> list:
    """The records of ``settings.split`` for one ``--lang`` value (test: unfiltered, as the original).

    An empty ``muavic_root`` means the working directory (the original read ``muavic/...`` from there).
    """
    from whisper_flamingo.data.manifest import filter_records, manifest_spec, read_manifest, resolve_selection

    sel = resolve_selection(lang, settings.task, reduce_val=0)
    need_video = any(m != "asr" for m in settings.modalities)
    records = []
    for code in sel.langs:
        spec = manifest_spec(sel, code, settings.split, settings.muavic_root, settings.lrs2_root)
        filtered: Counter = Counter()
        recs = read_manifest(spec, settings.on_bad_sample, filtered=filtered, need_video=need_video)
        if filtered.get("no_video"):
            log.warning("%s: %d audio-only rows (0 video frames) left out: --modalities %s reads video",
                        spec.tsv, filtered["no_video"], ",".join(settings.modalities))
        if settings.split == "valid":
            recs = filter_records(recs, "valid", audio_max_length=N_SAMPLES_30S, text_max_length=10**9)
        records.extend(recs)
    if settings.max_utterances:
        records = records[: settings.max_utterances]
    if not records:
        raise DataError(f"no {settings.split} utterances for --lang {lang}", reason="empty_file")
    return records


def metric_for(lang: str, task: str) -> str:
    """WER if the text is English or the task is transcription, else BLEU (the original rule)."""
    return "wer" if lang == "en" or task == "transcribe" else "bleu"


# -------------------------------------------------------------------------------------------- decode
def _run_key(settings: DecodeSettings, info: dict, cond: Condition) -> dict:
    """Settings that must not change between a run and its resume."""
    return {"model": info["model"], "checkpoint_sha256": info["checkpoint_sha256"], "padded_30s": settings.padded,
            "task": settings.task, "normalizer": settings.normalizer, "seed": settings.seed,
            "noise_list": cond.noise_fn, "snr": cond.snr, "batch_bins": settings.batch_bins,
            "max_utterances": settings.max_utterances, "search": dataclasses.asdict(settings.search),
            **({"long_form": settings.long_form} if settings.long_form != "off" else {}),
            **({"at_checkpoint_sha256": file_sha256(settings.at_checkpoint), "at_time_res": settings.at_time_res}
               if settings.at_checkpoint else {})}


def _batches(lengths: Sequence[int], batch_bins: int) -> list[list[int]]:
    from whisper_flamingo.data.sampler import build_batches

    batches = build_batches(lengths, batch_bins, drop_last=False)
    return batches[::-1]  # longest first: memory problems show up at once


def _decode(model, batch: dict, tok, options: SearchOptions, seconds: list[float], modality: str,
            device: torch.device) -> list:
    """Hypotheses for one collated batch under ``modality``: the model encodes (its ``encode``), the
    gated layers' video keys/values are cached once per utterance."""
    video, mask = batch.get("video"), batch.get("video_padding_mask")
    if video is not None:
        video, mask = video.to(device), mask.to(device)
    return decode_batch(model, batch["mel"].to(device), batch["prompts"], tok, options, audio_seconds=seconds,
                        mel_frames=batch["mel_frames"], video=video, padding_mask=mask, modality=modality)


def load_at_head(settings: DecodeSettings, model, device: torch.device):
    """The Whisper-AT head of ``--at-checkpoint`` (None without one), checked against the model and flags."""
    if not settings.at_checkpoint:
        return None
    from whisper_flamingo.checkpoints.whisper_at import load_tltr
    from whisper_flamingo.models.whisper_at import window_steps

    try:
        window_steps(settings.at_time_res)
    except ValueError as err:
        raise ConfigError(f"--at-time-res: {err}") from None
    if model.video_encoder_kind is not None or settings.audio_visual:
        raise ConfigError("--at-checkpoint: Whisper-AT tags come from an audio-only Whisper (--modalities asr, "
                          "no Whisper-Flamingo checkpoint)")
    head = load_tltr(settings.at_checkpoint)
    if head.cfg.rep_dim != model.dims.n_audio_state:
        raise ConfigError(f"--at-checkpoint {settings.at_checkpoint}: the head reads width-{head.cfg.rep_dim} "
                          f"features but the model has width {model.dims.n_audio_state}; pick the matching size")
    return head.to(device)


def _decode_tagged(model, head, batch: dict, tok, options: SearchOptions, seconds: list[float],
                   device: torch.device, at_time_res: float) -> tuple[list, list[list[dict]]]:
    """Hypotheses and Whisper-AT tag segments (top 5 per segment, English names) from one encoder pass."""
    from whisper_flamingo.decoding.search import autocast_for
    from whisper_flamingo.decoding.tags import tag_segments
    from whisper_flamingo.models.whisper_at import STEP_FRAMES, pool_layers, window_steps

    mel, frames = batch["mel"].to(device), batch["mel_frames"]
    with torch.no_grad(), autocast_for(device, options.precision):
        features, layers = model.embed_audio_layers(mel, frames)
        xa_valid = model.audio_valid(features, frames)
        hyps = decode_batch(model, None, batch["prompts"], tok, options, audio_features=features,
                            audio_seconds=seconds, xa_valid=xa_valid)
        pooled = pool_layers(layers.float())
        steps = window_steps(at_time_res)
        tags = []
        for b, sec in enumerate(seconds):
            rows = max(1, math.ceil(round(sec * 100) / (steps * STEP_FRAMES)))
            logits = head.tag_windows(pooled[b, :, : rows * steps], at_time_res).float().cpu()
            tags.append(tag_segments({"audio_tag": logits, "at_time_res": at_time_res, "language": "en"},
                                     top_k=5, p_threshold=-math.inf))
    return hyps, tags


def decode_condition(model, records: Sequence, cond: Condition, settings: DecodeSettings, info: dict,
                     device: torch.device, after_batch: AfterBatch | None = None, at_head=None) -> dict:
    """Decode one condition (resuming when its JSONL exists) and write its outputs.

    ``after_batch(n)`` is called once the ``n``-th batch of the condition is written (tests use it to
    interrupt a run).  ``at_head`` (a Whisper-AT head): each record also gets ``audio_tags``, the top 5
    AudioSet tags of every ``settings.at_time_res``-second segment, from the same encoder pass."""
    from torch.utils.data import DataLoader

    from whisper_flamingo.data.dataset import Collator, SpeechDataset, TokenizerFactory
    from whisper_flamingo.data.noise import NoiseBank

    claim_model_folder(settings)
    out_dir = condition_dir(settings, cond)
    done = claim_dir(out_dir, _run_key(settings, info, cond), settings.overwrite)
    factory = TokenizerFactory(multilingual=model.is_multilingual, num_languages=model.num_languages)
    noise = None if cond.clean else NoiseBank.from_list(cond.noise_fn)
    data_kw = dict(n_mels=model.dims.n_mels, noise=noise, snr=None if cond.clean else cond.snr,
                   noise_prob=0.0 if cond.clean else 1.0, seed=settings.seed, on_bad_sample=settings.on_bad_sample,
                   load_video=cond.modality != "asr", video_train=False)
    dataset = SpeechDataset(records, factory, pad_to_30s=settings.padded, **data_kw)
    long_ids = {r.id for r in records if r.n_samples > N_SAMPLES_30S}
    windowed = settings.long_form == "window" and cond.modality == "asr" and bool(long_ids)
    # the same noise draws, without the 30-s cut: the audio of the long utterances decoded by windows
    whole = SpeechDataset(records, factory, pad_to_30s=False, **data_kw) if windowed else None
    by_id = {r.id: i for i, r in enumerate(records)}
    if len(by_id) != len(records):
        dup = next(uid for uid, n in Counter(r.id for r in records).items() if n > 1)
        raise DataError(f"utterance id {dup!r} appears more than once in the {settings.split} manifests of "
                        f"--lang {cond.lang_arg}; ids must be unique to resume", reason="duplicate_id")
    lengths = [N_SAMPLES_30S if settings.padded else r.n_samples for r in records]
    batches = _batches(lengths, settings.batch_bins)
    todo = [b for b in batches if any(records[i].id not in done for i in b)]
    remaining = sum(1 for b in todo for i in b if records[i].id not in done)
    lang = records[0].lang
    metric = metric_for(lang, settings.task)
    tok = factory(lang, records[0].task)
    precision = "fp16" if settings.fp16 and device.type == "cuda" else "fp32"
    options = dataclasses.replace(settings.search, precision=precision)
    log.info("%s: %d utterances (%d done, %d batches to go) -> %s", cond.label, len(records), len(done),
             len(todo), out_dir)
    skipped: Counter = Counter()
    t0, audio_s = time.perf_counter(), 0.0
    if todo:
        loader = DataLoader(dataset, batch_sampler=todo, num_workers=settings.num_workers,
                            collate_fn=Collator(dataset.pad_token, model.dims.n_mels,
                                                video=dataset.video_kind or None),
                            pin_memory=device.type == "cuda")
        bar = tqdm(total=remaining, desc=cond.label, unit="utt", dynamic_ncols=True)
        # an error closes the bar first, so that its message starts a line of its own
        with bar, UtteranceWriter(out_dir / JSONL) as writer:
            for n_batch, batch in enumerate(loader, start=1):
                skipped.update(reason for _, reason in batch["bad"])
                if batch["mel"].shape[0]:
                    recs = [records[by_id[uid]] for uid in batch["ids"]]
                    seconds = [r.n_samples / 16000 for r in recs]
                    tags: list = [None] * len(recs)
                    if at_head is None:
                        hyps = _decode(model, batch, tok, options, seconds, cond.modality, device)
                    else:
                        hyps, tags = _decode_tagged(model, at_head, batch, tok, options, seconds, device,
                                                    settings.at_time_res)
                    new = [j for j, r in enumerate(recs) if r.id not in done]
                    for j in new:
                        if recs[j].id not in long_ids:
                            continue
                        if whole is not None:
                            from whisper_flamingo.decoding.longform import decode_long

                            audio = whole.waveform(recs[j], whole.epoch, by_id[recs[j].id])
                            hyps[j] = decode_long(model, audio, batch["prompts"][j], tok, options, device,
                                                  pad_to_30s=settings.padded)
                        hyps[j].flags.add("over_30s")
                    counts = utterance_counts([recs[j].text for j in new], [hyps[j].text for j in new],
                                              settings.normalizer, lang)
                    for j, c in zip(new, counts):
                        r, h = recs[j], hyps[j]
                        obj = {"id": r.id, "index": by_id[r.id], "lang": r.lang, "ref": r.text, "hyp": h.text,
                               "snr": cond.snr, "modality": cond.modality, "noise": cond.noise_name, **c,
                               "flags": sorted(h.flags), "audio_seconds": round(seconds[j], 4),
                               "avg_logprob": round(h.avg_logprob, 6), "n_tokens": len(h.tokens)}
                        if tags[j] is not None:
                            obj["audio_tags"] = tags[j]
                        writer.write(obj)
                        done[r.id] = obj
                        audio_s += seconds[j]
                    writer.commit()
                    bar.update(len(new))
                    bar.set_postfix(x_realtime=f"{audio_s / max(time.perf_counter() - t0, 1e-9):.1f}")
                if after_batch is not None:
                    after_batch(n_batch)
    elapsed = time.perf_counter() - t0
    rows = [done[r.id] for r in records if r.id in done]
    if skipped:
        log.warning("%s: skipped bad samples %s", cond.label, dict(skipped))
    extra = {"lang": cond.lang, "lang_arg": cond.lang_arg, "split": settings.split, "modality": cond.modality,
             "snr": cond.snr, "noise_list": cond.noise_fn, "noise_name": cond.noise_name,
             "visible": cond.visible, "beam": settings.search.beam_size, "task": settings.task,
             "normalizer": settings.normalizer, "language": lang, "model_label": settings.model_label,
             "provenance": {**info, "padded_30s": settings.padded, "long_form": settings.long_form,
                            "seed": settings.seed,
                            "device": str(device), "precision": precision,
                            "runaway_guard": options.runaway_guard,
                            "search": dataclasses.asdict(options), "batch_bins": settings.batch_bins,
                            "max_utterances": settings.max_utterances, "versions": versions(),
                            "command": " ".join(sys.argv)},
             "skipped": dict(skipped),
             "timing": {"seconds": round(elapsed, 3), "audio_seconds": round(audio_s, 3),
                        "x_realtime": round(audio_s / elapsed, 3) if elapsed > 0 and audio_s else None}}
    if not todo:  # nothing decoded now: keep the last session's timing
        extra["timing"] = last_timing(out_dir) or extra["timing"]
    summary = write_outputs(out_dir, rows, metric, lang, settings.normalizer, extra)
    value = "n/a" if summary["score"] is None else f"{summary['score']:.2f}"
    log.info("%s: %s %s over %d utterances", cond.label, metric.upper(), value, len(rows))
    return summary


def pick_device(name: str | None) -> torch.device:
    """``--device``: ``auto`` (or None) = cuda when available, else cpu; else a torch device name."""
    if name and name != "auto":
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_decode(settings: DecodeSettings, after_batch: AfterBatch | None = None) -> list[dict]:
    """Decode every condition of ``settings``; returns their summaries (``after_batch``: see
    :func:`decode_condition`)."""
    from whisper_flamingo.decoding.longform import LONG_FORM_MODES

    if settings.long_form not in LONG_FORM_MODES:
        raise ConfigError(f"--long-form {settings.long_form!r}: use {' or '.join(LONG_FORM_MODES)}")
    conds = conditions(settings)
    device = pick_device(settings.device)
    # cheap checks first: every manifest is read before the model is loaded
    records_by_lang: dict[str, list] = {}
    for cond in conds:
        if cond.lang not in records_by_lang:
            records_by_lang[cond.lang] = recs = load_records(settings, cond.lang)
            n_long = sum(r.n_samples > N_SAMPLES_30S for r in recs)
            if n_long and settings.long_form == "off":
                log.warning("--lang %s: %d of %d utterances are longer than 30 s; only their first 30 s are "
                            "decoded (flag over_30s in utterances.jsonl); pass --long-form window to decode "
                            "them whole", cond.lang, n_long, len(recs))
            elif n_long and any(m != "asr" for m in settings.modalities):
                log.warning("--lang %s: %d utterances are longer than 30 s; --long-form window applies to "
                            "--modalities asr only (avsr/vsr decode their first 30 s, flagged over_30s)",
                            cond.lang, n_long)
    model, info = load_model(settings, device)
    check_video_flags(settings, model)
    at_head = load_at_head(settings, model, device)
    summaries = []
    for cond in conds:
        summaries.append(decode_condition(model, records_by_lang[cond.lang], cond, settings, info, device,
                                          after_batch, at_head=at_head))
    return summaries
