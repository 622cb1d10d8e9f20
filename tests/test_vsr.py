"""Lip reading (task: vsr) and stage 2 over its frozen encoder: CTC decoding, training, loading, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from corpus_utils import tensorboard_scalars
from test_stage2 import overrides, setup, train, weights  # noqa: F401  (setup is a module fixture)

from whisper_flamingo.decoding.ctc import ctc_greedy_texts
from whisper_flamingo.errors import ConfigError


def _vsr_args(s: dict[str, Path], run: str, **kw) -> list[str]:
    args = overrides(s, run, **kw)
    return [a for a in args if not a.startswith(("monitor=", "add_gated_x_attn=", "av_fusion="))] + \
        ["task=vsr", "monitor=val/cer", "monitor_mode=min", "noise_prob=0.0", "gradient_clip_val=1.0",
         "val_decode=true"]


def test_ctc_greedy_merges_repeats_drops_blanks_and_padding():
    def frames(classes: list[int]) -> torch.Tensor:
        return torch.nn.functional.one_hot(torch.tensor(classes), 257).float()

    a, b = ord("a") + 1, ord("b") + 1
    logits = torch.stack([frames([a, a, 0, a, b, b, 0, 0]), frames([b, 0, b, a, a, a, a, a])])
    mask = torch.tensor([[False] * 8, [False] * 4 + [True] * 4])
    assert ctc_greedy_texts(logits, mask) == ["aab", "bba"]
    assert ctc_greedy_texts(logits) == ["aab", "bba"]  # "a" repeated through the padding merges


def test_a_lip_reader_learns_a_batch_it_sees_again():
    """The CTC loss of the tiny lip reader falls on one repeated batch (the loss and gradients reach it)."""
    from whisper_flamingo.models.video_encoders import build_lip_reader
    from whisper_flamingo.tasks.flamingo import video_ctc_loss

    torch.manual_seed(0)
    model = build_lip_reader("tiny")
    video = torch.randn(2, 1, 30, 88, 88)
    texts = ["ab ba", "bab"]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = video_ctc_loss(model(video), None, texts)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_vsr_trains_and_stage2_loads_its_encoder_frozen(setup):  # noqa: F811
    from whisper_flamingo.checkpoints.flamingo import build_stage2_model
    from whisper_flamingo.config import load_config

    train(_vsr_args(setup, "vsr", num_train_steps=3, validate_every_n_batches=3))
    ckpt = setup["root"] / "ckpt" / "vsr" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 3 and saved["hyper_parameters"]["config"]["task"] == "vsr"
    lip = weights(ckpt)
    assert any(k.startswith("ctc_head.") for k in lip)
    logged = tensorboard_scalars(setup["root"] / "logs" / "whisper" / "vsr")
    assert {"val/loss", "val/cer", "val/wer", "train/loss"} <= set(logged), sorted(logged)

    # stage 2 over it: the encoder's weights are the lip reader's, bit for bit, and stay so (frozen)
    args = overrides(setup, "s2", video_model_ckpt=ckpt, freeze_video_model="true",
                     freeze_video_batch_norm_stats="true", num_train_steps=2)
    train(args)
    s2 = weights(setup["root"] / "ckpt" / "s2" / "last.ckpt")
    inner = "encoder.video_model.w2v_model."  # a fine-tuned-style AV-HuBERT sits under w2v_model (the original's keys)
    enc = {k[len(inner):]: v for k, v in s2.items() if k.startswith(inner)}
    want = {k[len("encoder."):]: v for k, v in lip.items() if k.startswith("encoder.")}
    assert enc.keys() == want.keys()
    assert all(torch.equal(enc[k], want[k]) for k in want)

    # a lip reader without video_model_config, or of another size: one line naming the key
    cfg = load_config(None, overrides(setup, "bad", video_model_ckpt=ckpt, video_model_config=""))
    with pytest.raises(ConfigError, match="set video_model_config: tiny"):
        build_stage2_model(cfg, _tiny_whisper(setup))
    cfg = load_config(None, overrides(setup, "bad", video_model_ckpt=ckpt, video_model_config="base"))
    with pytest.raises(ConfigError, match="lip reader of video_model_config 'tiny'"):
        build_stage2_model(cfg, _tiny_whisper(setup))


def _tiny_whisper(s: dict[str, Path]):
    from whisper_flamingo.checkpoints.names import load_whisper

    return load_whisper(str(s["model"]))


def test_vsr_needs_a_video_model_config(setup):  # noqa: F811
    with pytest.raises(ConfigError, match="video_model_config"):
        train(_vsr_args(setup, "novideo", video_model_config=""))
