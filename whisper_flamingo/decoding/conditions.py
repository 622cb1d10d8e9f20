"""Decode conditions: one (language, modality, noise list, SNR) each, and the folder it writes to.

The folder is the original's

``<decode_path>/<checkpoint or model name>/<lang>/<split>/<modality>/snr-<N>/visible-<0|1>/beam-<B>/``
``<noise list parent dir, or none when clean>/``

(the model folder: :attr:`~whisper_flamingo.decoding.runner.DecodeSettings.model_label`).  The clean
condition (SNR 1000) mixes no noise: it is decoded once, into ``.../snr-1000/.../none/``, whatever
``--noise-fn`` lists (the original filed a copy under every noise folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from whisper_flamingo.errors import ConfigError

if TYPE_CHECKING:
    from whisper_flamingo.decoding.runner import DecodeSettings

CLEAN_SNR = 1000.0
MODALITIES = ("asr", "avsr", "vsr")


@dataclass(frozen=True)
class Condition:
    """One thing to decode: ``lang_arg`` as given (may end in ``-visible``), modality, SNR, noise list."""

    lang_arg: str
    modality: str
    snr: float
    noise_fn: str | None

    @property
    def lang(self) -> str:
        return self.lang_arg[: -len("-visible")] if self.lang_arg.endswith("-visible") else self.lang_arg

    @property
    def visible(self) -> int:
        return int(self.lang_arg.endswith("-visible"))

    @property
    def clean(self) -> bool:
        return float(self.snr) >= CLEAN_SNR

    @property
    def noise_name(self) -> str:
        return Path(self.noise_fn).parent.name if self.noise_fn and not self.clean else "none"

    @property
    def label(self) -> str:
        return f"{self.lang_arg}/{self.modality}/snr-{snr_text(self.snr)}/{self.noise_name}"


def snr_text(snr: float) -> str:
    """``0``, ``-5``, ``1000``, ``2.5``: an SNR as it appears in folder names."""
    return str(int(snr)) if float(snr).is_integer() else str(snr)


def condition_dir(settings: DecodeSettings, cond: Condition) -> Path:
    """The output folder of ``cond`` (module doc)."""
    return (Path(settings.decode_path) / settings.model_label / cond.lang_arg / settings.split / cond.modality
            / f"snr-{snr_text(cond.snr)}" / f"visible-{cond.visible}" / f"beam-{settings.search.beam_size}"
            / cond.noise_name)


def conditions(settings: DecodeSettings) -> list[Condition]:
    """Every (lang, modality, noise list, SNR) to decode, in a stable order."""
    for m in settings.modalities:
        if m not in MODALITIES:
            raise ConfigError(f"--modalities {m!r}: use asr, avsr or vsr")
    out = []
    for lang in settings.langs:
        for modality in settings.modalities:
            for noise_fn in settings.noise_fns:
                for snr in settings.noise_snrs:
                    if float(snr) < CLEAN_SNR and not noise_fn:
                        raise ConfigError(f"--noise-snr {snr_text(snr)} needs --noise-fn (a noise list .tsv)")
                    cond = Condition(lang, modality, float(snr), None if float(snr) >= CLEAN_SNR else noise_fn)
                    if cond not in out:  # clean: once, whatever the noise lists
                        out.append(cond)
    return out


__all__ = ["CLEAN_SNR", "MODALITIES", "Condition", "snr_text", "condition_dir", "conditions"]
