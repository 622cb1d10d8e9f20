"""Transcript files from a :func:`~whisper_flamingo.decoding.transcribe.transcribe` result, in
openai-whisper's formats: ``txt`` (one segment per line), ``srt`` (``HH:MM:SS,mmm``), ``vtt``
(``WEBVTT``, ``[HH:]MM:SS.mmm``), ``tsv`` (``start``, ``end`` in integer milliseconds, ``text``) and
``json`` (the result dict; ``audio_tag`` logits become the ``tags`` list of
:func:`~whisper_flamingo.decoding.tags.tag_segments`).

With ``tags_in_subtitles`` the srt and vtt files also hold a tag track: one cue per Whisper-AT row
(``at_time_res`` seconds), text ``[tags: Speech, Music]``, merged with the speech cues in time order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from whisper_flamingo.errors import ConfigError

__all__ = ["OUTPUT_FORMATS", "format_timestamp", "render", "write_result", "json_ready"]

OUTPUT_FORMATS = ("txt", "srt", "vtt", "tsv", "json")


def format_timestamp(seconds: float, always_include_hours: bool = False, decimal_marker: str = ".") -> str:
    """``[HH:]MM:SS.mmm`` (openai-whisper's rounding to whole milliseconds)."""
    if seconds < 0:
        raise ValueError(f"negative timestamp {seconds}")
    ms = round(seconds * 1000.0)
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    head = f"{hours:02d}:" if always_include_hours or hours > 0 else ""
    return f"{head}{minutes:02d}:{secs:02d}{decimal_marker}{ms:03d}"


def json_ready(result: dict[str, Any], top_k: int = 3) -> dict[str, Any]:
    """The result as plain JSON types: ``audio_tag`` (a tensor) becomes ``tags`` (top ``top_k`` per row)."""
    from whisper_flamingo.decoding.tags import tag_segments

    out = {k: v for k, v in result.items() if k != "audio_tag"}
    if "audio_tag" in result:
        out["tags"] = tag_segments(result, top_k=top_k)
    return json.loads(json.dumps(out, default=lambda o: o.tolist() if torch.is_tensor(o) else str(o)))


def _cues(result: dict[str, Any], tags: bool, top_k: int) -> list[tuple[float, float, str]]:
    cues = [(float(s["start"]), float(s["end"]), s["text"].strip().replace("-->", "->"))
            for s in result["segments"] if s["text"].strip()]
    if tags:
        if "audio_tag" not in result:
            raise ConfigError("tags in subtitles need sound tags: pass --at-checkpoint (a Whisper-AT head)")
        from whisper_flamingo.decoding.tags import tag_segments

        for row in tag_segments(result, top_k=top_k):
            names = ", ".join(n for n, _ in row["tags"])
            if names:
                cues.append((float(row["start"]), float(row["end"]), f"[tags: {names}]"))
        cues.sort(key=lambda c: (c[0], c[1]))
    return cues


def _lines(cues: Iterable[tuple[float, float, str]], marker: str, hours: bool) -> list[str]:
    out = []
    for i, (start, end, text) in enumerate(cues, start=1):
        if marker == ",":
            out.append(str(i))
        out += [f"{format_timestamp(start, hours, marker)} --> {format_timestamp(end, hours, marker)}", text, ""]
    return out


def render(result: dict[str, Any], fmt: str, tags_in_subtitles: bool = False, top_k: int = 3) -> str:
    """The text of one output file in ``fmt`` (one of :data:`OUTPUT_FORMATS`)."""
    if fmt == "txt":
        return "".join(s["text"].strip() + "\n" for s in result["segments"] if s["text"].strip())
    if fmt == "srt":
        return "\n".join(_lines(_cues(result, tags_in_subtitles, top_k), ",", True))
    if fmt == "vtt":
        return "\n".join(["WEBVTT", "", *_lines(_cues(result, tags_in_subtitles, top_k), ".", False)])
    if fmt == "tsv":
        rows = ["start\tend\ttext"]
        rows += [f"{round(1000 * s['start'])}\t{round(1000 * s['end'])}\t{s['text'].strip().replace(chr(9), ' ')}"
                 for s in result["segments"] if s["text"].strip()]
        return "\n".join(rows) + "\n"
    if fmt == "json":
        return json.dumps(json_ready(result, top_k), ensure_ascii=False)
    raise ConfigError(f"output format {fmt!r}: use {', '.join(OUTPUT_FORMATS)} or all")


def write_result(result: dict[str, Any], audio_path: str | os.PathLike, output_dir: str | os.PathLike,
                 formats: Iterable[str], tags_in_subtitles: bool = False, top_k: int = 3) -> list[Path]:
    """Write ``<output_dir>/<audio file stem>.<fmt>`` for each format; returns the paths."""
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = Path(audio_path).stem
    written = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        path.write_text(render(result, fmt, tags_in_subtitles, top_k), encoding="utf-8")
        written.append(path)
    return written
