"""Decode manifests over languages × modalities × noise lists × SNRs, score, and write the results.

One *condition* = (language, modality, noise list, SNR).  Its output directory is the original's

``<decode_path>/<checkpoint path or model>/<lang>/<split>/<modality>/snr-<N>/visible-<0|1>/beam-<B>/``
``<noise list parent dir>/``

and holds

* ``utterances.jsonl``: one JSON object per utterance (id, lang, ref, hyp, snr, modality, error
  counts under the chosen normaliser, flags, audio_seconds, ...), appended, flushed and fsync'ed
  after every batch;
* ``summary.json``: the scores (WER/CER, or BLEU/chrF for translation) with provenance;
* the original files: ``pred.txt`` (``HYPO:``/``REF:`` lines), ``wer.368862`` or ``bleu.368862``
  (``WER: x.xxxx``) and ``wer.json`` / ``bleu.json`` (``{"pred": [...], "refs": [...]}``).

Resuming: the ids already in ``utterances.jsonl`` are skipped (a torn last line is cut off).  Batches
are always built over the whole condition and a batch with any missing utterance is decoded whole,
so padding — and therefore every hypothesis — is the same as in an uninterrupted run; the final
scores are computed from the JSONL alone.  ``run.json`` records the settings of the first run; a
resume with different settings is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from whisper_flamingo.decoding.scoring import bleu_chrf, utterance_counts, wer_cer
from whisper_flamingo.decoding.search import SearchOptions, autocast_for, decode_batch
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.models.flamingo import WhisperFlamingo

log = logging.getLogger(__name__)

CLEAN_SNR = 1000.0
MODALITIES = ("asr", "avsr", "vsr")
#: our modality names -> the model's: asr = audio with the video zeroed, avsr = both, vsr = video only
MODEL_MODALITY = {"asr": "a", "avsr": "av", "vsr": "v"}
N_SAMPLES_30S = 480000

#: test hook: called with the number of batches written so far in the current condition
after_batch_hook: Callable[[int], None] | None = None


@dataclass
class DecodeSettings:
    """Everything a decode run needs (the CLI flags; see ``whisper-flamingo decode --help``)."""

    langs: list[str] = field(default_factory=lambda: ["ru"])
    model_type: str = "medium"
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
    # audio-visual flags, kept for the original command line
    av_fusion: str = ""
    use_av_hubert_encoder: bool = False
    av_hubert_path: str = "av_hubert/avhubert/"
    av_hubert_ckpt: str = "models/large_noise_pt_noise_ft_433h_only_weights.pt"

    @property
    def model_label(self) -> str:
        """Path component naming the model: the checkpoint path as given, or the model name (or path).

        Absolute paths are nested under the decode path (the original concatenated the strings).
        """
        name = self.checkpoint_path if self.checkpoint_path and not self.use_original_whisper else self.model_type
        parts = [p if p != ".." else "__" for p in Path(str(name)).parts if p not in ("/", "")]
        return str(Path(*parts)) if parts else "checkpoint"

    @property
    def audio_visual(self) -> bool:
        """A Whisper-Flamingo decode: ``--av_fusion separate`` or a video modality was asked for."""
        return self.av_fusion == "separate" or any(m != "asr" for m in self.modalities)

    @property
    def padded(self) -> bool:
        """Original Whisper decodes 30-s padded windows; fine-tuned checkpoints variable length."""
        return self.use_original_whisper or not self.checkpoint_path


@dataclass(frozen=True)
class Condition:
    lang_arg: str  # as given (may end in -visible)
    modality: str
    snr: float
    noise_fn: str | None

    @property
    def lang(self) -> str:
        return self.lang_arg[: -len("-visible")] if self.lang_arg.endswith("-visible") else self.lang_arg

    @property
    def visible(self) -> int:
        return int(self.lang_arg.endswith("-visible"))

    @property
    def clean(self) -> bool:
        return float(self.snr) >= CLEAN_SNR

    @property
    def noise_name(self) -> str:
        return Path(self.noise_fn).parent.name if self.noise_fn else "none"

    @property
    def label(self) -> str:
        return f"{self.lang_arg}/{self.modality}/snr-{snr_text(self.snr)}/{self.noise_name}"


def snr_text(snr: float) -> str:
    return str(int(snr)) if float(snr).is_integer() else str(snr)


def condition_dir(settings: DecodeSettings, cond: Condition) -> Path:
    return (Path(settings.decode_path) / settings.model_label / cond.lang_arg / settings.split / cond.modality
            / f"snr-{snr_text(cond.snr)}" / f"visible-{cond.visible}" / f"beam-{settings.search.beam_size}"
            / cond.noise_name)


def conditions(settings: DecodeSettings) -> list[Condition]:
    """Every (lang, modality, noise list, SNR) to decode, in a stable order."""
    for m in settings.modalities:
        if m not in MODALITIES:
            raise ConfigError(f"--modalities {m!r}: use asr, avsr or vsr")
    out = []
    for lang in settings.langs:
        for modality in settings.modalities:
            for noise_fn in settings.noise_fns:
                for snr in settings.noise_snrs:
                    if float(snr) < CLEAN_SNR and not noise_fn:
                        raise ConfigError(f"--noise-snr {snr_text(snr)} needs --noise-fn (a noise list .tsv)")
                    out.append(Condition(lang, modality, float(snr), noise_fn))
    return out


# --------------------------------------------------------------------------------------------- model
def file_sha256(path: str | os.PathLike, short: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:short]


def load_model(settings: DecodeSettings, device: torch.device):
    """The model to decode with and its provenance."""
    from whisper_flamingo.checkpoints import is_whisper_flamingo_state, load_whisper, read_checkpoint_file

    if settings.padded:
        if settings.audio_visual:
            raise ConfigError("--modalities avsr/vsr (or --av_fusion separate) decode a Whisper-Flamingo model: "
                              "pass its checkpoint with --checkpoint-path (and not --use-original-whisper)")
        model = load_whisper(settings.model_type, settings.whisper_path or None)
        info = {"model": settings.model_type, "checkpoint": None, "checkpoint_sha256": None}
        return model.to(device).eval(), info
    path = Path(settings.checkpoint_path)
    if not path.exists():
        raise ConfigError(f"--checkpoint-path {path}: file not found")
    info = {"model": settings.model_type, "checkpoint": str(path),
            "checkpoint_sha256": file_sha256(path) if path.is_file() else None}
    ckpt = read_checkpoint_file(path, mmap=True) if path.is_file() else None  # a directory: CTranslate2 / Hugging Face
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else {}
    if isinstance(state, dict) and is_whisper_flamingo_state(state):
        from whisper_flamingo.checkpoints import load_stage2_checkpoint

        return load_stage2_checkpoint(path, device, ckpt=ckpt).eval(), {**info, "architecture": "whisper-flamingo"}
    if settings.audio_visual:
        raise ConfigError(f"--checkpoint-path {path}: an audio-only Whisper checkpoint (no gated cross-attention "
                          "layers) cannot decode --modalities avsr/vsr; use asr, or a stage-2 checkpoint")
    del ckpt, state
    return load_whisper(path).to(device).eval(), info


# ---------------------------------------------------------------------------------------------- data
def load_records(settings: DecodeSettings, lang: str) -> list:
    """The records of ``settings.split`` for one ``--lang`` value (test: unfiltered, as the original).

    An empty ``muavic_root`` means the working directory (the original read ``muavic/...`` from there).
    """
    from whisper_flamingo.data.manifest import filter_records, manifest_spec, read_manifest, resolve_selection

    sel = resolve_selection(lang, settings.task, reduce_val=0)
    records = []
    for code in sel.langs:
        spec = manifest_spec(sel, code, settings.split, settings.muavic_root, settings.lrs2_root)
        recs = read_manifest(spec, settings.on_bad_sample)
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


# ------------------------------------------------------------------------------------------- results
def read_done(path: Path) -> dict[str, dict]:
    """Objects already in ``utterances.jsonl`` by id; a torn last line is cut off the file."""
    done: dict[str, dict] = {}
    if not path.exists():
        return done
    data = path.read_bytes()
    good_end = 0
    lines = data.split(b"\n")
    for i, raw in enumerate(lines):
        last = i == len(lines) - 1
        if not raw.strip():
            if not last:
                good_end += len(raw) + 1
            continue
        try:
            if last:
                raise ValueError("no line end")
            obj = json.loads(raw)
        except ValueError as err:
            if last or all(not x.strip() for x in lines[i + 1:]):
                log.warning("%s: dropping a torn last line (%d bytes)", path, len(raw))
                break
            raise DataError(f"line is not JSON ({err}); delete the file to decode this condition again",
                            reason="unreadable", path=path, line=i + 1) from None
        done[obj["id"]] = obj
        good_end += len(raw) + 1
    if good_end != len(data):
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("whisper-flamingo", "openai-whisper", "jiwer", "sacrebleu", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    return out


def _run_key(settings: DecodeSettings, info: dict, cond: Condition) -> dict:
    """Settings that must not change between a run and its resume."""
    return {"model": info["model"], "checkpoint_sha256": info["checkpoint_sha256"], "padded_30s": settings.padded,
            "task": settings.task, "normalizer": settings.normalizer, "seed": settings.seed,
            "noise_list": cond.noise_fn, "snr": cond.snr, "batch_bins": settings.batch_bins,
            "max_utterances": settings.max_utterances, "search": dataclasses.asdict(settings.search)}


def write_outputs(out_dir: Path, rows: Sequence[dict], metric: str, lang: str, normalizer: str,
                  extra: dict[str, Any]) -> dict:
    """Score ``rows`` (utterance objects in dataset order) and write summary + the original files."""
    refs = [r["ref"] for r in rows]
    hyps = [r["hyp"] for r in rows]
    words = wer_cer(refs, hyps, normalizer, lang)
    scores: dict[str, Any] = {"wer": words}
    if metric == "bleu":
        scores["bleu"] = bleu_chrf(refs, hyps)
        score = scores["bleu"]["bleu"]
    else:
        score = words["wer"]
    flags = Counter(f for r in rows for f in r.get("flags", []))
    summary = {"metric": metric, "score": score, **extra, "utterances": len(rows),
               "audio_seconds": round(sum(r.get("audio_seconds", 0.0) for r in rows), 3),
               "flags": dict(flags), "scores": scores,
               "sacrebleu_signature": scores["bleu"]["bleu_signature"] if metric == "bleu" else None}
    _atomic_write(out_dir / "summary.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    _atomic_write(out_dir / "pred.txt", "".join(f"HYPO: {h}\nREF: {r}\n" for h, r in zip(hyps, refs)))
    value = 0.0 if score is None else score
    _atomic_write(out_dir / f"{metric}.368862", f"{metric.upper()}: {value:.4f}\n")
    _atomic_write(out_dir / f"{metric}.json", json.dumps({"pred": hyps, "refs": refs}, ensure_ascii=False) + "\n")
    return summary


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


# -------------------------------------------------------------------------------------------- decode
def _batches(lengths: Sequence[int], batch_bins: int) -> list[list[int]]:
    from whisper_flamingo.data.sampler import build_batches

    batches = build_batches(lengths, batch_bins, drop_last=False)
    return batches[::-1]  # longest first: memory problems show up at once


def _decode(model, batch: dict, tok, options: SearchOptions, seconds: list[float], modality: str,
            device: torch.device, av_model: bool) -> list:
    """Hypotheses for one collated batch: audio-only Whisper, or Whisper-Flamingo under ``modality``
    (the encoders run once; the gated layers' video keys/values are cached once per utterance)."""
    mel = batch["mel"].to(device)
    if not av_model:
        return decode_batch(model, mel, batch["prompts"], tok, options, audio_seconds=seconds)
    video, mask = batch.get("video"), batch.get("video_padding_mask")
    if video is not None:
        video, mask = video.to(device), mask.to(device)
    with torch.no_grad(), autocast_for(device, options.precision):
        xa, xv = model.encode(mel, video, mask, MODEL_MODALITY[modality])
    return decode_batch(model, None, batch["prompts"], tok, options, audio_seconds=seconds, audio_features=xa,
                        xv=xv)


def decode_condition(model, records: Sequence, cond: Condition, settings: DecodeSettings, info: dict,
                     device: torch.device) -> dict:
    """Decode one condition (resuming when its JSONL exists) and write its outputs."""
    from torch.utils.data import DataLoader

    from whisper_flamingo.data.dataset import Collator, SpeechDataset, TokenizerFactory
    from whisper_flamingo.data.noise import NoiseBank

    out_dir = condition_dir(settings, cond)
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "utterances.jsonl"
    key = _run_key(settings, info, cond)
    run_json = out_dir / "run.json"
    if settings.overwrite:
        for name in ("utterances.jsonl", "run.json", "summary.json"):
            (out_dir / name).unlink(missing_ok=True)
    if run_json.exists() and jsonl.exists():
        old = json.loads(run_json.read_text())
        if old != key:
            diff = sorted(k for k in key if old.get(k) != key[k])
            raise ConfigError(f"{out_dir}: holds a decode with other settings ({', '.join(diff)}); pass "
                              "--overwrite or another --decode-path")
    _atomic_write(run_json, json.dumps(key, indent=2) + "\n")
    done = read_done(jsonl)
    factory = TokenizerFactory(multilingual=model.is_multilingual, num_languages=model.num_languages)
    noise = None if cond.clean else NoiseBank.from_list(cond.noise_fn)
    dataset = SpeechDataset(records, factory, n_mels=model.dims.n_mels, noise=noise,
                            snr=None if cond.clean else cond.snr, noise_prob=0.0 if cond.clean else 1.0,
                            seed=settings.seed, on_bad_sample=settings.on_bad_sample,
                            pad_to_30s=settings.padded, load_video=cond.modality != "asr", video_train=False)
    av_model = isinstance(model, WhisperFlamingo)
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
        with open(jsonl, "a", encoding="utf-8") as f:
            for n_batch, batch in enumerate(loader, start=1):
                skipped.update(reason for _, reason in batch["bad"])
                if batch["mel"].shape[0]:
                    recs = [records[by_id[uid]] for uid in batch["ids"]]
                    seconds = [r.n_samples / 16000 for r in recs]
                    hyps = _decode(model, batch, tok, options, seconds, cond.modality, device, av_model)
                    new = [j for j, r in enumerate(recs) if r.id not in done]
                    counts = utterance_counts([recs[j].text for j in new], [hyps[j].text for j in new],
                                              settings.normalizer, lang)
                    for j, c in zip(new, counts):
                        r, h = recs[j], hyps[j]
                        obj = {"id": r.id, "index": by_id[r.id], "lang": r.lang, "ref": r.text, "hyp": h.text,
                               "snr": cond.snr, "modality": cond.modality, "noise": cond.noise_name, **c,
                               "flags": sorted(h.flags), "audio_seconds": round(seconds[j], 4),
                               "avg_logprob": round(h.avg_logprob, 6), "n_tokens": len(h.tokens)}
                        f.write(json.dumps(obj, ensure_ascii=False) + "\n")
                        done[r.id] = obj
                        audio_s += seconds[j]
                    f.flush()
                    os.fsync(f.fileno())
                    bar.update(len(new))
                    bar.set_postfix(x_realtime=f"{audio_s / max(time.perf_counter() - t0, 1e-9):.1f}")
                if after_batch_hook is not None:
                    after_batch_hook(n_batch)
        bar.close()
    elapsed = time.perf_counter() - t0
    rows = [done[r.id] for r in records if r.id in done]
    if skipped:
        log.warning("%s: skipped bad samples %s", cond.label, dict(skipped))
    extra = {"lang": cond.lang, "lang_arg": cond.lang_arg, "split": settings.split, "modality": cond.modality,
             "snr": cond.snr, "noise_list": cond.noise_fn, "noise_name": cond.noise_name,
             "visible": cond.visible, "beam": settings.search.beam_size, "task": settings.task,
             "normalizer": settings.normalizer, "language": lang,
             "provenance": {**info, "padded_30s": settings.padded, "seed": settings.seed,
                            "device": str(device), "precision": precision,
                            "search": dataclasses.asdict(options), "batch_bins": settings.batch_bins,
                            "max_utterances": settings.max_utterances, "versions": _versions(),
                            "command": " ".join(sys.argv)},
             "skipped": dict(skipped),
             "timing": {"seconds": round(elapsed, 3), "audio_seconds": round(audio_s, 3),
                        "x_realtime": round(audio_s / elapsed, 3) if elapsed > 0 and audio_s else None}}
    if not todo and (out_dir / "summary.json").exists():  # nothing decoded now: keep the last session's timing
        try:
            extra["timing"] = json.loads((out_dir / "summary.json").read_text())["timing"]
        except (ValueError, KeyError):
            pass
    summary = write_outputs(out_dir, rows, metric, lang, settings.normalizer, extra)
    value = "n/a" if summary["score"] is None else f"{summary['score']:.2f}"
    log.info("%s: %s %s over %d utterances", cond.label, metric.upper(), value, len(rows))
    return summary


def pick_device(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def run_decode(settings: DecodeSettings) -> list[dict]:
    """Decode every condition of ``settings``; returns their summaries."""
    conds = conditions(settings)
    device = pick_device(settings.device)
    model, info = load_model(settings, device)
    summaries = []
    records_by_lang: dict[str, list] = {}
    for cond in conds:
        if cond.lang not in records_by_lang:
            records_by_lang[cond.lang] = load_records(settings, cond.lang)
        summaries.append(decode_condition(model, records_by_lang[cond.lang], cond, settings, info, device))
    return summaries
