"""The decode runner and CLI: output layout, original files, resume after a crash, YAML, errors."""

from __future__ import annotations

import json
import re
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
    jobs = subprocess.run(["bash", "slurm/whisper_decode_multi_wrapper.sh"], cwd=repo, env=env, text=True,
                          capture_output=True, check=True).stdout.splitlines()
    assert len(jobs) == 4 and all(j.startswith("sbatch slurm/whisper_decode.sh ") for j in jobs)
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
