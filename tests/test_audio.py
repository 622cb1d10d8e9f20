"""Audio loading (error reasons, channels, resampling) and Whisper's log-mel."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_flamingo.data.audio import (
    N_SAMPLES_30S,
    load_audio,
    log_mel,
    pad_or_trim,
    probe_audio,
    resampled_length,
    sample_count_matches,
    to_unit_range,
)
from whisper_flamingo.errors import DataError


def _int16(n, seed=0):
    return (np.random.default_rng(seed).standard_normal(n) * 3000).astype(np.int16)


def _raises(path, reason, **kw):
    with pytest.raises(DataError) as exc:
        load_audio(path, **kw)
    assert exc.value.reason == reason
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)
    return exc.value


def test_int16_units_exact(tmp_path):
    x = _int16(4000)
    p = tmp_path / "a.wav"
    sf.write(p, x, 16000, subtype="PCM_16")
    y = load_audio(p, expected_samples=4000)
    assert y.dtype == np.float32 and y.shape == (4000,)
    np.testing.assert_array_equal(y, x.astype(np.float32))
    np.testing.assert_allclose(to_unit_range(y), x / 32768.0, rtol=0, atol=1e-7)


def test_missing_and_empty(tmp_path):
    _raises(tmp_path / "nope.wav", "missing_file")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    _raises(empty, "empty_file")
    zero = tmp_path / "zero.wav"
    sf.write(zero, np.zeros(0, np.int16), 16000, subtype="PCM_16")
    _raises(zero, "empty_file")


def test_truncated_wav(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, _int16(16000), 16000, subtype="PCM_16")
    data = p.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) - 5000])
    err = _raises(cut, "truncated")
    assert "16000" in str(err)  # the declared length
    with pytest.raises(DataError) as exc:
        probe_audio(cut)  # found from the header alone
    assert exc.value.reason == "truncated"


def test_truncated_flac_found_when_decoding(tmp_path):
    p = tmp_path / "a.flac"
    sf.write(p, _int16(16000), 16000)
    data = p.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    _raises(cut, "truncated")


def test_corrupt_header(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, _int16(1600), 16000, subtype="PCM_16")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk" + p.read_bytes()[16:40])
    _raises(bad, "unreadable")
    text = tmp_path / "text.wav"
    text.write_text("this is not audio at all\n" * 10)
    _raises(text, "unreadable")


def test_nan_samples(tmp_path):
    x = np.zeros(1600, np.float32)
    x[100] = np.nan
    p = tmp_path / "nan.wav"
    sf.write(p, x, 16000, subtype="FLOAT")
    _raises(p, "nan_samples")


def test_sample_count_mismatch(tmp_path):
    p = tmp_path / "a.wav"
    sf.write(p, _int16(16000), 16000, subtype="PCM_16")
    err = _raises(p, "sample_count_mismatch", expected_samples=16161)  # 161 samples off: beyond one 10 ms frame
    assert "16000 samples at 16000 Hz" in str(err) and "16161" in str(err)
    assert "native sample count or a 16 kHz count within 160 samples" in str(err)
    for n in (16000, 16160, 15840):  # exact, and within one mel frame either way
        assert load_audio(p, expected_samples=n).shape == (16000,)


def test_sample_count_native_or_16k_for_resampled_files(tmp_path):
    """A 44.1 kHz file: the manifest may give its native count or a 16 kHz count within 10 ms of its duration."""
    p = tmp_path / "a44.wav"
    sf.write(p, _int16(44100), 44100, subtype="PCM_16")  # 1 s
    header = probe_audio(p)
    for n in (44100, 16000, 16000 + 160, 16000 - 160):
        assert sample_count_matches(header, n), n
    for n in (44101, 16161, 15839, 32000):
        assert not sample_count_matches(header, n), n
    err = _raises(p, "sample_count_mismatch", expected_samples=16200)
    assert "44100 samples at 44100 Hz (1.000 s, 16000 at 16 kHz)" in str(err)


def test_stereo_to_mono_warns(tmp_path, caplog):
    left, right = _int16(800, 1), _int16(800, 2)
    p = tmp_path / "stereo.wav"
    sf.write(p, np.stack([left, right], 1), 16000, subtype="PCM_16")
    with caplog.at_level(logging.WARNING, logger="whisper_flamingo.data.audio"):
        y = load_audio(p)
    assert y.shape == (800,)
    np.testing.assert_allclose(y, (left.astype(np.float64) + right) / 2, atol=1e-3)
    assert any("mono" in r.getMessage() and str(p) in r.getMessage() for r in caplog.records)


def test_resample_44k_keeps_frequency(tmp_path, caplog):
    sr, n, f = 44100, 44100, 440.0
    x = (np.sin(2 * np.pi * f * np.arange(n) / sr) * 10000).astype(np.int16)
    p = tmp_path / "a44.wav"
    sf.write(p, x, sr, subtype="PCM_16")
    expected = resampled_length(n, sr)
    assert expected == 16000
    with caplog.at_level(logging.WARNING, logger="whisper_flamingo.data.audio"):
        y = load_audio(p, expected_samples=16000)
    assert y.shape == (16000,)
    assert any("resampled" in r.getMessage() for r in caplog.records)
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spec) * 16000 / len(y)
    assert abs(peak_hz - f) <= 1.0
    assert 0.9 < np.sqrt(np.mean(y[1000:-1000] ** 2)) / (10000 / np.sqrt(2)) < 1.1
    # an odd length: ceil(n * 160 / 441)
    assert resampled_length(44101, 44100) == 16001


def _reference_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    """Whisper's recipe written out in numpy (centred reflect-padded STFT, drop the last frame)."""
    from whisper.audio import mel_filters

    n_fft, hop = 400, 160
    padded = np.pad(audio.astype(np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(padded) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[i * hop: i * hop + n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    power = power[:-1].T  # drop the last frame like Whisper
    mel = mel_filters("cpu", n_mels).numpy().astype(np.float64) @ power
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return (log + 4.0) / 4.0


@pytest.mark.parametrize("n,n_mels", [(16000, 80), (12345, 80), (8000, 128)])
def test_log_mel_matches_whisper(n, n_mels):
    import whisper

    audio = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    mel = log_mel(audio, n_mels)
    assert mel.shape == (n_mels, n // 160) and mel.dtype == torch.float32
    ref = whisper.log_mel_spectrogram(torch.from_numpy(audio), n_mels=n_mels)
    assert ref.shape[-1] == n // 160
    torch.testing.assert_close(mel, ref)
    np.testing.assert_allclose(mel.numpy(), _reference_log_mel(audio, n_mels), atol=2e-4)


def test_log_mel_very_short_audio():
    assert log_mel(np.zeros(100, np.float32)).shape == (80, 0)
    assert log_mel(np.full(250, 0.01, np.float32)).shape == (80, 1)
    assert torch.isfinite(log_mel(np.full(250, 0.01, np.float32))).all()


def test_pad_or_trim():
    x = np.arange(10, dtype=np.float32)
    assert pad_or_trim(x, 4).tolist() == [0, 1, 2, 3]
    y = pad_or_trim(x, 12)
    assert y.shape == (12,) and y[10:].tolist() == [0, 0]
    assert pad_or_trim(np.ones(5, np.float32)).shape == (N_SAMPLES_30S,)


def test_real_flac(shared_data):
    y = load_audio(shared_data / "jfk.flac")
    assert y.dtype == np.float32 and 10.5 * 16000 < len(y) < 11.5 * 16000
    assert np.abs(y).max() <= 32768 and np.abs(y).max() > 1000
    mel = log_mel(to_unit_range(y))
    assert mel.shape == (80, len(y) // 160)
