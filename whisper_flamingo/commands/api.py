"""The Python API for notebooks (and the one the ``transcribe`` command and the web page call)::

    import whisper_flamingo as wf
    model = wf.load_model("tiny.en")                      # a name, or any checkpoint path
    result = model.transcribe("talk.mp4", word_timestamps=True, progress=print)
    result["text"], result["segments"], result["language"], result["modality"]

:func:`load_model` reads a Whisper (a released name, an openai ``.pt``, CTranslate2 / Hugging Face
folders, our Lightning checkpoints) or a Whisper-Flamingo stage-2 checkpoint, optionally a Whisper-AT
head (``at_checkpoint``) and int8 linear layers (``quantize="int8"``, CPU: :mod:`whisper_flamingo.models.quantize`).
:meth:`Model.transcribe` is :func:`whisper_flamingo.decoding.transcribe.transcribe` plus what needs the
preparation pipeline: for a Whisper-Flamingo model and a video, the mouth is cropped on the fly
(mediapipe face mesh landmarks, AV-HuBERT's 96x96 mouth crop) and decoding is audio-visual.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models.quantize import quantize_int8

log = logging.getLogger(__name__)

__all__ = ["Model", "load_model", "mouth_crops", "quantize_int8", "VIDEO_INPUT_SUFFIXES", "QUANTIZE_CHOICES"]

VIDEO_INPUT_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
QUANTIZE_CHOICES = ("none", "int8")


def mouth_crops(path: str | os.PathLike) -> tuple[np.ndarray | None, str]:
    """``(crops (T, 96, 96) uint8 at 25 fps or None, note)``: mediapipe face-mesh landmarks of every frame,
    interpolated over frames without a face, then AV-HuBERT's mouth crop (the preparation pipeline).
    None when no frame holds a face."""
    from whisper_flamingo.preparation.crop import crop_video, load_mean_face
    from whisper_flamingo.preparation.landmarks import detect_video, read_frames

    path = Path(path)
    landmarks = detect_video(path, "mediapipe")
    found = int(landmarks.found.sum())
    if not found:
        return None, f"no face found in {landmarks.found.size} frames"
    crops = crop_video(list(read_frames(path)), landmarks, "avhubert", load_mean_face(), path=path)
    return crops.frames, f"face found in {found} of {landmarks.found.size} frames"


class Model:
    """A loaded model (``.model``: the plain PyTorch module) and its optional Whisper-AT head."""

    def __init__(self, model: torch.nn.Module, name: str, at_head: torch.nn.Module | None = None) -> None:
        self.model, self.name, self.at_head = model, name, at_head

    @property
    def audio_visual(self) -> bool:
        """True for a Whisper-Flamingo model (it has a video branch)."""
        return getattr(self.model, "video_encoder_kind", None) is not None

    def transcribe(self, audio: str | os.PathLike | np.ndarray | torch.Tensor, *,
                   video: str | os.PathLike | np.ndarray | None = None, modality: str = "auto",
                   beam_size: int | None = None, patience: float | None = None, length_penalty: float | None = None,
                   sample_len: int | None = None, at_time_res: float = 10,
                   progress: Callable[[float, float], None] | None = None, **options: Any) -> dict[str, Any]:
        """openai-whisper's ``transcribe()`` result dict for ``audio`` (a path to an audio or video file, or
        16-kHz samples in [-1, 1]), plus ``modality`` (and ``modality_note`` saying why), ``long_form``,
        and with a Whisper-AT head ``audio_tag`` / ``at_time_res``.

        ``beam_size``, ``patience``, ``length_penalty``, ``sample_len`` (most tokens per window, default
        224): openai's decoding options.  ``video``: mouth crops ``(T, H, W)`` or a video file to crop
        (default: ``audio`` itself when it is a video file and the model is audio-visual).
        ``modality``: ``auto`` (``avsr`` when a face is found, else ``asr``), ``asr``, ``avsr`` or ``vsr``.
        Other keywords: those of
        :func:`whisper_flamingo.decoding.transcribe.transcribe` (``language``, ``task``, ``temperature``,
        ``word_timestamps``, ``initial_prompt``, ``noise`` / ``snr``, ...)."""
        from whisper_flamingo.decoding.search import SearchOptions
        from whisper_flamingo.decoding.transcribe import transcribe

        if modality not in ("auto", "asr", "avsr", "vsr"):
            raise ConfigError(f"modality {modality!r}: use auto, asr, avsr or vsr")
        note = "audio-only model" if not self.audio_visual else "asked for asr"
        crops = None
        if self.audio_visual and modality != "asr":
            source = video
            if source is None and isinstance(audio, (str, os.PathLike)) and \
                    Path(audio).suffix.lower() in VIDEO_INPUT_SUFFIXES:
                source = audio
            if isinstance(source, (str, os.PathLike)):
                crops, note = mouth_crops(source)
            elif source is not None:
                crops, note = np.asarray(source), "mouth crops given"
            else:
                note = "no video"
            if crops is None and modality != "auto":
                raise ConfigError(f"modality {modality}: {note}; use --modality asr (or auto)")
        elif modality in ("avsr", "vsr"):
            raise ConfigError(f"modality {modality}: {self.name} is an audio-only model; use a Whisper-Flamingo "
                              "checkpoint, or modality asr")
        search = SearchOptions(beam_size=beam_size or 1, patience=patience, length_penalty=length_penalty,
                               **({} if sample_len is None else {"max_new_tokens": sample_len}))
        result = transcribe(self.model, audio, at_head=self.at_head, at_time_res=at_time_res, options=search,
                            video=crops, modality=modality, progress=progress, **options)
        result["modality_note"] = note
        log.info("%s: modality %s (%s)", audio if isinstance(audio, (str, os.PathLike)) else "audio",
                 result["modality"], note)
        return result


def _timestamp_trained(name_or_path: str, fmt: str | None) -> bool:
    """OpenAI's released weights (a name, or an openai / CTranslate2 / Hugging Face export) predict
    timestamps; our Lightning checkpoints are fine-tuned with ``<|notimestamps|>``."""
    return fmt in (None, "openai", "ct2", "hf")


def load_model(name_or_path: str | os.PathLike, device: str | torch.device | None = None, *,
               at_checkpoint: str | os.PathLike | None = None, quantize: str | None = None,
               long_form: str | None = None) -> Model:
    """Load a Whisper or Whisper-Flamingo model by name or path (see the module doc).

    ``device``: None (or ``"auto"``) = CUDA when available, else CPU.  ``quantize``: None/``"none"`` or ``"int8"``
    (CPU only).  ``long_form``: force ``seek`` or ``window`` (default: ``seek`` for OpenAI's weights,
    ``window`` for fine-tuned checkpoints)."""
    from whisper_flamingo.checkpoints import is_whisper_flamingo_state, load_stage2_checkpoint
    from whisper_flamingo.checkpoints.names import detect_format, load_whisper
    from whisper_flamingo.decoding.runner import pick_device

    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ConfigError(f"quantize={quantize!r}: use {' or '.join(QUANTIZE_CHOICES)}")
    device = pick_device(None if device is None else str(device))
    if quantize == "int8" and device.type != "cpu":
        raise ConfigError("quantize int8 is dynamic CPU quantisation: use device cpu (or no quantisation on GPU)")
    text = os.fspath(name_or_path)
    path = Path(text)
    fmt = None
    if path.exists():
        fmt, obj = detect_format(path)
        state = (obj.get("state_dict") or obj.get("model_state_dict")) if isinstance(obj, dict) else None
        if isinstance(state, dict) and is_whisper_flamingo_state(state):
            model = load_stage2_checkpoint(path, device)
            fmt = "whisper-flamingo"
        else:
            model = load_whisper(path)
        del obj, state
    else:
        model = load_whisper(text)
    model = model.to(device).eval()
    model.model_name = path.stem if path.exists() else text
    model.timestamp_trained = _timestamp_trained(text, fmt) if long_form is None else long_form == "seek"
    head = None
    if at_checkpoint is not None:
        from whisper_flamingo.models.whisper_at import TLTR

        head = TLTR.from_checkpoint(at_checkpoint).to(device).eval()
        check_at_head(head, model, at_checkpoint, text)
    if quantize == "int8":
        flags = (model.model_name, model.timestamp_trained)
        model = quantize_int8(model)
        model.model_name, model.timestamp_trained = flags
    log.info("loaded %s (%s%s) on %s", text, fmt or "released name", ", int8" if quantize == "int8" else "", device)
    return Model(model, model.model_name, head)


def check_at_head(head: torch.nn.Module, model: torch.nn.Module, at_checkpoint: str | os.PathLike,
                  what: str) -> None:
    """Refuse a Whisper-AT head whose feature width is not the Whisper ``model``'s (``what`` names the model)."""
    if head.cfg.rep_dim != model.dims.n_audio_state:
        raise ConfigError(f"{at_checkpoint}: the head reads width-{head.cfg.rep_dim} features but {what} has "
                          f"width {model.dims.n_audio_state}; pick the matching Whisper size")


def transcribe_files(model: Model, paths: Sequence[str | os.PathLike], **options: Any) -> list[dict[str, Any]]:
    """:meth:`Model.transcribe` of each file in turn."""
    return [model.transcribe(p, **options) for p in paths]
