"""Text normalisers and corpus metrics (WER/CER with jiwer, BLEU/chrF with sacrebleu).

Normalisers (``--normalizer``):

* ``fairseq`` (the original default, fairseq's ``WerScorer``): sacrebleu ``13a`` tokenisation, tokens
  made only of Unicode punctuation dropped, lowercased;
* ``whisper``: openai-whisper's ``EnglishTextNormalizer`` for English, ``BasicTextNormalizer`` otherwise;
* ``muavic`` (the mWhisper-Flamingo tables): ``fairseq`` for English, the mTEDx label rules of MuAViC's
  non-English references for the other languages (:func:`whisper_flamingo.data.label_norm.normalize_line`:
  the ``fairseq`` steps, then every character that is not a word character, space or apostrophe deleted and
  apostrophe quotes unwrapped), so a hypothesis is normalised exactly as its reference was;
* ``none``: text as is (whitespace collapsed).

WER is corpus level: (S + D + I) / reference words, summed over utterances, ×100.  Unlike the original
``whisper`` scorer (which divided by the *un-normalised* reference word count) the denominator is the
normalised reference word count; ``ref_words_raw`` is reported so the original number can be rebuilt.
Empty references are allowed: their hypothesis words count as insertions.  When the whole corpus has no
reference word the WER is 0.0 if there is no error and ``None`` (undefined) otherwise.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import jiwer
import sacrebleu

from whisper_flamingo.errors import ConfigError

log = logging.getLogger(__name__)

NORMALIZERS = ("fairseq", "whisper", "muavic", "none")
COUNT_KEYS = ("sub", "del", "ins", "hits", "ref_words", "hyp_words", "char_errors", "ref_chars")


@lru_cache(maxsize=1)
def _tok13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()


@lru_cache(maxsize=1)
def _english():
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


@lru_cache(maxsize=1)
def _basic():
    from whisper.normalizers import BasicTextNormalizer

    return BasicTextNormalizer()


def _is_punctuation(token: str) -> bool:
    return all(unicodedata.category(c)[0] == "P" for c in token)


def normalize(text: str, normalizer: str, lang: str = "en") -> str:
    """Normalise one string; the result's words are separated by single spaces."""
    if normalizer == "fairseq":
        tokens = _tok13a()(text.strip()).split()
        return " ".join(t for t in tokens if not _is_punctuation(t)).lower()
    if normalizer == "whisper":
        norm = _english() if lang == "en" else _basic()
        return " ".join(norm(text).split())
    if normalizer == "muavic":
        from whisper_flamingo.data.label_norm import LANGS, normalize_line

        if lang == "en" or lang not in LANGS:
            return normalize(text, "fairseq")
        return normalize_line(text, lang)
    if normalizer == "none":
        return " ".join(text.split())
    raise ConfigError(f"normalizer {normalizer!r}: use one of {', '.join(NORMALIZERS)}")


def utterance_counts(refs: Sequence[str], hyps: Sequence[str], normalizer: str = "fairseq",
                     lang: str = "en") -> list[dict[str, int]]:
    """Per-utterance error counts (keys :data:`COUNT_KEYS`) after normalisation."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        return []
    nrefs = [normalize(r, normalizer, lang) for r in refs]
    nhyps = [normalize(h, normalizer, lang) for h in hyps]
    words = jiwer.process_words(nrefs, nhyps)
    chars = jiwer.process_characters(nrefs, nhyps)
    out = []
    for i, (r, h) in enumerate(zip(nrefs, nhyps)):
        c = dict.fromkeys(COUNT_KEYS, 0)
        for chunk in words.alignments[i]:
            n_ref = chunk.ref_end_idx - chunk.ref_start_idx
            if chunk.type == "equal":
                c["hits"] += n_ref
            elif chunk.type == "substitute":
                c["sub"] += n_ref
            elif chunk.type == "delete":
                c["del"] += n_ref
            elif chunk.type == "insert":
                c["ins"] += chunk.hyp_end_idx - chunk.hyp_start_idx
        c["ref_words"] = len(r.split())
        c["hyp_words"] = len(h.split())
        for chunk in chars.alignments[i]:
            if chunk.type in ("substitute", "delete"):
                c["char_errors"] += chunk.ref_end_idx - chunk.ref_start_idx
            elif chunk.type == "insert":
                c["char_errors"] += chunk.hyp_end_idx - chunk.hyp_start_idx
        c["ref_chars"] = len(r)
        out.append(c)
    return out


def _rate(errors: int, total: int) -> float | None:
    if total == 0:
        return 0.0 if errors == 0 else None
    return 100.0 * errors / total


def aggregate(counts: Sequence[dict[str, int]]) -> dict:
    """Corpus WER/CER (×100) from per-utterance counts (:func:`utterance_counts`)."""
    tot = {k: sum(int(c.get(k, 0)) for c in counts) for k in COUNT_KEYS}
    errors = tot["sub"] + tot["del"] + tot["ins"]
    return {"wer": _rate(errors, tot["ref_words"]), "cer": _rate(tot["char_errors"], tot["ref_chars"]),
            "errors": errors, "utterances": len(counts), **tot}


def wer_cer(refs: Sequence[str], hyps: Sequence[str], normalizer: str = "fairseq", lang: str = "en") -> dict:
    """Corpus WER and CER (×100) with S/D/I/hit counts, word and character totals.

    Keys: ``wer cer errors utterances sub del ins hits ref_words hyp_words char_errors ref_chars
    ref_words_raw normalizer``.
    """
    result = aggregate(utterance_counts(refs, hyps, normalizer, lang))
    result["ref_words_raw"] = sum(len(r.split()) for r in refs)
    result["normalizer"] = normalizer
    return result


def bleu_chrf(refs: Sequence[str], hyps: Sequence[str], tokenize: str | None = None) -> dict:
    """sacrebleu corpus BLEU (defaults: 13a, case-sensitive) and chrF2, each with its signature."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    bleu = sacrebleu.BLEU(tokenize=tokenize)
    chrf = sacrebleu.CHRF()
    hyps, refs = list(hyps), list(refs)
    b = bleu.corpus_score(hyps, [refs])
    c = chrf.corpus_score(hyps, [refs])
    return {"bleu": float(b.score), "bleu_str": str(b), "bleu_signature": str(bleu.get_signature()),
            "chrf": float(c.score), "chrf_signature": str(chrf.get_signature()), "utterances": len(hyps)}
