"""AST's input kind ``fbank`` for the tagging task: on-the-fly waveform → Kaldi fbank, as AST's data loader.

Per clip (reference §2.1, §2.3): the 16-kHz waveform (in [-1, 1]) has its mean removed, goes through
:func:`~whisper_flamingo.data.fbank.kaldi_fbank` and is cut or zero-padded to ``target_length`` frames
(:meth:`FbankInput.load`, ``[target_length, 128]``, *not* yet normalised).  Mixup is on the waveform
(:meth:`FbankInput.mix`): both clips DC-removed, the partner cut or zero-padded to the first clip's length,
``lam·a + (1 − lam)·b``, DC removed again, then the fbank (the dataset draws ``lam`` from Beta(10, 10) and
mixes the labels with the same ``lam``).  The dataset then masks (SpecAugment: one frequency and one time
mask, widths uniform in ``[0, freqm)`` / ``[0, timem)``) *before* normalisation, and
:meth:`FbankInput.finish` normalises ``(x − norm_mean) / (2·norm_std)`` and, in training with
``noise_aug`` (Speech Commands), adds ``U[0, 1) · u / 10`` noise (``u`` uniform in [0, 1) per clip) and
rolls the frames by a shift uniform in ``{−10, …, 9}``.
"""

from __future__ import annotations

import numpy as np
import torch

from whisper_flamingo.data.fbank import kaldi_fbank, normalise, pad_or_cut
from whisper_flamingo.data.tagging import InputLoader, TagRecord, register_input_kind

__all__ = ["FbankInput"]


class FbankInput(InputLoader):
    """AST's fbank clips (module doc)."""

    def __init__(self, target_length: int = 1024, norm_mean: float = -4.2677393, norm_std: float = 4.5689974,
                 noise_aug: bool = False, num_mel_bins: int = 128) -> None:
        self.target_length, self.num_mel_bins = int(target_length), int(num_mel_bins)
        self.norm_mean, self.norm_std, self.noise_aug = float(norm_mean), float(norm_std), bool(noise_aug)

    @staticmethod
    def waveform(record: TagRecord) -> torch.Tensor:
        """The clip as float32 in [-1, 1] at 16 kHz (other rates resampled by ``load_audio``)."""
        from whisper_flamingo.data.audio import load_audio, to_unit_range

        return torch.from_numpy(to_unit_range(load_audio(record.wav)))

    def fbank(self, wave: torch.Tensor) -> torch.Tensor:
        """DC-removed waveform → ``[target_length, num_mel_bins]`` log-mel (not normalised)."""
        return pad_or_cut(kaldi_fbank(wave - wave.mean(), num_mel_bins=self.num_mel_bins), self.target_length)

    def load(self, record: TagRecord) -> torch.Tensor:
        return self.fbank(self.waveform(record))

    def mix(self, a: TagRecord, b: TagRecord, lam: float) -> torch.Tensor:
        return self.fbank(self.mix_waveforms(self.waveform(a), self.waveform(b), lam))

    @staticmethod
    def mix_waveforms(wa: torch.Tensor, wb: torch.Tensor, lam: float) -> torch.Tensor:
        """AST's waveform mixup: DC removed from both, ``wb`` cut/zero-padded to ``len(wa)``, mixed, DC removed."""
        wa, wb = wa - wa.mean(), wb - wb.mean()
        wb = torch.nn.functional.pad(wb[: wa.shape[0]], (0, max(0, wa.shape[0] - wb.shape[0])))
        mixed = lam * wa + (1.0 - lam) * wb
        return mixed - mixed.mean()

    def finish(self, x: torch.Tensor, train: bool, rng: np.random.Generator | None) -> torch.Tensor:
        x = normalise(x, self.norm_mean, self.norm_std)
        if train and self.noise_aug and rng is not None:
            scale = float(rng.random()) / 10.0
            x = x + torch.from_numpy(rng.random(tuple(x.shape), dtype=np.float32)) * scale
            x = torch.roll(x, int(rng.integers(-10, 10)), dims=0)
        return x


register_input_kind("fbank", lambda cfg: FbankInput(cfg.target_length, cfg.norm_mean, cfg.norm_std, cfg.noise_aug))
