"""Stage 2 (Whisper-Flamingo) training on CPU: tiny random Whisper + tiny from-scratch video encoder.

Only the gated layers, the video projection and the video encoder learn (every Whisper tensor stays
bit-identical to the stage-1 checkpoint); validation logs loss/acc/WER/CER for av, a and v; the
per-step modality draw and the weights survive a stop + resume bit for bit; bad lip videos are
errors naming the file (or skipped and counted); precomputed video features train too.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from corpus_utils import _write_video, make_tiny_corpus, synth_speech, tensorboard_scalars
from whisper.model import ModelDimensions

from whisper_flamingo.config import load_config
from whisper_flamingo.data.datamodule import AV_EVAL_ORDER
from whisper_flamingo.data.video import read_video
from whisper_flamingo.errors import ConfigError, DataError
from whisper_flamingo.models.whisper import Whisper

#: what the flamingo task hands its data module (tasks/flamingo.py)
AV_DATA = {"video": True, "eval_order": AV_EVAL_ORDER, "noise_name": "en_babble"}
TINY_DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                            n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("stage2")
    corpus = make_tiny_corpus(root / "corpus", n_train=6, n_valid=2, n_test=2, seed=5, video=True,
                              max_s=1.2)
    torch.manual_seed(0)
    whisper = Whisper(TINY_DIMS)
    model = root / "tiny-random.pt"
    torch.save({"dims": asdict(TINY_DIMS), "model_state_dict": whisper.state_dict()}, model)
    # a "stage-1 checkpoint": other weights than model_name's, in Lightning's layout
    torch.manual_seed(1)
    stage1 = {f"model.{k}": v for k, v in Whisper(TINY_DIMS).state_dict().items()}
    pt_ckpt = root / "stage1.ckpt"
    torch.save({"state_dict": stage1}, pt_ckpt)
    return {"root": root, "corpus": corpus, "model": model, "pt_ckpt": pt_ckpt}


def overrides(s: dict[str, Path], run: str, **kw) -> list[str]:
    c = kw.pop("corpus", s["corpus"])
    values = dict(
        model_name=s["model"], pt_ckpt=s["pt_ckpt"], muavic_root=c, lang="en", train_id=run,
        log_output_dir=s["root"] / "logs", check_output_dir=s["root"] / "ckpt",
        noise_fn=c / "noise/train.tsv", noise_fn_val=c / "noise/valid.tsv", noise_fn_test=c / "noise/test.tsv",
        audio_max_length=32000, batch_size=1.0, val_batch_bins_multiplier=1.0, num_worker=0,
        learning_rate=1e-3, warmup_steps=1, num_train_steps=4, validate_every_n_batches=1000,
        validate_before_training=False, val_decode=False, log_every_n_steps=1, checkpoint_every_n_steps=1000,
        accelerator="cpu", precision="32", add_gated_x_attn=1, av_fusion="separate", use_av_hubert_encoder=True,
        video_model_config="tiny", freeze_video_model=False, prob_use_av=0.4, prob_use_a=0.3,
        monitor="val_noisy_en_babble/acc_av",
    )
    values.update(kw)
    return [f"{k}={v}" for k, v in values.items()]


def train(args: list[str]) -> None:
    from whisper_flamingo.tasks.run import train as run_train

    run_train(load_config(None, args))


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return {k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")}


def record_initial_weights(monkeypatch) -> dict[str, torch.Tensor]:
    """Make the next ``train`` call store its model's weights as training starts (its initial weights)."""
    import lightning.pytorch as pl

    from whisper_flamingo.tasks import run

    init: dict[str, torch.Tensor] = {}

    class Snapshot(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            init.update({k: v.detach().clone() for k, v in pl_module.model.state_dict().items()})

    build = run.build_trainer

    def trainer_with_snapshot(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.callbacks.append(Snapshot())
        return trainer

    monkeypatch.setattr(run, "build_trainer", trainer_with_snapshot)
    return init


def assert_moved(after: dict[str, torch.Tensor], init: dict[str, torch.Tensor], keys: list[str]) -> None:
    """Every tensor in ``keys`` differs from its value when training started."""
    assert keys
    still = [k for k in keys if torch.equal(after[k], init[k])]
    assert not still, f"{len(still)} of {len(keys)} tensors did not move from their initial value: {still[:5]}"


def test_only_new_layers_learn_and_validation_logs_every_modality(setup, monkeypatch):
    init = record_initial_weights(monkeypatch)
    train(overrides(setup, "learn", num_train_steps=4, validate_every_n_batches=4, val_decode=True,
                    limit_val_batches=1, video_ctc_weight=1.0))
    after = weights(setup["root"] / "ckpt" / "learn" / "last.ckpt")
    best = sorted(p.name for p in (setup["root"] / "ckpt" / "learn").glob("step-*.ckpt"))
    assert len(best) == 1 and best[0].startswith("step-000004-acc_av=0."), best  # the monitored metric's value
    stage1 = {k[len("model."):]: v for k, v in torch.load(setup["pt_ckpt"], weights_only=True)["state_dict"].items()}
    assert set(stage1) < set(after)
    for k, v in stage1.items():  # every Whisper tensor: exactly the stage-1 checkpoint's
        assert torch.equal(after[k], v), k

    # every new tensor moved from the weights this run started with (gates start at 0)
    assert init.keys() == after.keys()
    for k, v in stage1.items():
        assert torch.equal(init[k], v), k  # the run started from the stage-1 weights
    gated = [k for k in after if any(s in k for s in (".gated_x_attn", ".attn_gate", ".ff_ln.", ".ff.", ".ff_gate"))]
    assert len(gated) == 2 * 17, gated  # 2 decoder blocks x 17 tensors
    for k in gated:
        if k.endswith(("attn_gate", "ff_gate")):
            assert init[k].abs().sum() == 0 and after[k].abs().sum() > 0, k
    # (AV-HuBERT's audio front end is never run: Whisper encodes the audio, the video model sees lips only)
    video = [k for k in after if k.startswith("encoder.video_model.") and after[k].is_floating_point()
             and ".feature_extractor_audio." not in k]
    projection = [k for k in after if k.startswith("encoder.video_projection")]
    assert sorted(projection) == ["encoder.video_projection.bias", "encoder.video_projection.weight",
                                  "encoder.video_projection_scalar"], projection
    assert_moved(after, init, gated + projection + video)

    logs = tensorboard_scalars(setup["root"] / "logs" / "whisper" / "learn")
    for prefix in ("test_noisy_en_babble", "test", "val_noisy_en_babble", "val"):
        for metric in ("loss", "acc", "wer", "cer"):
            for m in ("av", "a", "v"):
                assert f"{prefix}/{metric}_{m}" in logs, (prefix, metric, m, sorted(logs))
    for key in ("val/x_norm", "val/x_v_norm_pre", "val/x_v_norm_post"):
        assert key in logs and logs[key][0][1] > 0
    # teacher-forced losses differ by modality (the streams really are dropped)
    assert len({logs[f"val/loss_{m}"][0][1] for m in ("av", "a", "v")}) == 3
    ctc = [v for _, v in sorted(logs["train/video_ctc"])]  # the auxiliary lip-reading loss
    assert len(ctc) == 4 and all(0 <= v < 1e4 for v in ctc) and max(ctc) > 0  # 0: no transcript fits its frames
    codes = [v for _, v in sorted(logs["train/modality"])]
    assert len(codes) == 4 and set(codes) <= {0.0, 1.0, 2.0}

    # the checkpoint (light from-scratch front end) loads back for decoding
    from whisper_flamingo.checkpoints.flamingo import load_stage2_checkpoint

    model = load_stage2_checkpoint(setup["root"] / "ckpt" / "learn" / "last.ckpt")
    assert not model.training and model.avhubert is not None
    for k, v in model.state_dict().items():
        assert torch.equal(v, after[k]), k


def test_frozen_whisper_and_trainable_sets(setup):
    from whisper_flamingo.checkpoints.flamingo import build_stage2_model
    from whisper_flamingo.tasks.asr import build_whisper as load_model_for
    from whisper_flamingo.tasks.flamingo import configure_trainable

    cfg = load_config(None, overrides(setup, "flags"))
    model = build_stage2_model(cfg, load_model_for(cfg))
    names = set(configure_trainable(model, cfg))
    for n, p in model.named_parameters():
        new = n.startswith(("encoder.video_model.", "encoder.video_projection")) or n in model.gated_parameter_names()
        assert p.requires_grad == new == (n in names), n
    cfg.freeze_video_model = True
    names = set(configure_trainable(model, cfg))
    assert not any(n.startswith("encoder.video_model.") for n in names)
    assert "encoder.video_projection.weight" in names and "decoder.blocks.0.attn_gate" in names
    assert not model.encoder.conv1.weight.requires_grad and not model.decoder.token_embedding.weight.requires_grad


def _bad_corpus(setup, tmp: Path, kind: str) -> tuple[Path, str]:
    """A copy of the manifests whose first training row has a bad video; returns (root, video path)."""
    root = tmp / f"bad_{kind}"
    src = setup["corpus"]
    shutil.copytree(src / "noise", root / "noise")
    (root / "muavic" / "en").mkdir(parents=True)
    for f in (src / "muavic" / "en").iterdir():
        if f.is_file():
            shutil.copy(f, root / "muavic" / "en" / f.name)
    tsv = root / "muavic" / "en" / "train.tsv"
    lines = tsv.read_text().splitlines()
    uid, video, audio, frames, samples = lines[1].split("\t")
    bad = root / "media" / f"{kind}.mp4"
    bad.parent.mkdir(parents=True)
    # the audio next to the bad video, so that the audio->video path rule finds no other video
    audio = str(shutil.copy(audio, root / "media" / f"{kind}.wav"))
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "corrupt":
        bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    elif kind == "short":  # 2 s of audio, 5 frames of video
        samples = str(2 * 16000)
        sf.write(audio, synth_speech(np.random.default_rng(0), 2 * 16000), 16000, subtype="PCM_16")
        _write_video(bad, 5, np.random.default_rng(0))
    lines[1] = "\t".join([uid, str(bad), audio, frames, samples])
    tsv.write_text("\n".join(lines) + "\n")
    return root, str(bad)


@pytest.mark.parametrize("kind,reason,when", [("missing", "missing_file", "setup"), ("empty", "empty_file", "setup"),
                                               ("corrupt", "unreadable", "load"),
                                               ("short", "video_audio_mismatch", "load")])
def test_bad_video_names_the_file_or_is_skipped(setup, tmp_path, kind, reason, when):
    from whisper_flamingo.data.datamodule import MuavicDataModule
    from whisper_flamingo.data.dataset import collate

    root, bad = _bad_corpus(setup, tmp_path, kind)
    cfg = load_config(None, overrides(setup, "bad", corpus=root))
    dm = MuavicDataModule(cfg, n_mels=80, multilingual=False, **AV_DATA)
    if when == "setup":
        with pytest.raises(DataError) as err:
            dm.setup("fit")
        assert bad in str(err.value) and "train.tsv:2" in str(err.value) and err.value.reason == reason
    else:
        dm.setup("fit")
        index = next(i for i, r in enumerate(dm.train_dataset.records) if r.video_path == bad)
        with pytest.raises(DataError) as err:
            dm.train_dataset[(0, index)]
        assert bad in str(err.value) and err.value.reason == reason
        assert "\n" not in str(err.value)

    cfg.on_bad_sample = "skip"
    dm = MuavicDataModule(cfg, n_mels=80, multilingual=False, **AV_DATA)
    dm.setup("fit")
    if when == "setup":
        assert dm.bad_counts[reason] == 1 and len(dm.train_dataset) == 5
    else:
        index = next(i for i, r in enumerate(dm.train_dataset.records) if r.video_path == bad)
        batch = collate([dm.train_dataset[(0, index)], dm.train_dataset[(0, (index + 1) % 6)]])
        assert [r for _, r in batch["bad"]] == [reason]
        assert batch["video"].shape[:2] == (1, 1) and batch["video_padding_mask"].shape[0] == 1


def test_batches_carry_video_with_seeded_augmentation(setup):
    from whisper_flamingo.data.datamodule import MuavicDataModule

    cfg = load_config(None, overrides(setup, "batches"))
    dm = MuavicDataModule(cfg, n_mels=80, multilingual=False, **AV_DATA)
    dm.setup("fit")
    assert dm.val_names == ["test_noisy_en_babble", "test", "val_noisy_en_babble", "val"]
    ds = dm.train_dataset
    a, b, c = ds[(0, 0)], ds[(0, 0)], ds[(1, 0)]
    assert torch.equal(a["video"], b["video"]) and torch.equal(a["mel"], b["mel"])
    rec = ds.records[0]  # video trimmed to the audio (these clips are a frame short: not padded)
    assert a["video"].shape[1:] == (88, 88)
    assert a["video"].shape[0] == min(rec.n_video_frames, round(rec.n_samples / 640))
    # each epoch draws its own crop/flip of the same frames (these 96x96 clips: 81 crops x 2 flips), the same
    # draw for the same (seed, epoch, index); evaluation takes the centre crop unflipped
    raw = read_video(rec.video_path, max_frames=a["video"].shape[0])
    draws = [crop_and_flip(raw, ds[(epoch, 0)]["video"]) for epoch in range(8)]
    assert draws[0] == crop_and_flip(raw, b["video"]) and draws[1] == crop_and_flip(raw, c["video"])
    assert len(set(draws)) >= 6 and {flip for _, _, flip in draws} == {False, True}, draws
    ds.seed += 1
    assert [crop_and_flip(raw, ds[(epoch, 0)]["video"]) for epoch in range(8)] != draws  # the seed decides
    ds.seed -= 1
    val = dm.eval_datasets["val"]
    assert crop_and_flip(read_video(val.records[0].video_path), val[0]["video"]) == (4, 4, False)
    batch = next(iter(dm.val_dataloader()[3]))
    assert batch["video"].dim() == 5 and batch["video"].shape[:2] == (batch["mel"].shape[0], 1)
    assert batch["video_padding_mask"].dtype == torch.bool
    lengths = (~batch["video_padding_mask"]).sum(1).tolist()
    frames = {r.id: min(r.n_video_frames, round(r.n_samples / 640)) for r in dm.eval_datasets["val"].records}
    assert lengths == [frames[i] for i in batch["ids"]] and max(lengths) == batch["video"].shape[2]


def crop_and_flip(frames: np.ndarray, video: torch.Tensor) -> tuple[int, int, bool]:
    """The one ``(top, left, flipped)`` 88x88 crop of uint8 ``frames (T, 96, 96)`` that gives ``video``."""
    from whisper_flamingo.data.video import transform_video

    frames = frames[: video.shape[0]]

    def crop(top: int, left: int, flip: bool, n: int) -> torch.Tensor:
        clip = frames[:n, top: top + 88, left: left + 88]
        return transform_video(clip[:, :, ::-1] if flip else clip)

    first = [(top, left, flip) for top in range(frames.shape[1] - 87) for left in range(frames.shape[2] - 87)
             for flip in (False, True) if torch.equal(crop(top, left, flip, 2), video[:2])]
    found = [c for c in first if torch.equal(crop(*c, len(frames)), video)]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def features(setup) -> Path:
    """Random (T, 24) "video features" for every utterance (the precomputed-features path)."""
    from whisper_flamingo.data.manifest import load_split
    from whisper_flamingo.data.video import frames_for_audio, save_video_features

    out = setup["root"] / "features"
    cfg = load_config(None, overrides(setup, "features"))
    rng = np.random.default_rng(0)
    for split in ("train", "valid", "test"):
        for rec in load_split(cfg, split, reduce=False).records:
            save_video_features(out, rec.id, rng.standard_normal((frames_for_audio(rec.n_samples), 24)))
    return out


class Crash(Exception):
    pass


def test_features_path_trains_and_modality_draws_survive_a_resume(setup, features, monkeypatch):
    """Precomputed features (no video encoder); crashed after step 3 and resumed, the run draws the same
    modalities and ends with the same weights as an uninterrupted one."""
    import lightning.pytorch as pl

    from whisper_flamingo.tasks import run

    kw = dict(video_model_config="", video_feature_dir=features, num_train_steps=5, checkpoint_every_n_steps=3,
              noise_snr_train="[-5,5]", prob_use_av=0.3, prob_use_a=0.3)
    build = run.build_trainer
    init = record_initial_weights(monkeypatch)
    train(overrides(setup, "whole", **kw))
    monkeypatch.setattr(run, "build_trainer", build)

    # after the step-3 checkpoint (mid-epoch: Lightning defers a periodic checkpoint that falls on the last
    # batch of an epoch to the next validation)
    class CrashAfterStep3(pl.Callback):
        def on_train_batch_start(self, trainer, *args) -> None:
            if trainer.global_step == 3:
                raise Crash()

    def crashing_trainer(*args, **kwargs):
        trainer = build(*args, **kwargs)
        trainer.callbacks.append(CrashAfterStep3())
        return trainer

    monkeypatch.setattr(run, "build_trainer", crashing_trainer)
    with pytest.raises(Crash):
        train(overrides(setup, "split", **kw))
    monkeypatch.setattr(run, "build_trainer", build)
    assert torch.load(setup["root"] / "ckpt" / "split" / "last.ckpt", weights_only=False)["global_step"] == 3
    train(overrides(setup, "split", **dict(kw, resume_training="true")))
    whole = tensorboard_scalars(setup["root"] / "logs" / "whisper" / "whole")
    split = tensorboard_scalars(setup["root"] / "logs" / "whisper" / "split")
    draws = dict(whole["train/modality"])
    assert len(draws) == 5 and len(set(draws.values())) >= 2, draws  # the draw really varies
    assert dict(split["train/modality"]) == draws
    a = weights(setup["root"] / "ckpt" / "whole" / "last.ckpt")
    b = weights(setup["root"] / "ckpt" / "split" / "last.ckpt")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert a["encoder.video_projection.weight"].shape == (64, 24)  # D from the feature files
    assert not any(k.startswith("encoder.video_model.") for k in a)
    # training moved the projection and the gated layers from this run's initial weights; Whisper stayed put
    new = [k for k in a if k.startswith("encoder.video_projection") or ".gated_x_attn" in k or "_gate" in k
           or ".ff." in k or ".ff_ln." in k]
    assert len(new) == 3 + 2 * 17, new
    assert_moved(a, init, new)
    assert all(torch.equal(a[k], init[k]) for k in a if k not in new)


def test_video_ctc_loss_rewards_the_right_frames_and_needs_a_trained_encoder(setup):
    from whisper_flamingo.checkpoints.flamingo import build_stage2_model
    from whisper_flamingo.tasks.asr import build_whisper as load_model_for
    from whisper_flamingo.tasks.flamingo import CTC_CLASSES, WhisperFlamingoTask, video_ctc_loss

    text = "ab a"
    target = [c + 1 for c in text.encode()]
    frames = [x for c in target for x in (c, 0)]  # each byte then a blank: one valid CTC path
    good = torch.full((1, len(frames) + 3, CTC_CLASSES), -10.0)
    for t, c in enumerate(frames + [0, 0, 0]):
        good[0, t, c] = 10.0
    pad = torch.zeros(1, len(frames) + 3, dtype=torch.bool)
    pad[0, -3:] = True
    assert video_ctc_loss(good, pad, [" AB a "]).item() < 1e-3  # lower-cased, stripped; padding ignored
    shifted = torch.roll(good, 2, dims=1)  # right bytes, wrong frames for the unpadded length
    assert video_ctc_loss(shifted, pad, [text]).item() > 1.0
    assert video_ctc_loss(torch.randn(1, 12, CTC_CLASSES), None, [text]).item() > 1.0
    two = torch.cat([good, torch.randn(1, good.shape[1], CTC_CLASSES)])
    assert video_ctc_loss(two, None, [text, "far too long a text for these frames"]).item() < 1e-3  # skipped
    too_long = torch.randn(1, 3, CTC_CLASSES, requires_grad=True)
    loss = video_ctc_loss(too_long, None, [text])
    loss.backward()
    assert loss.item() == 0.0 and too_long.grad.abs().sum() == 0

    cfg = load_config(None, overrides(setup, "ctc", video_ctc_weight=1.0, freeze_video_model=True))
    model = build_stage2_model(cfg, load_model_for(cfg))
    with pytest.raises(ConfigError, match="video_ctc_weight"):
        WhisperFlamingoTask(cfg, model, None, [])


def test_stage2_optimisation_lowers_the_loss_with_whisper_frozen(setup):
    """The task's own optimizer groups and loss, repeated on one batch of the corpus: the loss falls for
    every modality mix while no Whisper tensor moves."""
    from whisper_flamingo.checkpoints.flamingo import build_stage2_model
    from whisper_flamingo.data.datamodule import MuavicDataModule
    from whisper_flamingo.tasks.asr import build_whisper as load_model_for
    from whisper_flamingo.tasks.asr import whisper_tokenizer as tokenizer_for
    from whisper_flamingo.tasks.flamingo import WhisperFlamingoTask

    cfg = load_config(None, overrides(setup, "overfit", video_ctc_weight=0.5, batch_size=3.0))
    torch.manual_seed(0)
    model = build_stage2_model(cfg, load_model_for(cfg))
    dm = MuavicDataModule(cfg, n_mels=80, multilingual=model.is_multilingual, **AV_DATA)
    dm.setup("fit")
    task = WhisperFlamingoTask(cfg, model, tokenizer_for(model), dm.val_names)
    whisper_before = {k: v.clone() for k, v in model.state_dict().items()
                      if k.startswith(("encoder.", "decoder.")) and "video" not in k and "gate" not in k
                      and ".gated_x_attn" not in k and ".ff." not in k and ".ff_ln." not in k}
    batch = next(iter(dm.train_dataloader()))
    opt = torch.optim.AdamW(task.optimizer_groups(), lr=3e-3)
    task.train()
    losses = []
    for step in range(12):
        modality = ("av", "v")[step % 2]
        ce, ctc = task._loss_with_video_ctc(batch, modality)
        opt.zero_grad()
        (ce + 0.5 * ctc).backward()
        opt.step()
        losses.append((modality, ce.item()))
    for m in ("av", "v"):
        seq = [loss for mod, loss in losses if mod == m]
        assert seq[-1] < 0.8 * seq[0], (m, seq)
    for k, v in whisper_before.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_multilingual_stage2_with_the_multilingual_modality_dropout_logs_every_language(setup, tmp_path):
    """mWhisper-Flamingo's stage 2: ``lang: multi-all`` over the nine-language audio-visual layout with the
    multilingual configs' modality dropout (prob_use_av 0.5, prob_use_a 0: audio-visual or video-only
    batches) and a multilingual Whisper (language tokens in the prompts) trains, and validation logs a WER
    per language and modality."""
    cfg_multi = yaml.safe_load((Path(__file__).parents[1] / "config/audio-visual/av_multi_small.yaml").read_text())
    langs = ("ar", "de", "el", "es", "fr", "it", "pt", "ru")
    corpus = make_tiny_corpus(tmp_path / "multi", n_train=2, n_valid=1, n_test=1, seed=6, video=True,
                              langs=langs, max_s=1.0)
    dims = ModelDimensions(**{**asdict(TINY_DIMS), "n_vocab": 51865})  # multilingual vocabulary
    torch.manual_seed(2)
    model = tmp_path / "tiny-multi.pt"
    torch.save({"dims": asdict(dims), "model_state_dict": Whisper(dims).state_dict()}, model)
    pt_ckpt = tmp_path / "stage1-multi.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in Whisper(dims).state_dict().items()}}, pt_ckpt)
    run = "multi_stage2"
    train(overrides(setup, run, corpus=corpus, model_name=model, pt_ckpt=pt_ckpt, lang=cfg_multi["lang"],
                    prob_use_av=cfg_multi["prob_use_av"], prob_use_a=cfg_multi["prob_use_a"], val_decode=True,
                    num_train_steps=2, validate_every_n_batches=2, monitor="val/acc_av"))
    scalars = tensorboard_scalars(setup["root"] / "logs" / "whisper" / run)
    for lang in ("en", *langs):
        assert f"val/wer_av_{lang}" in scalars, sorted(t for t in scalars if t.startswith("val/"))
