"""The ``lip2d`` video encoder (models/lip_frontends.py): padding-independent, named, and a stage-2
checkpoint built with it reloads strictly through the decoder's loader."""

from __future__ import annotations

from dataclasses import asdict

import pytest
import torch
from whisper.model import ModelDimensions

from whisper_flamingo.checkpoints.flamingo import build_stage2_model, load_stage2_checkpoint
from whisper_flamingo.config import load_config
from whisper_flamingo.models.lip_frontends import FrameConvEncoder
from whisper_flamingo.models.video_encoders import new_video_encoder
from whisper_flamingo.models.whisper import Whisper

DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (see conftest.one_thread)."""


def test_lip2d_is_a_frame_conv_encoder_whatever_use_av_hubert_encoder_says():
    for use_av in (True, False):
        enc = new_video_encoder("lip2d", use_av_hubert_encoder=use_av)
        assert isinstance(enc, FrameConvEncoder) and enc.out_dim == 256


def test_padded_frames_do_not_change_the_real_frames():
    """Real frames come out as if the utterance were alone and unpadded, whatever the padding holds."""
    torch.manual_seed(0)
    enc = FrameConvEncoder(dim=32, channels=(8, 8), layers=2, kernel=5).eval()
    video = torch.randn(2, 1, 12, 88, 88)
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, 7:] = True
    other = video.clone()
    other[0, :, 7:] = torch.randn(1, 5, 88, 88) * 5  # only the padded frames differ
    with torch.no_grad():
        a, b = enc(video, mask), enc(other, mask)
    assert a.shape == (2, 12, 32)
    assert torch.allclose(a[0, :7], b[0, :7], atol=1e-6)
    assert torch.equal(a[1], b[1])
    with torch.no_grad():
        alone = enc(video[:1, :, :7])
    assert torch.allclose(a[0, :7], alone[0], atol=1e-5)
    with torch.no_grad():  # without the mask the padded frames do leak into their neighbours
        assert not torch.allclose(enc(video)[0, :7], enc(other)[0, :7], atol=1e-3)


def test_lip2d_stage2_checkpoint_reloads_strictly(tmp_path):
    cfg = load_config(None, ["model_name=tiny", "add_gated_x_attn=1", "av_fusion=separate",
                             "video_model_config=lip2d", "freeze_video_model=false"])
    torch.manual_seed(0)
    model = build_stage2_model(cfg, Whisper(DIMS)).eval()
    path = tmp_path / "s2.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
                "hyper_parameters": {"dims": asdict(DIMS), "config": cfg.to_dict()}}, path)
    loaded = load_stage2_checkpoint(path)
    assert isinstance(loaded.video_model, FrameConvEncoder)
    video = torch.randn(1, 1, 6, 88, 88)
    with torch.no_grad():
        assert torch.equal(model.video_features(video), loaded.video_features(video))


def test_demo_av_check_compares_with_the_stage1_model_at_the_target_ratio():
    from whisper_flamingo.commands.demo_av import check

    rows = {"stage 1, audio (asr)": {"-5": 70.0}, "stage 2, video zeroed (asr)": {"-5": 80.0},
            "stage 2, audio-visual (avsr)": {"-5": 62.0}}
    ok, line, audio, av = check(rows, 0.85)  # 62 < 80 (zeroed) but 62 > 0.85 x 70 = 59.5
    assert (ok, audio, av) == (False, 70.0, 62.0) and "NOT met" in line
    rows["stage 2, audio-visual (avsr)"]["-5"] = 59.5
    assert check(rows, 0.85)[0] is True
