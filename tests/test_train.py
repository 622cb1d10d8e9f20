"""End-to-end stage-1 training on CPU with a tiny random-weight Whisper and a generated corpus.

Loss goes down, validation writes WER to TensorBoard, a SIGKILLed run resumes to bit-identical
weights, two-process DDP (gloo) gives each rank disjoint batches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from corpus_utils import make_tiny_corpus, tensorboard_scalars
from whisper.model import ModelDimensions

from whisper_flamingo.models.whisper import Whisper

ROOT = Path(__file__).resolve().parents[1]
TINY_DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=2,
                            n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    corpus = make_tiny_corpus(root / "corpus", n_train=12, n_valid=4, n_test=4, seed=3)
    torch.manual_seed(0)
    model = Whisper(TINY_DIMS)
    ckpt = root / "tiny-random.pt"
    torch.save({"dims": asdict(TINY_DIMS), "model_state_dict": model.state_dict()}, ckpt)
    return {"root": root, "corpus": corpus, "model": ckpt}


def base_overrides(s: dict[str, Path], run: str, **kw) -> list[str]:
    c = s["corpus"]
    values = dict(
        model_name=s["model"], muavic_root=c, lang="en", train_id=run,
        log_output_dir=s["root"] / "logs", check_output_dir=s["root"] / "ckpt",
        noise_fn=c / "noise/train.tsv", noise_fn_val=c / "noise/valid.tsv", noise_fn_test=c / "noise/test.tsv",
        audio_max_length=32000, batch_size=1.0, val_batch_bins_multiplier=4.0, num_worker=0,
        learning_rate=1e-3, warmup_steps=2, num_train_steps=30, validate_every_n_batches=1000,
        validate_before_training=False, val_decode=False, log_every_n_steps=1, checkpoint_every_n_steps=4,
        accelerator="cpu", precision="32",
    )
    values.update(kw)
    return [f"{k}={v}" for k, v in values.items()]


def run_cli(args: list[str], timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    e = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "whisper_flamingo.cli", "train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=e)


def final_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    return {k: v for k, v in state["state_dict"].items()}


def test_training_lowers_loss_and_validation_logs_wer(setup, tmp_path):
    # a fake `srun` on PATH: Lightning's SLURM hint must not reach the console (issue 12)
    (tmp_path / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "srun").chmod(0o755)
    out = run_cli(["config/audio/demo.yaml", *base_overrides(
        setup, "loss", num_train_steps=30, validate_every_n_batches=10, val_decode=True, save_top_k=2,
        validate_before_training=True, limit_val_batches=2)], env={"PATH": f"{tmp_path}:{os.environ['PATH']}"})
    assert out.returncode == 0, out.stderr[-3000:]
    logs = tensorboard_scalars(setup["root"] / "logs" / "whisper" / "loss")
    losses = [v for _, v in sorted(logs["train/loss"])]
    assert len(losses) >= 25
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    for name in ("val", "val_noisy_multi_babble", "test", "test_noisy_multi_babble"):
        assert f"{name}/wer" in logs and f"{name}/loss" in logs and f"{name}/acc" in logs, sorted(logs)
    # one numbering: metrics are logged at the number of optimizer steps done, as checkpoints are named
    assert sorted(s for s, _ in logs["val/wer"]) == [0, 10, 20, 30]
    assert sorted(s for s, _ in logs["train/loss"])[:2] == [1, 2]
    # outputs: one full last.ckpt + save_top_k weights-only best files (the third best was deleted)
    ckpts = setup["root"] / "ckpt" / "loss"
    best = sorted(p for p in ckpts.iterdir() if p.name.startswith("step-"))
    assert sorted(p.name for p in ckpts.iterdir()) == sorted(["config.yaml", "last.ckpt", *(p.name for p in best)])
    assert len(best) == 2 and all(int(p.name[5:11]) in (10, 20, 30) for p in best), best
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)
    assert {"optimizer_states", "lr_schedulers", "MuavicDataModule", "loops"} <= set(last) and last["global_step"] == 30
    for p in best:
        state = torch.load(p, map_location="cpu", weights_only=False)
        assert "optimizer_states" not in state and "state_dict" in state
        assert p.stat().st_size < 0.5 * (ckpts / "last.ckpt").stat().st_size
    umask = os.umask(0o022)
    os.umask(umask)
    assert all((p.stat().st_mode & 0o777) == 0o666 & ~umask for p in [ckpts / "last.ckpt", *best])
    # the weights-only best file is what decoding reads
    from whisper_flamingo.checkpoints.names import load_whisper

    model = load_whisper(best[-1], device="cpu")
    assert sum(p.numel() for p in model.parameters()) > 0
    # Lightning's console clutter is gone
    for noise in ("srun", "litlogger", "LeafSpec", "exists and is not empty"):
        assert noise not in out.stderr, noise


def test_sigterm_saves_last_ckpt_and_exits_with_one_line(setup):
    """SIGTERM to the whole process group (as `timeout` sends it) during training with a DataLoader worker."""
    trace = setup["root"] / "trace_term"
    args = ["config/audio/demo.yaml", *base_overrides(setup, "term", num_train_steps=100000, num_worker=1,
                                                      checkpoint_every_n_steps=100000, trace_batches_dir=trace,
                                                      monitor="val/acc", monitor_mode="max")]
    e = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "whisper_flamingo.cli", "train", *args], cwd=ROOT, env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 240
    rank0 = trace / "rank0.txt"
    while proc.poll() is None and time.time() < deadline and \
            (not rank0.exists() or len(rank0.read_text().splitlines()) < 3):
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("training did not stop within 120 s of SIGTERM")
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err and "DataLoader worker" not in err, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("stopped by SIGTERM at step ") and line.endswith("resume_training=true"), line
    step = int(line.split("at step ")[1].split(";")[0])
    last = setup["root"] / "ckpt" / "term" / "last.ckpt"
    assert f"{last} saved" in line
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == step >= 3
    assert not any(p.suffix == ".tmp" for p in last.parent.iterdir())


def test_sigkill_mid_epoch_then_resume_is_bit_identical(setup):
    kw = dict(num_train_steps=40, checkpoint_every_n_steps=3, num_worker=1, noise_snr_train="[-5, 5]",
              spec_augment="ls-basic")
    ref = run_cli(["config/audio/demo.yaml", *base_overrides(setup, "uninterrupted", **kw)])
    assert ref.returncode == 0, ref.stderr[-3000:]

    args = ["config/audio/demo.yaml", *base_overrides(setup, "killed", **kw)]
    last = setup["root"] / "ckpt" / "killed" / "last.ckpt"
    e = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "whisper_flamingo.cli", "train", *args], cwd=ROOT, env=e,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    state = torch.load(last, map_location="cpu", weights_only=False)
    killed_at = state["global_step"]
    assert 0 < killed_at < 40
    resumed = run_cli([*args, "resume_training=true"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr.lower()
    a = final_weights(setup["root"] / "ckpt" / "uninterrupted" / "last.ckpt")
    b = final_weights(last)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_continues_mid_epoch_with_the_remaining_batches(setup):
    """Stopped mid-epoch and resumed, the run trains on exactly the batches of an uninterrupted one."""
    trace_a, trace_b = setup["root"] / "trace_a", setup["root"] / "trace_b"
    kw = dict(num_train_steps=14, checkpoint_every_n_steps=1)
    ref = run_cli(["config/audio/demo.yaml", *base_overrides(setup, "trace_ref", trace_batches_dir=trace_a, **kw)])
    assert ref.returncode == 0, ref.stderr[-3000:]
    lines_a = [line.split("\t") for line in (trace_a / "rank0.txt").read_text().splitlines()]
    assert len(lines_a) == 14
    # stop at a step that falls inside an epoch, then resume to the end
    split = next(i for i in range(3, 14) if int(lines_a[i][1]) > 0)
    assert int(lines_a[split][0]) == int(lines_a[split - 1][0]), "split must be mid-epoch"
    first = run_cli(["config/audio/demo.yaml", *base_overrides(setup, "trace_split", trace_batches_dir=trace_b,
                                                                **dict(kw, num_train_steps=split))])
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_cli(["config/audio/demo.yaml", *base_overrides(setup, "trace_split", trace_batches_dir=trace_b,
                                                                 resume_training="true", **kw)])
    assert second.returncode == 0, second.stderr[-3000:]
    lines_b = [line.split("\t") for line in (trace_b / "rank0.txt").read_text().splitlines()]
    # same epoch and the same utterances in the same order, batch for batch
    assert [(e, ids) for e, _, ids in lines_b] == [(e, ids) for e, _, ids in lines_a]


def test_two_process_ddp_gives_disjoint_batches(setup):
    """Two CPU processes (gloo): each trains on its own share of every epoch's batches."""
    from whisper_flamingo.config import load_config
    from whisper_flamingo.data.datamodule import MuavicDataModule
    from whisper_flamingo.data.sampler import LengthBatchSampler

    trace = setup["root"] / "trace_ddp"
    overrides = base_overrides(setup, "ddp", num_devices=2, num_train_steps=6, trace_batches_dir=trace,
                               validate_before_training=True, val_decode=True, limit_val_batches=1)
    out = run_cli(["config/audio/demo.yaml", *overrides], timeout=400)
    assert out.returncode == 0, out.stderr[-4000:]
    ranks = [[line.split("\t") for line in (trace / f"rank{r}.txt").read_text().splitlines()] for r in (0, 1)]
    assert [len(r) for r in ranks] == [6, 6]

    # what each rank should have seen: the same sampler, split over 2 replicas
    cfg = load_config("config/audio/demo.yaml", overrides)
    dm = MuavicDataModule(cfg, n_mels=80, multilingual=False)
    dm.setup("fit")
    ids = [r.id for r in dm.train_dataset.records]
    plans = [LengthBatchSampler(dm.train_dataset.lengths, dm.train_sampler.batch_bins, shuffle=True, drop_last=True,
                                seed=cfg.seed, num_replicas=2, rank=r) for r in (0, 1)]
    seen: list[list[tuple[int, str]]] = [[], []]
    for r in (0, 1):
        for epoch, _, batch_ids in ranks[r]:
            seen[r].append((int(epoch), batch_ids))
    for r in (0, 1):
        expected = []
        epoch = 0
        while len(expected) < 6:
            plans[r].set_epoch(epoch)
            expected += [(epoch, " ".join(ids[i] for i in b)) for b in plans[r]]
            epoch += 1
        assert seen[r] == expected[:6], r
    # the two ranks' batches of an epoch are disjoint (apart from padding when the count is odd)
    n_batches = len(dm.train_sampler.batches)
    for epoch in {e for e, _ in seen[0]}:
        a = {u for e, b in seen[0] if e == epoch for u in b.split()}
        b = {u for e, bb in seen[1] if e == epoch for u in bb.split()}
        assert a and b
        if n_batches % 2 == 0:
            assert not a & b
    assert (setup["root"] / "ckpt" / "ddp" / "last.ckpt").is_file()
