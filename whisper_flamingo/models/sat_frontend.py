"""SAT's front end in plain torch: 64-bin HTK mel power spectrogram and dB conversion.

The same computation as the torchaudio ``MelSpectrogram`` + ``AmplitudeToDB`` pair the original
Streaming Audio Transformer keeps inside its model, with the same buffer names (``spectrogram.window``,
``mel_scale.fb``) so that released state dicts load strictly.  Defaults: 16 kHz, FFT 512, window 512
(periodic Hann), hop 160, centred frames with reflect padding, power 2, HTK mel 0-8 kHz without area
normalisation; dB with amin 1e-10, reference 1 and a ``top_db`` floor taken over the whole batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def htk_mel_filterbank(n_freqs: int = 257, f_min: float = 0.0, f_max: float = 8000.0, n_mels: int = 64,
                       sample_rate: int = 16000) -> Tensor:
    """Triangular HTK-mel filters ``[n_freqs, n_mels]`` (peak 1, no area normalisation), float32."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_min, m_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    m_pts = torch.linspace(m_min, m_max, n_mels + 2)
    f_pts = 700.0 * (10 ** (m_pts / 2595.0) - 1.0)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class Spectrogram(nn.Module):
    """Power spectrogram ``[..., n_fft // 2 + 1, 1 + N // hop]`` of waveforms ``[..., N]``."""

    def __init__(self, n_fft: int = 512, hop_length: int = 160, power: float = 2.0) -> None:
        super().__init__()
        self.n_fft, self.hop_length, self.power = n_fft, hop_length, power
        self.register_buffer("window", torch.hann_window(n_fft))  # periodic

    def forward(self, waveform: Tensor) -> Tensor:
        shape = waveform.shape
        spec = torch.stft(waveform.reshape(-1, shape[-1]), self.n_fft, self.hop_length, self.n_fft, self.window,
                          center=True, pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        spec = spec.abs() if self.power == 1.0 else spec.abs().pow(self.power)
        return spec.reshape(shape[:-1] + spec.shape[-2:])


class MelScale(nn.Module):
    """Linear-frequency power ``[..., n_freqs, T]`` to mel power ``[..., n_mels, T]``."""

    def __init__(self, n_mels: int = 64, sample_rate: int = 16000, f_min: float = 0.0, f_max: float = 8000.0,
                 n_freqs: int = 257) -> None:
        super().__init__()
        self.register_buffer("fb", htk_mel_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate))

    def forward(self, spec: Tensor) -> Tensor:
        return torch.matmul(spec.transpose(-1, -2), self.fb).transpose(-1, -2)


class MelSpectrogram(nn.Module):
    """Waveforms ``[B, N]`` to mel power ``[B, n_mels, 1 + N // hop]``."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 512, hop_length: int = 160, n_mels: int = 64,
                 f_min: float = 0.0, f_max: float = 8000.0) -> None:
        super().__init__()
        self.spectrogram = Spectrogram(n_fft, hop_length)
        self.mel_scale = MelScale(n_mels, sample_rate, f_min, f_max, n_fft // 2 + 1)

    def forward(self, waveform: Tensor) -> Tensor:
        return self.mel_scale(self.spectrogram(waveform))


class AmplitudeToDB(nn.Module):
    """Power to dB: ``10·log10(max(x, amin))``, floored at (max − ``top_db``).

    As torchaudio does for a ``[B, F, T]`` input, the maximum is taken over the **whole batch**, so the
    floor of one clip depends on the others in its batch (a 2-D ``[F, T]`` input is one item).
    """

    def __init__(self, top_db: float | None = 120.0, amin: float = 1e-10) -> None:
        super().__init__()
        self.top_db, self.amin = top_db, amin

    def forward(self, power: Tensor) -> Tensor:
        db = 10.0 * torch.log10(torch.clamp(power, min=self.amin))
        if self.top_db is None:
            return db
        if db.dim() > 3:  # [..., C, F, T]: one floor per leading item (as torchaudio)
            flat = db.reshape(-1, *db.shape[-3:])
            floor = flat.amax(dim=(-3, -2, -1)) - self.top_db
            return torch.max(flat, floor.view(-1, 1, 1, 1)).reshape(db.shape)
        return torch.max(db, db.amax() - self.top_db)


def sat_front_end(sample_rate: int = 16000, n_mels: int = 64) -> nn.Sequential:
    """``front_end`` of the original model: ``[B, N]`` waveforms to ``[B, n_mels, frames]`` dB."""
    return nn.Sequential(MelSpectrogram(sample_rate=sample_rate, n_mels=n_mels,
                                        f_max=sample_rate / 2), AmplitudeToDB(top_db=120.0))


__all__ = ["AmplitudeToDB", "MelScale", "MelSpectrogram", "Spectrogram", "htk_mel_filterbank", "sat_front_end"]
