"""A MuAViC-format manifest from a folder of audio files with transcripts (``whisper-flamingo prepare manifest``).

Input: a folder (searched recursively) of audio files (``.wav .flac .ogg .opus .mp3``, whatever
libsndfile reads) and their transcripts, either

* one ``<name>.txt`` next to each audio file (same stem; the whole file is the transcript), or
* one transcript TSV (``--transcripts``): ``<name><TAB><transcript>`` per line, where ``<name>`` is the
  audio file's path relative to the folder, with or without its extension (blank lines ignored).

Output: ``<out>/<split>.tsv`` and ``<out>/<split>.<lang>``.  Training reads them where
:func:`whisper_flamingo.data.manifest.manifest_spec` looks: for English ``--out
<muavic_root>/muavic/en``, for another language X ``--out <muavic_root>/muavic/X/muavic_normalized``
(:func:`muavic_root_of` finds ``muavic_root`` back from ``--out``).  The tsv's first line is the audio
folder (absolute); each row is ``id, video, audio, n_video_frames, n_audio_samples`` with the id the
relative path without extension, video ``-`` and 0 frames (audio-only: stage 1), the audio path
relative to the root line and the 16 kHz sample count of the file's header.  Rows are sorted by id;
a transcript's line breaks and tabs become spaces.

A file without a transcript, an empty transcript or an unreadable audio file is an error naming the
file (``on_bad_sample="error"``) or is left out and counted (``"skip"``).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from whisper_flamingo.data.audio import probe_audio
from whisper_flamingo.data.manifest import manifest_spec, resolve_selection
from whisper_flamingo.errors import ConfigError, DataError

log = logging.getLogger(__name__)

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")
NO_VIDEO = "-"


@dataclass(frozen=True)
class Row:
    """One manifest row of an audio-only utterance."""

    id: str
    audio: str  # relative to the root line
    n_samples: int  # at 16 kHz
    text: str


@dataclass
class FolderManifest:
    """What :func:`manifest_from_folder` wrote."""

    tsv: Path
    labels: Path
    rows: int
    seconds: float
    skipped: Counter = field(default_factory=Counter)


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def read_transcript_tsv(path: Path) -> dict[str, str]:
    """``name -> transcript`` of a transcript TSV (see the module doc); a malformed line is an error."""
    if not path.is_file():
        raise ConfigError(f"{path}: transcript file does not exist; pass a TSV of <name><TAB><transcript> lines")
    out: dict[str, str] = {}
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError("expected <name><TAB><transcript>; fix the line", reason="column_count", path=path,
                            line=i)
        name, text = line.split("\t", 1)
        out[name.strip()] = text
    return out


def collect_rows(audio_dir: Path, transcripts: Path | None = None,
                 on_bad_sample: str = "error") -> tuple[list[Row], Counter]:
    """The rows of every audio file under ``audio_dir`` with its transcript (module doc) and the skip counts."""
    if on_bad_sample not in ("error", "skip"):
        raise ConfigError(f"on_bad_sample: unknown value {on_bad_sample!r}; use error or skip")
    audio_dir = Path(audio_dir)
    if not audio_dir.is_dir():
        raise ConfigError(f"{audio_dir}: audio folder does not exist")
    table = read_transcript_tsv(Path(transcripts)) if transcripts else None
    files = sorted(p for p in audio_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    if not files:
        raise ConfigError(f"{audio_dir}: no audio files ({' '.join(AUDIO_SUFFIXES)}) found")
    rows: list[Row] = []
    skipped: Counter = Counter()
    for path in files:
        rel = path.relative_to(audio_dir).as_posix()
        uid = rel[: -len(path.suffix)]
        try:
            if table is not None:
                text = table.get(rel, table.get(uid))
                if text is None:
                    raise DataError(f"no transcript for {rel} in {transcripts}; add a line '{uid}<TAB>...'",
                                    reason="missing_transcript", path=path)
            else:
                txt = path.with_suffix(".txt")
                if not txt.is_file():
                    raise DataError(f"no transcript file {txt.name} next to it; write one (or use --transcripts)",
                                    reason="missing_transcript", path=path)
                text = txt.read_text(encoding="utf-8")
            text = _clean(text)
            if not text:
                raise DataError("empty transcript; write the words spoken", reason="empty_transcript", path=path)
            header = probe_audio(path)
        except DataError as err:
            if on_bad_sample == "error":
                raise DataError(f"{err} (or pass --on-bad-sample skip)", reason=err.reason) from None
            skipped[err.reason] += 1
            log.debug("skipping %s: %s", path, err)
            continue
        rows.append(Row(uid, rel, header.frames_16k, text))
    return rows, skipped


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def muavic_root_of(out: Path, split: str, lang: str) -> Path | None:
    """The ``muavic_root`` whose manifest of ``lang``/``split`` is ``<out>/<split>.tsv``, or ``None``."""
    out = Path(out).resolve()
    for root in (out.parent.parent, out.parent.parent.parent):
        spec = manifest_spec(resolve_selection(lang), lang, split, root)
        if spec.tsv == out / f"{split}.tsv":
            return root
    return None


def manifest_from_folder(audio_dir: str | os.PathLike, out: str | os.PathLike, split: str = "train",
                         lang: str = "en", transcripts: str | os.PathLike | None = None,
                         on_bad_sample: str = "error", overwrite: bool = False) -> FolderManifest:
    """Write ``<out>/<split>.tsv`` and ``<out>/<split>.<lang>`` (module doc); return what was written."""
    sel = resolve_selection(lang)
    if len(sel.langs) != 1 or sel.lrs2:
        raise ConfigError(f"--lang {lang}: give one language code (en, es, fr, ...), not a set of languages")
    out = Path(out)
    tsv, labels = out / f"{split}.tsv", out / f"{split}.{sel.langs[0]}"
    if tsv.exists() and not overwrite:
        raise ConfigError(f"{tsv} exists; pass --overwrite to replace it")
    audio_dir = Path(audio_dir).resolve()
    rows, skipped = collect_rows(audio_dir, Path(transcripts) if transcripts else None, on_bad_sample)
    if not rows:
        raise DataError(f"no usable audio file with a transcript (skipped: {dict(skipped)})", path=audio_dir)
    out.mkdir(parents=True, exist_ok=True)
    body = "".join(f"{r.id}\t{NO_VIDEO}\t{r.audio}\t0\t{r.n_samples}\n" for r in rows)
    _write_atomic(tsv, f"{audio_dir}\n{body}")
    _write_atomic(labels, "".join(f"{r.text}\n" for r in rows))
    seconds = sum(r.n_samples for r in rows) / 16000
    if skipped:
        log.warning("left out %d files: %s", sum(skipped.values()), dict(skipped))
    return FolderManifest(tsv, labels, len(rows), seconds, skipped)


__all__ = ["AUDIO_SUFFIXES", "FolderManifest", "Row", "collect_rows", "manifest_from_folder", "muavic_root_of",
           "read_transcript_tsv"]
