"""Speech samples (log-mel + Whisper tokens) from manifest records, and their collation.

One sample: read the wav (int16 units) -> with probability ``noise_prob`` mix a noise of the
bank at ``snr`` -> divide by 32768 -> optional 30 s pad/trim (original-Whisper mode) -> log-mel
``(n_mels, n_samples // 160)`` -> SpecAugment (when a policy is given) -> tokens.

Tokens: ``prompt`` is Whisper's ``sot_sequence_including_notimestamps`` for the record's
language and task (multilingual: ``<|startoftranscript|><|lang|><|transcribe|><|notimestamps|>``,
``<|translate|>`` only for X-En records; English-only models: ``<|startoftranscript|>
<|notimestamps|>``); ``dec_input = prompt + encode(" " + text)`` and ``labels = dec_input[1:] +
[<|endoftext|>]``, so the loss also covers the language/task/notimestamps predictions.

Randomness: every random choice of a sample (noise or not, noise file, SNR, noise offset, masks)
comes from ``numpy.random.SeedSequence([seed, epoch, index])``, split into independent streams
for the noise decision, the mixing and SpecAugment.  A sample therefore depends only on (seed,
epoch, index): not on the worker count, the batch order or a resume.  The epoch is the one set
with :meth:`SpeechDataset.set_epoch`, or the one carried by an ``(epoch, index)`` key (what the
data module's batch sampler yields, so worker processes never see a stale epoch).

Stage 2 (``load_video=True``): each sample also carries its lip video, read with
:func:`whisper_flamingo.data.video.load_video` (trimmed to the audio length after any 30 s padding;
training draws the random crop and flip from a 4th stream of the sample's seed sequence), or, with
``video_feature_dir``, the precomputed video-encoder features of the utterance id.

Bad samples: with ``on_bad_sample="error"`` a :class:`DataError` is raised (it names the file and
the manifest line); with ``"skip"`` :meth:`__getitem__` returns a :class:`BadItem` that
:func:`collate` drops and lists under ``"bad"``.  Bad videos are handled exactly like bad audio.
Noise errors are never skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from whisper_flamingo.data.audio import HOP_LENGTH, load_audio, log_mel, pad_or_trim, to_unit_range
from whisper_flamingo.data.manifest import Record
from whisper_flamingo.data.specaug import check_policy, spec_augment
from whisper_flamingo.data.video import (
    collate_video,
    collate_video_features,
    load_video_features,
    resolve_video_path,
)
from whisper_flamingo.data.video import load_video as read_lip_video
from whisper_flamingo.errors import ConfigError, DataError, NoiseError

logger = logging.getLogger(__name__)

#: decoder-input padding (``<|endoftext|>`` of the multilingual vocabulary, as the original)
DEC_PAD = 50257
LABEL_PAD = -100


@dataclass
class TokenizerFactory:
    """``factory(lang, task) -> whisper Tokenizer`` (``task``: transcribe / translate).

    ``num_languages`` is 99 for Whisper up to large-v2 and 100 for large-v3 (it shifts the ids of
    the task tokens).  English-only models (``multilingual=False``) ignore language and task.
    Picklable; openai-whisper caches the tokenizers.
    """

    multilingual: bool = True
    num_languages: int = 99

    def __call__(self, lang: str, task: str = "transcribe"):
        from whisper.tokenizer import get_tokenizer

        if not self.multilingual:
            return get_tokenizer(False)
        return get_tokenizer(True, num_languages=self.num_languages, language=lang, task=task)


@dataclass(frozen=True)
class BadItem:
    """Placeholder for a sample that could not be loaded (``on_bad_sample: skip``)."""

    id: str
    reason: str
    message: str
    index: int


def sample_rngs(seed: int, epoch: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators (noise decision, mixing, SpecAugment) of one sample."""
    ss = np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)])
    return tuple(np.random.default_rng(child) for child in ss.spawn(3))


def video_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The 4th independent stream of a sample (video crop and flip); the first three are
    :func:`sample_rngs`' (spawning 4 children leaves children 0-2 unchanged)."""
    ss = np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)])
    return np.random.default_rng(ss.spawn(4)[3])


class SpeechDataset(Dataset):
    """Log-mel + tokens for each :class:`Record` (see module doc).

    ``noise``: a :class:`~whisper_flamingo.data.noise.NoiseBank` or ``None`` (clean);
    ``snr``: dB, or ``[lo, hi]`` for an integer drawn per sample; ``noise_offset``: ``"zero"`` or
    ``"random"``; ``spec_augment``: ``""``, ``"ls-basic"`` or ``"ls-double"``.
    ``load_video``: also load the lip video (``video_train``: random crop + flip, else centre crop),
    or the precomputed features in ``video_feature_dir`` when that is set.
    """

    def __init__(self, records: Sequence[Record], tokenizer_factory: Callable[[str, str], Any],
                 n_mels: int = 80, noise=None, snr: float | Sequence[float] | None = 0.0,
                 noise_prob: float = 1.0, noise_offset: str = "zero", spec_augment: str = "",
                 seed: int = 0, on_bad_sample: str = "error", pad_to_30s: bool = False,
                 check_sample_count: bool = True, load_video: bool = False, video_train: bool = False,
                 video_feature_dir: str = "") -> None:
        if on_bad_sample not in ("error", "skip"):
            raise ConfigError(f"on_bad_sample: unknown value {on_bad_sample!r}; use error or skip")
        if noise_offset not in ("zero", "random"):
            raise ConfigError(f"noise offset {noise_offset!r} is unknown; use zero or random")
        if not 0.0 <= float(noise_prob) <= 1.0:
            raise ConfigError(f"noise_prob: must lie in [0, 1], got {noise_prob}")
        self.records = list(records)
        self.tokenizer_factory = tokenizer_factory
        self.n_mels = int(n_mels)
        self.noise = noise
        self.snr = snr
        self.noise_prob = float(noise_prob)
        self.noise_offset = noise_offset
        self.spec_augment = check_policy(spec_augment)
        self.seed = int(seed)
        self.on_bad_sample = on_bad_sample
        self.pad_to_30s = bool(pad_to_30s)
        self.check_sample_count = bool(check_sample_count)
        self.load_video = bool(load_video)
        self.video_train = bool(video_train)
        self.video_feature_dir = str(video_feature_dir or "")
        self.epoch = 0

    # ------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.records)

    @property
    def lengths(self) -> list[int]:
        """Audio length (samples) of every record, for the length-bucketing sampler."""
        return [r.n_samples for r in self.records]

    @property
    def pad_token(self) -> int:
        """Decoder-input padding: the tokenizer's ``<|endoftext|>`` (50257 multilingual)."""
        if not self.records:
            return DEC_PAD
        r = self.records[0]
        return int(self.tokenizer_factory(r.lang, r.task).eot)

    def set_epoch(self, epoch: int) -> None:
        """Epoch used for the randomness of plain integer keys."""
        self.epoch = int(epoch)

    @property
    def video_kind(self) -> str:
        """What samples carry besides audio: ``"frames"``, ``"features"`` or ``""`` (audio only)."""
        if not self.load_video:
            return ""
        return "features" if self.video_feature_dir else "frames"

    # ------------------------------------------------------------------ pieces
    def tokens(self, record: Record) -> tuple[list[int], list[int], list[int]]:
        """``(prompt, dec_input, labels)`` of a record."""
        tok = self.tokenizer_factory(record.lang, record.task)
        prompt = list(tok.sot_sequence_including_notimestamps)
        text_ids = tok.encoding.encode(" " + record.text, disallowed_special=())
        dec_input = prompt + list(text_ids)
        labels = dec_input[1:] + [int(tok.eot)]
        return prompt, dec_input, labels

    def waveform(self, record: Record, epoch: int, index: int) -> np.ndarray:
        """Float audio in [-1, 1] after noise mixing (and 30 s pad/trim when asked)."""
        audio = load_audio(record.audio_path,
                           record.n_samples if self.check_sample_count else None)
        prob_rng, mix_rng, _ = sample_rngs(self.seed, epoch, index)
        use_noise = self.noise is not None and self.snr is not None and \
            float(prob_rng.random()) < self.noise_prob
        if use_noise:
            audio = self.noise.mix(audio, self.snr, mix_rng, offset=self.noise_offset)
        audio = to_unit_range(audio)
        if self.pad_to_30s:
            audio = pad_or_trim(audio)
        return audio

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any] | BadItem:
        if isinstance(key, tuple):
            epoch, index = int(key[0]), int(key[1])
        else:
            epoch, index = self.epoch, int(key)
        record = self.records[index]
        try:
            return self._load(record, epoch, index)
        except NoiseError:
            raise
        except DataError as err:
            if self.on_bad_sample == "error":
                if err.line is None:  # point at the manifest row as well
                    raise DataError(f"{err} (row {record.id} of {record.where})", reason=err.reason,
                                    path=None) from None
                raise
            logger.warning("skipping bad sample %s (%s): %s", record.id, err.reason, err)
            return BadItem(record.id, err.reason, str(err), index)

    def _load(self, record: Record, epoch: int, index: int) -> dict[str, Any]:
        audio = self.waveform(record, epoch, index)
        n = int(audio.shape[0])
        frames = n // HOP_LENGTH
        if frames == 0:
            raise DataError(f"audio is shorter than one 10 ms frame ({n} samples); remove it or set "
                            "on_bad_sample: skip", reason="too_short", path=record.audio_path)
        mel = log_mel(audio, self.n_mels)
        if self.spec_augment:
            _, _, spec_rng = sample_rngs(self.seed, epoch, index)
            mel = spec_augment(mel, self.spec_augment, frames, spec_rng)
        prompt, dec_input, labels = self.tokens(record)
        item = {"mel": mel, "mel_frames": frames, "dec_input": dec_input, "labels": labels,
                "prompt": prompt, "id": record.id, "lang": record.lang, "task": record.task,
                "text": record.text, "n_samples": record.n_samples if not self.pad_to_30s else n,
                "index": index}
        if self.load_video:
            item.update(self.video(record, epoch, index, n))
        return item

    def video(self, record: Record, epoch: int, index: int, n_samples: int) -> dict[str, Any]:
        """``{"video": (T, 88, 88)}`` or ``{"video_features": (T, D)}``, trimmed to ``n_samples`` of audio."""
        if self.video_feature_dir:
            return {"video_features": load_video_features(self.video_feature_dir, record.id, n_samples)}
        path = resolve_video_path(record.video_path, record.audio_path)
        rng = video_rng(self.seed, epoch, index) if self.video_train else None
        return {"video": read_lip_video(path, n_samples, train=self.video_train, rng=rng)}


def collate(items: Sequence[dict[str, Any] | BadItem | None], *, pad_token: int = DEC_PAD,
            n_mels: int = 80, video: str | None = None) -> dict[str, Any]:
    """Batch samples; :class:`BadItem` / ``None`` entries are dropped and listed under ``"bad"``.

    Keys: ``mel`` (B, n_mels, T_max) float32 right-padded with 0.0; ``mel_frames`` (B,) long;
    ``dec_input`` (B, L) long padded with ``pad_token``; ``labels`` (B, L) long padded with -100;
    ``prompts`` (list of token lists); ``ids``, ``langs``, ``tasks``, ``texts`` (lists);
    ``n_samples`` (B,) long; ``bad`` (list of ``(id, reason)``).  All items bad gives B = 0.

    Video (``video="frames"``, or detected from the items): ``video`` (B, 1, T_v, 88, 88) zero-padded
    and ``video_padding_mask`` (B, T_v) bool, True at padding; ``video="features"``:
    ``video_features`` (B, T_v, D) and ``video_padding_mask``.  Present even when B = 0.
    """
    good = [it for it in items if isinstance(it, dict)]
    bad = [(it.id, it.reason) for it in items if isinstance(it, BadItem)]
    bad += [("?", "unknown") for it in items if it is None]
    b = len(good)
    if good:
        n_mels = int(good[0]["mel"].shape[0])
    t_max = max((int(it["mel"].shape[-1]) for it in good), default=0)
    l_max = max((len(it["dec_input"]) for it in good), default=0)
    mel = torch.zeros(b, n_mels, t_max, dtype=torch.float32)
    dec = torch.full((b, l_max), int(pad_token), dtype=torch.long)
    lab = torch.full((b, l_max), LABEL_PAD, dtype=torch.long)
    for i, it in enumerate(good):
        m = it["mel"]
        mel[i, :, : m.shape[-1]] = m
        dec[i, : len(it["dec_input"])] = torch.as_tensor(it["dec_input"], dtype=torch.long)
        lab[i, : len(it["labels"])] = torch.as_tensor(it["labels"], dtype=torch.long)
    out = {
        "mel": mel,
        "mel_frames": torch.tensor([int(it["mel_frames"]) for it in good], dtype=torch.long),
        "dec_input": dec,
        "labels": lab,
        "prompts": [list(it["prompt"]) for it in good],
        "ids": [it["id"] for it in good],
        "langs": [it["lang"] for it in good],
        "tasks": [it["task"] for it in good],
        "texts": [it["text"] for it in good],
        "n_samples": torch.tensor([int(it["n_samples"]) for it in good], dtype=torch.long),
        "bad": bad,
    }
    if video is None:
        video = "frames" if any("video" in it for it in good) else \
            "features" if any("video_features" in it for it in good) else ""
    if video == "frames":
        out["video"], out["video_padding_mask"] = collate_video([it["video"] for it in good])
    elif video == "features":
        out["video_features"], out["video_padding_mask"] = collate_video_features(
            [it["video_features"] for it in good])
    return out


@dataclass
class Collator:
    """Picklable ``collate`` with fixed ``pad_token``, ``n_mels`` and ``video`` kind (for DataLoader
    workers); ``video``: ``"frames"``, ``"features"``, ``""`` (none) or None (detect from the items)."""

    pad_token: int = DEC_PAD
    n_mels: int = 80
    video: str | None = None

    def __call__(self, items: Sequence[dict[str, Any] | BadItem | None]) -> dict[str, Any]:
        return collate(items, pad_token=self.pad_token, n_mels=self.n_mels, video=self.video)
