"""Noise lists, the noise bank and mixing at an SNR."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisper_flamingo.data import noise as noise_mod
from whisper_flamingo.data.noise import NoiseBank, draw_snr, mix_at_snr, read_noise_list
from whisper_flamingo.errors import ConfigError, NoiseError


def write_wav(path: Path, samples, sr: int = 16000, subtype: str = "PCM_16") -> str:
    data = np.asarray(samples)
    if subtype == "PCM_16":
        data = data.astype(np.int16)
    sf.write(str(path), data, sr, subtype=subtype)
    return str(path)


def write_list(path: Path, lines) -> str:
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def speech_like(n: int, seed: int = 0, amp: float = 3000.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    env = 0.5 + 0.5 * np.abs(np.sin(np.arange(n) / 800.0))
    return np.round(rng.standard_normal(n) * amp * env).astype(np.float32)


def measured_snr(clean, mixed) -> float:
    clean = np.asarray(clean, np.float64)
    resid = np.asarray(mixed, np.float64) - clean
    return 10 * np.log10(np.sum(clean**2) / np.sum(resid**2))


def fit_residual(clean, mixed, template) -> float:
    """Correlation of (mixed - clean) with ``template`` (1.0 = the noise added is that excerpt)."""
    resid = np.asarray(mixed, np.float64) - np.asarray(clean, np.float64)
    return float(np.corrcoef(resid, np.asarray(template, np.float64))[0, 1])


# ----------------------------------------------------------------------------- lists and files
def test_read_noise_list(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lst = write_list(tmp_path / "n.tsv", ["/abs/a.wav", "", "  ", "rel/b.wav", "/abs/c.wav\textra"])
    assert read_noise_list(lst) == ["/abs/a.wav", str(tmp_path / "rel" / "b.wav"), "/abs/c.wav"]


def test_missing_list_names_it(tmp_path):
    with pytest.raises(NoiseError, match="nope.tsv"):
        read_noise_list(tmp_path / "nope.tsv")
    with pytest.raises(NoiseError, match="nope.tsv"):
        NoiseBank.from_list(str(tmp_path / "nope.tsv"))
    empty = write_list(tmp_path / "empty.tsv", ["", ""])
    with pytest.raises(NoiseError, match="empty.tsv.*no files"):
        NoiseBank.from_list(empty)


@pytest.mark.parametrize("kind, words", [
    ("silent", "is silent"),
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("garbage", "is unreadable"),
])
def test_bad_noise_file_names_list_line_and_file(tmp_path, kind, words):
    good = write_wav(tmp_path / "good.wav", speech_like(1000))
    bad = tmp_path / f"{kind}.wav"
    if kind == "silent":
        write_wav(bad, np.zeros(1600))
    elif kind == "empty":
        write_wav(bad, np.zeros(0))
    elif kind == "garbage":
        bad.write_bytes(b"this is not audio at all" * 10)
    lst = write_list(tmp_path / "list.tsv", [good, good, "", str(bad), good])
    with pytest.raises(NoiseError) as info:
        NoiseBank.from_list(lst)
    msg = str(info.value)
    assert msg.startswith(f"{lst}:4: noise file {bad} {words}")
    assert "remove it from the list" in msg and "\n" not in msg
    assert info.value.line == 4 and info.value.path == lst


def test_units_channels_and_sample_rate(tmp_path):
    vals = np.array([0, 1, -1, 1000, -32768, 32767, 12345], np.int16)
    a = write_wav(tmp_path / "a.wav", vals)
    stereo = np.stack([np.full(100, 0.5), np.full(100, 0.25)], axis=1)
    b = write_wav(tmp_path / "b.wav", stereo, subtype="FLOAT")
    c = write_wav(tmp_path / "c.wav", vals, sr=8000)
    bank = NoiseBank.from_list(write_list(tmp_path / "l.tsv", [a, b]))
    assert bank.noise(0).dtype == np.float32
    np.testing.assert_array_equal(bank.noise(0), vals.astype(np.float32))
    np.testing.assert_allclose(bank.noise(1), np.full(100, 0.375 * 32768))
    with pytest.raises(NoiseError, match=r"l2.tsv:2: .*sample rate 8000 Hz, expected 16000"):
        NoiseBank.from_list(write_list(tmp_path / "l2.tsv", [a, c]), sample_rate=16000)


def test_repeated_paths_loaded_once(tmp_path, monkeypatch):
    a = write_wav(tmp_path / "a.wav", speech_like(500, 1))
    b = write_wav(tmp_path / "b.wav", speech_like(500, 2))
    calls = []
    real = noise_mod._load_noise
    monkeypatch.setattr(noise_mod, "_load_noise", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    bank = NoiseBank.from_list(write_list(tmp_path / "l.tsv", [a] * 2000 + [b] * 1000))
    assert len(bank) == 3000 and bank.num_files == 2
    assert sorted(calls) == [a, b]


# ----------------------------------------------------------------------------- mixing
@pytest.mark.parametrize("snr", [-10, -5, 0, 5, 10, 20])
def test_snr_accuracy(snr):
    clean = speech_like(32000, 3, amp=300)
    noise = speech_like(50000, 4, amp=800)
    mixed = mix_at_snr(clean, noise, snr)
    assert mixed.dtype == np.float32 and mixed.shape == clean.shape
    assert np.max(np.abs(mixed)) < 32767  # no clipping in this test
    assert np.all(mixed == np.trunc(mixed))
    assert abs(measured_snr(clean, mixed) - snr) < 0.1


def test_tiling_and_offsets():
    clean = speech_like(250, 5)
    noise = np.round(np.random.default_rng(6).standard_normal(100) * 1000).astype(np.float32)
    idx = np.arange(250)
    # offset 0: noise tiled ceil(250/100)=3 times, first 250 samples
    assert fit_residual(clean, mix_at_snr(clean, noise, 0), np.tile(noise, 3)[:250]) > 0.99999
    # a start offset reads the noise cyclically
    assert fit_residual(clean, mix_at_snr(clean, noise, 0, offset=30), noise[(idx + 30) % 100]) > 0.99999
    assert abs(fit_residual(clean, mix_at_snr(clean, noise, 0, offset=30), noise[(idx + 31) % 100])) < 0.5
    # longer noise: first len(clean) samples
    long_noise = np.round(np.random.default_rng(7).standard_normal(1000) * 1000).astype(np.float32)
    assert fit_residual(clean, mix_at_snr(clean, long_noise, 0), long_noise[:250]) > 0.99999


def test_clipping_guard_exact():
    clean = np.array([20000, -20000, 20000, -20000], np.float32)
    # noise equal in shape and level (0 dB): peaks of +-40000, max >= |min| -> scale by 32767/max
    out = mix_at_snr(clean, np.array([1, -1, 1, -1], np.float32), 0)
    np.testing.assert_array_equal(out, [32767, -32767, 32767, -32767])
    # negative peak dominates -> scale by -32768/min
    out = mix_at_snr(clean, np.array([-1, -1, -1, -1], np.float32), 0)
    np.testing.assert_array_equal(out, [0, -32768, 0, -32768])


def test_clipping_guard_keeps_shape():
    t = np.arange(16000)
    clean = np.round(30000 * np.sin(2 * np.pi * 200 * t / 16000)).astype(np.float32)
    noise = speech_like(16000, 8)
    out = mix_at_snr(clean, noise, -5)
    assert np.max(out) <= 32767 and np.min(out) >= -32768
    assert np.max(out) == 32767 or np.min(out) == -32768
    # the whole mixture is scaled, so the measured SNR is unchanged (within truncation)
    scale = np.dot(out, clean) / np.dot(clean, clean)  # noise is ~uncorrelated with the sine
    assert 0 < scale < 1
    assert abs(measured_snr(scale * clean, out) - (-5)) < 0.2


def test_silent_inputs_give_no_nan(caplog):
    noise = speech_like(100, 9)
    out = mix_at_snr(np.zeros(300, np.float32), noise, 0)
    np.testing.assert_array_equal(out, np.zeros(300))
    assert mix_at_snr(np.zeros(0, np.float32), noise, 0).shape == (0,)
    # noise that is silent over the excerpt: clean comes back unchanged
    clean = speech_like(200, 10)
    quiet_start = np.concatenate([np.zeros(500), np.ones(500)]).astype(np.float32)
    out = mix_at_snr(clean, quiet_start, 0)
    np.testing.assert_array_equal(out, clean)
    assert "silent" in caplog.text


def test_draw_snr():
    rng = np.random.default_rng(0)
    assert draw_snr(5, rng) == 5.0 and draw_snr(-2.5, rng) == -2.5
    draws = {draw_snr([-5, 5], rng) for _ in range(2000)}
    assert draws == {float(v) for v in range(-5, 6)}
    assert {draw_snr((0, 1), rng) for _ in range(200)} == {0.0, 1.0}
    assert {draw_snr([-0.5, 1.5], rng) for _ in range(200)} == {0.0, 1.0}
    with pytest.raises(ConfigError, match="SNR"):
        draw_snr([3, 1], rng)
    with pytest.raises(ConfigError, match="SNR"):
        draw_snr("loud", rng)


def _bank(tmp_path, files, lines=None, **kw):
    paths = [write_wav(tmp_path / f"n{i}.wav", f) for i, f in enumerate(files)]
    lines = lines if lines is not None else list(range(len(files)))
    return NoiseBank.from_list(write_list(tmp_path / "l.tsv", [paths[i] for i in lines]), **kw), paths


def test_bank_mix_zero_offset_and_snr_range(tmp_path):
    noise = speech_like(700, 11, amp=500)
    bank, _ = _bank(tmp_path, [noise])
    clean = speech_like(1600, 12)
    out = bank.mix(clean, 0, np.random.default_rng(0), offset="zero")
    assert fit_residual(clean, out, np.tile(noise, 3)[:1600]) > 0.99999
    assert abs(measured_snr(clean, out)) < 0.1
    snrs = {round(measured_snr(clean, bank.mix(clean, [-2, 2], np.random.default_rng(s))), 1)
            for s in range(40)}
    assert snrs == {-2.0, -1.0, 0.0, 1.0, 2.0}


def test_bank_random_offset(tmp_path):
    noise = np.round(np.random.default_rng(13).standard_normal(5000) * 1000).astype(np.float32)
    bank, _ = _bank(tmp_path, [noise])
    clean = speech_like(1000, 14)
    starts = set()
    for seed in range(8):
        out = bank.mix(clean, 0, np.random.default_rng(seed), offset="random")
        again = bank.mix(clean, 0, np.random.default_rng(seed), offset="random")
        np.testing.assert_array_equal(out, again)
        resid = out.astype(np.float64) - clean
        corr = np.correlate(noise.astype(np.float64), resid, mode="valid")  # start in [0, 4000]
        start = int(np.argmax(corr))
        assert fit_residual(clean, out, noise[start:start + 1000]) > 0.99999
        starts.add(start)
    assert len(starts) >= 6
    with pytest.raises(ConfigError, match="offset"):
        bank.mix(clean, 0, np.random.default_rng(0), offset="middle")


def test_bank_picks_list_lines_uniformly(tmp_path):
    t = np.arange(400)
    a = np.round(3000 * np.sin(2 * np.pi * t / 40)).astype(np.float32)
    b = speech_like(400, 15)
    bank, _ = _bank(tmp_path, [a, b], lines=[0, 1, 1, 1])  # b listed three times
    clean = speech_like(400, 16)
    rng = np.random.default_rng(0)
    picks_b = 0
    for _ in range(400):
        resid = bank.mix(clean, 0, rng).astype(np.float64) - clean
        picks_b += abs(np.corrcoef(resid, b)[0, 1]) > abs(np.corrcoef(resid, a)[0, 1])
    assert 0.65 < picks_b / 400 < 0.85


def test_lazy_bank_matches_preloaded_and_pickles(tmp_path):
    files = [speech_like(900, 17), speech_like(1300, 18)]
    eager, _ = _bank(tmp_path, files, preload=True)
    lazy = NoiseBank.from_list(eager.list_path, preload=False)
    auto = NoiseBank.from_list(eager.list_path, preload=None)
    clean = speech_like(2000, 19)
    for seed in range(5):
        outs = [bk.mix(clean, [-5, 5], np.random.default_rng(seed), offset="random")
                for bk in (eager, lazy, auto, pickle.loads(pickle.dumps(eager)))]
        for o in outs[1:]:
            np.testing.assert_array_equal(outs[0], o)


def test_auto_preload_threshold(tmp_path, monkeypatch):
    bank, _ = _bank(tmp_path, [speech_like(1000, 20)])
    assert NoiseBank.from_list(bank.list_path)._waves is not None  # 4 kB: kept in memory
    monkeypatch.setattr(noise_mod, "AUTO_PRELOAD_BYTES", 1000)
    lazy = NoiseBank.from_list(bank.list_path)
    assert lazy._waves is None
    np.testing.assert_array_equal(lazy.noise(0), bank.noise(0))
