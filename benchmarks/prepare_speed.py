"""Throughput of mouth-ROI preparation: landmark detection per detector, and cropping per method.

Inputs (decoded once, outside the timings):

* mediapipe: frames ``--first`` .. ``--first + --frames`` of ``../shared/data/talking_face_demo.mp4``
  (640x360, a tight lower-face view; Face Mesh in tracking mode, as ``prepare landmarks`` runs it);
* dlib: ``--frames`` frames of scikit-image's ``astronaut()`` photo moved and scaled over a 320x240
  canvas (dlib's detectors find no face on the tight clip); HOG with upsampling 1, and the CNN
  fallback only when HOG finds nothing (``--cnn`` always runs the CNN detector instead, for its cost);
* cropping: both pipelines on the mediapipe frames and landmarks (``--method avhubert`` uses the Face
  Mesh 68-point stand-ins), without video encoding.

Threads: whatever the libraries use by default, after ``OMP_NUM_THREADS`` etc. (the figures in README
were taken on 2 shared cores).  Frames per second are the best of ``--repeats`` runs.  Last line:

``mediapipe_fps=<x> dlib_fps=<y>``
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from whisper_flamingo.preparation.crop import crop_video, load_mean_face  # noqa: E402
from whisper_flamingo.preparation.landmarks import (  # noqa: E402
    FPS,
    DlibDetector,
    Landmarks,
    MediapipeMesh,
    _collect,
    read_frames,
)

logger = logging.getLogger("prepare_speed")


def _best(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def _astronaut_frames(n: int) -> list[np.ndarray]:
    from PIL import Image
    from skimage.data import astronaut

    photo = Image.fromarray(astronaut()[:300, 80:380])
    frames = []
    for i in range(n):
        scale = 0.62 + 0.08 * i / max(n - 1, 1)
        size = round(300 * scale)
        dx, dy = 20 + (3 * i) % 40, 12 - (i // 2) % 10
        canvas = np.full((240, 320, 3), 90, np.uint8)
        canvas[dy:dy + size, dx:dx + size] = np.asarray(photo.resize((size, size), Image.BILINEAR))[
            :240 - dy, :320 - dx]
        frames.append(canvas)
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=ROOT.parent / "shared" / "data" / "talking_face_demo.mp4")
    ap.add_argument("--first", type=int, default=80, help="first frame of the clip (default: 80, the face)")
    ap.add_argument("--frames", type=int, default=100, help="frames per detector (default: 100)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cnn", action="store_true", help="dlib: time the CNN detector on every frame")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    clip = [f for i, f in enumerate(read_frames(args.video)) if args.first <= i < args.first + args.frames]

    def run_mediapipe():
        det = MediapipeMesh()  # a fresh tracker per run: the first frame pays for detection, as in real use
        try:
            return _collect(clip, det)
        finally:
            det.close()

    t_mp, (points, mouth, found, points68) = _best(run_mediapipe, args.repeats)
    mp_fps = len(clip) / t_mp
    print(f"mediapipe Face Mesh: {len(clip)} frames {clip[0].shape[1]}x{clip[0].shape[0]}, "  # noqa: T201
          f"face on {int(found.sum())}, {mp_fps:.1f} frames/s")

    astro = _astronaut_frames(args.frames)
    det = DlibDetector(cnn_fallback=True)
    if args.cnn:
        det._hog = lambda gray, up: []  # every frame goes to the CNN detector
    t_dl, (_, _, found_dl, _) = _best(lambda: _collect(astro, det), args.repeats)
    dl_fps = len(astro) / t_dl
    print(f"dlib {'CNN' if args.cnn else 'HOG'} + 68 points: {len(astro)} frames 320x240, "  # noqa: T201
          f"face on {int(found_dl.sum())}, {dl_fps:.1f} frames/s")

    lm = Landmarks(points, found, mouth, "mp4", "mediapipe", FPS, (clip[0].shape[1], clip[0].shape[0]), points68)
    mean_face = load_mean_face()
    for method in ("avhubert", "autoavsr"):
        t_c, _ = _best(lambda m=method: crop_video(clip, lm, m, mean_face), args.repeats)
        print(f"crop-mouth --method {method}: {len(clip) / t_c:.1f} frames/s")  # noqa: T201
    print(f"mediapipe_fps={mp_fps:.1f} dlib_fps={dl_fps:.1f}")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
