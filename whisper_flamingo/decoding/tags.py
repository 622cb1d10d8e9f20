"""AudioSet tags of a transcription result: label names by language and :func:`parse_at_label`.

Label names are the package's ``data/audioset_label_names_by_language.json.gz`` (``{lang: [527 names in
class-index order]}``, 85 Whisper language codes; machine-translated as in the original Whisper-AT
package; English equals the ``display_name`` column of the AudioSet CSV).  A language without names
falls back to English with one warning per language.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from whisper_flamingo.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["LABEL_NAMES_FILE", "label_names_by_language", "label_names", "parse_at_label", "tag_segments"]

LABEL_NAMES_FILE = Path(__file__).resolve().parents[1] / "data" / "audioset_label_names_by_language.json.gz"
_warned: set[str] = set()


@lru_cache(maxsize=1)
def label_names_by_language() -> dict[str, list[str]]:
    """``{language code: [527 label names]}`` (read once)."""
    with gzip.open(LABEL_NAMES_FILE, "rt", encoding="utf-8") as f:
        return json.load(f)


def label_names(language: str | None = "en") -> list[str]:
    """The 527 AudioSet names in ``language`` (a Whisper code such as ``en``, ``zh``); English, with one
    warning per language, when there are none in that language."""
    table = label_names_by_language()
    code = (language or "en").lower()
    if code in table:
        return table[code]
    if code not in _warned:
        _warned.add(code)
        log.warning("no AudioSet label names in language %r; using English (languages: %s)", language,
                    ", ".join(sorted(table)))
    return table["en"]


def parse_at_label(result: Mapping[str, Any], language: str = "follow_asr", top_k: int = 5,
                   p_threshold: float = -1, include_class_list: Iterable[int] = range(527)) -> list[dict[str, Any]]:
    """One entry per row of ``result["audio_tag"]``: ``{"time": {"start", "end"}, "audio tags": [(name,
    logit), ...]}``, the tags sorted by descending logit.

    ``language="follow_asr"`` names the labels in ``result["language"]``; ``p_threshold`` is on raw logits
    (-1 is about probability 0.27).  Unlike the original package, the class list and the threshold filter
    the classes *before* the top ``top_k`` are taken, so a row gets ``top_k`` tags whenever that many pass.
    """
    if "audio_tag" not in result or "at_time_res" not in result:
        raise ConfigError("parse_at_label: the result has no 'audio_tag'/'at_time_res'; transcribe with at_head=...")
    tags = torch.as_tensor(result["audio_tag"], dtype=torch.float32)
    res = float(result["at_time_res"])
    lang = result.get("language") if language == "follow_asr" else language
    names = label_names(lang)
    allowed = torch.zeros(tags.shape[-1], dtype=torch.bool)
    classes = [int(c) for c in include_class_list]
    bad = [c for c in classes if not 0 <= c < tags.shape[-1]]
    if bad:
        raise ConfigError(f"parse_at_label: include_class_list has class {bad[0]}, outside 0..{tags.shape[-1] - 1}")
    allowed[classes] = True
    out = []
    for i, row in enumerate(tags):
        keep = allowed & (row > p_threshold)
        idx = keep.nonzero().flatten()
        order = idx[row[idx].argsort(descending=True, stable=True)][: max(0, top_k)]
        out.append({"time": {"start": round(i * res, 6), "end": round((i + 1) * res, 6)},
                    "audio tags": [(names[int(c)], float(row[c])) for c in order]})
    return out


def tag_segments(result: Mapping[str, Any], **kwargs: Any) -> list[dict[str, Any]]:
    """:func:`parse_at_label` as plain JSON: ``[{"start", "end", "tags": [[name, logit], ...]}]``."""
    return [{"start": e["time"]["start"], "end": e["time"]["end"],
             "tags": [[n, round(v, 4)] for n, v in e["audio tags"]]} for e in parse_at_label(result, **kwargs)]
