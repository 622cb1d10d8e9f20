"""``prepare manifest``: ``{split}.tsv`` + label files from each corpus as a user has it on disk.

Manifest format (AV-HuBERT / MuAViC): line 1 the root (``/``: paths are absolute), then per utterance
``id \\t video \\t audio \\t n_video_frames \\t n_audio_samples`` with the **actual** counts (frames decoded
from the mp4, samples of the wav, as AV-HuBERT counted them), and a label file with one line per row.

Layouts (the media paths point at the prepared 16 kHz wavs and 96x96 mouth videos, ``--audio`` and
``--video``, which keep the corpus's relative paths, as ``extract-audio`` / ``crop-mouth`` write them):

* ``folder``: any folder of videos with a transcript per video (``<name>.txt`` next to it, first line,
  an LRS-style ``Text:`` prefix dropped); one split (``--split``).
* ``lrs3``: ``pretrain/``, ``trainval/``, ``test/`` with ``<speaker>/<nnnnn>.{mp4,txt}``; train =
  pretrain + trainval - valid, valid = the ids of ``--valid-ids`` (AV-HuBERT's ``lrs3-valid.id``: lines
  ``trainval/<speaker>/<nnnnn>``), test = ``test/``; ids ``<subset>/<speaker>/<nnnnn>``; labels
  lower-cased (``.en``).  Pretrain utterances are used whole (the >15 s re-segmentation by word
  timings of AV-HuBERT/MuAViC is not done here).
* ``lrs2``: auto_avsr's preprocessed tree and its lists ``lrs2_{train,val,test}_transcript_lengths_seg24s.csv``
  (second column: the video path under ``lrs2_video_seg24s/``; the transcript is the first line of the
  same path with ``video`` -> ``text`` and ``.mp4`` -> ``.txt``), as the original's ``lrs2_make_tsv``
  notebook; labels ``.wrd`` lower-cased.
* ``voxceleb2``: ``dev/mp4/<speaker>/<video>/<nnnnn>.mp4`` (or ``test/``) with transcripts from a tsv
  ``--transcripts`` (``<speaker>/<video>/<nnnnn> \\t text``; VoxCeleb2 has none of its own), into
  ``train`` (the ``vc2_path`` folder of the configs).
* ``muavic``: MuAViC's released ``<lang>/{split}.tsv`` + labels (``-1`` counts from ffprobe durations)
  re-counted from the files, into Whisper-Flamingo's layout (non-English ASR in ``muavic_normalized/``
  with normalised labels; X-En ``<lang>/en/{split}.tsv`` from MuAViC's ``_avst`` names).
"""

from __future__ import annotations

import csv
import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from whisper_flamingo.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


@dataclass
class Utt:
    """One manifest row before counting."""

    id: str
    video: Path
    audio: Path
    text: str


def count_frames(path: Path) -> int:
    """The frames actually decoded from ``path`` (DataError naming the file if it cannot be read)."""
    import av

    try:
        with av.open(str(path)) as c:
            return sum(1 for _ in c.decode(video=0))
    except (av.error.FFmpegError, IndexError) as err:
        raise DataError(f"cannot decode the video ({err}); redo crop-mouth for it", reason="unreadable",
                        path=path) from None


def count_samples(path: Path) -> int:
    """The samples of a wav (DataError naming the file if it cannot be read)."""
    import soundfile

    try:
        return soundfile.info(str(path)).frames
    except (RuntimeError, soundfile.LibsndfileError) as err:
        raise DataError(f"cannot read the audio ({err}); redo extract-audio for it", reason="unreadable",
                        path=path) from None


def read_transcript(path: Path) -> str:
    """The first line of a transcript file, without an LRS ``Text:`` prefix, whitespace collapsed."""
    try:
        first = path.read_text(encoding="utf-8").split("\n", 1)[0]
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cannot read the transcript ({err})", reason="unreadable", path=path) from None
    first = re.sub(r"^\s*Text:\s*", "", first)
    return " ".join(first.split())


def write_split(out_dir: Path, split: str, utts: list[Utt], label_ext: str, on_bad_sample: str = "error",
                stem: str | None = None) -> Counter:
    """Write ``<out_dir>/<stem or split>.tsv`` and ``.<label_ext>``; returns counts (rows, skipped by reason)."""
    from tqdm import tqdm

    counts: Counter = Counter()
    rows, labels = [], []
    for u in tqdm(utts, desc=f"counting {split}", unit="utt", disable=len(utts) < 50):
        try:
            for p, what in ((u.video, "mouth video"), (u.audio, "audio")):
                if not p.is_file():
                    raise DataError(f"{u.id}: no {what} {p}; run the earlier steps or leave it out",
                                    reason="missing_file", path=p)
            if not u.text.strip():
                raise DataError(f"{u.id}: empty transcript", reason="empty_transcript", path=u.audio)
            frames, samples = count_frames(u.video), count_samples(u.audio)
        except DataError as err:
            if on_bad_sample == "error":
                raise
            counts[f"skipped {err.reason}"] += 1
            logger.warning("skipped: %s", err)
            continue
        rows.append(f"{u.id}\t{u.video.resolve()}\t{u.audio.resolve()}\t{frames}\t{samples}")
        labels.append(u.text.replace("\n", " ").strip())
        counts["rows"] += 1
    out_dir.mkdir(parents=True, exist_ok=True)
    name = stem or split
    (out_dir / f"{name}.tsv").write_text("/\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    (out_dir / f"{name}.{label_ext}").write_text("".join(t + "\n" for t in labels), encoding="utf-8")
    return counts


def _media(audio_dir: Path, video_dir: Path, rel: str) -> tuple[Path, Path]:
    return video_dir / f"{rel}.mp4", audio_dir / f"{rel}.wav"


def layout_folder(src: Path, audio_dir: Path, video_dir: Path, split: str,
                  extensions: tuple[str, ...] = (".mp4", ".mkv", ".avi", ".webm", ".mov")) -> dict[str, list[Utt]]:
    """Every video under ``src`` with a ``<name>.txt`` transcript next to it, into ``split``."""
    utts = []
    for v in sorted(p for p in src.rglob("*") if p.suffix.lower() in extensions):
        txt = v.with_suffix(".txt")
        if not txt.is_file():
            raise DataError("no transcript next to this video (same name, .txt); add it or move the video "
                            "out of --src", reason="missing_file", path=v)
        rel = v.relative_to(src).with_suffix("").as_posix()
        video, audio = _media(audio_dir, video_dir, rel)
        utts.append(Utt(rel, video, audio, read_transcript(txt)))
    return {split: utts}


def layout_lrs3(src: Path, audio_dir: Path, video_dir: Path, valid_ids: Path | None) -> dict[str, list[Utt]]:
    """LRS3's ``pretrain``/``trainval``/``test`` folders into train/valid/test (see the module docstring)."""
    for sub in ("trainval", "test"):
        if not (src / sub).is_dir():
            raise ConfigError(f"{src}: no {sub}/ folder; --src must be the LRS3 root (pretrain/, trainval/, test/)")
    valid = set()
    if valid_ids is not None:
        valid = {ln.strip() for ln in valid_ids.read_text(encoding="utf-8").splitlines() if ln.strip()}
    else:
        logger.warning("no --valid-ids: the valid split is empty (AV-HuBERT's lrs3-valid.id lists 1,200 ids)")
    out: dict[str, list[Utt]] = {s: [] for s in SPLITS}
    for sub in ("pretrain", "trainval", "test"):
        if not (src / sub).is_dir():
            continue
        for v in sorted((src / sub).glob("*/*.mp4")):
            rel = v.relative_to(src).with_suffix("").as_posix()
            split = "test" if sub == "test" else ("valid" if rel in valid else "train")
            video, audio = _media(audio_dir, video_dir, rel)
            out[split].append(Utt(rel, video, audio, read_transcript(v.with_suffix(".txt")).lower()))
    missing = valid - {u.id for u in out["valid"]}
    if missing:
        raise DataError(f"{len(missing)} valid ids are not under {src} (first: {sorted(missing)[0]}); "
                        "check the list against the LRS3 copy", reason="missing_file", path=valid_ids)
    return out


def layout_lrs2(src: Path, lists: Path) -> dict[str, list[Utt]]:
    """auto_avsr's LRS2 lists and tree (media next to each other: ``.mp4`` and ``.wav``)."""
    out: dict[str, list[Utt]] = {}
    for split, name in (("train", "train"), ("valid", "val"), ("test", "test")):
        csv_path = lists / f"lrs2_{name}_transcript_lengths_seg24s.csv"
        if not csv_path.is_file():
            alt = lists / f"lrs2_{split}_transcript_lengths_seg24s.csv"
            if not alt.is_file():
                continue
            csv_path = alt
        utts = []
        with open(csv_path, newline="", encoding="utf-8") as fh:
            for lineno, row in enumerate(csv.reader(fh), 1):
                if len(row) < 2:
                    raise DataError("expected at least 2 comma-separated columns", reason="column_count",
                                    path=csv_path, line=lineno)
                rel = row[1].strip()
                video = src / "lrs2_video_seg24s" / rel
                text_path = Path(str(video).replace("video", "text")).with_suffix(".txt")
                utt_id = Path(rel).with_suffix("").as_posix()
                utts.append(Utt(utt_id, video, video.with_suffix(".wav"), read_transcript(text_path).lower()))
        out[split] = utts
    if not out:
        raise ConfigError(f"{lists}: no lrs2_*_transcript_lengths_seg24s.csv lists (auto_avsr's)")
    return out


def layout_voxceleb2(audio_dir: Path, video_dir: Path, transcripts: Path) -> dict[str, list[Utt]]:
    """VoxCeleb2 utterances named in ``transcripts`` (``id \\t text``) into ``train``."""
    utts = []
    for lineno, line in enumerate(transcripts.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t", 1)
        if len(parts) != 2:
            raise DataError("expected `<speaker>/<video>/<nnnnn> <TAB> text`", reason="column_count",
                            path=transcripts, line=lineno)
        video, audio = _media(audio_dir, video_dir, parts[0].strip())
        utts.append(Utt(parts[0].strip(), video, audio, parts[1].strip()))
    return {"train": utts}


def convert_muavic(src: Path, out: Path, lang: str, on_bad_sample: str = "error") -> dict[str, Counter]:
    """MuAViC's ``<lang>/`` manifests (``src`` = MuAViC's ``muavic/``) into Whisper-Flamingo's layout
    under ``out/muavic/<lang>``, counts re-made from the files; non-English labels normalised."""
    from whisper_flamingo.data.label_norm import normalize_line

    done: dict[str, Counter] = {}
    base = src / lang
    if not base.is_dir():
        raise ConfigError(f"{base}: no such folder; --src is MuAViC's muavic/ folder")
    jobs = []
    for split in SPLITS:
        if lang == "en":
            jobs.append((base / f"{split}.tsv", base / f"{split}.en", out / "en", split, "en", False))
        else:
            jobs.append((base / f"{split}.tsv", base / f"{split}.{lang}", out / lang / "muavic_normalized", split,
                         lang, True))
            jobs.append((base / "en" / f"{split}_avst.tsv", base / "en" / f"{split}_avst.en", out / lang / "en",
                         split, "en", False))
    for tsv, lab, dst, split, ext, norm in jobs:
        if not tsv.is_file():
            continue
        lines = tsv.read_text(encoding="utf-8").splitlines()
        texts = lab.read_text(encoding="utf-8").splitlines() if lab.is_file() else []
        if len(texts) != len(lines) - 1:
            raise DataError(f"{len(lines) - 1} rows but {len(texts)} labels in {lab}", reason="label_count_mismatch",
                            path=tsv)
        root = lines[0].strip()
        utts = []
        for lineno, (row, text) in enumerate(zip(lines[1:], texts), 2):
            cols = row.split("\t")
            if len(cols) != 5:
                raise DataError("expected 5 tab-separated columns", reason="column_count", path=tsv, line=lineno)
            video, audio = (Path(root) / cols[1], Path(root) / cols[2])
            utts.append(Utt(cols[0], video, audio, normalize_line(text, lang) if norm else text))
        done[f"{dst.relative_to(out).as_posix()}/{split}"] = write_split(dst, split, utts, ext, on_bad_sample)
    return done
