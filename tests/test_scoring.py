"""Normalisers and corpus metrics on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from whisper_flamingo.decoding.scoring import aggregate, bleu_chrf, normalize, utterance_counts, wer_cer
from whisper_flamingo.errors import ConfigError

REFS = ["Hello, World! It's 3.5 km.", "", "the cat sat"]
HYPS = ["hello world its 3.5 km", "uh huh", ""]


def test_fairseq_normaliser():
    assert normalize("Hello, World! It's 3.5 km.", "fairseq") == "hello world it's 3.5 km"
    assert normalize(' "Quoted" -- text... ', "fairseq") == "quoted text"
    assert normalize("¿Qué tal?", "fairseq", "es") == "¿qué tal"  # "¿" is glued to the word by 13a
    assert normalize("", "fairseq") == ""


def test_whisper_and_none_normalisers():
    assert normalize("Mr. Smith won't go.", "whisper", "en") == "mister smith will not go"
    assert normalize("¡Hola, señor!", "whisper", "es") == "hola señor"
    assert normalize("  Hello   World ", "none") == "Hello World"
    with pytest.raises(ConfigError):
        normalize("x", "kaldi")


def test_corpus_wer_with_empty_reference_and_empty_hypothesis():
    r = wer_cer(REFS, HYPS, "fairseq", "en")
    # utt 1: it's -> its (1 S of 5); utt 2: 2 insertions against an empty reference; utt 3: 3 deletions
    assert (r["sub"], r["del"], r["ins"], r["hits"]) == (1, 3, 2, 4)
    assert r["ref_words"] == 8 and r["errors"] == 6 and r["utterances"] == 3
    assert r["wer"] == pytest.approx(75.0)
    # characters: one deleted apostrophe, 6 inserted ("uh huh"), 11 deleted ("the cat sat")
    assert r["char_errors"] == 18 and r["ref_chars"] == 23 + 0 + 11
    assert r["cer"] == pytest.approx(100 * 18 / 34)
    assert r["ref_words_raw"] == 5 + 0 + 3


def test_per_utterance_counts_sum_to_corpus():
    per = utterance_counts(REFS, HYPS, "fairseq")
    assert [c["ins"] for c in per] == [0, 2, 0]
    assert [c["del"] for c in per] == [0, 0, 3]
    assert aggregate(per)["wer"] == wer_cer(REFS, HYPS)["wer"]


def test_normaliser_changes_the_score():
    refs, hyps = ["Mr. Smith won't go."], ["mister smith will not go"]
    assert wer_cer(refs, hyps, "whisper", "en")["wer"] == 0.0
    # fairseq: mr->mister (S), won't->will (S), +not (I) over 4 reference words
    assert wer_cer(refs, hyps, "fairseq", "en")["wer"] == pytest.approx(75.0)
    assert wer_cer(["Hello"], ["hello"], "none")["wer"] == 100.0


def test_all_empty_references():
    assert wer_cer([""], [""])["wer"] == 0.0
    assert wer_cer([""], ["a"])["wer"] is None  # undefined: errors but no reference word
    assert wer_cer([], [])["wer"] == 0.0
    with pytest.raises(ValueError):
        wer_cer(["a"], [])


def test_bleu_and_chrf_hand_computed():
    r = bleu_chrf(["the cat sat on a mat"], ["the cat sat on the mat"])
    # precisions 5/6, 3/5, 2/4, 1/3; brevity penalty 1
    expected = 100 * math.exp(sum(math.log(p) for p in (5 / 6, 3 / 5, 2 / 4, 1 / 3)) / 4)
    assert r["bleu"] == pytest.approx(expected, abs=1e-9)
    assert r["bleu_str"].startswith("BLEU = 53.73 83.3/60.0/50.0/33.3")
    assert "tok:13a" in r["bleu_signature"] and "case:mixed" in r["bleu_signature"]
    assert "nc:6" in r["chrf_signature"]
    assert 0 < r["chrf"] < 100
    same = bleu_chrf(["Le chat est sur le tapis."], ["Le chat est sur le tapis."])
    assert same["bleu"] == pytest.approx(100.0) and same["chrf"] == pytest.approx(100.0)
    assert bleu_chrf(["a b c d"], [""])["bleu"] == 0.0
