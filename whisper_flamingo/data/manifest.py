"""MuAViC / LRS2 manifests: which files a data selection reads, and the records they hold.

Manifest format (fairseq / AV-HuBERT convention): a ``.tsv`` whose first line is a root directory
and whose other lines hold five tab-separated fields ``id, video_path, audio_path,
n_video_frames, n_audio_samples``, plus a label file with one transcript per tsv body line.

Media paths are ``os.path.join(root, path)`` (an absolute path stays as written, a relative root
is relative to the working directory as in fairseq).  When that file does not exist and the
path is relative, the same path relative to the dataset root (``muavic_root`` or ``lrs2_root``)
is tried too, and used when it exists.

Which files (``lang`` selects; the branch order is the original's: LRS2 first, then ``en``,
then the task):

====================  =================================================  ==========================
selection             tsv                                                labels
====================  =================================================  ==========================
LRS2                  ``<lrs2_root>/<split>.tsv``                        ``<split>.wrd``
en (any task)         ``muavic/en/<split>.tsv``                          ``<split>.en``
en, vc2, train        ``<vc2_path>/train.tsv``                           ``train.en``
X transcribe          ``muavic/X/muavic_normalized/<split>.tsv``         ``<split>.X``
X transcribe vc2      ``muavic/X/muavic_normalized/train_muavic_vc2.tsv``  ``train_muavic_vc2.X``
En-X (X != en)        ``muavic/en/X/<split>.tsv``                        ``<split>.X``
X-En (X != en)        ``muavic/X/en/<split>.tsv``                        ``<split>.en``
====================  =================================================  ==========================

A record's language is the language of its *text*: the target language for En-X (prompt
``<|X|><|transcribe|>``), the source language for X-En (prompt ``<|X|><|translate|>``).

``n_audio_samples`` is the file's native sample count or a 16 kHz count within one mel frame (160
samples, 10 ms) of its duration (:func:`~whisper_flamingo.data.audio.sample_count_matches`); the
header pre-pass (:func:`check_records`) replaces it by the 16 kHz count that everything downstream uses.
``n_video_frames`` 0 marks audio-only data: such rows are kept where no video is read (stage 1) and
dropped, counted as ``no_video``, where it is (``need_video``).

Filtering, in order: rows without video where video is needed (``no_video``); an empty
transcript is a bad sample (``empty_transcript``); then train keeps ``n_samples <=
audio_max_length`` and ``len(text) <= text_max_length``, valid keeps ``n_samples <=
audio_max_length_val``, test keeps everything; finally valid and test are cut per language file
to their first ``reduce_val`` records when a cut is set.  :func:`load_split` prints one line per
reason for which rows were dropped, with their count.

Errors (:class:`DataError`, one line naming ``file:line``): ``column_count`` and ``bad_field``
(tsv rows), ``empty_transcript`` (label line), ``missing_file`` (sample count <= 0) are *row*
errors: raised with ``on_bad_sample: error``, counted and dropped with ``skip``.  A missing or
unreadable manifest, an unknown language code and ``label_count_mismatch`` (the label file and
the tsv body have different line counts) always raise: with the alignment unknown, no row can be
trusted.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from whisper_flamingo.data.audio import check_sample_count, probe_audio
from whisper_flamingo.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
POLICIES = ("error", "skip")
#: ``lang`` modes that select several languages
LANGUAGE_SETS: dict[str, tuple[str, ...]] = {
    "multi-all": ("en", "ar", "de", "el", "es", "fr", "it", "pt", "ru"),
    "multi": ("en", "es", "fr", "it", "pt"),
    "multi_en-st": ("en", "el", "es", "fr", "it", "pt", "ru"),
}
#: the original's validation/test cut per ``lang`` mode (``reduce_val: null``)
DEFAULT_REDUCE_VAL: dict[str, int] = {"multi-all": 300, "multi": 300, "multi_en-st": 200}
TASKS = ("transcribe", "En-X", "X-En")


@dataclass
class Record:
    """One utterance of a manifest."""

    id: str
    lang: str
    audio_path: str
    video_path: str
    n_video_frames: int
    n_samples: int
    text: str
    tsv_path: str
    line: int  # 1-based line in the tsv (line 1 is the root); the label line is ``line - 1``
    label_path: str
    task: str = "transcribe"  # Whisper task token: "transcribe" or "translate"

    @property
    def where(self) -> str:
        """``<tsv>:<line>`` for messages."""
        return f"{self.tsv_path}:{self.line}"


@dataclass(frozen=True)
class Selection:
    """What a ``lang`` / ``task`` config pair reads."""

    mode: str  # the ``lang`` key as given
    langs: tuple[str, ...]
    task: str  # transcribe | En-X | X-En
    lrs2: bool
    reduce_val: int | None  # effective cut (None: no cut)
    use_vc2: bool


@dataclass(frozen=True)
class ManifestSpec:
    """One tsv + label file pair."""

    lang: str  # language of the text
    split: str
    tsv: Path
    labels: Path
    task: str  # Whisper task token
    data_root: Path  # fallback root for relative media paths


@dataclass
class SplitData:
    """The records of one split and what was dropped on the way."""

    records: list[Record]
    skipped: Counter = field(default_factory=Counter)  # bad rows per reason (skip mode)
    filtered: Counter = field(default_factory=Counter)  # missing_video, length filters, reduce_val


def _known_languages() -> dict[str, str]:
    from whisper.tokenizer import LANGUAGES

    return LANGUAGES


def resolve_selection(lang: str, task: str = "auto", reduce_val: int | None = None,
                      vc2: bool = False) -> Selection:
    """Map the ``lang``/``task``/``reduce_val``/``vc2`` keys to the languages and files to read.

    ``task="auto"``: En-X for ``multi_en-st``, transcribe otherwise.  ``reduce_val=None``: the
    original per-mode cut (300 ``multi-all``/``multi``, 200 ``multi_en-st``, none otherwise);
    ``0``: no cut.  ``vc2`` applies where the original passed it (``multi`` and single codes).
    """
    if task == "auto":
        task = "En-X" if lang == "multi_en-st" else "transcribe"
    if task not in TASKS:
        raise ConfigError(f"task: unknown value {task!r}; use auto, {', '.join(TASKS)}")
    if "lrs2" in lang:
        langs: tuple[str, ...] = ("en",)
        lrs2, task, vc2_ok = True, "transcribe", False
    elif lang in LANGUAGE_SETS:
        langs, lrs2, vc2_ok = LANGUAGE_SETS[lang], False, lang == "multi"
    else:
        langs, lrs2, vc2_ok = (lang,), False, True
    if vc2 and not vc2_ok:
        logger.warning("vc2: true is ignored for lang %r (the original used it only for 'multi' and "
                       "single language codes)", lang)
    cut = DEFAULT_REDUCE_VAL.get(lang) if reduce_val is None else (int(reduce_val) or None)
    return Selection(lang, langs, task, lrs2, cut, bool(vc2 and vc2_ok))


def manifest_spec(sel: Selection, lang: str, split: str, muavic_root: str | os.PathLike,
                  lrs2_root: str | os.PathLike = "", vc2_path: str | os.PathLike = "") -> ManifestSpec:
    """The tsv and label files of one language and split (see the table in the module doc)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    root = Path(muavic_root)
    base = root / "muavic"
    vc2 = sel.use_vc2 and split == "train"
    if sel.lrs2:
        lrs2 = Path(lrs2_root)
        return ManifestSpec("en", split, lrs2 / f"{split}.tsv", lrs2 / f"{split}.wrd", "transcribe", lrs2)
    if lang == "en":
        if vc2:
            if not str(vc2_path):
                raise ConfigError("vc2: true needs vc2_path (the folder of the VoxCeleb2-augmented "
                                  "train.tsv and train.en)")
            d = Path(vc2_path)
            return ManifestSpec("en", split, d / "train.tsv", d / "train.en", "transcribe", root)
        return ManifestSpec("en", split, base / "en" / f"{split}.tsv", base / "en" / f"{split}.en",
                            "transcribe", root)
    if sel.task == "transcribe":
        d = base / lang / "muavic_normalized"
        stem = "train_muavic_vc2" if vc2 else split
        return ManifestSpec(lang, split, d / f"{stem}.tsv", d / f"{stem}.{lang}", "transcribe", root)
    if sel.task == "En-X":
        d = base / "en" / lang
        return ManifestSpec(lang, split, d / f"{split}.tsv", d / f"{split}.{lang}", "transcribe", root)
    d = base / lang / "en"  # X-En: the prompt names the source language, the task is translate
    return ManifestSpec(lang, split, d / f"{split}.tsv", d / f"{split}.en", "translate", root)


def _read_lines(path: Path, what: str) -> list[str]:
    """Lines of a text file without line ends (a final newline does not make an extra line)."""
    if not path.is_file():
        raise DataError(f"{what} does not exist; check muavic_root / lang / task (or the MuAViC "
                        "download)", reason="missing_file", path=path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{what} cannot be read as UTF-8 text ({err}); re-create it",
                        reason="unreadable", path=path) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _media_base(root: str, rel: str, data_root: Path) -> str:
    """``root``, unless ``rel`` is relative, missing under ``root`` and present under ``data_root``."""
    if os.path.isabs(rel) or os.path.exists(os.path.join(root, rel)):
        return root
    return str(data_root) if os.path.exists(os.path.join(data_root, rel)) else root


def read_manifest(spec: ManifestSpec, on_bad_sample: str = "error",
                  skipped: Counter | None = None, filtered: Counter | None = None,
                  need_video: bool = False) -> list[Record]:
    """Records of one tsv/label pair, with row errors handled by ``on_bad_sample``.

    Rows with ``n_video_frames <= 0`` (audio-only) are kept, or with ``need_video`` dropped and
    counted in ``filtered["no_video"]``; bad rows raise (``error``) or are counted in ``skipped`` by
    reason (``skip``).  No length filter here.
    """
    if on_bad_sample not in POLICIES:
        raise ConfigError(f"on_bad_sample: unknown value {on_bad_sample!r}; use error or skip")
    if spec.lang not in _known_languages():
        raise DataError(f"unknown language code {spec.lang!r} (not a Whisper language); set lang to "
                        "en, lrs2, multi_en-st, multi-all, multi or a Whisper language code",
                        reason="unknown_language", path=spec.tsv)
    skipped = Counter() if skipped is None else skipped
    filtered = Counter() if filtered is None else filtered
    tsv_lines = _read_lines(spec.tsv, "manifest")
    if not tsv_lines:
        raise DataError("manifest is empty (its first line must be the root directory)",
                        reason="empty_file", path=spec.tsv)
    labels = _read_lines(spec.labels, "label file")
    root, body = tsv_lines[0].strip(), tsv_lines[1:]
    if len(labels) != len(body):
        raise DataError(f"label file has {len(labels)} lines but {spec.tsv} has {len(body)} rows "
                        "after its root line; the files must be aligned line by line",
                        reason="label_count_mismatch", path=spec.labels)
    tsv, lab = str(spec.tsv), str(spec.labels)
    records: list[Record] = []
    for i, (row, text) in enumerate(zip(body, labels)):
        line = i + 2
        try:
            fields = row.split("\t")
            if len(fields) != 5:
                raise DataError(f"expected 5 tab-separated fields (id, video, audio, video frames, "
                                f"audio samples), found {len(fields)}; fix the manifest row",
                                reason="column_count", path=tsv, line=line)
            uid, video, audio, frames_s, samples_s = fields
            try:
                frames, samples = int(frames_s), int(samples_s)
            except ValueError:
                raise DataError(f"video frames {frames_s!r} / audio samples {samples_s!r} are not "
                                "integers; fix the manifest row", reason="bad_field", path=tsv,
                                line=line) from None
            if frames <= 0 and need_video:
                filtered["no_video"] += 1
                continue
            if samples <= 0:
                raise DataError(f"audio sample count is {samples} (audio missing when the manifest "
                                "was made); remove the row or set on_bad_sample: skip",
                                reason="missing_file", path=tsv, line=line)
            text = text.strip()
            if not text:
                raise DataError(f"empty transcript (for {uid} in {tsv}:{line}); fix the label or set "
                                "on_bad_sample: skip", reason="empty_transcript", path=lab, line=i + 1)
        except DataError as err:
            if on_bad_sample == "error":
                raise
            skipped[err.reason] += 1
            logger.debug("skipping: %s", err)
            continue
        base = _media_base(root, audio, spec.data_root)
        audio_path, video_path = os.path.join(base, audio), os.path.join(base, video)
        records.append(Record(uid, spec.lang, audio_path, video_path, frames, samples, text, tsv,
                              line, lab, spec.task))
    return records


def filter_records(records: Sequence[Record], split: str, *, audio_max_length: int,
                   text_max_length: int, audio_max_length_val: int = 480000,
                   reduce_val: int | None = None, filtered: Counter | None = None) -> list[Record]:
    """The original length filters and the valid/test cut (see module doc); counts in ``filtered``."""
    filtered = Counter() if filtered is None else filtered
    out: list[Record] = []
    for r in records:
        if split == "train":
            if r.n_samples > audio_max_length:
                filtered["audio_too_long"] += 1
                continue
            if len(r.text) > text_max_length:
                filtered["text_too_long"] += 1
                continue
        elif split == "valid" and r.n_samples > audio_max_length_val:
            filtered["audio_too_long"] += 1
            continue
        out.append(r)
    if split != "train" and reduce_val and len(out) > reduce_val:
        filtered["reduce_val"] += len(out) - reduce_val
        out = out[:reduce_val]
    return out


#: why rows were dropped, for the summary lines of :func:`load_split` (``{cfg}``: the config)
DROP_REASONS: dict[str, str] = {
    "no_video": "n_video_frames is 0 (audio-only rows) and this task reads video",
    "audio_too_long": "audio longer than audio_max_length (train) / audio_max_length_val (valid)",
    "text_too_long": "transcript longer than text_max_length characters",
    "reduce_val": "beyond the reduce_val cut of the validation/test set",
}


def log_drops(split: str, filtered: Counter, skipped: Counter) -> None:
    """One line per reason a row of ``split`` was dropped: the count and what it means."""
    for reason, n in sorted(filtered.items()):
        logger.info("%s: dropped %d rows: %s (%s)", split, n, reason, DROP_REASONS.get(reason, reason))
    for reason, n in sorted(skipped.items()):
        logger.warning("%s: dropped %d bad rows: %s (on_bad_sample: skip)", split, n, reason)


def load_split(cfg, split: str, *, on_bad_sample: str | None = None, reduce: bool = True,
               need_video: bool = False, probe: bool = False) -> SplitData:
    """All records of ``split`` for the data selection of ``cfg`` (languages concatenated).

    ``cfg`` needs ``muavic_root, lrs2_root, lang, whisper_task, vc2, vc2_path, audio_max_length,
    text_max_length, audio_max_length_val, reduce_val, on_bad_sample``.  ``reduce=False`` keeps
    the whole valid/test sets (decoding).  ``need_video``: drop audio-only rows (``no_video``).
    ``probe``: run the audio header pre-pass (:func:`check_records`) before the length filters, so
    that they see 16 kHz sample counts; its bad files count in ``skipped``.
    """
    policy = on_bad_sample or getattr(cfg, "on_bad_sample", "error")
    sel = resolve_selection(cfg.lang, getattr(cfg, "whisper_task", "auto"), getattr(cfg, "reduce_val", None),
                            bool(getattr(cfg, "vc2", False)))
    data = SplitData([])
    for lang in sel.langs:
        spec = manifest_spec(sel, lang, split, cfg.muavic_root, getattr(cfg, "lrs2_root", ""),
                             getattr(cfg, "vc2_path", ""))
        recs = read_manifest(spec, policy, data.skipped, data.filtered, need_video=need_video)
        n_read = len(recs)
        if probe:
            recs, bad = check_records(recs, policy, desc=f"checking {split} audio")
            data.skipped.update(bad)
        recs = filter_records(recs, split, audio_max_length=cfg.audio_max_length,
                              text_max_length=cfg.text_max_length,
                              audio_max_length_val=getattr(cfg, "audio_max_length_val", 480000),
                              reduce_val=sel.reduce_val if reduce else None, filtered=data.filtered)
        hours = sum(r.n_samples for r in recs) / 16000 / 3600
        logger.info("%s %s (%s): %d records kept of %d read (%.2f h) from %s", split, lang,
                    spec.task if lang != "en" or sel.lrs2 else "transcribe", len(recs), n_read, hours,
                    spec.tsv)
        data.records.extend(recs)
    log_drops(split, data.filtered, data.skipped)
    return data


def _probe(record: Record) -> DataError | int:
    """The record's 16 kHz sample count from its header, or why the file is unusable."""
    try:
        header = probe_audio(record.audio_path)
        check_sample_count(header, record.n_samples)
    except DataError as err:
        return err
    return header.frames_16k


def check_records(records: Sequence[Record], policy: str = "error", desc: str = "checking audio",
                  workers: int = 8) -> tuple[list[Record], Counter]:
    """Header-only pre-pass over all records: exists, non-empty, readable, not cut, sample count.

    Returns the usable records (their ``n_samples`` set to the 16 kHz count, whichever accepted
    count the manifest gave) and the number of bad ones per reason.  ``policy="error"``
    raises a :class:`DataError` for the first bad record (naming the manifest line and the audio
    file, and how many others are bad); ``"skip"`` drops them.  Headers are read in ``workers``
    threads (I/O bound).
    """
    if policy not in POLICIES:
        raise ConfigError(f"on_bad_sample: unknown value {policy!r}; use error or skip")
    kept: list[Record] = []
    counts: Counter = Counter()
    first: tuple[Record, DataError] | None = None
    with ThreadPoolExecutor(max(1, workers)) as pool:
        results: Iterable = pool.map(_probe, records, chunksize=64)
        for rec, err in tqdm(zip(records, results), total=len(records), desc=desc, unit="file",
                             disable=len(records) < 1000, leave=False):
            if not isinstance(err, DataError):
                rec.n_samples = err
                kept.append(rec)
                continue
            counts[err.reason] += 1
            if first is None:
                first = (rec, err)
    if first is not None and policy == "error":
        rec, err = first
        more = sum(counts.values()) - 1
        extra = f" ({more} more bad files: {dict(counts)})" if more else ""
        raise DataError(f"row {rec.id}: {err}{extra}",
                        reason=err.reason, path=rec.tsv_path, line=rec.line)
    if counts:
        logger.warning("%s: dropped %d of %d records with bad audio %s", desc, sum(counts.values()),
                       len(records), dict(counts))
    return kept, counts
