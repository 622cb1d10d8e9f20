"""Lip video: reading with PyAV, AV-HuBERT transforms, bad files, collation, feature files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from needs import need

from whisper_flamingo.data.manifest import manifest_spec, read_manifest, resolve_selection
from whisper_flamingo.data.video import (
    CROP_SIZE,
    MEAN,
    STD,
    check_video_length,
    collate_video,
    collate_video_features,
    crop_offsets,
    frames_for_audio,
    load_video,
    load_video_features,
    read_video,
    resolve_video_path,
    save_video_features,
    transform_video,
    video_feature_path,
    video_path_for,
)
from whisper_flamingo.errors import DataError

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _write_mp4(path: Path, frames: np.ndarray, rate: int = 25) -> Path:
    """Encode gray uint8 frames (T, H, W) as H.264 (T may be 0)."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
        for img in frames:
            rgb = np.repeat(img[..., None], 3, axis=2)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def records(tiny_video_corpus):
    sel = resolve_selection("en")
    spec = manifest_spec(sel, "en", "train", tiny_video_corpus)
    return read_manifest(spec)


def test_read_and_eval_transform_on_tiny_corpus(records):
    rec = records[0]
    frames = read_video(rec.video_path)
    assert frames.dtype == np.uint8 and frames.shape == (rec.n_video_frames, 96, 96)
    clip = load_video(rec.video_path, rec.n_samples)
    keep = min(rec.n_video_frames, round(rec.n_samples / 16000 * 25))
    assert clip.dtype == torch.float32 and clip.shape == (keep, CROP_SIZE, CROP_SIZE)
    # centre crop at offset 4 of the 96x96 frame, then (x/255 - mean) / std
    expected = (frames[:keep, 4:92, 4:92].astype(np.float64) / 255.0 - MEAN) / STD
    assert np.array_equal(clip.numpy(), expected.astype(np.float32))
    # the synthetic "mouth" (dark rectangle) is visible: the clip is not constant
    assert clip.std() > 0.5


def test_train_transform_is_seeded_crop_and_flip(records):
    frames = read_video(records[1].video_path)
    a = transform_video(frames, train=True, rng=np.random.default_rng(7))
    b = transform_video(frames, train=True, rng=np.random.default_rng(7))
    assert torch.equal(a, b)  # same generator state, same sample
    flips = set()
    for seed in range(12):
        rng = np.random.default_rng(seed)
        top, left = crop_offsets(96, 96, True, np.random.default_rng(seed))
        assert 0 <= top <= 8 and 0 <= left <= 8
        got = transform_video(frames, train=True, rng=rng).numpy()
        crop = (frames[:, top: top + 88, left: left + 88].astype(np.float64) / 255.0 - MEAN) / STD
        flipped = np.array_equal(got, np.ascontiguousarray(crop[:, :, ::-1]).astype(np.float32))
        assert flipped or np.array_equal(got, crop.astype(np.float32))
        flips.add(flipped)
    assert flips == {True, False}
    with pytest.raises(ValueError, match="rng"):
        transform_video(frames, train=True)


def test_centre_crop_offsets():
    assert crop_offsets(96, 96, train=False) == (4, 4)
    assert crop_offsets(360, 640, train=False) == (136, 276)
    assert crop_offsets(88, 88, train=False) == (0, 0)


def test_real_talking_face_clip():
    path = SHARED_DATA / "talking_face_demo.mp4"
    need(path.is_file(), f"{path} (real test media)")
    import av

    frames = read_video(path, max_frames=25)  # ~1 s
    assert frames.shape == (25, 360, 640) and frames.dtype == np.uint8
    # gray = OpenCV's BGR2GRAY (fixed point 0.299/0.587/0.114) of the decoded frame, within 1 level
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        bgr = frame.to_ndarray(format="bgr24").astype(np.int64)
    cv_gray = (bgr[..., 2] * 4899 + bgr[..., 1] * 9617 + bgr[..., 0] * 1868 + (1 << 13)) >> 14
    assert np.abs(cv_gray - frames[0].astype(np.int64)).max() <= 1
    clip = transform_video(frames)
    assert clip.shape == (25, 88, 88)
    expected = (frames[:, 136:224, 276:364].astype(np.float64) / 255 - MEAN) / STD
    assert np.allclose(clip.numpy(), expected, atol=1e-6)
    # audio of 0.5 s keeps round(12.5) = 12 frames (Python rounds half to even)
    assert load_video(path, n_samples=8000).shape[0] == 12


def test_trim_and_length_check(records):
    rec = records[2]
    n = rec.n_video_frames
    short_audio = int((n - 5) / 25 * 16000)
    assert load_video(rec.video_path, short_audio).shape[0] == frames_for_audio(short_audio) == n - 5
    # video up to 1 s shorter than the audio is fine, and is not padded
    assert load_video(rec.video_path, int((n + 24) / 25 * 16000)).shape[0] == n
    with pytest.raises(DataError) as err:
        load_video(rec.video_path, int((n + 30) / 25 * 16000))
    assert err.value.reason == "video_audio_mismatch" and rec.video_path in str(err.value)
    assert "\n" not in str(err.value) and "on_bad_sample: skip" in str(err.value)
    check_video_length(25, 32000)  # exactly 1 s short: accepted
    with pytest.raises(DataError):
        check_video_length(24, 32000)


def test_frames_for_audio_rounding():
    assert frames_for_audio(16000) == 25
    assert frames_for_audio(640 * 10 + 320) == 10  # 10.5 -> 10 (half to even, as Python's round)
    assert frames_for_audio(640 * 11 + 320) == 12
    assert frames_for_audio(639) == 1


@pytest.mark.parametrize("case", ["missing", "zero_bytes", "corrupt", "zero_frames", "truncated", "too_small"])
def test_bad_videos(tmp_path, case):
    path = tmp_path / f"{case}.mp4"
    rng = np.random.default_rng(0)
    reason = {"missing": "missing_file", "zero_bytes": "empty_file", "corrupt": "unreadable",
              "zero_frames": "empty_file", "truncated": "truncated", "too_small": "too_small"}[case]
    if case == "zero_bytes":
        path.write_bytes(b"")
    elif case == "corrupt":
        path.write_bytes(rng.integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif case == "zero_frames":
        _write_mp4(path, np.zeros((0, 96, 96), np.uint8))
    elif case == "truncated":
        frames = rng.integers(0, 255, (50, 96, 96), dtype=np.uint8)  # noise: large frames
        full = _write_mp4(tmp_path / "full.mp4", frames).read_bytes()
        moov = full.find(b"moov")
        # keep the index (moved to the front) but cut the frame data: rewrite with faststart
        import av

        with av.open(str(tmp_path / "full.mp4")) as src, \
                av.open(str(tmp_path / "fast.mp4"), "w", options={"movflags": "faststart"}) as dst:
            s_in = src.streams.video[0]
            s_out = dst.add_stream_from_template(s_in)
            for packet in src.demux(s_in):
                if packet.dts is not None:
                    packet.stream = s_out
                    dst.mux(packet)
        data = (tmp_path / "fast.mp4").read_bytes()
        assert moov > 0 and data.find(b"moov") < data.find(b"mdat")
        path.write_bytes(data[: len(data) // 3])
    elif case == "too_small":
        _write_mp4(path, np.full((5, 64, 64), 128, np.uint8))
    with pytest.raises(DataError) as err:
        load_video(path, n_samples=16000)
    msg = str(err.value)
    assert err.value.reason == reason, msg
    assert str(path) in msg and "\n" not in msg


def test_collate_video_pads_and_masks():
    clips = [torch.randn(5, 88, 88), torch.randn(3, 88, 88), torch.randn(7, 88, 88)]
    video, mask = collate_video(clips)
    assert video.shape == (3, 1, 7, 88, 88) and mask.shape == (3, 7) and mask.dtype == torch.bool
    assert mask.sum(1).tolist() == [2, 4, 0]
    assert torch.equal(video[1, 0, :3], clips[1]) and video[1, 0, 3:].abs().sum() == 0
    assert torch.equal(mask[0], torch.tensor([False] * 5 + [True] * 2))
    empty_v, empty_m = collate_video([])
    assert empty_v.shape[0] == 0 and empty_m.shape == (0, 0)
    feats, fmask = collate_video_features([np.ones((2, 4), np.float16), torch.zeros(3, 4)])
    assert feats.shape == (2, 3, 4) and feats.dtype == torch.float32 and fmask.tolist() == [
        [False, False, True], [False, False, False]]


def test_video_path_for_replaces_components_only():
    assert video_path_for("/d/muavic/en/audio/test/abc/00001.wav") == "/d/muavic/en/video/test/abc/00001.mp4"
    # the original replaced every substring "audio"; only whole components change here
    assert video_path_for("/data/audio_sets/muavic/es/audio/train/x/1.wav") == \
        "/data/audio_sets/muavic/es/video/train/x/1.mp4"
    assert video_path_for("lrs2/main/5535415699068794046/00001.wav") == "lrs2/main/5535415699068794046/00001.mp4"
    assert video_path_for("audio/a.flac") == "video/a.flac"


def test_resolve_video_path(tmp_path):
    audio = tmp_path / "audio" / "x.wav"
    derived = tmp_path / "video" / "x.mp4"
    listed = tmp_path / "elsewhere" / "x.mp4"
    assert resolve_video_path(str(listed), str(audio)) == str(listed)  # nothing exists: the manifest's
    derived.parent.mkdir()
    derived.write_bytes(b"x")
    assert resolve_video_path(str(listed), str(audio)) == str(derived)
    listed.parent.mkdir()
    listed.write_bytes(b"x")
    assert resolve_video_path(str(listed), str(audio)) == str(listed)  # the manifest column wins


def test_feature_files_round_trip(tmp_path):
    feats = torch.randn(9, 16)
    path = save_video_features(tmp_path, "vid01/00003", feats)
    assert path == tmp_path / "vid01" / "00003.npy" and path == video_feature_path(tmp_path, "vid01/00003")
    assert np.load(path).dtype == np.float16
    back = load_video_features(tmp_path, "vid01/00003")
    assert back.dtype == torch.float32 and back.shape == (9, 16)
    assert torch.allclose(back, feats, atol=2e-3, rtol=1e-3)
    assert load_video_features(tmp_path, "vid01/00003", n_samples=640 * 4).shape == (4, 16)
    assert not [p for p in os.listdir(path.parent) if p.endswith(".tmp")]
    with pytest.raises(DataError) as err:
        load_video_features(tmp_path, "vid01/00004")
    assert err.value.reason == "missing_file" and "extract-video-features" in str(err.value)
    for bad in ("../x", "/abs/x", "a/../../b"):
        with pytest.raises(ValueError):
            video_feature_path(tmp_path, bad)
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match="unreadable"):
        load_video_features(tmp_path, "broken")
