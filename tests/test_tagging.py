"""Shared sound-tagging pieces: metrics, balanced sampling, weight averaging, lists and labels, feature
extraction with resume, and a few steps of the tagging task."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_flamingo.checkpoints.averaging import average_epochs, average_state_dicts, epoch_state_path
from whisper_flamingo.data.tagging import (
    FeatureInput,
    FeatureStore,
    TagCollator,
    TaggingDataset,
    WaveformInput,
    WeightedEpochBatchSampler,
    balanced_weights,
    read_label_csv,
    read_tagging_list,
    smoothed_target,
    write_weight_file,
)
from whisper_flamingo.decoding.tagging_metrics import average_precision, roc_auc, tagging_metrics
from whisper_flamingo.errors import DataError

SPEECH, MUSIC, SINE = "/m/09x0r", "/m/04rlf", "/m/01v_m0"


def _list(path: Path, items: list[tuple[str, str]]) -> Path:
    path.write_text(json.dumps({"data": [{"wav": w, "labels": lab} for w, lab in items]}))
    return path


# ------------------------------------------------------------------------------------------------ metrics
def test_metrics_match_hand_computed_values():
    y = np.array([1, 0, 1, 0])
    s = np.array([0.9, 0.8, 0.3, 0.1])
    # ranks: + - + - : precision at the positives 1/1 and 2/3, recall steps 1/2 each
    assert average_precision(s, y) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # pairs (pos > neg): 0.9>0.8, 0.9>0.1, 0.3>0.1; 0.3<0.8 -> 3/4
    assert roc_auc(s, y) == pytest.approx(0.75)
    # a tie between a positive and a negative counts half; AP at the one threshold = 1/2
    assert roc_auc(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    assert average_precision(np.array([0.5, 0.5]), np.array([1, 0])) == pytest.approx(0.5)
    # no positive: AP 0 and AUC -1 (the reference's values)
    assert average_precision(s, np.zeros(4)) == 0.0 and roc_auc(s, np.zeros(4)) == -1.0

    scores = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.0], [0.3, 0.2, 0.0], [0.1, 0.9, 0.0]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 1, 0]])
    m = tagging_metrics(scores, targets)
    # class 1: scores of positives 0.7, 0.9 over negatives 0.1, 0.2 -> AP 1, AUC 1
    assert m["mAP"] == pytest.approx((0.5 + 1 / 3 + 1.0) / 2)
    assert m["mAUC"] == pytest.approx((0.75 + 1.0) / 2)
    assert m["dprime"] == pytest.approx(math.sqrt(2) * 1.1503493803760079)  # Phi^-1(0.875)
    assert m["acc"] == pytest.approx(3 / 4)  # clip 2 (target 0) has argmax 0 -> right; clip 1 right; 0, 3 right
    assert m["classes"] == 2
    full = tagging_metrics(scores, targets, classes="all")  # the reference's plain means, sentinels included
    assert full["mAP"] == pytest.approx(((0.5 + 1 / 3) + 1.0 + 0.0) / 3)
    assert full["mAUC"] == pytest.approx((0.75 + 1.0 - 1.0) / 3)


# ------------------------------------------------------------------------------------------------ lists, labels
def test_label_and_list_errors_name_the_file_and_entry(tmp_path):
    labels = read_label_csv()
    assert len(labels) == 527 and labels.names[0] == "Speech" and labels.index(SINE) == 501
    good = _list(tmp_path / "ok.json", [("a.wav", f"{SPEECH},{MUSIC}"), ("/abs/b.wav", SINE)])
    recs = read_tagging_list(good, labels)
    assert recs[0].labels == (0, 137) and recs[0].wav == str(tmp_path / "a.wav") and recs[1].key == "b"
    bad = _list(tmp_path / "bad.json", [("a.wav", SPEECH), ("b.wav", f"{SPEECH},/m/nope")])
    with pytest.raises(DataError) as err:
        read_tagging_list(bad, labels)
    msg = str(err.value)
    assert "bad.json: entry 1" in msg and "'/m/nope'" in msg and labels.path in msg and "\n" not in msg
    with pytest.raises(DataError, match=r"empty\.json.*empty"):
        read_tagging_list(_list(tmp_path / "empty.json", []), labels)
    csv = tmp_path / "l.csv"
    csv.write_text('index,mid,display_name\n0,/m/a,"A, a"\n2,/m/b,B\n')
    with pytest.raises(DataError, match=r"l\.csv:3: .*index 1"):
        read_label_csv(csv)


def test_unreadable_clip_errors_or_is_skipped_and_counted(tmp_path):
    labels = read_label_csv()
    sf.write(str(tmp_path / "ok.wav"), np.zeros(1600, np.int16), 16000, subtype="PCM_16")
    (tmp_path / "broken.wav").write_bytes(b"RIFF1234WAVEjunk")
    recs = read_tagging_list(_list(tmp_path / "l.json", [("ok.wav", SPEECH), ("broken.wav", MUSIC)]), labels)
    loader = WaveformInput(0.1)
    with pytest.raises(DataError, match=r"broken\.wav.*l\.json: entry 1"):
        TaggingDataset(recs, loader, 527)[1]
    ds = TaggingDataset(recs, loader, 527, on_bad_sample="skip")
    batch = TagCollator(loader, 527)([ds[0], ds[1]])
    assert batch["keys"] == ["ok"] and batch["bad"] == [("broken", "unreadable")]
    assert batch["input"].shape == (1, 1600) and batch["target"][0, 0] == 1


def test_label_smoothing_and_mixup_targets():
    y = smoothed_target([0, 3], 10, 0.1)
    assert y[0] == pytest.approx(0.9) and y[1] == pytest.approx(0.01)
    mixed = smoothed_target([0], 10, 0.1, [0, 2], lam=0.7)
    assert mixed[0] == pytest.approx(0.01 + 0.9) and mixed[2] == pytest.approx(0.01 + 0.3 * 0.9)
    assert np.allclose(smoothed_target([1], 4, 0.0, [2], lam=0.25), [0, 0.25, 0.75, 0])


# ------------------------------------------------------------------------------------------------ balanced sampling
def test_balanced_weights_and_sampler(tmp_path):
    labels = read_label_csv()
    lst = _list(tmp_path / "train.json", [("a.wav", SPEECH), ("b.wav", f"{SPEECH},{MUSIC}"),
                                          ("c.wav", f"{MUSIC},{SINE}")])
    recs = read_tagging_list(lst, labels)
    w = balanced_weights(recs, len(labels))
    speech, music, sine = 1000 / 2.01, 1000 / 2.01, 1000 / 1.01
    assert np.allclose(w, [speech, speech + music, music + sine])
    out = write_weight_file(lst, w)
    assert out == tmp_path / "train_weight.csv"
    assert np.allclose([float(x) for x in out.read_text().split()], w)
    sampler = WeightedEpochBatchSampler(3, 2, weights=np.array([0.0, 1.0, 3.0]), num_samples=4000, seed=1)
    drawn = [i for batch in sampler for _, i in batch]
    assert len(drawn) == 4000 and 0 not in drawn
    assert drawn.count(2) / drawn.count(1) == pytest.approx(3.0, rel=0.1)
    sampler.set_epoch(1)
    assert [i for b in sampler for _, i in b][:50] != drawn[:50]


# ------------------------------------------------------------------------------------------------ weight averaging
def test_weight_averaging_of_two_state_dicts(tmp_path):
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3)}
    b = {"w": torch.tensor([3.0, 6.0]), "n": torch.tensor(5)}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([2.0, 4.0])) and int(avg["n"]) == 5
    torch.save(a, epoch_state_path(tmp_path, 1))
    torch.save(b, epoch_state_path(tmp_path, 3))  # epoch 2 missing: skipped, as Whisper-AT
    state, used = average_epochs(tmp_path, 1, 3)
    assert used == [1, 3] and torch.equal(state["w"], torch.tensor([2.0, 4.0]))


# ------------------------------------------------------------------------------------------------ extraction resume
def _tiny_whisper():
    from whisper_flamingo.models.whisper import ModelDimensions, Whisper

    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=100, n_audio_state=16, n_audio_head=2, n_audio_layer=3,
                           n_vocab=51864, n_text_ctx=8, n_text_state=16, n_text_head=2, n_text_layer=1)
    return Whisper(dims).eval()


def _clips(tmp_path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        sf.write(str(tmp_path / f"c{i}.wav"), (rng.standard_normal(9000) * 3000).astype(np.int16), 16000,
                 subtype="PCM_16")
        items.append((f"c{i}.wav", SPEECH))
    return _list(tmp_path / "clips.json", items)


def test_killed_extraction_resumes_without_duplicates_or_gaps(tmp_path):
    from whisper_flamingo.commands.extract_tag_features import block_outputs, extract_features

    model = _tiny_whisper()
    recs = read_tagging_list(_clips(tmp_path, 5), read_label_csv())
    calls = {"n": 0}

    def dying_tap(m, mel):
        calls["n"] += 1
        if calls["n"] == 4:  # killed while extracting the second shard
            raise KeyboardInterrupt
        return block_outputs(m, mel)

    kw = {"model_id": "tiny-test", "clip_seconds": 0.8, "shard_size": 2, "batch_size": 1, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        extract_features(recs, model, tmp_path / "feat", tap=dying_tap, **kw)
    assert len(FeatureStore(tmp_path / "feat")) == 2  # only the complete first shard exists
    info = extract_features(recs, model, tmp_path / "feat", **kw)
    assert (info.reused, info.extracted) == (2, 3)
    store = FeatureStore(tmp_path / "feat")  # would raise on a key stored twice
    assert sorted(store.where) == [f"c{i}" for i in range(5)]
    whole = extract_features(recs, model, tmp_path / "fresh", **kw)
    assert whole.extracted == 5
    fresh = FeatureStore(tmp_path / "fresh")
    for key in store.where:
        assert store.get(key).shape == (3, 2, 16)  # [L, 0.8 s / 0.4 s, D]
        assert np.array_equal(store.get(key), fresh.get(key))
    assert extract_features(recs, model, tmp_path / "feat", **kw).extracted == 0
    loaded = FeatureInput(str(tmp_path / "feat"), steps=25).load(recs[0])
    assert loaded.shape == (3, 25, 16) and loaded[:, 2:].abs().sum() == 0


# ------------------------------------------------------------------------------------------------ training
def _feature_set(tmp_path: Path, n: int = 16) -> tuple[Path, Path]:
    """Features where class Speech lights up dims 0-3 and Music dims 4-7 of every layer and step."""
    rng = np.random.default_rng(0)
    feat = tmp_path / "feat"
    feat.mkdir()
    keys, arrays, items = [], [], []
    for i in range(n):
        labs = [SPEECH] if i % 3 == 0 else [MUSIC] if i % 3 == 1 else [SPEECH, MUSIC]
        x = rng.standard_normal((2, 25, 16)).astype(np.float32) * 0.5
        if SPEECH in labs:
            x[..., 0:4] += 2.0
        if MUSIC in labs:
            x[..., 4:8] += 2.0
        keys.append(f"k{i}")
        arrays.append(x.astype(np.float16))
        items.append((f"k{i}.wav", ",".join(labs)))
    np.save(feat / "shard-00000.npy", np.stack(arrays))
    (feat / "shard-00000.json").write_text(json.dumps({"keys": keys}))
    return _list(tmp_path / "list.json", items), feat


@pytest.fixture
def small_head():
    """A 2-layer, 16-wide TL-TR registered for the test only."""
    from whisper_flamingo.models import registry
    from whisper_flamingo.models.whisper_at import build_tltr

    registry.get_entry("whisper-at-tltr-tiny.en")  # families loaded first
    registry.register_model("test-tltr-2x16", family="whisper-at", builder=build_tltr,
                            config={"n_layer": 2, "rep_dim": 16, "label_dim": 527})
    yield "test-tltr-2x16"
    registry._REGISTRY.pop("test-tltr-2x16", None)
    registry._PARAMETERS.pop("test-tltr-2x16", None)


def test_tagging_task_trains_and_lowers_the_loss(tmp_path, small_head):
    from whisper_flamingo.config import load_config
    from whisper_flamingo.tasks.run import train
    lst, feat = _feature_set(tmp_path)
    cfg = load_config(None, [
        "task=tagging", f"tagging_model={small_head}", f"data_train={lst}", f"data_val={lst}", f"data_eval={lst}",
        f"feature_dir={feat}", f"log_output_dir={tmp_path / 'logs'}", f"check_output_dir={tmp_path / 'ckpt'}",
        "train_id=t", "batch_size=4", "learning_rate=0.003", "weight_decay=0", "warmup_steps=0",
        "num_train_steps=16", "validate_every_n_batches=4", "validate_before_training=false", "monitor=val/mAP",
        "mixup=0.5", "label_smoothing=0.1", "timem=5", "balanced_sampling=true", "lrscheduler_start=2",
        "lrscheduler_step=1", "lrscheduler_decay=0.5", "wa_start=3", "wa_end=4", "num_worker=0",
        "accelerator=cpu", "precision=32", "log_every_n_steps=1", "checkpoint_every_n_steps=100"])
    out = train(cfg)
    rows = (out / "result.csv").read_text().splitlines()
    assert len(rows) == 5  # header + 4 epochs
    header = rows[0].split(",")
    first, last = (dict(zip(header, r.split(","), strict=True)) for r in (rows[1], rows[-1]))
    assert float(last["train_loss"]) < float(first["train_loss"])
    assert float(last["mAP"]) > float(first["mAP"])
    # the schedule, stepped per epoch: x0.5 at milestones 2, 3, 4 (the row is written after epoch 4's last step,
    # as the reference's log prints the lr after the final scheduler step)
    assert [float(dict(zip(header, r.split(","), strict=True))["lr"]) for r in rows[1:]] == \
        pytest.approx([3e-3, 3e-3 * 0.5, 3e-3 * 0.25, 3e-3 * 0.125])
    assert (out / "head_wa.pt").is_file() and (out / "wa_result.csv").is_file()
    assert lst.with_name("list_weight.csv").is_file()


def test_demo_head_expands_to_the_audioset_classes(tmp_path):
    from whisper_flamingo.commands.demo_tag import expand_classes
    from whisper_flamingo.models.whisper_at import build_tltr

    csv = tmp_path / "used.csv"
    csv.write_text(f'index,mid,display_name\n0,{MUSIC},"Music"\n1,{SPEECH},"Speech"\n')
    torch.manual_seed(0)
    head = build_tltr(n_layer=2, rep_dim=16, label_dim=2).eval()
    big = expand_classes(head, read_label_csv(csv), read_label_csv())
    x = torch.randn(3, 2, 25, 16)
    with torch.no_grad():
        small, full = head(x), big(x)
    assert full.shape == (3, 527)
    assert torch.allclose(full[:, 137], small[:, 0]) and torch.allclose(full[:, 0], small[:, 1])
    assert torch.all(full[:, 1:137] == -30.0)


def test_synthetic_tagging_set_is_labelled_with_audioset_classes(tmp_path):
    from whisper_flamingo.preparation.synthetic.tagging import generate_tagging_set

    info = generate_tagging_set(tmp_path / "set", seed=3, n_train=8, n_valid=2, n_eval=3, progress=False)
    labels = read_label_csv(info.label_csv)
    used = read_label_csv(tmp_path / "set" / "class_labels_used.csv")
    assert len(labels) == 527 and "Dial tone" in used.names and all(m in labels.mids for m in used.mids)
    for split, n in (("train", 8), ("valid", 2), ("eval", 3)):
        recs = read_tagging_list(info.lists[split], used)
        assert len(recs) == n
        for r in recs:
            audio, sr = sf.read(r.wav, dtype="int16")
            assert sr == 16000 and len(audio) == 160000 and r.labels
            silence = used.names.index("Silence")
            assert (silence not in r.labels) or r.labels == (silence,)
    first = (tmp_path / "set" / "train.json").read_text()
    generate_tagging_set(tmp_path / "set", seed=3, n_train=8, n_valid=2, n_eval=3, progress=False)
    assert (tmp_path / "set" / "train.json").read_text() == first


def test_synthetic_tagging_set_has_esc50_folds_and_sat_tables(tmp_path):
    from whisper_flamingo.preparation.synthetic.tagging import generate_tagging_set

    generate_tagging_set(tmp_path / "s", seed=1, n_train=3, n_valid=1, n_eval=1, progress=False)
    esc = tmp_path / "s" / "esc50"
    labels = read_label_csv(esc / "esc_class_labels_indices.csv")
    folds = [read_tagging_list(esc / f"esc_eval_data_{k}.json", labels) for k in range(1, 6)]
    assert all(len(f) == len(labels) == 8 for f in folds)  # one clip per class and fold, single-label
    assert all(len(r.labels) == 1 for f in folds for r in f)
    assert sorted(r.labels[0] for r in folds[0]) == list(range(8))
    train1 = {r.wav for r in read_tagging_list(esc / "esc_train_data_1.json", labels)}
    assert train1 == {r.wav for f in folds[1:] for r in f} and not train1 & {r.wav for r in folds[0]}
    assert sf.info(folds[2][0].wav).duration == 5.0
    tsv = (tmp_path / "s" / "sat" / "train.tsv").read_text().splitlines()
    psl = [line.split("\t") for line in (tmp_path / "s" / "sat" / "psl_chunked2s.tsv").read_text().splitlines()]
    assert tsv[0].split("\t") == ["filename", "labels", "duration", "hdf5path"] and len(tsv) == 4
    assert psl[0] == ["filename", "start", "end", "prob", "idxs"] and len(psl) == 1 + 3 * 5
    for _, start, end, prob, idxs in psl[1:]:
        assert float(end) - float(start) == 2.0 and len(prob.split(";")) == len(idxs.split(";"))
        assert all(0.0 < float(p) <= 1.0 for p in prob.split(";"))
    # the 4-s table of the 2-s models (two whole 4-s chunks per 10-s clip), read by SAT training
    from whisper_flamingo.data.sat_psl import read_psl

    rows = read_psl(tmp_path / "s" / "sat" / "psl_chunked4s.tsv", tmp_path / "s" / "sat" / "train.tsv", 527)
    assert len(rows) == 3 * 2 and all(r.end - r.start == 4.0 and Path(r.wav).is_file() for r in rows)


def test_training_that_ends_before_wa_start_keeps_its_weights(tmp_path, small_head, caplog):
    """wa_start beyond the last epoch (e.g. a short run of a recipe): a warning, no head_wa.pt, no crash."""
    from whisper_flamingo.config import load_config
    from whisper_flamingo.tasks.run import train
    lst, feat = _feature_set(tmp_path, n=8)
    cfg = load_config(None, [
        "task=tagging", f"tagging_model={small_head}", f"data_train={lst}", f"data_val={lst}",
        f"feature_dir={feat}", f"log_output_dir={tmp_path / 'logs'}", f"check_output_dir={tmp_path / 'ckpt'}",
        "train_id=t", "batch_size=4", "num_train_steps=4", "validate_every_n_batches=2",
        "validate_before_training=false", "monitor=val/mAP", "wa_start=5", "wa_end=8", "num_worker=0",
        "accelerator=cpu", "precision=32", "checkpoint_every_n_steps=100"])
    with caplog.at_level("WARNING"):
        out = train(cfg)
    assert "weight averaging skipped" in caplog.text
    assert not (out / "head_wa.pt").exists() and (out / "last.ckpt").is_file()


def test_fewer_training_clips_than_one_batch_is_a_one_line_error(tmp_path, small_head):
    """Whole batches only: 8 clips with batch_size 16 would train nothing; say so instead of 'finished at step 0'."""
    from whisper_flamingo.config import load_config
    from whisper_flamingo.errors import ConfigError
    from whisper_flamingo.tasks.run import train
    lst, feat = _feature_set(tmp_path, n=8)
    cfg = load_config(None, [
        "task=tagging", f"tagging_model={small_head}", f"data_train={lst}", f"data_val={lst}",
        f"feature_dir={feat}", f"log_output_dir={tmp_path / 'logs'}", f"check_output_dir={tmp_path / 'ckpt'}",
        "train_id=t", "batch_size=16", "num_train_steps=4", "monitor=val/mAP", "num_worker=0", "accelerator=cpu"])
    with pytest.raises(ConfigError, match=r"list.json: 8 training clips per pass, fewer than batch_size 16"):
        train(cfg)
