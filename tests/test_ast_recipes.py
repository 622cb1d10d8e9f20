"""AST training recipes: the fbank input kind (waveform mixup, SpecAugment before normalisation, noise), the
recipe YAMLs and the 5-fold ESC-50-shaped loop writing acc_fold.csv."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from whisper_flamingo.config import load_config
from whisper_flamingo.data.fbank import kaldi_fbank, normalise, pad_or_cut
from whisper_flamingo.data.fbank_input import FbankInput
from whisper_flamingo.data.tagging import INPUT_KINDS, TaggingDataset, TagRecord
from whisper_flamingo.tasks.folds import summarise_folds

ROOT = Path(__file__).resolve().parents[1]
SR = 16000


def _write(path: Path, x: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16), SR, subtype="PCM_16")
    return str(path)


def _tone(freq: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)


def test_fbank_kind_is_registered_and_reads_the_recipe_keys():
    cfg = load_config(ROOT / "config/tagging/ast_speechcommands.yaml", ["ast_init="])
    loader = INPUT_KINDS["fbank"](cfg)
    assert isinstance(loader, FbankInput)
    assert (loader.target_length, loader.norm_mean, loader.norm_std, loader.noise_aug) == \
        (128, -6.845978, 5.5654526, True)


@pytest.mark.parametrize("name, values", [
    ("ast_esc50", dict(target_length=512, norm_mean=-6.6268077, norm_std=5.358466, batch_size=48, learning_rate=1e-5,
                       warmup_steps=0, lrscheduler_start=5, lrscheduler_step=1, lrscheduler_decay=0.85, mixup=0.0,
                       freqm=24, timem=96, noise_aug=False, balanced_sampling=False, tagging_loss="CE", wa_start=0,
                       folds=5, monitor="val/acc", ast_init="models/audioset_10_10_0.4593.pth")),
    ("ast_speechcommands", dict(target_length=128, norm_mean=-6.845978, norm_std=5.5654526, batch_size=128,
                                learning_rate=2.5e-4, warmup_steps=0, lrscheduler_start=5, lrscheduler_step=1,
                                lrscheduler_decay=0.85, mixup=0.6, freqm=48, timem=48, noise_aug=True,
                                balanced_sampling=False, tagging_loss="BCE", monitor="val/acc",
                                ast_init="models/deit_base_distilled_patch16_384-d0272ac0.pth")),
    ("ast_audioset_balanced", dict(target_length=1024, norm_mean=-4.2677393, norm_std=4.5689974, batch_size=12,
                                   learning_rate=5e-5, warmup_steps=1000, lrscheduler_start=10, lrscheduler_step=5,
                                   lrscheduler_decay=0.5, mixup=0.5, freqm=48, timem=192, balanced_sampling=False,
                                   wa_start=6, wa_end=25, tagging_loss="BCE",
                                   ast_init="models/deit_base_distilled_patch16_384-d0272ac0.pth")),
    ("ast_audioset_full", dict(target_length=1024, batch_size=12, learning_rate=1e-5, warmup_steps=1000,
                               lrscheduler_start=2, lrscheduler_step=1, lrscheduler_decay=0.5, mixup=0.5, freqm=48,
                               timem=192, balanced_sampling=True, wa_start=1, wa_end=5,
                               validate_every_n_batches=162757, num_train_steps=5 * 162757,
                               ast_init="models/deit_base_distilled_patch16_384-d0272ac0.pth")),
])
def test_recipes_hold_the_reference_hyper_parameters(name, values):
    cfg = load_config(ROOT / f"config/tagging/{name}.yaml", resolve=False)
    assert {k: getattr(cfg, k) for k in values} == values
    assert cfg.task == "tagging" and cfg.tagging_input == "fbank" and cfg.tagging_model == "ast-base384"


def test_waveform_mixup_mixes_audio_and_labels_with_the_same_lambda(tmp_path):
    rng = np.random.default_rng(0)
    a = TagRecord(_write(tmp_path / "a.wav", _tone(440, 0.5, rng) + 0.05), (0,), "a")
    b = TagRecord(_write(tmp_path / "b.wav", _tone(1500, 0.3, rng)), (1,), "b")  # shorter: padded to a's length
    loader = FbankInput(target_length=48, norm_mean=-5.0, norm_std=4.0)
    ds = TaggingDataset([a, b], loader, 3, train=True, mixup=1.0, seed=1)
    for index in range(2):
        item = ds[(0, index)]
        y = item["target"].numpy()
        lam = float(y[index])  # the clip's own class gets lambda, the partner's class 1 - lambda
        mine, other = (a, b) if index == 0 else (b, a)
        if y.sum() == 1.0 and y[index] == 1.0:
            continue  # partner drawn was the clip itself
        assert 0.0 < lam < 1.0 and y[1 - index] == pytest.approx(1.0 - lam, abs=1e-6) and y[2] == 0.0
        wa, wb = loader.waveform(mine), loader.waveform(other)
        wa, wb = wa - wa.mean(), wb - wb.mean()
        wb = torch.nn.functional.pad(wb[: wa.numel()], (0, max(0, wa.numel() - wb.numel())))
        mixed = lam * wa + (1 - lam) * wb
        expected = normalise(pad_or_cut(kaldi_fbank(mixed - mixed.mean()), 48), -5.0, 4.0)  # b: 28 frames + pad
        assert torch.allclose(item["input"], expected, atol=1e-4)
        # another lambda would not give this input
        wrong = lam * 0.5 * wa + (1 - lam * 0.5) * wb
        assert not torch.allclose(item["input"][:28], normalise(kaldi_fbank(wrong - wrong.mean()), -5.0, 4.0)[:28],
                                  atol=1e-2)


def test_specaugment_masks_stay_within_the_configured_widths(tmp_path):
    rng = np.random.default_rng(1)
    rec = TagRecord(_write(tmp_path / "n.wav", 0.2 * rng.standard_normal(SR)), (0,), "n")  # 98 frames
    loader = FbankInput(target_length=96, norm_mean=-6.0, norm_std=5.0)
    freqm, timem = 24, 20
    ds = TaggingDataset([rec], loader, 1, train=True, freqm=freqm, timem=timem, seed=3)
    masked_value = (0.0 + 6.0) / 10.0  # a zero *before* normalisation, as AST masks
    f_widths, t_widths = [], []
    for epoch in range(40):
        x = ds[(epoch, 0)]["input"]
        assert x.shape == (96, 128)
        hit = (x - masked_value).abs() < 1e-6
        f_widths.append(int(hit.all(dim=0).sum()))  # frequency bins masked over all frames
        t_widths.append(int(hit.all(dim=1).sum()))  # frames masked over all bins
    assert max(f_widths) < freqm and max(t_widths) < timem
    assert max(f_widths) >= freqm // 2 and max(t_widths) >= timem // 2  # masks do happen, and wide ones
    clean = TaggingDataset([rec], loader, 1, train=False, freqm=freqm, timem=timem)[0]["input"]
    assert not ((clean - masked_value).abs() < 1e-6).all(dim=0).any()  # no masking outside training


def test_noise_augmentation_adds_bounded_noise_and_rolls_in_training_only(tmp_path):
    rng = np.random.default_rng(2)
    rec = TagRecord(_write(tmp_path / "s.wav", _tone(300, 1.0, rng)), (0,), "s")
    loader = FbankInput(target_length=128, norm_mean=-6.845978, norm_std=5.5654526, noise_aug=True)
    base = loader.finish(loader.load(rec), False, None)
    assert torch.equal(base, TaggingDataset([rec], loader, 1)[0]["input"])
    shifts = set()
    for epoch in range(12):
        x = TaggingDataset([rec], loader, 1, train=True, seed=epoch)[(epoch, 0)]["input"]
        best = min(range(-10, 10), key=lambda s: float((x - torch.roll(base, s, 0)).abs().max()))
        diff = x - torch.roll(base, best, 0)
        assert float(diff.min()) >= -1e-6 and float(diff.max()) < 0.1  # U[0,1) x U[0, 0.1)
        shifts.add(best)
    assert len(shifts) > 3


def _esc_like(root: Path, per_fold: int = 2) -> None:
    """A tiny ESC-50-shaped set: 5 folds x 2 classes (tone / noise) of 0.5-s clips; lists and label CSV."""
    rng = np.random.default_rng(0)
    folds = {}
    for fold in range(1, 6):
        folds[fold] = []
        for c, mid in enumerate(("/m/07rwj00", "/m/07rwj01")):
            for i in range(per_fold // 2):
                x = _tone(500 + 100 * rng.random(), 0.5, rng) if c == 0 else 0.3 * rng.standard_normal(SR // 2)
                rel = f"audio/{fold}-{c}-{i}.wav"
                _write(root / rel, x)
                folds[fold].append({"wav": rel, "labels": mid})
    for k in range(1, 6):
        train = [r for f in folds if f != k for r in folds[f]]
        (root / f"esc_train_data_{k}.json").write_text(json.dumps({"data": train}))
        (root / f"esc_eval_data_{k}.json").write_text(json.dumps({"data": folds[k]}))
    (root / "labels.csv").write_text('index,mid,display_name\n0,/m/07rwj00,"tone"\n1,/m/07rwj01,"noise"\n')


def test_esc50_recipe_runs_five_folds_end_to_end_and_writes_acc_fold(tmp_path):
    from whisper_flamingo.cli import main

    _esc_like(tmp_path / "esc")
    d = tmp_path / "esc"
    rc = main(["train", str(ROOT / "config/tagging/ast_esc50.yaml"), "tagging_model=ast-tiny224", "ast_init=",
               f"label_csv={d}/labels.csv", f"data_train={d}/esc_train_data_{{fold}}.json",
               f"data_val={d}/esc_eval_data_{{fold}}.json", f"check_output_dir={tmp_path}/ck",
               f"log_output_dir={tmp_path}/logs", "target_length=48", "batch_size=4", "validate_every_n_batches=2",
               "num_train_steps=4", "checkpoint_every_n_steps=100", "learning_rate=0.001", "freqm=8", "timem=8",
               "accelerator=cpu", "precision=32", "num_worker=0", "lrscheduler_start=1", "seed=0"])
    assert rc == 0
    root = tmp_path / "ck" / "base384"
    per_fold = []
    for k in range(1, 6):
        with open(root / f"fold{k}" / "result.csv") as fh:
            rows = list(csv.DictReader(fh))
        assert [r["epoch"] for r in rows] == ["1", "2"]
        assert all(r["cum_acc"] != "" for r in rows)  # the checkpoint ensemble on the validation list
        per_fold.append([float(r["acc"]) for r in rows])
    acc = np.array(per_fold)
    best = int(np.argmax(acc.mean(axis=0)))
    with open(root / "acc_fold.csv") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["fold", "epoch", "acc"] and [r[0] for r in table[1:]] == ["1", "2", "3", "4", "5", "mean"]
    assert [float(r[2]) for r in table[1:6]] == pytest.approx(acc[:, best].tolist(), abs=1e-6)
    assert float(table[6][2]) == pytest.approx(acc[:, best].mean(), abs=1e-6)
    assert all(r[1] == str(best + 1) for r in table[1:])
    with open(root / "result.csv") as fh:
        mean_rows = list(csv.DictReader(fh))
    assert [float(r["acc"]) for r in mean_rows] == pytest.approx(acc.mean(axis=0).tolist(), abs=1e-9)


def test_fold_summary_takes_the_best_fold_averaged_epoch_not_each_folds_best(tmp_path):
    accs = [[0.90, 0.80, 0.85], [0.50, 0.80, 0.70], [0.60, 0.70, 0.95]]  # means 0.667 0.767 0.833 -> epoch 3
    for k, fold in enumerate(accs, start=1):
        (tmp_path / f"fold{k}").mkdir()
        with open(tmp_path / f"fold{k}" / "result.csv", "w") as fh:
            fh.write("epoch,acc,mAP\n" + "".join(f"{e},{a},0.5\n" for e, a in enumerate(fold, start=1)))
    out = summarise_folds(tmp_path, 3, "acc")
    rows = list(csv.reader(out.open()))
    assert rows[1:] == [["1", "3", "0.850000"], ["2", "3", "0.700000"], ["3", "3", "0.950000"],
                        ["mean", "3", f"{(0.85 + 0.70 + 0.95) / 3:.6f}"]]


# ---------------------------------------------------------------------------------------------- prepare
def _esc50_download(root: Path) -> list[tuple[str, int, int, str]]:
    """A small tree shaped like ESC-50-master: 44.1-kHz clips named fold-clip-take-target, meta/esc50.csv."""
    rows = []
    cats = {0: "dog", 1: "rooster", 2: "pig"}
    for fold in range(1, 6):
        for target, cat in cats.items():
            name = f"{fold}-{100000 + 10 * fold + target}-A-{target}.wav"
            t = np.arange(int(0.2 * 44100)) / 44100
            (root / "audio").mkdir(parents=True, exist_ok=True)
            sf.write(str(root / "audio" / name), (0.3 * np.sin(2 * np.pi * (300 + 200 * target) * t) * 32767)
                     .astype(np.int16), 44100, subtype="PCM_16")
            rows.append((name, fold, target, cat))
    (root / "meta").mkdir()
    (root / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        + "".join(f"{n},{f},{t},{c},{'True' if t == 0 else 'False'},{n.split('-')[1]},A\n" for n, f, t, c in rows))
    return rows


def test_prepare_esc50_resamples_and_writes_five_folds(tmp_path):
    from whisper_flamingo.cli import main
    from whisper_flamingo.data.tagging import read_label_csv, read_tagging_list

    rows = _esc50_download(tmp_path / "ESC-50-master")
    out = tmp_path / "esc50"
    assert main(["prepare", "esc50", "--src", str(tmp_path / "ESC-50-master"), "--out", str(out)]) == 0
    labels = read_label_csv(out / "esc_class_labels_indices.csv")
    assert labels.mids == ("/m/07rwj00", "/m/07rwj01", "/m/07rwj02") and labels.names == ("dog", "rooster", "pig")
    for k in range(1, 6):
        ev = read_tagging_list(out / f"esc_eval_data_{k}.json", labels)
        tr = read_tagging_list(out / f"esc_train_data_{k}.json", labels)
        assert sorted(Path(r.wav).name for r in ev) == sorted(n for n, f, _, _ in rows if f == k)
        assert len(tr) == 12 and not {r.wav for r in tr} & {r.wav for r in ev}
        for r in ev:
            assert r.labels == (int(Path(r.wav).stem.split("-")[-1]),)
            info = sf.info(r.wav)
            assert info.samplerate == 16000 and info.frames == 3200  # 0.2 s at 16 kHz
    x, _ = sf.read(str(out / "audio_16k" / rows[4][0]))
    spectrum = np.abs(np.fft.rfft(x))
    assert abs(np.argmax(spectrum) * 16000 / len(x) - 500) <= 5  # the 500-Hz tone survives resampling


def test_prepare_esc50_names_a_bad_metadata_line(tmp_path):
    from whisper_flamingo.errors import DataError
    from whisper_flamingo.preparation.tagging_corpora import prepare_esc50

    _esc50_download(tmp_path / "src")
    meta = tmp_path / "src" / "meta" / "esc50.csv"
    lines = meta.read_text().splitlines()
    lines[3] = lines[3].replace(",1,", ",9,", 1)
    meta.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"esc50.csv.*4.*fold 9"):
        prepare_esc50(tmp_path / "src", tmp_path / "out")


def _speechcommands_download(root: Path) -> dict[str, set[str]]:
    """A small tree shaped like speech_commands_v0.02: word folders, the two lists, _background_noise_."""
    rng = np.random.default_rng(0)
    files = []
    for word in ("yes", "no", "marvin"):
        for i in range(4):
            rel = f"{word}/{i:08x}_nohash_{i % 2}.wav"
            (root / word).mkdir(parents=True, exist_ok=True)
            sf.write(str(root / rel), (rng.standard_normal(16000) * 3000).astype(np.int16), 16000, subtype="PCM_16")
            files.append(rel)
    (root / "_background_noise_").mkdir()
    sf.write(str(root / "_background_noise_" / "white_noise.wav"), np.zeros(32000, np.int16), 16000)
    valid, test = set(files[0::4]), set(files[1::4])
    (root / "validation_list.txt").write_text("".join(f"{p}\n" for p in sorted(valid)))
    (root / "testing_list.txt").write_text("".join(f"{p}\n" for p in sorted(test)))
    return {"valid": valid, "eval": test, "train": set(files) - valid - test}


def test_prepare_speechcommands_uses_the_official_lists(tmp_path):
    from whisper_flamingo.cli import main
    from whisper_flamingo.data.tagging import read_label_csv, read_tagging_list

    src = tmp_path / "speech_commands_v0.02"
    expected = _speechcommands_download(src)
    out = tmp_path / "sc"
    assert main(["prepare", "speechcommands", "--src", str(src), "--out", str(out)]) == 0
    labels = read_label_csv(out / "speechcommands_class_labels_indices.csv")
    assert len(labels) == 35 and labels.names[:3] == ("backward", "follow", "five") and labels.names[-1] == "one"
    assert labels.mids[0] == "/m/spcmd00" and labels.mids[34] == "/m/spcmd34"
    for split in ("train", "valid", "eval"):
        recs = read_tagging_list(out / f"speechcommand_{split}_data.json", labels)
        got = {str(Path(r.wav).relative_to(src.resolve())) for r in recs}
        assert got == expected[split]
        for r in recs:
            assert labels.names[r.labels[0]] == Path(r.wav).parent.name
    assert "_background_noise_" not in (out / "speechcommand_train_data.json").read_text()


def test_prepare_speechcommands_refuses_an_unknown_word_folder(tmp_path):
    from whisper_flamingo.errors import DataError
    from whisper_flamingo.preparation.tagging_corpora import prepare_speechcommands

    src = tmp_path / "sc"
    _speechcommands_download(src)
    (src / "unknownword").mkdir()
    with pytest.raises(DataError, match="unknownword"):
        prepare_speechcommands(src, tmp_path / "out")


def test_eval_result_holds_the_held_out_scores_of_the_best_validation_epoch(tmp_path):
    from types import SimpleNamespace

    from whisper_flamingo.tasks.tagging import TaggingTask

    history = [{"epoch": e, "acc": va, "mAUC": 0.9, "mAP": 0.5, "test_acc": ta, "test_mAUC": 0.8, "test_mAP": 0.4}
               for e, va, ta in ((1, 0.70, 0.90), (2, 0.95, 0.60), (3, 0.80, 0.99))]
    fake = SimpleNamespace(history=history, cfg=SimpleNamespace(monitor="val/acc", monitor_mode="max",
                                                                checkpoint_dir=tmp_path))
    TaggingTask.write_eval_result(fake)
    rows = list(csv.reader((tmp_path / "eval_result.csv").open()))
    assert rows[0][:5] == ["epoch", "val_acc", "val_mAUC", "eval_acc", "eval_mAUC"]
    assert rows[1][:5] == ["2", "0.95", "0.9", "0.6", "0.8"]  # best by validation, not by test


def test_ast_head_is_built_for_the_recipe_length_and_from_ast_init(tmp_path):
    from dataclasses import asdict

    from whisper_flamingo.models.registry import create
    from whisper_flamingo.tasks.tagging import build_tagging_model

    (tmp_path / "labels.csv").write_text('index,mid,display_name\n0,/m/a,"a"\n1,/m/b,"b"\n')
    base = ["tagging_model=ast-tiny224", f"label_csv={tmp_path}/labels.csv", "target_length=48"]
    fresh = build_tagging_model(load_config(ROOT / "config/tagging/ast_esc50.yaml", [*base, "ast_init="]))
    assert (fresh.cfg.input_tdim, fresh.cfg.label_dim) == (48, 2)
    src = create("ast-tiny224", input_tdim=100)
    torch.save({"cfg": asdict(src.cfg), "model": src.state_dict()}, tmp_path / "as.pt")
    cfg = load_config(ROOT / "config/tagging/ast_esc50.yaml", [*base, f"ast_init={tmp_path}/as.pt"])
    model = build_tagging_model(cfg)
    assert (model.cfg.input_tdim, model.cfg.label_dim, model.training) == (48, 2, True)
    assert torch.equal(model.state_dict()["v.blocks.3.mlp.fc1.weight"], src.state_dict()["v.blocks.3.mlp.fc1.weight"])
    assert model(torch.zeros(1, 48, 128)).shape == (1, 2)
