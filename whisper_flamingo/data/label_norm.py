"""The MuAViC / mTEDx label normalisation of Whisper-Flamingo's ``mtedx_labels`` notebook, for ar, de, el,
es, fr, it, pt, ru and English (used by ``prepare normalize-labels`` and by the ``muavic`` scoring normaliser).

Per line: tokenise with sacrebleu's 13a tokenizer; drop tokens made only of Unicode punctuation; delete
every character that is not a word character, whitespace or apostrophe; unwrap spans quoted with a pair
of apostrophes (``'word'`` -> ``word``; an apostrophe inside a word, ``l'homme``, stays: we read the
notebook's rule as quotes at word edges); lower-case; collapse spaces.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from whisper_flamingo.errors import ConfigError

LANGS = ("en", "ar", "de", "el", "es", "fr", "it", "pt", "ru")

_NON_WORD = re.compile(r"[^\w\s']")
_QUOTED = re.compile(r"(?<!\w)'([^']*?)'(?!\w)")


@lru_cache(maxsize=1)
def _tokenizer():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


def _is_punct(token: str) -> bool:
    return all(unicodedata.category(ch).startswith("P") for ch in token)


def normalize_line(text: str, lang: str) -> str:
    """One label normalised (``lang`` is checked; the rules are the same for every language)."""
    if lang not in LANGS:
        raise ConfigError(f"--lang {lang}: normalisation is defined for {', '.join(LANGS)}")
    tokens = [t for t in _tokenizer()(text.strip()).split() if not _is_punct(t)]
    out = _NON_WORD.sub("", " ".join(tokens))
    prev = None
    while prev != out:  # nested or adjacent quotes
        prev, out = out, _QUOTED.sub(r"\1", out)
    return " ".join(out.lower().split())
