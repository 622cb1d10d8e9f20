"""SAT training from a pseudo-strong-label table, MAE pre-training of its ViT backbone, and the transfer of
the MAE encoder into SAT training (init_from)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_flamingo.data.sat_psl import PSLDataset, psl_weights, read_psl, read_table
from whisper_flamingo.errors import DataError

SR = 16000
SINE, NOISE = 3, 7  # two AudioSet class indices the tiny set uses
SAT_CFG = {"embed_dim": 32, "depth": 2, "num_heads": 2, "target_length": 96, "cache_length": 96, "outputdim": 527}


@pytest.fixture
def tiny_models():
    """A 2-layer, 32-wide SAT (1-s pieces) and an MAE with the same encoder, registered for the test only."""
    from whisper_flamingo.models import registry
    from whisper_flamingo.models.sat import build_sat
    from whisper_flamingo.models.sat_mae import build_sat_mae

    registry.get_entry("sat-t-2s")  # families loaded first
    registry.register_model("test-sat-tiny", family="sat", builder=build_sat, config=dict(SAT_CFG))
    registry.register_model("test-sat-mae-tiny", family="sat", builder=build_sat_mae,
                            config={"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, "embed_dim": 32,
                                    "depth": 2, "num_heads": 2, "target_length": 96})
    yield "test-sat-tiny", "test-sat-mae-tiny"
    for name in ("test-sat-tiny", "test-sat-mae-tiny"):
        registry._REGISTRY.pop(name, None)
        registry._PARAMETERS.pop(name, None)


def _clip(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    if kind == "sine":
        x = 0.5 * np.sin(2 * np.pi * rng.uniform(800, 1200) * t)
    elif kind == "noise":
        x = 0.3 * rng.standard_normal(len(t))
    else:  # sine for the first half, noise for the second
        x = np.concatenate([_clip("sine", seconds / 2, rng), _clip("noise", seconds / 2, rng)])
    return x.astype(np.float32)


def _sat_set(tmp: Path, n: int = 6) -> dict[str, Path]:
    """4-s clips (sine, noise, or sine then noise) with SAT's clip table and a 2-s PSL table, plus JSON lists."""
    rng = np.random.default_rng(0)
    (tmp / "audio").mkdir(parents=True)
    clips, psl = ["filename\tlabels\tduration\thdf5path"], ["filename\tstart\tend\tprob\tidxs"]
    for i in range(n):
        kind = ("sine", "noise", "both")[i % 3]
        name = f"audio/{kind}{i}.wav"
        sf.write(tmp / name, _clip(kind, 4.0, rng), SR, subtype="PCM_16")
        labels = {"sine": [SINE], "noise": [NOISE], "both": [SINE, NOISE]}[kind]
        clips.append(f"{name}\t{';'.join(map(str, labels))}\t4\t")
        for c in range(2):
            this = {"sine": SINE, "noise": NOISE, "both": (SINE, NOISE)[c]}[kind]
            other = NOISE if this == SINE else SINE
            psl.append(f"{name}\t{2 * c}\t{2 * c + 2}\t0.95;0.02\t{this};{other}")
    (tmp / "train.tsv").write_text("\n".join(clips) + "\n")
    (tmp / "psl.tsv").write_text("\n".join(psl) + "\n")
    from whisper_flamingo.data.tagging import AUDIOSET_LABELS, read_label_csv

    mids = read_label_csv().mids
    # the first 10 AudioSet classes: a 10-way head learns in a few steps
    (tmp / "labels.csv").write_text("".join(AUDIOSET_LABELS.read_text().splitlines(keepends=True)[:11]))
    val = [{"wav": f"audio/{k}{i}.wav", "labels": {"sine": mids[SINE], "noise": mids[NOISE]}[k]}
           for i, k in ((0, "sine"), (1, "noise"), (3, "sine"), (4, "noise"))]
    (tmp / "val.json").write_text(json.dumps({"data": val}))
    return {"clips": tmp / "train.tsv", "psl": tmp / "psl.tsv", "val": tmp / "val.json", "labels": tmp / "labels.csv"}


def _common(tmp: Path, name: str) -> list[str]:
    return [f"log_output_dir={tmp / 'logs'}", f"check_output_dir={tmp / 'ckpt'}", f"train_id={name}",
            "num_worker=0", "accelerator=cpu", "precision=32", "log_every_n_steps=1", "checkpoint_every_n_steps=1000",
            "validate_before_training=false", "weight_decay=0", "adam_beta1=0.9", "lr_schedule=cosine",
            "audio_max_length=64000"]


def _rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, r.split(","), strict=True)) for r in lines[1:]]


# ------------------------------------------------------------------------------------------- PSL tables
def test_psl_table_merges_clips_and_scatters_soft_targets(tmp_path):
    s = _sat_set(tmp_path)
    rows = read_psl(s["psl"], s["clips"], 527)
    assert len(rows) == 12 and rows[4].start == 0.0 and rows[5].end == 4.0
    assert rows[4].labels == (SINE, NOISE) and rows[5].idxs == (NOISE, SINE)
    ds = PSLDataset(rows, 527)
    item = ds[(0, 5)]
    assert item["input"].shape == (2 * SR,)
    assert item["target"][NOISE] == pytest.approx(0.95) and item["target"][SINE] == pytest.approx(0.02)
    assert float(item["target"].sum()) == pytest.approx(0.97)
    # the second chunk is the second half of the file
    audio, _ = sf.read(rows[5].wav, dtype="float32")
    assert np.allclose(item["input"].numpy(), audio[2 * SR:], atol=1e-4)
    # SAT's balanced weights: 1000 / (count + 100) per class, summed over the clip's hard labels
    w = psl_weights(rows, 527)
    n_sine = n_noise = 8  # rows of clips labelled sine (4 sine-only + 4 both) and noise
    assert w[0] == pytest.approx(1000 / (n_sine + 100)) and w[4] == pytest.approx(1000 / (n_sine + 100) +
                                                                               1000 / (n_noise + 100))


@pytest.mark.parametrize("edit, message", [
    (("psl", "idxs", "labelidx"), "no column 'idxs'"),
    (("psl", "0.95;0.02\t3;7", "0.95;0.02\t3;900"), "unknown label '900'"),
    (("clips", "\t3\t4\t", "\t3;x\t4\t"), "unknown label 'x'"),
    (("psl", "0.95;0.02\t3;7", "0.95\t3;7"), "'prob' has 1 values and 'idxs' 2"),
    (("clips", "audio/sine0.wav", "audio/other.wav"), "'audio/sine0.wav' is not in the clip table"),
])
def test_psl_table_errors_are_one_line_with_file_and_line(tmp_path, edit, message):
    s = _sat_set(tmp_path)
    which, old, new = edit
    path = s[which]
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(DataError) as err:
        read_psl(s["psl"], s["clips"], 527)
    text = str(err.value)
    assert message in text and "\n" not in text and str(path) in text


def test_parquet_tables_need_pyarrow_and_are_read_with_it(tmp_path):
    path = tmp_path / "psl.parquet"
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        path.write_bytes(b"PAR1")
        with pytest.raises(DataError, match="needs pyarrow"):
            read_table(path, ("filename",))
        return
    pq.write_table(pa.table({"filename": ["a.wav"], "start": [0.0], "end": [2.0], "prob": ["0.5"], "idxs": ["3"]}),
                   path)
    assert read_table(path, ("filename", "idxs"))[0][1]["idxs"] == "3"


def test_cosine_schedule_warms_up_and_ends_at_the_floor():
    from whisper_flamingo.tasks.tagging import cosine_factor

    assert [cosine_factor(s, 10, 110, 0.1) for s in (0, 5, 10)] == pytest.approx([0.0, 0.5, 1.0])
    assert cosine_factor(60, 10, 110, 0.1) == pytest.approx(0.55)
    assert cosine_factor(110, 10, 110, 0.1) == pytest.approx(0.1)
    assert cosine_factor(35, 10, 110, 0.01) == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi / 4)))


# ------------------------------------------------------------------------------------------- training
def test_sat_trains_from_psl_table_and_streams(tmp_path, tiny_models):
    from whisper_flamingo.config import load_config
    from whisper_flamingo.models.sat import SAT, stream
    from whisper_flamingo.tasks.run import train

    sat_name, _ = tiny_models
    s = _sat_set(tmp_path)
    cfg = load_config(None, [
        "task=tagging", f"tagging_model={sat_name}", f"data_train={s['clips']}", f"psl_table={s['psl']}",
        f"data_val={s['val']}", f"label_csv={s['labels']}", "batch_size=4", "learning_rate=0.01",
        "warmup_steps=2", "lr_min_ratio=0.1",
        "num_train_steps=24", "validate_every_n_batches=6", "samples_per_epoch=24", "balanced_sampling=true",
        "monitor=val/loss", "monitor_mode=min", "average_best=2", *_common(tmp_path, "sat")])
    out = train(cfg)
    rows = _rows(out / "result.csv")
    assert len(rows) == 4
    assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"])
    assert float(rows[-1]["lr"]) == pytest.approx(0.01 * 0.1)
    assert float(rows[-1]["mAP"]) == pytest.approx(1.0)
    # averaged.pt: the mean of the 2 epochs with the lowest validation loss (SAT averages its 4 best)
    best = sorted(range(4), key=lambda i: float(rows[i]["valid_loss"]))[:2]
    states = [torch.load(out / "epochs" / f"epoch-{i + 1:03d}.pt") for i in best]
    averaged = torch.load(out / "averaged.pt")
    assert torch.allclose(averaged["patch_embed.proj.weight"],
                          (states[0]["patch_embed.proj.weight"] + states[1]["patch_embed.proj.weight"]) / 2)
    # the trained weights load strictly as a SAT and stream chunk by chunk with the memory
    model = SAT.from_checkpoint(out / "epochs" / "epoch-004.pt")
    assert model.cfg.target_length == 96 and model.cfg.cache_length == 96
    rng = np.random.default_rng(5)
    wav = torch.from_numpy(np.concatenate([_clip("sine", 2.0, rng), _clip("noise", 2.0, rng)]))
    probs = stream(model, wav, SR)
    assert probs.shape == (4, 10)
    assert probs.argmax(-1).tolist() == [SINE, SINE, NOISE, NOISE]


def test_mae_with_fewer_training_clips_than_one_batch_is_a_one_line_error(tmp_path):
    """As tagging's: whole batches only, so 2 clips with batch_size 4 would train nothing; setup says so."""
    from whisper_flamingo.config import load_config
    from whisper_flamingo.errors import ConfigError
    from whisper_flamingo.tasks.registry import get_task

    (tmp_path / "a.wav").touch()  # setup reads only the list, not the audio
    clips = tmp_path / "clips.tsv"
    clips.write_text("filename\na.wav\na.wav\n")
    cfg = load_config(None, ["task=mae", f"data_train={clips}", f"data_val={clips}", "batch_size=4", "num_worker=0"])
    with pytest.raises(ConfigError, match=r"clips.tsv: 2 training clips per pass, fewer than batch_size 4"):
        get_task("mae").datamodule(cfg, None).setup("fit")
    cfg = load_config(None, ["task=mae", f"data_train={clips}", f"data_val={clips}", "batch_size=4",
                             "samples_per_epoch=8", "num_worker=0"])  # 8 draws per pass: 2 whole batches
    dm = get_task("mae").datamodule(cfg, None)
    dm.setup("fit")
    assert len(dm.train_dataloader()) == 2


def test_mae_pretraining_lowers_its_loss_and_its_encoder_starts_sat_training(tmp_path, tiny_models):
    from whisper_flamingo.config import load_config
    from whisper_flamingo.tasks.registry import get_task
    from whisper_flamingo.tasks.run import train

    sat_name, mae_name = tiny_models
    _sat_set(tmp_path)
    # tones (predictable patches; per-patch normalised noise is not): a list with a filename column
    tones = tmp_path / "tones.tsv"
    tones.write_text("filename\n" + "".join(f"audio/sine{i}.wav\n" for i in (0, 3)))
    cfg = load_config(None, [
        "task=mae", f"tagging_model={mae_name}", f"data_train={tones}", f"data_val={tones}",
        "batch_size=2", "learning_rate=0.01", "warmup_steps=2", "lr_min_ratio=0.01", "num_train_steps=30",
        "validate_every_n_batches=6", "samples_per_epoch=12", "save_top_k=2", "monitor=val/loss",
        "monitor_mode=min", *_common(tmp_path, "mae"), "audio_max_length=16000"])
    out = train(cfg)
    rows = _rows(out / "result.csv")
    assert len(rows) == 5
    assert float(rows[-1]["valid_loss"]) < 0.95 * float(rows[0]["valid_loss"])  # fixed masks: comparable
    assert float(rows[-1]["train_loss"]) < 0.8 * float(rows[0]["train_loss"])
    assert (out / "encoder_avg.pt").is_file() and (out / "encoder_last.pt").is_file()
    encoder = torch.load(out / "encoder_avg.pt")
    best = sorted(out.glob("step-*.ckpt"))
    assert len(best) == 2
    # the SAT that tagging training builds with init_from holds the MAE encoder's weights
    sat_cfg = load_config(None, ["task=tagging", f"tagging_model={sat_name}", f"init_from={out / 'encoder_avg.pt'}",
                                 "monitor=val/mAP"])
    spec = get_task("tagging")
    sat = spec.model_builder(sat_cfg)
    state = sat.state_dict()
    d = 32
    for i in range(2):
        qkv = encoder[f"blocks.{i}.attn.qkv.weight"]
        assert torch.equal(state[f"blocks.{i}.attn.to_q.weight"], qkv[:d])
        assert torch.equal(state[f"blocks.{i}.attn.to_kv.weight"], qkv[d:])
        assert torch.equal(state[f"blocks.{i}.mlp.fc2.weight"], encoder[f"blocks.{i}.mlp.fc2.weight"])
    for key in ("patch_embed.proj.weight", "norm.weight", "init_bn.1.running_mean", "freq_pos_embed"):
        assert torch.equal(state[key], encoder[key]), key
    # 6 MAE time positions stretched to the SAT's 12
    assert state["time_pos_embed"].shape[-1] == 12 and encoder["time_pos_embed"].shape[-1] == 6
    fresh = spec.model_builder(load_config(None, ["task=tagging", f"tagging_model={sat_name}", "monitor=val/mAP"]))
    assert not torch.equal(fresh.state_dict()["patch_embed.proj.weight"], state["patch_embed.proj.weight"])
    # the averaged encoder is the mean of the best checkpoints' encoders
    from whisper_flamingo.checkpoints.io import read_checkpoint_file

    w = [read_checkpoint_file(p)["state_dict"]["model.encoder.patch_embed.proj.weight"] for p in best]
    assert torch.allclose(encoder["patch_embed.proj.weight"], (w[0] + w[1]) / 2, atol=1e-6)
