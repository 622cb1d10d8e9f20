"""No option is silently ignored: every decode flag and every config key is read, or refused with one line."""

from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from whisper.model import ModelDimensions

from whisper_flamingo.commands import decode as decode_cmd
from whisper_flamingo.config import KEYS, REFUSED_KEYS, load_config
from whisper_flamingo.decoding.runner import DecodeSettings, check_video_flags
from whisper_flamingo.decoding.search import SearchOptions
from whisper_flamingo.errors import ConfigError

PKG = Path(__file__).resolve().parents[1] / "whisper_flamingo"

#: a non-default command line for every decode flag (dest -> argv); a new flag must be added here
NON_DEFAULT: dict[str, list[str]] = {
    "lang": ["--lang", "en"], "model_type": ["--model-type", "tiny"], "noise_snr": ["--noise-snr", "0"],
    "noise_fn": ["--noise-fn", "noise/x/test.tsv"], "beam_size": ["--beam-size", "5"],
    "modalities": ["--modalities", "avsr"], "use_av_hubert_encoder": ["--use_av_hubert_encoder", "1"],
    "av_fusion": ["--av_fusion", "separate"], "fp16": ["--fp16", "0"], "checkpoint_path": ["--checkpoint-path", "c.pt"],
    "decode_path": ["--decode-path", "out/"], "whisper_path": ["--whisper-path", "w/"],
    "av_hubert_path": ["--av-hubert-path", "av_hubert/avhubert/"],
    "av_hubert_ckpt": ["--av-hubert-ckpt", "models/x_ft.pt"], "task": ["--task", "En-X"],
    "normalizer": ["--normalizer", "whisper"], "use_original_whisper": ["--use-original-whisper", "1"],
    "config": ["--config", "{yaml}"], "muavic_root": ["--muavic-root", "r/"], "lrs2_root": ["--lrs2-root", "l/"],
    "split": ["--split", "valid"], "batch_bins": ["--batch-bins", "1000"], "max_utterances": ["--max-utterances", "3"],
    "seed": ["--seed", "7"], "num_workers": ["--num-workers", "2"], "on_bad_sample": ["--on-bad-sample", "skip"],
    "overwrite": ["--overwrite"], "device": ["--device", "cpu"], "patience": ["--patience", "2"],
    "at_checkpoint": ["--at-checkpoint", "head.pt"], "at_time_res": ["--at-time-res", "4.4"],
    "length_penalty": ["--length-penalty", "0.5"], "max_new_tokens": ["--max-new-tokens", "100"],
    "runaway_guard": ["--runaway-guard"], "tokens_per_second": ["--tokens-per-second", "10"],
    "loop_repeats": ["--loop-repeats", "3"], "long_form": ["--long-form", "window"],
}
#: flags that are refused (ConfigError naming the flag) where set alone
REFUSED_FLAGS = {
    "av_hubert_path": "--av-hubert-path",  # fairseq user dir: fairseq is not used
    "tokens_per_second": "--tokens-per-second",  # tunes the runaway guard: needs --runaway-guard
    "loop_repeats": "--loop-repeats",  # idem
}
#: flags only refusable once the model is known (checked against the checkpoint by check_video_flags)
CHECKED_AGAINST_MODEL = {"use_av_hubert_encoder", "av_hubert_ckpt"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    decode_cmd.add_arguments(p)
    return p


def _settings(argv: list[str]) -> DecodeSettings:
    """Settings for ``argv`` after ``--lang es`` (required; a later ``--lang`` wins)."""
    return decode_cmd.settings_from_args(decode_cmd.apply_yaml(_parser().parse_args(["--lang", "es", *argv])))


def _flat(settings: DecodeSettings) -> dict:
    return dataclasses.asdict(settings)


def _names_read(files) -> set[str]:
    """Attribute names accessed and short string constants in ``files`` (keys read by ``getattr``)."""
    names: set[str] = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.isidentifier():
                names.add(node.value)
    return names


def test_every_decode_flag_changes_the_settings_or_is_refused(tmp_path):
    yaml_file = tmp_path / "d.yaml"
    yaml_file.write_text("seed: 11\n")
    base = _flat(_settings([]))
    dests = [a.dest for a in _parser()._actions if a.dest != "help"]
    missing = sorted(set(dests) - set(NON_DEFAULT))
    assert not missing, f"new decode flags without a test value in NON_DEFAULT: {missing}"
    for dest in dests:
        argv = [x.format(yaml=yaml_file) for x in NON_DEFAULT[dest]]
        if dest in REFUSED_FLAGS:
            with pytest.raises(ConfigError, match=REFUSED_FLAGS[dest]):
                _settings(argv)
            continue
        changed = {k for k, v in _flat(_settings(argv)).items() if v != base[k]}
        assert changed, f"{' '.join(argv)} changes nothing in DecodeSettings: the flag is ignored"
    # the runaway guard's tuning flags change the search once the guard is on
    guard = _settings(["--runaway-guard"]).search
    assert guard.runaway_guard and not _settings([]).search.runaway_guard
    assert _settings(["--runaway-guard", "--tokens-per-second", "10"]).search.budget_per_second == 10
    assert _settings(["--runaway-guard", "--tokens-per-second", "0"]).search.budget_per_second is None
    assert _settings(["--runaway-guard", "--loop-repeats", "3"]).search.loop_repeats == 3
    assert guard.budget_per_second == 15.0 and guard.loop_repeats == 4


def test_every_settings_field_is_read_by_the_decoder():
    """A flag that reaches DecodeSettings/SearchOptions must also be read there (not only stored)."""
    read = _names_read((PKG / "decoding").glob("*.py"))
    for cls in (DecodeSettings, SearchOptions):
        unread = [f.name for f in dataclasses.fields(cls) if f.name not in read]
        assert not unread, f"{cls.__name__} fields nothing in decoding/ reads: {unread}"


def test_video_flags_are_checked_against_the_model():
    from whisper_flamingo.models.flamingo import WhisperFlamingo
    from whisper_flamingo.models.whisper import Whisper

    dims = ModelDimensions(n_mels=80, n_audio_ctx=1500, n_audio_state=64, n_audio_head=2, n_audio_layer=1,
                           n_vocab=51864, n_text_ctx=448, n_text_state=64, n_text_head=2, n_text_layer=1)
    with torch.device("meta"):
        kinds = {"audio": Whisper(dims).video_encoder_kind,
                 "resnet": WhisperFlamingo.build(dims, use_av_hubert_encoder=False).video_encoder_kind,
                 "ft": WhisperFlamingo.build(dims, video_mode="finetuned").video_encoder_kind,
                 "pt": WhisperFlamingo.build(dims, video_mode="pretrained").video_encoder_kind,
                 "features": WhisperFlamingo.build(dims, video_encoder=False).video_encoder_kind}
    assert kinds == {"audio": None, "resnet": "resnet", "ft": "avhubert-finetuned", "pt": "avhubert-pretrained",
                     "features": "features"}
    ok = [(0, None, "audio"), (0, None, "resnet"), (1, None, "ft"), (1, "models/large_noise_pt_noise_ft_433h.pt", "ft"),
          (1, "models/mavhubert_only_weights.pt", "pt"), (None, None, "audio")]
    for use, ckpt, kind in ok:
        check_video_flags(DecodeSettings(use_av_hubert_encoder=use, av_hubert_ckpt=ckpt),
                          SimpleNamespace(video_encoder_kind=kinds[kind]))
    bad = [(1, None, "audio", "--use_av_hubert_encoder 1"), (0, None, "ft", "--use_av_hubert_encoder 0"),
           (1, None, "resnet", "--use_av_hubert_encoder 1"), (None, "models/x_ft.pt", "audio", "--av-hubert-ckpt"),
           (None, "models/x_ft.pt", "resnet", "--av-hubert-ckpt"),
           (None, "models/mavhubert_only_weights.pt", "ft", "'ft' in the name"),
           (None, "models/large_noise_pt_noise_ft_433h.pt", "pt", "'ft' in the name")]
    for use, ckpt, kind, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            check_video_flags(DecodeSettings(use_av_hubert_encoder=use, av_hubert_ckpt=ckpt),
                              SimpleNamespace(video_encoder_kind=kinds[kind]))


def _config_property_reads() -> dict[str, set[str]]:
    """``Config`` property/method name -> the ``self.<key>`` it reads (e.g. checkpoint_dir -> check_output_dir)."""
    tree = ast.parse((PKG / "config.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Config")
    return {fn.name: {n.attr for n in ast.walk(fn) if isinstance(n, ast.Attribute)
                      and isinstance(n.value, ast.Name) and n.value.id == "self"}
            for fn in cls.body if isinstance(fn, ast.FunctionDef)}


def test_every_config_key_is_read_outside_config_py_or_refused():
    outside = [f for f in PKG.rglob("*.py") if f != PKG / "config.py"]
    read = _names_read(outside)
    for prop, keys in _config_property_reads().items():  # a key read through a Config property used elsewhere
        if prop in read and prop not in ("to_dict", "to_yaml"):
            read |= keys
    unread = sorted(k for k in KEYS if k not in read and k not in REFUSED_KEYS)
    assert not unread, f"config keys that nothing reads (read them, or refuse them in config.REFUSED_KEYS): {unread}"


@pytest.mark.parametrize("key", sorted(REFUSED_KEYS))
def test_refused_config_keys_fail_with_one_line(key, tmp_path):
    default, _ = REFUSED_KEYS[key]
    load_config(None, [f"{key}={default}"], resolve=False)  # the original configs' value loads
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model_name: tiny\n{key}: {default + 0.5}\n")
    with pytest.raises(ConfigError, match=rf"c.yaml:2: key '{key}'") as err:
        load_config(cfg, resolve=False)
    assert "\n" not in str(err.value)
