"""The Lightning data module for MuAViC / LRS2 speech (stage 1) and audio-visual (stage 2) training.

``setup()`` reads the train/valid/test manifests, runs the header-only audio pre-pass once per
split (``on_bad_sample``: error stops, skip drops and counts in :attr:`bad_counts`), loads the
noise banks and builds the datasets and the training batch sampler.  With ``video=True`` (the
flamingo task) it also checks that every lip video (or, with ``video_feature_dir``, every feature
file) exists and is not empty, and the samples carry the video (see
:class:`~whisper_flamingo.data.dataset.SpeechDataset`).

Loaders: ``train_dataloader()`` uses :class:`~whisper_flamingo.data.sampler.LengthBatchSampler`
(``batch_bins = audio_max_length * batch_size``, shuffled, last partial batch dropped, split
across ranks by the sampler itself: give the Trainer ``use_distributed_sampler=False``).
``val_dataloader()`` returns noisy and clean validation and test loaders in ``eval_order``
(``batch_bins = audio_max_length * val_batch_bins_multiplier``, longest batches first); under DDP
each rank gets a disjoint share of every loader's batches, nothing repeated (``even=False``), so
counts summed over ranks are exact.  Their metric prefixes are :attr:`MuavicDataModule.val_names`.

Epochs: Lightning 2.x calls ``set_epoch`` on ``dataloader.sampler`` and on
``dataloader.batch_sampler.sampler`` (not on the batch sampler itself).  The training loader's
batch sampler is therefore an :class:`EpochBatchSampler` whose ``.sampler`` forwards
``set_epoch`` to the length sampler and the dataset, and which yields ``(epoch, index)`` keys, so
the epoch reaches worker processes with every batch (whatever the worker start method).

Resume: :meth:`state_dict` holds the training sampler's state (epoch and batches consumed); after
:meth:`load_state_dict` the interrupted epoch continues with exactly its remaining batches.  The
training module reports the consumed count with ``datamodule.train_sampler.set_consumed(n)``
before a checkpoint is written (the loader's prefetching runs ahead of training).
"""

from __future__ import annotations

import logging
import math
import os
import signal
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from whisper_flamingo.config import Config
from whisper_flamingo.data.dataset import Collator, SpeechDataset, TokenizerFactory
from whisper_flamingo.data.manifest import Record, SplitData, load_split, resolve_selection
from whisper_flamingo.data.noise import NoiseBank
from whisper_flamingo.data.sampler import LengthBatchSampler, batch_bins_from_config
from whisper_flamingo.data.video import resolve_video_path, video_feature_path
from whisper_flamingo.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


class _EpochHook:
    """What Lightning finds at ``batch_sampler.sampler``: forwards ``set_epoch``."""

    def __init__(self, owner: EpochBatchSampler) -> None:
        self._owner = owner

    def set_epoch(self, epoch: int) -> None:
        self._owner.set_epoch(epoch)


class EpochBatchSampler:
    """Wraps a :class:`LengthBatchSampler`; yields batches of ``(epoch, index)`` keys.

    ``set_epoch`` (direct, or through ``.sampler`` as Lightning calls it) sets the epoch of the
    length sampler and of the dataset.
    """

    def __init__(self, batch_sampler: LengthBatchSampler, dataset: SpeechDataset | None = None) -> None:
        self.batch_sampler = batch_sampler
        self.dataset = dataset
        self.sampler = _EpochHook(self)

    @property
    def epoch(self) -> int:
        return self.batch_sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        if self.dataset is not None:
            self.dataset.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batch_sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.batch_sampler.epoch
        for batch in self.batch_sampler:
            yield [(epoch, int(i)) for i in batch]


def _video_problem(record: Record, feature_dir: str) -> tuple[str, str, str] | None:
    """``(reason, path, why)`` when the record's video (or feature file) is missing or empty."""
    if feature_dir:
        try:
            path = str(video_feature_path(feature_dir, record.id))
        except ValueError as err:
            return "bad_field", record.id, str(err)
        how = f"run `whisper-flamingo extract-video-features --out {feature_dir}` for this split"
    else:
        path = resolve_video_path(record.video_path, record.audio_path)
        how = "fix the manifest's video path"
    try:
        size = os.path.getsize(path)
    except OSError:
        return "missing_file", path, f"{'feature' if feature_dir else 'video'} file does not exist; {how}"
    if size == 0:
        return "empty_file", path, f"{'feature' if feature_dir else 'video'} file is empty (0 bytes); {how}"
    return None


def check_video_records(records: Sequence[Record], policy: str = "error", feature_dir: str = "",
                        desc: str = "checking video") -> tuple[list[Record], Counter]:
    """Pre-pass for stage 2: every record's lip video (or feature file) exists and is not empty.

    Like :func:`~whisper_flamingo.data.manifest.check_records`: ``policy="error"`` raises a
    :class:`DataError` for the first bad record (``<tsv>:<line>: row <id>: <video>: <why>``, and how
    many others are bad); ``"skip"`` drops them.  Returns the usable records and counts per reason.
    """
    if policy not in ("error", "skip"):
        raise ConfigError(f"on_bad_sample: unknown value {policy!r}; use error or skip")
    kept: list[Record] = []
    counts: Counter = Counter()
    first: tuple[Record, tuple[str, str, str]] | None = None
    for rec in records:
        problem = _video_problem(rec, feature_dir)
        if problem is None:
            kept.append(rec)
            continue
        counts[problem[0]] += 1
        if first is None:
            first = (rec, problem)
    if first is not None and policy == "error":
        rec, (reason, path, why) = first
        more = sum(counts.values()) - 1
        extra = f" ({more} more bad files: {dict(counts)})" if more else ""
        raise DataError(f"row {rec.id}: {path}: {why} or set on_bad_sample: skip{extra}", reason=reason,
                        path=rec.tsv_path, line=rec.line)
    if counts:
        logger.warning("%s: dropped %d of %d records with bad video %s", desc, sum(counts.values()),
                       len(records), dict(counts))
    return kept, counts


def _second_sigterm_kills(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the next one (e.g. the loader's own terminate()) ends us


def ignore_sigterm(worker_id: int) -> None:
    """A DataLoader worker ignores its first SIGTERM: a group-wide TERM (``timeout``, pre-emption) then
    stops only the main process, which finishes the step, saves ``last.ckpt`` and shuts the workers down
    itself (a second TERM, such as the loader's own ``terminate()``, still ends a worker)."""
    signal.signal(signal.SIGTERM, _second_sigterm_kills)


def num_languages_for(n_mels: int) -> int:
    """Whisper's language count: 100 for large-v3 (the 128-mel models), else 99."""
    return 100 if int(n_mels) == 128 else 99


#: evaluation loaders of the asr task (the original stage-1 script's order)
AUDIO_EVAL_ORDER = ("val_noisy", "val", "test_noisy", "test")
#: evaluation loaders of the flamingo task (the original stage-2 script's order)
AV_EVAL_ORDER = ("test_noisy", "test", "val_noisy", "val")


class MuavicDataModule(L.LightningDataModule):
    """Train / validation / test data of a config (see module doc).

    ``n_mels`` and ``multilingual`` come from the model; ``num_languages`` defaults from
    ``n_mels`` (:func:`num_languages_for`).  ``video``: samples carry lip video (features from
    ``video_feature_dir`` when that is set).  ``eval_order``: the evaluation loaders, from
    ``val_noisy``, ``val``, ``test_noisy``, ``test`` (a noisy one only with its noise list);
    ``noise_name``: their noisy sets' name in metrics unless ``val_noise_name`` is set.
    """

    def __init__(self, cfg: Config, n_mels: int, multilingual: bool, *, video: bool = False,
                 eval_order: Sequence[str] = AUDIO_EVAL_ORDER, noise_name: str = "multi_babble",
                 num_languages: int | None = None) -> None:
        super().__init__()
        unknown = set(eval_order) - set(AUDIO_EVAL_ORDER)
        if unknown:
            raise ValueError(f"eval_order: unknown loaders {sorted(unknown)}; use {', '.join(AUDIO_EVAL_ORDER)}")
        self.cfg = cfg
        self.n_mels = int(n_mels)
        self.multilingual = bool(multilingual)
        self.load_video = bool(video)
        self.eval_order = tuple(eval_order)
        self.default_noise_name = noise_name
        self.tokenizer_factory = TokenizerFactory(
            self.multilingual, num_languages if num_languages is not None else num_languages_for(n_mels))
        self.selection = resolve_selection(cfg.lang, cfg.whisper_task, cfg.reduce_val, cfg.vc2)
        self.splits: dict[str, SplitData] = {}
        self.bad_counts: Counter = Counter()
        self.train_dataset: SpeechDataset | None = None
        self.eval_datasets: dict[str, SpeechDataset] = {}
        self.train_sampler: LengthBatchSampler | None = None
        self.val_names: list[str] = []
        self._pending_state: dict | None = None
        self._is_setup = False

    # ------------------------------------------------------------------ helpers
    @property
    def noise_name(self) -> str:
        """``val_noise_name``, else the task's (the originals': multi_babble stage 1, en_babble stage 2)."""
        return self.cfg.val_noise_name or self.default_noise_name

    def _policy(self) -> str:
        return self.cfg.on_bad_sample

    def _load_noise(self, key: str) -> NoiseBank | None:
        path = {"noise_fn": self.cfg.noise_fn, "noise_fn_val": self.cfg.noise_fn_val,
                "noise_fn_test": self.cfg.noise_fn_test}[key]
        if not path:
            logger.warning("%s is empty: %s", key, "training without noise" if key == "noise_fn"
                           else "no noisy evaluation loader")
            return None
        # preload=None: keep the samples in memory when they fit (H3's AUTO_PRELOAD_BYTES), else
        # read each noise file on demand (large MUSAN lists)
        return NoiseBank.from_list(path, sample_rate=16000, preload=None)

    @property
    def video_feature_dir(self) -> str:
        """Where precomputed video features are read (with video only; '' = decode the lip videos)."""
        return self.cfg.video_feature_dir if self.load_video else ""

    def _dataset(self, split: str, noise: NoiseBank | None, train: bool) -> SpeechDataset:
        cfg = self.cfg
        records = self.splits[split].records
        video = dict(load_video=self.load_video, video_train=train, video_feature_dir=self.video_feature_dir)
        if train:
            return SpeechDataset(records, self.tokenizer_factory, self.n_mels, noise=noise, snr=cfg.noise_snr_train,
                                 noise_prob=cfg.noise_prob, noise_offset=cfg.noise_offset_train,
                                 spec_augment=cfg.spec_augment, seed=cfg.seed, on_bad_sample=self._policy(),
                                 **video)
        return SpeechDataset(records, self.tokenizer_factory, self.n_mels, noise=noise, snr=cfg.noise_snr_eval,
                             noise_prob=1.0 if noise else 0.0, noise_offset=cfg.noise_offset_eval, spec_augment="",
                             seed=cfg.seed, on_bad_sample=self._policy(), **video)

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        """Read manifests, check audio headers, load noise, build datasets (once)."""
        if self._is_setup:
            self._refresh_train_sampler()  # called again by the Trainer: ranks are known now
            return
        cfg = self.cfg
        policy = self._policy()
        if not self.multilingual:
            others = [lang for lang in self.selection.langs if lang != "en"]
            if others:
                logger.warning("English-only model with non-English data %s: the prompt carries no "
                               "language token", others)
        for split in ("train", "valid", "test"):
            data = load_split(cfg, split, on_bad_sample=policy, need_video=self.load_video, probe=True)
            kept, counts = data.records, Counter()
            if self.load_video:
                kept, video_counts = check_video_records(kept, policy, self.video_feature_dir,
                                                         desc=f"checking {split} video")
                counts.update(video_counts)
            data.records = kept
            data.skipped.update(counts)
            self.bad_counts.update(data.skipped)
            self.splits[split] = data
            logger.info("%s: %d records (%.2f h); skipped %s; filtered %s", split, len(kept),
                        sum(r.n_samples for r in kept) / 16000 / 3600, dict(data.skipped) or "none",
                        dict(data.filtered) or "none")
        train_noise = self._load_noise("noise_fn")
        val_noise = self._load_noise("noise_fn_val")
        test_noise = self._load_noise("noise_fn_test")
        self.train_dataset = self._dataset("train", train_noise, train=True)
        self._build_train_sampler()
        val_clean = self._dataset("valid", None, train=False)
        test_clean = self._dataset("test", None, train=False)
        name = self.noise_name
        make = {
            "val_noisy": lambda: (f"val_noisy_{name}", self._dataset("valid", val_noise, train=False))
            if val_noise is not None else None,
            "val": lambda: ("val", val_clean),
            "test_noisy": lambda: (f"test_noisy_{name}", self._dataset("test", test_noise, train=False))
            if test_noise is not None else None,
            "test": lambda: ("test", test_clean),
        }
        loaders = [x for x in (make[k]() for k in self.eval_order) if x is not None]
        self.eval_datasets = dict(loaders)
        self.val_names = [n for n, _ in loaders]
        self._is_setup = True
        if self._pending_state is not None:
            self.load_state_dict(self._pending_state)
            self._pending_state = None

    def _build_train_sampler(self) -> None:
        assert self.train_dataset is not None
        world, rank = self._world()
        bins = batch_bins_from_config(self.cfg.audio_max_length, self.cfg.batch_size)
        epoch = self.train_sampler.epoch if self.train_sampler is not None else 0
        self.train_sampler = LengthBatchSampler(self.train_dataset.lengths, bins, shuffle=True,
                                                drop_last=True, seed=self.cfg.seed,
                                                num_replicas=world, rank=rank)
        self.train_sampler.set_epoch(epoch)
        logger.info("train: %d batches per epoch on rank %d of %d (batch_bins %d, padding efficiency "
                    "%.2f)", len(self.train_sampler), rank, world, bins,
                    self.train_sampler.padding_efficiency())

    def _refresh_train_sampler(self) -> None:
        """Rebuild the training sampler when the trainer's world size / rank differ from its own
        (``setup`` may run before the Trainer is attached)."""
        s = self.train_sampler
        if s is not None and (s.num_replicas, s.rank) != self._world():
            self._build_train_sampler()

    def _collator(self, dataset: SpeechDataset) -> Collator:
        return Collator(pad_token=dataset.pad_token, n_mels=self.n_mels, video=dataset.video_kind)

    def _loader(self, dataset: SpeechDataset, batch_sampler) -> DataLoader:
        workers = self.cfg.num_worker
        return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers,
                          collate_fn=self._collator(dataset), persistent_workers=False,
                          pin_memory=torch.cuda.is_available(), worker_init_fn=ignore_sigterm if workers else None)

    def train_dataloader(self) -> DataLoader:
        """Shuffled length-bucketed batches; the batch sampler carries the epoch."""
        if not self._is_setup:
            self.setup("fit")
        self._refresh_train_sampler()
        assert self.train_dataset is not None and self.train_sampler is not None
        return self._loader(self.train_dataset, EpochBatchSampler(self.train_sampler, self.train_dataset))

    def eval_sampler(self, dataset: SpeechDataset) -> LengthBatchSampler:
        """Longest batches first; under DDP this rank's disjoint share (nothing repeated)."""
        bins = max(1, int(math.floor(self.cfg.audio_max_length * self.cfg.val_batch_bins_multiplier)))
        world, rank = self._world()
        return LengthBatchSampler(dataset.lengths, bins, shuffle=False, drop_last=False, order="descending",
                                  num_replicas=world, rank=rank, even=False)

    def val_dataloader(self) -> list[DataLoader]:
        """Evaluation loaders in the order of :attr:`val_names` (this rank's share of each)."""
        if not self._is_setup:
            self.setup("validate")
        loaders = []
        for name in self.val_names:
            dataset = self.eval_datasets[name]
            sampler = self.eval_sampler(dataset)
            if sampler.num_replicas > 1:
                logger.info("%s: rank %d of %d validates %d of %d utterances (%d batches)", name, sampler.rank,
                            sampler.num_replicas, sum(len(b) for b in sampler.rank_batches()), len(dataset),
                            len(sampler))
            loaders.append(self._loader(dataset, sampler))
        return loaders

    def test_dataloader(self) -> list[DataLoader]:
        """The same loaders as :meth:`val_dataloader`."""
        return self.val_dataloader()

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        """``{"train_sampler": {...epoch, consumed...}}`` (empty before setup)."""
        if self.train_sampler is None:
            return dict(self._pending_state or {})
        return {"train_sampler": self.train_sampler.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the training sampler (kept until :meth:`setup` when called earlier)."""
        if not state_dict:
            return
        if self.train_sampler is None:
            self._pending_state = dict(state_dict)
            return
        if "train_sampler" in state_dict:
            self.train_sampler.load_state_dict(state_dict["train_sampler"])
            if self.train_dataset is not None:
                self.train_dataset.set_epoch(self.train_sampler.epoch)
