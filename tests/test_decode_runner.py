"""The decode runner and CLI: output layout, original files, resume after a crash, YAML, errors."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from whisper.model import ModelDimensions
from whisper.tokenizer import get_tokenizer

import whisper_decode_video
from whisper_flamingo.checkpoints import save_openai_checkpoint
from whisper_flamingo.commands import decode as decode_cmd
from whisper_flamingo.decoding.conditions import Condition, condition_dir, conditions
from whisper_flamingo.decoding.outputs import read_done
from whisper_flamingo.decoding.runner import DecodeSettings, run_decode
from whisper_flamingo.decoding.search import SearchOptions
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.models import Whisper


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: one thread (see conftest.one_thread)."""


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A random multilingual Whisper whose hypotheses vary in length (some end, some run out)."""
    torch.manual_seed(0)
    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51865, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=2)
    model = Whisper(dims)
    for name, p in model.named_parameters():
        if p.ndim == 1:
            p.data = torch.randn_like(p) * 0.1 + (1.0 if name.endswith(".weight") else 0.0)
        elif "token_embedding" not in name:
            torch.nn.init.normal_(p, std=0.3)
        else:
            torch.nn.init.normal_(p, std=1.0)
    model.decoder.token_embedding.weight.data[get_tokenizer(True).eot] *= 3.0
    path = tmp_path_factory.mktemp("ckpt") / "tiny_random.pt"
    save_openai_checkpoint(path, dims, model.state_dict())
    return path


def _settings(root: Path, ckpt: Path, out: Path, **kw) -> DecodeSettings:
    base = dict(langs=["en"], model_type="tiny", checkpoint_path=str(ckpt), muavic_root=str(root),
                noise_snrs=[0.0, 1000.0], noise_fns=[str(root / "noise" / "test.tsv")], decode_path=str(out),
                batch_bins=24000, device="cpu", search=SearchOptions(max_new_tokens=12))
    base.update(kw)
    return DecodeSettings(**base)


def _rows(path: Path) -> list[dict]:
    return sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda o: o["index"])


def test_resume_after_crash_equals_uninterrupted_run(tiny_corpus, tiny_ckpt, tmp_path):
    full = run_decode(_settings(tiny_corpus, tiny_ckpt, tmp_path / "a"))
    assert [s["snr"] for s in full] == [0.0, 1000.0]

    class Crash(RuntimeError):
        pass

    def crash(n_batch: int) -> None:
        if n_batch == 1:
            raise Crash

    settings_b = _settings(tiny_corpus, tiny_ckpt, tmp_path / "b")
    with pytest.raises(Crash):
        run_decode(settings_b, after_batch=crash)
    cond = Condition("en", "asr", 0.0, settings_b.noise_fns[0])
    jsonl = condition_dir(settings_b, cond) / "utterances.jsonl"
    partial = jsonl.read_text().splitlines()
    assert 0 < len(partial) < 4
    with open(jsonl, "a") as f:  # the process died while writing the next line
        f.write('{"id": "torn", "hyp": "hal')
    resumed = run_decode(settings_b)
    for a, b in zip(full, resumed):
        assert a["scores"] == b["scores"] and a["utterances"] == b["utterances"] == 4
    for s_a, s_b in zip(full, resumed):
        da = condition_dir(_settings(tiny_corpus, tiny_ckpt, tmp_path / "a"),
                                  Condition("en", "asr", s_a["snr"], settings_b.noise_fns[0]))
        db = condition_dir(settings_b, Condition("en", "asr", s_b["snr"], settings_b.noise_fns[0]))
        assert _rows(da / "utterances.jsonl") == _rows(db / "utterances.jsonl")
        for name in ("pred.txt", "wer.368862", "wer.json"):
            assert (da / name).read_text() == (db / name).read_text()
    # noise changes the hypotheses of at least one utterance (the condition is really noisy)
    d0 = condition_dir(settings_b, Condition("en", "asr", 0.0, settings_b.noise_fns[0]))
    d1 = condition_dir(settings_b, Condition("en", "asr", 1000.0, settings_b.noise_fns[0]))
    assert [r["hyp"] for r in _rows(d0 / "utterances.jsonl")] != [r["hyp"] for r in _rows(d1 / "utterances.jsonl")]
    # a finished condition is not decoded again
    timing = json.loads((d0 / "summary.json").read_text())["timing"]
    again = run_decode(settings_b, after_batch=lambda n: pytest.fail("decoded again"))
    assert again[0]["scores"] == resumed[0]["scores"] and again[0]["timing"] == timing
    # other settings on the same folder are refused
    with pytest.raises(ConfigError, match="other settings"):
        run_decode(_settings(tiny_corpus, tiny_ckpt, tmp_path / "b", seed=5))


def test_original_command_line_and_outputs(tiny_corpus, tiny_ckpt, tmp_path, capsys):
    noise = tiny_corpus / "noise" / "test.tsv"
    rc = whisper_decode_video.main([
        "--lang", "en", "--model-type", "tiny", "--noise-snr", "0", "--noise-fn", str(noise),
        "--checkpoint-path", str(tiny_ckpt), "--beam-size", "2", "--modalities", "asr",
        "--use_av_hubert_encoder", "0", "--av_fusion", "None", "--fp16", "1", "--decode-path", str(tmp_path),
        "--task", "transcribe", "--normalizer", "whisper", "--use-original-whisper", "0",
        "--muavic-root", str(tiny_corpus), "--max-new-tokens", "16", "--max-utterances", "3"])
    assert rc == 0
    out = tmp_path / tiny_ckpt.name / "en/test/asr/snr-0/visible-0/beam-2/noise"  # the checkpoint's name
    assert out.is_dir(), sorted(p for p in tmp_path.rglob("*") if p.is_dir())
    pred = (out / "pred.txt").read_text().splitlines()
    assert len(pred) == 6 and all(line.startswith(("HYPO: ", "REF: ")[i % 2]) for i, line in enumerate(pred))
    assert re.fullmatch(r"WER: \d+\.\d{4}\n", (out / "wer.368862").read_text())
    wj = json.loads((out / "wer.json").read_text())
    assert set(wj) == {"pred", "refs"} and len(wj["refs"]) == 3
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metric"] == "wer" and summary["normalizer"] == "whisper" and summary["beam"] == 2
    prov = summary["provenance"]
    assert len(prov["checkpoint_sha256"]) == 12 and prov["padded_30s"] is False and prov["precision"] == "fp32"
    assert {"torch", "jiwer", "sacrebleu", "openai-whisper"} <= set(prov["versions"])
    rows = _rows(out / "utterances.jsonl")
    assert {"id", "lang", "ref", "hyp", "snr", "modality", "sub", "del", "ins", "ref_words", "flags",
            "audio_seconds"} <= set(rows[0])
    errors = sum(r["sub"] + r["del"] + r["ins"] for r in rows)
    assert summary["scores"]["wer"]["errors"] == errors
    assert "WER" in capsys.readouterr().out


def test_translation_scores_bleu_from_yaml(tiny_corpus, tiny_ckpt, tmp_path):
    cfg = tmp_path / "decode.yaml"
    cfg.write_text(f"lang: es\ntask: X-En\nmuavic-root: {tiny_corpus}\ncheckpoint_path: {tiny_ckpt}\n"
                   f"decode_path: {tmp_path / 'out'}\nmax_new_tokens: 12\nnoise-snr: 1000\n")
    parser = decode_cmd.argparse.ArgumentParser()
    decode_cmd.add_arguments(parser)
    args = parser.parse_args(["--config", str(cfg), "--beam-size", "1"])
    assert decode_cmd.run(args) == 0
    outs = list((tmp_path / "out").rglob("bleu.368862"))
    assert len(outs) == 1 and "/es/test/asr/snr-1000/visible-0/beam-1/none" in str(outs[0].parent)
    summary = json.loads((outs[0].parent / "summary.json").read_text())
    assert summary["metric"] == "bleu" and "tok:13a" in summary["sacrebleu_signature"]
    assert json.loads((outs[0].parent / "bleu.json").read_text())["pred"]
    cfg.write_text("beam_sise: 5\n")
    with pytest.raises(ConfigError, match="did you mean 'beam_size'"):
        decode_cmd.apply_yaml(parser.parse_args(["--config", str(cfg)]))


def test_audio_visual_modalities_need_a_flamingo_checkpoint(tiny_corpus, tiny_ckpt, tmp_path, capsys):
    rc = whisper_decode_video.main(["--lang", "en", "--modalities", "avsr", "--checkpoint-path", str(tiny_ckpt),
                                    "--decode-path", str(tmp_path), "--muavic-root", str(tiny_corpus)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "audio-only Whisper checkpoint" in err[0] and str(tiny_ckpt) in err[0]
    rc = whisper_decode_video.main(["--lang", "en", "--modalities", "vsr", "--decode-path", str(tmp_path),
                                    "--muavic-root", str(tiny_corpus)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--checkpoint-path" in err[0]
    with pytest.raises(ConfigError, match="needs --noise-fn"):
        conditions(DecodeSettings(langs=["en"], noise_snrs=[0.0]))


def test_read_done_tolerates_only_a_torn_last_line(tmp_path):
    p = tmp_path / "utterances.jsonl"
    p.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "hy')
    assert list(read_done(p)) == ["a", "b"]
    assert p.read_text() == '{"id": "a"}\n{"id": "b"}\n'  # cut so that appending stays valid
    p.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(Exception, match=r"utterances.jsonl:2"):
        read_done(p)


def test_slurm_scripts_forward_the_original_arguments():
    import shlex
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    env = {"PATH": "/usr/bin:/bin", "DRY_RUN": "1", "LANGS": "en es", "MUAVIC_ROOT": "/data/mu"}
    lines = subprocess.run(["bash", "slurm/whisper_decode_multi_wrapper.sh"], cwd=repo, env=env, text=True,
                           capture_output=True, check=True).stdout.splitlines()
    jobs, results = lines[:-1], lines[-1]
    assert len(jobs) == 4 and all(j.startswith("sbatch slurm/whisper_decode.sh ") for j in jobs)
    # the last job tabulates the decodes once all four have ended well
    assert results == ("sbatch --dependency=afterok:JOB0:JOB1:JOB2:JOB3 --kill-on-invalid-dep=yes "
                       "slurm/whisper_results.sh decode/")
    job = shlex.split(jobs[0])[2:]  # the 16 positional arguments and the extra flags
    out = subprocess.run(["bash", "slurm/whisper_decode.sh", *job], cwd=repo, env={**env, "PY": "echo"},
                         text=True, capture_output=True, check=True).stdout.splitlines()[-1]
    argv = shlex.split(out)
    assert argv[:2] == ["-u", "whisper_decode_video.py"]
    parser = decode_cmd.argparse.ArgumentParser()
    decode_cmd.add_arguments(parser)
    args = parser.parse_args(argv[2:])
    assert (args.lang, args.beam_size, args.noise_snr, args.task) == (["en"], 5, [0.0], "transcribe")
    assert args.checkpoint_path == "models/whisper-flamingo_multi-all_medium.pt"
    assert args.noise_fn == ["noise/babble/lrs3/test.tsv"] and args.muavic_root == "/data/mu"
    assert not (repo / "slurm" / "decode_slurm").exists()


def test_original_whisper_decodes_padded_30s_windows(tiny_corpus, tiny_ckpt, tmp_path):
    import shutil

    weights = tmp_path / "whisper"
    weights.mkdir()
    shutil.copy(tiny_ckpt, weights / "tiny.pt")  # found as <whisper_path>/<name>.pt, like openai's cache
    settings = _settings(tiny_corpus, tiny_ckpt, tmp_path / "out", use_original_whisper=True, model_type="tiny",
                         whisper_path=str(weights), noise_snrs=[1000.0], noise_fns=[None], max_utterances=2)
    (summary,) = run_decode(settings)
    assert summary["provenance"]["padded_30s"] is True and summary["provenance"]["checkpoint"] is None
    out = tmp_path / "out" / "tiny" / "en" / "test" / "asr" / "snr-1000" / "visible-0" / "beam-1" / "none"
    assert (out / "wer.368862").exists() and summary["utterances"] == 2


def test_runaway_guard_is_off_by_default_and_recorded(tiny_corpus, tiny_ckpt, tmp_path, capsys):
    """Default: the original's 224-token allowance and no loop stop; ``--runaway-guard``: a budget from the
    duration (and the loop stop); both recorded in summary.json; a resume may not switch it."""
    common = ["--lang", "en", "--model-type", "tiny", "--checkpoint-path", str(tiny_ckpt), "--muavic-root",
              str(tiny_corpus), "--modalities", "asr", "--fp16", "0", "--max-utterances", "3"]
    summaries, rows = {}, {}
    for name, extra in (("off", []), ("on", ["--runaway-guard"])):
        out = tmp_path / name
        assert whisper_decode_video.main([*common, "--decode-path", str(out), *extra]) == 0, capsys.readouterr().err
        (path,) = out.rglob("summary.json")
        summaries[name] = json.loads(path.read_text())
        rows[name] = _rows(path.parent / "utterances.jsonl")
    assert summaries["off"]["provenance"]["runaway_guard"] is False
    assert summaries["on"]["provenance"]["runaway_guard"] is True
    off, on = rows["off"], rows["on"]
    budget = SearchOptions(runaway_guard=True).budget
    assert any("runaway" in r["flags"] for r in off)  # the random model does not stop by itself
    for a, b in zip(off, on):
        assert a["n_tokens"] <= 224 and ("runaway" not in a["flags"] or a["n_tokens"] == 224)
        assert "loop" not in a["flags"]
        assert b["n_tokens"] <= budget(b["audio_seconds"]) < 224
    assert max(r["n_tokens"] for r in off) > max(r["n_tokens"] for r in on)
    # the guard is part of the run's settings: switching it on an existing decode is refused
    rc = whisper_decode_video.main([*common, "--decode-path", str(tmp_path / "off"), "--runaway-guard"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "other settings (search)" in err[-1]


# ------------------------------------------------------------------ a new user's first hour (issue 12)
def _hand_corpus(root: Path, seconds: Sequence[float], bad: bool = False) -> Path:
    """``root/muavic/en/test.tsv`` written by hand: one synthetic utterance per duration (a 65-s one has
    pauses at 20 and 27 s), and a file that is not audio when ``bad``."""
    import numpy as np
    import soundfile as sf

    from tests.corpus_utils import synth_speech

    rng = np.random.default_rng(0)
    (root / "muavic" / "en").mkdir(parents=True)
    rows, texts = [], []
    for i, sec in enumerate(seconds):
        audio = synth_speech(rng, int(sec * 16000))
        for pause in (20.0, 27.0):
            if sec > pause + 1:
                audio[int(pause * 16000): int((pause + 0.5) * 16000)] = 0
        sf.write(root / f"u{i}.wav", audio.astype(np.int16), 16000, subtype="PCM_16")
        rows.append(f"u{i}\t\tu{i}.wav\t{int(sec * 25)}\t{len(audio)}")
        texts.append("one two three")
    if bad:
        (root / "bad.wav").write_bytes(b"this is not audio at all" * 40)
        rows.append("bad\t\tbad.wav\t25\t16000")
        texts.append("four five")
    (root / "muavic" / "en" / "test.tsv").write_text(f"{root}\n" + "\n".join(rows) + "\n")
    (root / "muavic" / "en" / "test.en").write_text("\n".join(texts) + "\n")
    return root


def test_decode_needs_lang_and_defaults_to_the_packaged_tiny_en(tmp_path, monkeypatch, capsys):
    from whisper_flamingo.cli import main as cli_main

    monkeypatch.chdir(tmp_path)
    parser = decode_cmd.argparse.ArgumentParser()
    decode_cmd.add_arguments(parser)
    args = parser.parse_args([])
    assert args.model_type == "tiny.en" and args.device == "auto"
    assert cli_main(["decode", "--muavic-root", "nowhere"]) == 2
    assert "--lang is required" in capsys.readouterr().err
    assert sorted(tmp_path.iterdir()) == []  # nothing created


def test_failed_download_leaves_no_folder_and_manifests_are_checked_first(tmp_path, monkeypatch, capsys):
    """A model that cannot be fetched leaves no empty ``models/``; a wrong ``--muavic-root`` is reported
    before any model is loaded."""
    import os
    import urllib.error

    import whisper

    from whisper_flamingo.cli import main as cli_main
    from whisper_flamingo.decoding import runner

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WHISPER_FLAMINGO_OFFLINE", raising=False)

    def offline(url, root, in_memory):  # what openai-whisper does offline: mkdir, then fail
        os.makedirs(root, exist_ok=True)
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(whisper, "_download", offline)
    _hand_corpus(tmp_path / "data", [1.0])
    rc = cli_main(["decode", "--lang", "en", "--model-type", "medium", "--muavic-root", "data"])
    err = [x for x in capsys.readouterr().err.strip().splitlines() if " INFO " not in x]
    assert rc == 2 and len(err) == 1 and "cannot download Whisper 'medium'" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no models/, no decode/

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the manifests were checked")

    monkeypatch.setattr(runner, "load_model", no_model)
    rc = cli_main(["decode", "--lang", "en", "--muavic-root", "wrong_root"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"error: {Path('wrong_root/muavic/en/test.tsv')}: manifest does not exist; check "
                               "--muavic-root / --lang / --task (or the MuAViC download)"]


def test_output_folder_is_the_checkpoint_name_and_clean_is_decoded_once(tiny_corpus, tiny_ckpt, tmp_path):
    import shutil

    from whisper_flamingo.decoding.results import collect

    paths = []
    for run in ("run1", "run2"):
        (tmp_path / run).mkdir()
        paths.append(tmp_path / run / "last.pt")
        shutil.copy(tiny_ckpt, paths[-1])
    out = tmp_path / "dec"
    noise = [str(tiny_corpus / "noise" / "test.tsv"), str(tiny_corpus / "noise" / "valid.tsv")]
    for p in paths:
        run_decode(_settings(tiny_corpus, p, out, noise_snrs=[1000.0], noise_fns=noise, max_utterances=1))
    labels = sorted(p.name for p in out.iterdir())
    assert labels[0] == "last.pt" and re.fullmatch(r"last\.pt-[0-9a-f]{8}", labels[1]), labels
    # the same checkpoint keeps its folder on a second run
    assert _settings(tiny_corpus, paths[1], out).model_label == labels[1]
    assert _settings(tiny_corpus, paths[0], out).model_label == "last.pt"
    # clean: one condition, filed under none/, though two noise lists were given
    dirs = [p.parent.relative_to(out).as_posix() for p in out.rglob("summary.json")]
    assert sorted(dirs) == sorted(f"{lab}/en/test/asr/snr-1000/visible-0/beam-1/none" for lab in labels)
    assert sorted(e.model for e in collect([out])) == labels


def test_utterances_over_30s_are_flagged_or_decoded_in_windows(tiny_ckpt, tmp_path, caplog):
    import logging
    import shutil

    root = _hand_corpus(tmp_path / "data", [65.0, 2.0])
    weights = tmp_path / "whisper"
    weights.mkdir()
    shutil.copy(tiny_ckpt, weights / "tiny.pt")
    base = dict(langs=["en"], model_type="tiny", use_original_whisper=True, whisper_path=str(weights),
                muavic_root=str(root), batch_bins=480000 * 2, device="cpu", search=SearchOptions(max_new_tokens=4))
    rows = {}
    for mode in ("off", "window"):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            (summary,) = run_decode(DecodeSettings(decode_path=str(tmp_path / mode), long_form=mode, **base))
        (jsonl,) = (tmp_path / mode).rglob("utterances.jsonl")
        rows[mode] = {r["id"]: r for r in _rows(jsonl)}
        warned = [r.message for r in caplog.records if "longer than 30 s" in r.message]
        assert len(warned) == (1 if mode == "off" else 0) and (not warned or "1 of 2 utterances" in warned[0])
        assert summary["flags"]["over_30s"] == 1 and summary["provenance"]["long_form"] == mode
    off, win = rows["off"], rows["window"]
    assert off["u0"]["flags"] == sorted({"over_30s", *off["u0"]["flags"]}) and "over_30s" in off["u0"]["flags"]
    assert "long_form" not in off["u0"]["flags"] and off["u0"]["n_tokens"] <= 4
    assert {"over_30s", "long_form"} <= set(win["u0"]["flags"]) and win["u0"]["audio_seconds"] == 65.0
    assert win["u0"]["n_tokens"] <= 3 * 4  # three windows of at most 4 tokens
    assert off["u1"]["flags"] == win["u1"]["flags"] and "over_30s" not in off["u1"]["flags"]
    assert off["u1"]["hyp"] == win["u1"]["hyp"]  # short utterances: unchanged


def test_window_cuts_fall_in_pauses_and_cover_the_audio():
    import numpy as np

    from whisper_flamingo.decoding.longform import WINDOW_SAMPLES, split_points

    rng = np.random.default_rng(0)
    audio = rng.normal(0, 3000, 65 * 16000).astype(np.float32)
    for pause in (27.0, 55.5):
        audio[int(pause * 16000): int((pause + 0.3) * 16000)] = 0
    spans = split_points(audio)
    assert spans[0][0] == 0 and spans[-1][1] == len(audio)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert all(0 < e - s <= WINDOW_SAMPLES for s, e in spans)
    cuts = [e / 16000 for _, e in spans[:-1]]
    assert len(cuts) == 2 and 27.0 <= cuts[0] <= 27.3 and 55.5 <= cuts[1] <= 55.8, cuts
    assert split_points(audio[: 20 * 16000]) == [(0, 20 * 16000)]


def test_switches_take_the_usual_forms_and_original_spellings_stay(tmp_path):
    parser = decode_cmd.argparse.ArgumentParser()
    decode_cmd.add_arguments(parser)
    a = parser.parse_args(["--lang", "en", "--use-original-whisper", "true", "--fp16", "no", "--av_fusion", "None",
                           "--use_av_hubert_encoder", "0"])
    assert (a.use_original_whisper, a.fp16, a.av_fusion, a.use_av_hubert_encoder) == (1, 0, "None", 0)
    a = parser.parse_args(["--use-original-whisper", "--fp16", "OFF", "--av-fusion", "separate",
                           "--use-av-hubert-encoder", "yes"])
    assert (a.use_original_whisper, a.fp16, a.av_fusion, a.use_av_hubert_encoder) == (1, 0, "separate", 1)
    assert parser.parse_args(["--use-original-whisper", "1", "--fp16", "1"]).fp16 == 1
    with pytest.raises(SystemExit):
        parser.parse_args(["--fp16", "maybe"])
    cfg = tmp_path / "d.yaml"  # the same values in a --config file
    cfg.write_text("use-original-whisper: 'yes'\nfp16: false\nuse_av_hubert_encoder: 'off'\n")
    a = decode_cmd.apply_yaml(parser.parse_args(["--config", str(cfg)]))
    assert (a.use_original_whisper, a.fp16, a.use_av_hubert_encoder) == (1, 0, 0)
    cfg.write_text("fp16: maybe\n")
    with pytest.raises(ConfigError, match="fp16: 'maybe' is not a switch value"):
        decode_cmd.apply_yaml(parser.parse_args(["--config", str(cfg)]))


def test_errors_start_their_own_line_and_name_decode_flags(tmp_path, tiny_ckpt, capsys):
    """A bad sample met while the progress bar is open: the bar is closed first, the advice names
    ``--on-bad-sample skip`` (not the config key) and no empty quotes; a corrupt checkpoint: one short line."""
    root = _hand_corpus(tmp_path / "data", [1.0], bad=True)
    common = ["--lang", "en", "--checkpoint-path", str(tiny_ckpt), "--muavic-root", str(root), "--device", "cpu",
              "--max-new-tokens", "2", "--batch-bins", "16000"]
    rc = whisper_decode_video.main([*common, "--decode-path", str(tmp_path / "a")])
    err = capsys.readouterr().err
    assert rc == 2 and "%|" in err  # the bar was drawn
    (line,) = [x for x in err.splitlines() if "error:" in x]
    assert line.startswith("error: ") and "bad.wav" in line and "--on-bad-sample skip" in line, err
    assert "on_bad_sample" not in line and "''" not in line
    assert whisper_decode_video.main([*common, "--decode-path", str(tmp_path / "b"), "--on-bad-sample", "skip"]) == 0
    capsys.readouterr()
    broken = tmp_path / "broken.pt"
    torch.save({"state_dict": {"w": torch.randn(1000)}}, broken)
    data = bytearray(broken.read_bytes())
    for i in range(200, 1200):  # PyTorch's own message: a paragraph of advice
        data[i] ^= 0x5A
    broken.write_bytes(bytes(data))
    rc = whisper_decode_video.main([*common[:2], "--checkpoint-path", str(broken), *common[4:],
                                    "--decode-path", str(tmp_path / "c")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and len(err[0]) < 200, err
    assert err[0].startswith(f"error: {broken}: truncated or corrupt torch.save file") and "likelihood" not in err[0]
