"""Kaldi-compatible log-mel filterbank (AST's front end) in plain PyTorch, and AST's input pipeline.

:func:`kaldi_fbank` equals ``torchaudio.compliance.kaldi.fbank(wav[None], htk_compat=True,
sample_frequency=16000, use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
frame_shift=10)``: 25-ms frames every 10 ms with snipped edges, per-frame DC removal, pre-emphasis 0.97,
a symmetric Hann window, a 512-point power spectrum, 128 triangular bins on the mel scale
1127·ln(1 + f/700) from 20 Hz to Nyquist (the Nyquist FFT bin unused), natural log floored at float32
epsilon.  At 512-point resolution mel bin 3 holds no FFT bin: that column is log(eps) in every frame, as
in torchaudio (Kaldi's own binary refuses these options).

:func:`ast_input` is what AST's data loader and ``inference.py`` do to a waveform: remove its mean,
fbank, cut or zero-pad to ``target_length`` frames, normalise as (x − mean) / (2·std).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from whisper_flamingo.errors import DataError

__all__ = ["kaldi_fbank", "mel_banks", "ast_input", "normalise", "pad_or_cut", "NORM_STATS", "SAMPLE_RATE"]

SAMPLE_RATE = 16000
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
PREEMPHASIS = 0.97
LOW_FREQ = 20.0

#: (mean, std) of the normalised fbank per recipe (AST's ``get_norm_stats.py`` figures)
NORM_STATS: dict[str, tuple[float, float]] = {
    "audioset": (-4.2677393, 4.5689974),
    "esc50": (-6.6268077, 5.358466),
    "speechcommands": (-6.845978, 5.5654526),
}


def _mel(freq: Tensor | float) -> Tensor | float:
    if isinstance(freq, Tensor):
        return 1127.0 * (1.0 + freq / 700.0).log()
    return 1127.0 * math.log(1.0 + freq / 700.0)


def mel_banks(num_bins: int = 128, fft_size: int = 512, sample_rate: int = SAMPLE_RATE, low_freq: float = LOW_FREQ,
              high_freq: float = 0.0) -> Tensor:
    """Kaldi's triangular mel filters, ``[num_bins, fft_size // 2 + 1]`` float32 (last column, Nyquist, zero).

    ``high_freq <= 0`` counts from Nyquist (0 → Nyquist), as in Kaldi.
    """
    nyquist = 0.5 * sample_rate
    if high_freq <= 0.0:
        high_freq += nyquist
    if not 0.0 <= low_freq < high_freq <= nyquist:
        raise ValueError(f"mel banks need 0 <= low_freq < high_freq <= {nyquist}, got {low_freq}, {high_freq}")
    mel_low, mel_high = _mel(low_freq), _mel(high_freq)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32).unsqueeze(1)
    left = mel_low + index * delta
    centre = mel_low + (index + 1.0) * delta
    right = mel_low + (index + 2.0) * delta
    fft_mel = _mel(sample_rate / fft_size * torch.arange(fft_size // 2, dtype=torch.float32)).unsqueeze(0)
    rising = (fft_mel - left) / (centre - left)
    falling = (right - fft_mel) / (right - centre)
    banks = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return torch.nn.functional.pad(banks, (0, 1))


def kaldi_fbank(waveform: Tensor, num_mel_bins: int = 128, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Log-mel filterbank ``[frames, num_mel_bins]`` of a 1-D waveform (AST's Kaldi settings, see module doc).

    ``frames = 1 + (N - 400) // 160`` at 16 kHz.  The waveform's mean is *not* removed here
    (:func:`ast_input` does it first, as AST does).  Float64 input is computed in float64.
    """
    if waveform.dim() == 2 and waveform.shape[0] == 1:
        waveform = waveform[0]
    if waveform.dim() != 1:
        raise ValueError(f"kaldi_fbank takes a 1-D waveform, got shape {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise ValueError(f"kaldi_fbank takes a float waveform, got {waveform.dtype}")
    window = int(sample_rate * FRAME_LENGTH_MS * 0.001)
    shift = int(sample_rate * FRAME_SHIFT_MS * 0.001)
    if waveform.numel() < window:
        raise DataError(f"waveform of {waveform.numel()} samples is shorter than one {FRAME_LENGTH_MS:g}-ms frame "
                        f"({window} samples); pad or drop the clip", reason="too_short")
    fft_size = 1 << (window - 1).bit_length()
    frames = waveform.unfold(0, window, shift)  # snip edges: only whole frames
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)  # the first sample is its own predecessor
    frames = frames - PREEMPHASIS * previous
    frames = frames * torch.hann_window(window, periodic=False, dtype=frames.dtype, device=frames.device)
    frames = torch.nn.functional.pad(frames, (0, fft_size - window))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = mel_banks(num_mel_bins, fft_size, sample_rate).to(power)
    energies = power @ banks.T
    eps = torch.tensor(torch.finfo(torch.float32).eps, dtype=energies.dtype, device=energies.device)
    return torch.maximum(energies, eps).log()


def pad_or_cut(fbank: Tensor, target_length: int) -> Tensor:
    """``[T, F]`` → ``[target_length, F]``: cut at the end, or zero-pad at the end."""
    missing = target_length - fbank.shape[0]
    if missing > 0:
        return torch.nn.functional.pad(fbank, (0, 0, 0, missing))
    return fbank[:target_length]


def normalise(fbank: Tensor, mean: float, std: float) -> Tensor:
    """AST's normalisation (x − mean) / (2·std): data of ≈0 mean and 0.5 std."""
    return (fbank - mean) / (2.0 * std)


def ast_input(waveform: Tensor, target_length: int = 1024, stats: str | tuple[float, float] = "audioset",
              num_mel_bins: int = 128) -> Tensor:
    """A 1-D 16-kHz waveform → AST's normalised input ``[target_length, num_mel_bins]``.

    Mean removed, :func:`kaldi_fbank`, :func:`pad_or_cut`, :func:`normalise` with ``stats``: a recipe
    name of :data:`NORM_STATS` or ``(mean, std)``.  Padded frames are normalised too (as AST does).
    """
    if isinstance(stats, str):
        if stats not in NORM_STATS:
            raise ValueError(f"unknown AST normalisation statistics {stats!r}; use one of {sorted(NORM_STATS)} "
                             "or a (mean, std) pair")
        stats = NORM_STATS[stats]
    waveform = waveform.reshape(-1) if waveform.dim() == 2 and waveform.shape[0] == 1 else waveform
    fbank = kaldi_fbank(waveform - waveform.mean(), num_mel_bins=num_mel_bins)
    return normalise(pad_or_cut(fbank, target_length), *stats)
