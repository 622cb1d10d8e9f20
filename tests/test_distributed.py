"""Two-process DDP (gloo, CPU): validation split by rank with exact corpus WER, and skipped samples on one rank.

Every run starts from the same tiny random Whisper; ``warmup_steps`` far above ``num_train_steps``
makes the learning rate of the only optimizer step 0, so the weights validated inside ``fit`` are
the initial ones and a 1-process and a 2-process run must score exactly the same.  The runs use
key-padding masks (``padding_mask=true``, as the demo configs), so each utterance's validation
hypothesis does not depend on which rank's batch it lands in.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from corpus_utils import make_tiny_corpus, tensorboard_scalars
from whisper.model import ModelDimensions

from whisper_flamingo.models.whisper import Whisper

ROOT = Path(__file__).resolve().parents[1]
DIMS = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=32, n_audio_head=2, n_audio_layer=1,
                       n_vocab=51864, n_text_ctx=448, n_text_state=32, n_text_head=2, n_text_layer=1)
N_VALID, N_TEST = 7, 5
PER_RANK = re.compile(r"INFO whisper_flamingo\.tasks\.asr: (\S+): (\d+) utterances validated \(per rank: ([\d ]+)\)")


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    corpus = make_tiny_corpus(root / "corpus", n_train=8, n_valid=N_VALID, n_test=N_TEST, seed=11, video=True,
                              max_s=1.2)
    torch.manual_seed(0)
    model = root / "tiny-random.pt"
    torch.save({"dims": asdict(DIMS), "model_state_dict": Whisper(DIMS).state_dict()}, model)
    return {"root": root, "corpus": corpus, "model": model}


def overrides(s: dict[str, Path], run: str, corpus: Path | None = None, **kw) -> list[str]:
    c = corpus or s["corpus"]
    values = dict(
        model_name=s["model"], pt_ckpt="", muavic_root=c, lang="en", train_id=run,
        log_output_dir=s["root"] / "logs", check_output_dir=s["root"] / "ckpt",
        noise_fn=c / "noise/train.tsv", noise_fn_val=c / "noise/valid.tsv", noise_fn_test=c / "noise/test.tsv",
        audio_max_length=32000, batch_size=1.0, val_batch_bins_multiplier=0.5, num_worker=0,
        learning_rate=1e-3, warmup_steps=1000, num_train_steps=1, validate_every_n_batches=1,
        validate_before_training=True, val_decode=True, limit_val_batches=0, log_every_n_steps=1,
        checkpoint_every_n_steps=1000, accelerator="cpu", precision="32", noise_snr_eval=0, padding_mask=True,
    )
    values.update(kw)
    return [f"{k}={v}" for k, v in values.items()]


def run_cli(config: str, args: list[str], timeout: int = 400) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "whisper_flamingo.cli", "train", config, *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=env)


def per_rank_counts(stderr: str) -> list[tuple[str, int, list[int]]]:
    return [(m[1], int(m[2]), [int(x) for x in m[3].split()]) for m in PER_RANK.finditer(stderr)]


def scores(logdir: Path, suffix: str) -> dict[str, list[tuple[int, float]]]:
    return {k: sorted(v) for k, v in tensorboard_scalars(logdir).items() if k.endswith(suffix)}


@pytest.mark.parametrize("task", ["asr", "flamingo"])
def test_two_ranks_validate_disjoint_halves_and_score_as_one(setup, task):
    config = "config/audio/demo.yaml" if task == "asr" else "config/audio-visual/demo.yaml"
    extra = {} if task == "asr" else dict(freeze_video_batch_norm_stats=True, video_ctc_weight=0.0,
                                          monitor="val_noisy_en_babble/acc_av", video_model_ckpt="",
                                          freeze_video_model=False)
    one = run_cli(config, overrides(setup, f"{task}1", **extra))
    assert one.returncode == 0, one.stderr[-4000:]
    two = run_cli(config, overrides(setup, f"{task}2", num_devices=2, **extra))
    assert two.returncode == 0, two.stderr[-4000:]

    wer = "/wer" if task == "asr" else "/wer_av"
    a = scores(setup["root"] / "logs" / "whisper" / f"{task}1", wer)
    b = scores(setup["root"] / "logs" / "whisper" / f"{task}2", wer)
    assert len(a) == 4 and all(len(v) == 2 for v in a.values()), a  # 4 loaders, before training and at step 1
    assert a == b  # corpus WER: exactly the 1-process value
    if task == "flamingo":
        for m in ("/wer_a", "/wer_v", "/loss_av", "/acc_av"):
            assert scores(setup["root"] / "logs" / "whisper" / f"{task}1", m) == \
                scores(setup["root"] / "logs" / "whisper" / f"{task}2", m), m

    totals = {"val": N_VALID, "test": N_TEST}
    counts1, counts2 = per_rank_counts(one.stderr), per_rank_counts(two.stderr)
    assert len(counts1) == len(counts2) == 8, two.stderr[-3000:]  # 4 loaders x 2 validations
    for name, total, ranks in counts1:
        assert total == totals[name.split("_")[0]] and ranks == [total]
    for name, total, ranks in counts2:
        n = totals[name.split("_")[0]]
        assert total == n and sum(ranks) == n and len(ranks) == 2  # every utterance once: none repeated
        assert min(ranks) >= n // 2 - 1, (name, ranks)  # each rank about half


def test_skips_on_one_rank_only_neither_hang_nor_mix(setup, tmp_path):
    """A bad training sample that only rank 0 meets (alone in its batch) and a bad validation sample (in one
    rank's share): the run ends, and training and validation skips are counted apart, summed over ranks."""
    from whisper_flamingo.config import load_config
    from whisper_flamingo.data.datamodule import MuavicDataModule
    from whisper_flamingo.data.sampler import LengthBatchSampler

    corpus = tmp_path / "corpus"
    shutil.copytree(setup["corpus"], corpus)
    src = str(setup["corpus"])
    for tsv in list(corpus.rglob("*.tsv")):
        tsv.write_text(tsv.read_text().replace(src, str(corpus)))
    args = overrides(setup, "skip", corpus=corpus, num_devices=2, on_bad_sample="skip", val_decode=False,
                     monitor="val_noisy_multi_babble/acc", monitor_mode="max", batch_size=0.5, warmup_steps=1)
    cfg = load_config("config/audio/demo.yaml", args)
    dm = MuavicDataModule(cfg, n_mels=80, multilingual=False)
    dm.setup("fit")
    plans = [LengthBatchSampler(dm.train_dataset.lengths, dm.train_sampler.batch_bins, shuffle=True,
                                drop_last=True, seed=cfg.seed, num_replicas=2, rank=r) for r in (0, 1)]
    batches = [list(p) for p in plans]
    only0 = [b for b in batches[0] if not set(b) & {i for bb in batches[1] for i in bb}]
    alone = min(only0, key=len)
    assert len(alone) == 1  # alone in its batch: that step of rank 0 has no usable sample at all
    bad = alone[0]
    steps = len(batches[0])  # one epoch: the bad sample is met exactly once, on rank 0
    for path in (dm.train_dataset.records[bad].audio_path, dm.splits["valid"].records[0].audio_path):
        x, sr = sf.read(path, dtype="float32")
        x[len(x) // 2] = np.nan  # passes the header pre-pass, fails when loaded
        sf.write(path, x, sr, subtype="FLOAT")

    out = run_cli("config/audio/demo.yaml", [*args, f"num_train_steps={steps}", f"validate_every_n_batches={steps}"],
                  timeout=300)
    assert out.returncode == 0, out.stderr[-4000:]
    logs = tensorboard_scalars(setup["root"] / "logs" / "whisper" / "skip")
    assert [v for _, v in logs["train/skipped_nan_samples"]] == [1.0]
    # the bad valid utterance is in one rank's share: before training (when no rank has skipped a training
    # sample yet) and at the end of the epoch; counted in the clean and the noisy val loader
    assert [v for _, v in logs["val/skipped_nan_samples"]] == [2.0, 2.0]
    assert "train: skipped bad samples: nan_samples=1" in out.stderr
    assert "val: skipped bad samples: nan_samples=2" in out.stderr
