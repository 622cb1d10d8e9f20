"""Mouth-ROI video: reading, the AV-HuBERT transforms, collation, and precomputed feature files.

Reading (:func:`read_video`): every frame of the first video stream is decoded with PyAV and converted
to 8-bit grayscale (FFmpeg's ``gray`` conversion, i.e. the luma plane in full range; on H.264 files
this equals OpenCV's ``BGR2GRAY`` of the decoded BGR frame, which the original used, within 1 grey
level).  No frame-rate resampling: MuAViC / LRS3 lip videos are 25 fps.

Transforms (:func:`transform_video`), as AV-HuBERT / Whisper-Flamingo: scale to ``[0, 1]``; training:
a random 88x88 crop (offsets uniform in ``[0, W-88]`` and ``[0, H-88]``) and a horizontal flip of the
whole clip with probability 0.5, both drawn from a caller-supplied ``numpy.random.Generator`` (the
dataset seeds it per (seed, epoch, index)); evaluation: the centre 88x88 crop at offset
``(W-88) // 2`` (the original wrote ``int(round(W-88) / 2.)``: rounding an integer, then truncating
the half, i.e. a floor; 4 px for 96x96 input); then ``(x - 0.421) / 0.165`` (computed in float64,
returned as float32).  Video is trimmed to the audio duration: at most ``round(n_samples / 16000 *
25)`` frames are kept; shorter video is not padded (the collater pads).

Errors are :class:`~whisper_flamingo.errors.DataError` naming the file, with ``reason``
``missing_file``, ``empty_file`` (0 bytes, or a video container without frames), ``unreadable``
(not a video file, or nothing decodable), ``truncated`` (decoding failed part-way, or fewer frames
decoded than the container declares), ``too_small`` (frames smaller than the 88x88 crop) and
``video_audio_mismatch`` (the video is more than 1 s shorter than the audio).

Precomputed features (``whisper-flamingo extract-video-features``, config key ``video_feature_dir``):
one float16 ``.npy`` file per utterance, ``<dir>/<utterance id>.npy`` with shape ``(T, D)`` (the video
encoder output before Whisper-Flamingo's projection).  Ids may contain ``/`` (MuAViC ids are
``<video id>/<segment>``), which become sub-folders.  Read them with :func:`load_video_features`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path, PurePath

import numpy as np
import torch

from whisper_flamingo.errors import DataError

logger = logging.getLogger(__name__)

VIDEO_FPS = 25
AUDIO_RATE = 16000
CROP_SIZE = 88
MEAN = 0.421
STD = 0.165
#: a video may be at most this many seconds shorter than its audio
MAX_SHORTFALL_S = 1.0

#: FFmpeg demuxer names of video containers (a file read as anything else is "not a video")
_VIDEO_FORMATS = {"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi", "flv", "mpegts",
                  "h264", "hevc", "mpeg", "ogg", "nut", "rawvideo", "image2", "gif"}
_SKIP = "re-extract the mouth-ROI video or set on_bad_sample: skip"


# ---------------------------------------------------------------------------------------------- paths


def video_path_for(audio_path: str | os.PathLike) -> str:
    """The lip video belonging to an audio file, by MuAViC's layout.

    Every path *component* equal to ``audio`` becomes ``video`` and a ``.wav`` suffix becomes
    ``.mp4``: ``muavic/en/audio/test/x/00001.wav`` -> ``muavic/en/video/test/x/00001.mp4``.  The
    original replaced every *substring* ``audio`` (so ``/data/audio_sets/...`` became
    ``/data/video_sets/...``); here other components are left alone.  Prefer a manifest's explicit
    video column (:attr:`whisper_flamingo.data.manifest.Record.video_path`) when there is one.
    """
    p = PurePath(os.fspath(audio_path))
    parts = ["video" if part == "audio" else part for part in p.parts]
    out = PurePath(*parts) if parts else p
    if out.suffix.lower() == ".wav":
        out = out.with_suffix(".mp4")
    return str(out)


def resolve_video_path(video_path: str | os.PathLike | None, audio_path: str | os.PathLike | None = None) -> str:
    """The manifest's video path when that file exists; else the path derived from the audio path
    (:func:`video_path_for`, the original's rule) when that one exists; else the manifest's path
    (so that the error names it)."""
    if video_path and os.path.exists(video_path):
        return os.fspath(video_path)
    if audio_path is not None:
        derived = video_path_for(audio_path)
        if os.path.exists(derived) or not video_path:
            return derived
    return os.fspath(video_path)


def frames_for_audio(n_samples: int) -> int:
    """Video frames covering ``n_samples`` of 16 kHz audio: ``round(n_samples / 16000 * 25)``."""
    return int(round(int(n_samples) / AUDIO_RATE * VIDEO_FPS))


# ---------------------------------------------------------------------------------------------- reading


def read_video(path: str | os.PathLike, max_frames: int | None = None) -> np.ndarray:
    """Decode a video to grayscale ``(T, H, W)`` uint8 (at most ``max_frames`` frames).

    Raises :class:`DataError` (``missing_file``, ``empty_file``, ``unreadable``) naming the file.
    """
    import av

    p = os.fspath(path)
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    try:
        size = os.path.getsize(p)
    except FileNotFoundError:
        raise DataError("video file does not exist; fix the manifest's video path or set on_bad_sample: skip",
                        reason="missing_file", path=p) from None
    except OSError as err:
        raise DataError(f"video file cannot be accessed ({err.strerror}); check permissions",
                        reason="unreadable", path=p) from None
    if size == 0:
        raise DataError(f"video file is empty (0 bytes); {_SKIP}", reason="empty_file", path=p)
    frames: list[np.ndarray] = []
    declared = 0
    try:
        with av.open(p, mode="r") as container:
            is_video_format = any(name in _VIDEO_FORMATS for name in container.format.name.split(","))
            if not container.streams.video:
                if is_video_format:  # e.g. an mp4 written with zero frames: the muxer drops the stream
                    raise DataError(f"video container holds no frames; {_SKIP}", reason="empty_file", path=p)
                raise DataError(f"not a video file (no video stream; read as '{container.format.name}'); "
                                f"{_SKIP}", reason="unreadable", path=p)
            stream = container.streams.video[0]
            declared = int(stream.frames or 0)
            for frame in container.decode(stream):
                frames.append(frame.to_ndarray(format="gray"))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except DataError:
        raise
    except (av.FFmpegError, ValueError, OSError) as err:
        msg = str(err).replace("\n", " ").replace(p, "").strip(" :'")
        if frames:  # decoding failed part-way: a cut or damaged file
            raise DataError(f"video decoding failed after {len(frames)} frames ({msg}); the file is probably "
                            f"truncated or corrupt: {_SKIP}", reason="truncated", path=p) from None
        raise DataError(f"video is not a readable video container ({msg}); the file is probably corrupt: "
                        f"{_SKIP}", reason="unreadable", path=p) from None
    if not frames:
        raise DataError(f"video has no frames; {_SKIP}", reason="empty_file", path=p)
    wanted = declared if max_frames is None else min(declared, max_frames)
    if len(frames) < wanted:
        raise DataError(f"video is truncated: the container declares {declared} frames, {len(frames)} "
                        f"could be decoded; {_SKIP}", reason="truncated", path=p)
    return np.stack(frames)


def check_video_length(n_frames: int, n_samples: int, path: str | os.PathLike | None = None) -> None:
    """Raise ``video_audio_mismatch`` when the video is more than 1 s shorter than the audio."""
    audio_s, video_s = int(n_samples) / AUDIO_RATE, int(n_frames) / VIDEO_FPS
    if audio_s - video_s > MAX_SHORTFALL_S:
        raise DataError(f"video has {n_frames} frames ({video_s:.2f} s) but the audio lasts {audio_s:.2f} s "
                        f"(more than {MAX_SHORTFALL_S:g} s longer); {_SKIP}",
                        reason="video_audio_mismatch", path=None if path is None else os.fspath(path))


# ---------------------------------------------------------------------------------------------- transforms


def crop_offsets(height: int, width: int, train: bool, rng: np.random.Generator | None = None,
                 size: int = CROP_SIZE) -> tuple[int, int]:
    """``(top, left)`` of the crop: uniform in ``[0, H-size] x [0, W-size]`` (train) or centred."""
    if train:
        if rng is None:
            raise ValueError("training transforms need a numpy Generator (rng)")
        return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))
    return (height - size) // 2, (width - size) // 2


def transform_video(frames: np.ndarray, train: bool = False, rng: np.random.Generator | None = None,
                    path: str | os.PathLike | None = None) -> torch.Tensor:
    """uint8 ``(T, H, W)`` -> normalised float32 ``(T, 88, 88)`` (see module doc).

    Training draws the crop offsets first, then the flip (``rng.random() < 0.5``).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), got shape {frames.shape}")
    t, h, w = frames.shape
    if h < CROP_SIZE or w < CROP_SIZE:
        raise DataError(f"video frames are {w}x{h}, smaller than the {CROP_SIZE}x{CROP_SIZE} crop; "
                        f"{_SKIP}", reason="too_small", path=None if path is None else os.fspath(path))
    top, left = crop_offsets(h, w, train, rng)
    clip = frames[:, top: top + CROP_SIZE, left: left + CROP_SIZE]
    if train and float(rng.random()) < 0.5:
        clip = clip[:, :, ::-1]
    x = (clip.astype(np.float64) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def load_video(path: str | os.PathLike, n_samples: int | None = None, train: bool = False,
               rng: np.random.Generator | None = None) -> torch.Tensor:
    """Read, trim to the audio duration and transform a lip video -> float32 ``(T, 88, 88)``.

    ``n_samples`` (16 kHz audio length) trims the video to ``round(n_samples / 640)`` frames and
    checks it is not more than 1 s shorter than the audio; decoding stops once enough frames are read.
    """
    keep = None if n_samples is None else max(1, frames_for_audio(n_samples))  # >= 1 frame (audio < 20 ms)
    frames = read_video(path, max_frames=keep)
    if n_samples is not None:
        check_video_length(frames.shape[0], n_samples, path)
    return transform_video(frames, train, rng, path)


# ---------------------------------------------------------------------------------------------- batches


def collate_video(clips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad clips ``(T_i, 88, 88)`` in time.

    Returns ``video`` ``(B, 1, T_max, 88, 88)`` float32 (zero = mean grey after normalisation) and
    ``padding_mask`` ``(B, T_max)`` bool, True at padded frames (the fairseq convention).
    """
    if not clips:
        return torch.zeros(0, 1, 0, CROP_SIZE, CROP_SIZE), torch.zeros(0, 0, dtype=torch.bool)
    h, w = clips[0].shape[-2:]
    t_max = max(int(c.shape[0]) for c in clips)
    video = torch.zeros(len(clips), 1, t_max, h, w, dtype=torch.float32)
    mask = torch.ones(len(clips), t_max, dtype=torch.bool)
    for i, c in enumerate(clips):
        video[i, 0, : c.shape[0]] = torch.as_tensor(c, dtype=torch.float32)
        mask[i, : c.shape[0]] = False
    return video, mask


def collate_video_features(feats: Sequence[torch.Tensor | np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad precomputed features ``(T_i, D)`` -> ``(B, T_max, D)`` float32 and the padding mask."""
    if not feats:
        return torch.zeros(0, 0, 0), torch.zeros(0, 0, dtype=torch.bool)
    tensors = [torch.as_tensor(np.asarray(f) if not torch.is_tensor(f) else f) for f in feats]
    dim = int(tensors[0].shape[-1])
    t_max = max(int(f.shape[0]) for f in tensors)
    out = torch.zeros(len(tensors), t_max, dim, dtype=torch.float32)
    mask = torch.ones(len(tensors), t_max, dtype=torch.bool)
    for i, f in enumerate(tensors):
        out[i, : f.shape[0]] = f.float()
        mask[i, : f.shape[0]] = False
    return out, mask


# ---------------------------------------------------------------------------------------------- features


def video_feature_path(feature_dir: str | os.PathLike, utt_id: str) -> Path:
    """``<feature_dir>/<utt_id>.npy``; an id that would leave ``feature_dir`` is a ValueError."""
    parts = PurePath(utt_id).parts
    if not parts or PurePath(utt_id).is_absolute() or any(p in ("..", ".") for p in parts):
        raise ValueError(f"utterance id {utt_id!r} cannot name a feature file (absolute or '..' parts)")
    return Path(feature_dir).joinpath(*parts[:-1], parts[-1] + ".npy")


def save_video_features(feature_dir: str | os.PathLike, utt_id: str, features: torch.Tensor | np.ndarray) -> Path:
    """Write ``(T, D)`` features as float16 ``.npy`` atomically (temporary file + rename)."""
    path = video_feature_path(feature_dir, utt_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = features.detach().float().cpu().numpy() if torch.is_tensor(features) else np.asarray(features)
    if arr.ndim != 2:
        raise ValueError(f"features must be (T, D), got shape {arr.shape}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr.astype(np.float16))
    os.replace(tmp, path)
    return path


def load_video_features(feature_dir: str | os.PathLike, utt_id: str,
                        n_samples: int | None = None) -> torch.Tensor:
    """Read precomputed features of one utterance -> float32 ``(T, D)``.

    ``n_samples`` trims to the audio duration like :func:`load_video` (features were extracted from
    the trimmed video, so this is normally a no-op).  A missing or unreadable file is a DataError.
    """
    path = video_feature_path(feature_dir, utt_id)
    if not path.is_file():
        raise DataError(f"no precomputed video features for {utt_id!r}; run `whisper-flamingo "
                        f"extract-video-features --out {feature_dir}` for this split or clear "
                        "video_feature_dir", reason="missing_file", path=path)
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"video feature file is unreadable ({err}); delete it and re-run "
                        "extract-video-features", reason="unreadable", path=path) from None
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"video feature file has shape {arr.shape}, expected (T > 0, D); delete it and "
                        "re-run extract-video-features", reason="unreadable", path=path)
    if n_samples is not None:
        arr = arr[: frames_for_audio(n_samples)]
    return torch.from_numpy(arr.astype(np.float32))


__all__ = ["VIDEO_FPS", "CROP_SIZE", "MEAN", "STD", "MAX_SHORTFALL_S", "video_path_for", "resolve_video_path",
           "frames_for_audio",
           "read_video", "check_video_length", "crop_offsets", "transform_video", "load_video",
           "collate_video", "collate_video_features", "video_feature_path", "save_video_features",
           "load_video_features"]


def feature_dim(feature_dir: str | Path) -> int | None:
    """Width D of the features in ``feature_dir`` (``video_features.json``, else the first ``.npy``)."""
    root = Path(feature_dir)
    meta = root / "video_features.json"
    if meta.is_file():
        try:
            dim = json.loads(meta.read_text(encoding="utf-8")).get("dim")
        except (OSError, ValueError):
            dim = None
        if dim:
            return int(dim)
    for path in root.rglob("*.npy"):
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            continue
        if arr.ndim == 2:
            return int(arr.shape[1])
    return None
