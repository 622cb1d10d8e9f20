"""``prepare crop-mouth``: 96x96 grayscale 25 fps mouth-ROI videos from frames and landmarks.

Two pipelines (reference: avhubert_muavic.md section 10), both aligning each frame to a mean face in a
256x256 reference frame (:mod:`whisper_flamingo.preparation.mean_face`, or ``--mean-face FILE``) and
cropping 96x96 around the mouth.  The crop is sampled straight from the source frame through the
inverse transform (bilinear, 0 outside), which gives the same pixels as warping to 256x256 and
cutting, without the full warp.

``avhubert`` (AV-HuBERT ``align_mouth.py`` / MuAViC; 68 points): missing frames linearly interpolated,
leading/trailing gaps take the nearest detection; a queue of ``min(12, T)`` frames: when full, a
similarity transform (least squares, as skimage's ``estimate_transform('similarity')``) maps the
**mean of the queued landmark sets** at the stable points 33, 36, 39, 42, 45 (nose tip, eye corners)
onto the mean face; the front frame is cropped around the mean of its own transformed points 48-67
and popped; the frames left in the queue at the end reuse the last transform.  Pixel values: bilinear,
truncated to uint8 (skimage ``warp`` float output x 255).  The crop centre is clamped into the 256x256
frame; an overshoot of more than 5 px raises "too much bias" (the original's check came after the
clamp and never fired; here it does, naming the video and frame).

Face Mesh landmarks carry 68-point stand-ins (``points68``), which ``avhubert`` uses.

``autoavsr`` (auto_avsr ``VideoProcess``; 4 mediapipe points or 68 points): same interpolation;
landmarks smoothed over a centred window of +-6 frames (shrunk at the ends) and shifted back onto the
current frame's mean; a 4-DoF similarity by least median of squares (as OpenCV's
``estimateAffinePartial2D(LMEDS)``: every pair of points proposes a transform, the one with the least
median squared error wins, then least squares on its inliers) from the stable points (mediapipe: right
eye, left eye, nose tip, mouth centre onto the mean face's group means 36-41, 42-47, 31-35, 48-67;
68 points: 28, 33, 36, 39, 42, 45, 48, 54) to the mean face; grayscale first, bilinear, rounded;
the crop is centred on the smoothed transformed mouth point(s) (mediapipe: point 3; 68: 48-67);
a centre more than 48 + 5 px from the frame centre raises "too much bias"; a crop reaching past the
256x256 frame is zero-filled there (auto_avsr cut a smaller patch).

A video without any detected face: ``no_face="error"`` (a DataError, skipped under
``--on-bad-sample skip``) or ``"resize"`` (MuAViC: the whole frame resized to 96x96).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.preparation.landmarks import Landmarks

SIZE = 96
HALF = SIZE // 2
REF = 256
BIAS = 5
AVHUBERT_WINDOW = 12
AVHUBERT_STABLE = (33, 36, 39, 42, 45)
AUTOAVSR_HALF_WINDOW = 6
AUTOAVSR_STABLE_68 = (28, 33, 36, 39, 42, 45, 48, 54)
MOUTH_68 = slice(48, 68)


@dataclass
class Crops:
    """The crops ``(T, 96, 96)`` uint8, the per-frame transforms ``(T, 2, 3)`` (source pixels -> 256x256
    reference) and the crops' top-left corners ``(T, 2)`` in the reference frame."""

    frames: np.ndarray
    transforms: np.ndarray
    origins: np.ndarray


def load_mean_face(path: str | Path | None = None) -> np.ndarray:
    """The ``(68, 2)`` mean face: the shipped one, or a ``.npy`` file (e.g. ``20words_mean_face.npy``)."""
    if path is None:
        from whisper_flamingo.preparation.mean_face import mean_face_256

        return mean_face_256()
    try:
        face = np.load(path).astype(np.float64)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{path}: cannot read the mean face ({err}); give a (68, 2) .npy file") from None
    if face.shape != (68, 2):
        raise ConfigError(f"{path}: the mean face has shape {face.shape}; expected (68, 2)")
    return face


def gray_float(rgb: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB frame, float (no rounding)."""
    return rgb[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def gray_uint8(rgb: np.ndarray) -> np.ndarray:
    """OpenCV's ``COLOR_RGB2GRAY`` (rounded luma)."""
    return np.clip(np.rint(gray_float(rgb)), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------- maths


def interpolate(points: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Fill frames without a face: linear between detections, nearest detection before the first /
    after the last one (AV-HuBERT and auto_avsr)."""
    idx = np.flatnonzero(found)
    if idx.size == 0:
        raise ValueError("no frame has a face")
    t = np.arange(points.shape[0])
    out = np.empty_like(points, dtype=np.float64)
    flat = points.reshape(points.shape[0], -1).astype(np.float64)
    for j in range(flat.shape[1]):
        out.reshape(points.shape[0], -1)[:, j] = np.interp(t, idx, flat[idx, j])
    return out


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``
    (Umeyama's closed form, as skimage's SimilarityTransform.estimate), as a 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s0, d0 = src - ms, dst - md
    cov = d0.T @ s0 / len(src)
    u, sv, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var = (s0 ** 2).sum() / len(src)
    scale = (sv * d).sum() / var if var > 0 else 1.0
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - scale * rot @ ms
    return m


def _partial_affine_2pt(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """The exact 4-DoF transform taking two points onto two points (None if they coincide)."""
    ds, dd = src[1] - src[0], dst[1] - dst[0]
    den = ds @ ds
    if den < 1e-12:
        return None
    a = (ds @ dd) / den
    b = (ds[0] * dd[1] - ds[1] * dd[0]) / den
    m = np.array([[a, -b, 0.0], [b, a, 0.0]])
    m[:, 2] = dst[0] - m[:, :2] @ src[0]
    return m


def similarity_lmeds(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """4-DoF similarity by least median of squares over all point pairs, refined by least squares on
    the inliers (OpenCV's threshold: 2.5 x 1.4826 x (1 + 5 / (n - 2)) x sqrt(median))."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    n = len(src)
    best, best_med = None, np.inf
    for i, j in combinations(range(n), 2):
        m = _partial_affine_2pt(src[[i, j]], dst[[i, j]])
        if m is None:
            continue
        err = (((src @ m[:, :2].T + m[:, 2]) - dst) ** 2).sum(1)
        med = np.median(err)
        if med < best_med:
            best, best_med = m, med
    if best is None:
        return similarity(src, dst)
    sigma = 2.5 * 1.4826 * (1 + 5.0 / max(n - 2, 1)) * np.sqrt(best_med)
    err = np.sqrt((((src @ best[:, :2].T + best[:, 2]) - dst) ** 2).sum(1))
    inliers = err <= max(sigma, 1e-9)
    return similarity(src[inliers], dst[inliers]) if inliers.sum() >= 2 else best


def apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def sample_crop(img: np.ndarray, m: np.ndarray, origin: np.ndarray, size: int = SIZE) -> np.ndarray:
    """The ``size`` x ``size`` patch of ``img`` warped by ``m`` whose top-left corner in the reference frame
    is ``origin`` (bilinear, 0 outside the source and outside the 256x256 reference)."""
    a = m[:, :2]
    inv = np.linalg.inv(a)
    v, u = np.mgrid[0:size, 0:size].astype(np.float64)
    x_ref, y_ref = u + origin[0], v + origin[1]
    inside_ref = (x_ref >= 0) & (x_ref <= REF - 1) & (y_ref >= 0) & (y_ref <= REF - 1)
    ref = np.stack([x_ref - m[0, 2], y_ref - m[1, 2]], -1) @ inv.T
    xs, ys = ref[..., 0], ref[..., 1]
    h, w = img.shape
    x0, y0 = np.floor(xs).astype(np.int64), np.floor(ys).astype(np.int64)
    fx, fy = xs - x0, ys - y0
    out = np.zeros((size, size), np.float64)
    for dy, dx, wgt in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        vals = np.zeros((size, size), np.float64)
        vals[ok] = img[yy[ok], xx[ok]]
        out += wgt * vals
    return np.where(inside_ref, out, 0.0)


class BiasError(DataError):
    """The mouth centre lies too far outside the aligned frame to crop there."""


def _too_much_bias(frame: int, where: str) -> BiasError:
    return BiasError(f"frame {frame}: too much bias in {where} (the mouth centre is more than {BIAS} px past "
                     f"the aligned frame's edge); check the landmarks of that frame or leave the video out",
                     reason="too_much_bias")


def _avhubert_origin(centre: np.ndarray, frame: int) -> np.ndarray:
    cx, cy = float(centre[0]), float(centre[1])
    for name, c, axis in (("width", cx, 0), ("height", cy, 1)):
        if c - HALF < -BIAS or c + HALF > REF + BIAS:
            raise _too_much_bias(frame, name)
        c = min(max(c, HALF), REF - HALF)
        if axis == 0:
            cx = c
        else:
            cy = c
    return np.array([round(cx) - HALF, round(cy) - HALF], np.float64)


# ------------------------------------------------------------------------------------------ pipelines


def crop_avhubert(frames: list[np.ndarray], points: np.ndarray, mean_face: np.ndarray) -> Crops:
    """AV-HuBERT / MuAViC: 12-frame queue, similarity on 33/36/39/42/45, crop on the current mouth."""
    if points.shape[1] != 68:
        raise ConfigError("--method avhubert needs 68-point landmarks (--detector dlib or MuAViC's); "
                          "for mediapipe's 4 points use --method autoavsr")
    t = len(frames)
    margin = min(AVHUBERT_WINDOW, t)
    stable = list(AVHUBERT_STABLE)
    out = np.zeros((t, SIZE, SIZE), np.uint8)
    transforms = np.zeros((t, 2, 3))
    origins = np.zeros((t, 2))
    m = None

    def cut(i: int, m: np.ndarray) -> None:
        centre = apply(m, points[i, MOUTH_68]).mean(0)
        origins[i] = _avhubert_origin(centre, i)
        transforms[i] = m
        patch = sample_crop(gray_float(frames[i]), m, origins[i])
        out[i] = np.clip(patch, 0, 255).astype(np.uint8)  # float -> uint8 by truncation

    for i in range(t):
        if i + 1 >= margin:  # the queue holds frames i - margin + 1 .. i; crop its front frame
            front = i + 1 - margin
            smoothed = points[front:i + 1].mean(0)
            m = similarity(smoothed[stable], mean_face[stable])
            cut(front, m)
    for front in range(t - margin + 1, t):  # what is left in the queue reuses the last transform
        cut(front, m)
    return Crops(out, transforms, origins)


def crop_autoavsr(frames: list[np.ndarray], points: np.ndarray, mean_face: np.ndarray) -> Crops:
    """auto_avsr VideoProcess: centred +-6 smoothing, LMedS similarity, crop on the smoothed mouth."""
    k = points.shape[1]
    if k == 4:
        ref = np.stack([mean_face[36:42].mean(0), mean_face[42:48].mean(0), mean_face[31:36].mean(0),
                        mean_face[48:68].mean(0)])
        stable, mouth = [0, 1, 2, 3], slice(3, 4)
    elif k == 68:
        ref = mean_face[list(AUTOAVSR_STABLE_68)]
        stable, mouth = list(AUTOAVSR_STABLE_68), MOUTH_68
    else:
        raise ConfigError(f"--method autoavsr needs 4 (mediapipe) or 68 points per frame, not {k}")
    t = len(frames)
    out = np.zeros((t, SIZE, SIZE), np.uint8)
    transforms = np.zeros((t, 2, 3))
    origins = np.zeros((t, 2))
    for i in range(t):
        w = min(AUTOAVSR_HALF_WINDOW, i, t - 1 - i)
        smoothed = points[i - w:i + w + 1].mean(0)
        smoothed = smoothed + (points[i].mean(0) - smoothed.mean(0))
        m = similarity_lmeds(smoothed[stable], ref)
        centre = apply(m, smoothed[mouth]).mean(0)
        for name, c in (("width", centre[0]), ("height", centre[1])):
            if abs(c - REF / 2) > HALF + BIAS:
                raise _too_much_bias(i, name)
        origins[i] = np.rint(centre - HALF)
        transforms[i] = m
        patch = sample_crop(gray_uint8(frames[i]).astype(np.float64), m, origins[i])
        out[i] = np.clip(np.rint(patch), 0, 255).astype(np.uint8)
    return Crops(out, transforms, origins)


def resize_whole(frames: list[np.ndarray]) -> np.ndarray:
    """MuAViC's fallback for a video without landmarks: each whole frame resized to 96x96 (grayscale)."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(gray_uint8(f)).resize((SIZE, SIZE), Image.BILINEAR))
                     for f in frames])


def crop_video(frames: list[np.ndarray], lm: Landmarks, method: str, mean_face: np.ndarray,
               path: Path | None = None, no_face: str = "error") -> Crops | np.ndarray:
    """Interpolate, then run ``method``; DataErrors name ``path``."""
    n = min(len(frames), lm.points.shape[0])
    if abs(len(frames) - lm.points.shape[0]) > 2:
        raise DataError(f"the landmarks have {lm.points.shape[0]} frames, the video {len(frames)} (at 25 fps); "
                        "they belong to another video or another frame rate: redo `prepare landmarks`",
                        reason="landmark_mismatch", path=path)
    frames = frames[:n]
    found = lm.found[:n]
    pts = lm.points68 if method == "avhubert" and lm.points68 is not None else lm.points
    if not found.any():
        if no_face == "resize":
            return resize_whole(frames)
        raise DataError("no face in any frame; leave the video out, or --no-face resize (MuAViC's fallback)",
                        reason="no_face", path=path)
    points = interpolate(pts[:n], found)
    try:
        if method == "avhubert":
            return crop_avhubert(frames, points, mean_face)
        if method == "autoavsr":
            return crop_autoavsr(frames, points, mean_face)
    except BiasError as err:
        raise BiasError(str(err), reason="too_much_bias", path=path) from None
    raise ConfigError(f"--method {method}: use avhubert or autoavsr")


def contact_sheet(crops: np.ndarray, path: Path, found: np.ndarray | None = None, n: int = 16,
                  cols: int = 8) -> None:
    """A PNG grid of ``n`` crops sampled evenly over the frames with a face (all frames if none is
    marked); a small cross marks each crop's centre."""
    from PIL import Image

    pool = np.flatnonzero(found[:len(crops)]) if found is not None and found[:len(crops)].any() \
        else np.arange(len(crops))
    idx = pool[np.linspace(0, len(pool) - 1, min(n, len(pool))).round().astype(int)]
    rows = -(-len(idx) // cols)
    sheet = np.zeros((rows * (SIZE + 2), cols * (SIZE + 2)), np.uint8)
    for k, i in enumerate(idx):
        tile = crops[i].copy()
        tile[HALF, HALF - 4:HALF + 5] = 255
        tile[HALF - 4:HALF + 5, HALF] = 255
        r, c = divmod(k, cols)
        sheet[r * (SIZE + 2):r * (SIZE + 2) + SIZE, c * (SIZE + 2):c * (SIZE + 2) + SIZE] = tile
    Image.fromarray(sheet).save(path)
