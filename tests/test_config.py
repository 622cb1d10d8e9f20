"""Config schema: the shipped configs, unknown keys, wrong types, overrides, --print-config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from whisper_flamingo.config import KEYS, PATH_KEYS, REFUSED_KEYS, Config, load_config
from whisper_flamingo.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "config").glob("audio*/*.yaml"))
ORIGINAL_NAMES = {
    "audio": ["audio_en-x_large", "audio_en-x_medium", "audio_en-x_small", "audio_en_large",
              "audio_lrs2_medium", "audio_multi_medium", "audio_multi_small"],
    "audio-visual": ["av_en-x_large", "av_en-x_medium", "av_en-x_small", "av_en_large", "av_lrs2_medium",
                     "av_multi_medium", "av_multi_small"],
}
# every key the 14 original configs use (reference §1.1) plus the ones they forgot
ORIGINAL_KEYS = """train_name audio_max_length text_max_length accelerator weight_decay adam_epsilon num_worker
validate_every_n_batches num_devices model_name learning_rate batch_size num_train_steps warmup_steps
gradient_accumulation_steps monitor noise_prob noise_snr_train noise_fn noise_fn_val noise_fn_test spec_augment
dropout_rate lang resume_training train_id log_output_dir check_output_dir vc2 vc2_path video_model_ckpt
freeze_video_model freeze_video_batch_norm_stats pt_ckpt video_projection_train_only video_projection_separate_lr
prob_use_av prob_use_a use_av_hubert_encoder add_gated_x_attn av_fusion""".split()


def test_all_original_configs_are_shipped():
    for folder, names in ORIGINAL_NAMES.items():
        for name in names:
            assert (ROOT / "config" / folder / f"{name}.yaml").is_file(), name


def test_schema_has_every_original_key_and_the_new_paths():
    for key in ORIGINAL_KEYS + ["muavic_root", "lrs2_root", "whisper_download_root", "on_bad_sample"]:
        assert key in KEYS, key


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_shipped_config_prints(path: Path):
    out = subprocess.run([sys.executable, str(ROOT / "whisper_ft_muavic.py"), str(path), "--print-config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    printed = yaml.safe_load(out.stdout)
    raw = yaml.safe_load(path.read_text())
    assert set(printed) == set(KEYS)
    for key, value in raw.items():
        if isinstance(value, str):  # the demo configs derive their paths from work_dir
            value = value.replace("${work_dir}", raw.get("work_dir", ""))
        if key not in ("muavic_root", "lrs2_root", "whisper_download_root", "noise_fn", "noise_fn_val",
                       "noise_fn_test", "log_output_dir", "check_output_dir", "pt_ckpt", "video_model_ckpt",
                       "work_dir"):
            assert printed[key] == value, key
        elif value:  # paths are resolved against the current directory
            assert printed[key] == str((ROOT / value).resolve()), key


def test_original_hyperparameters_carry_over():
    c = load_config(ROOT / "config/audio/audio_multi_medium.yaml")
    assert (c.model_name, c.learning_rate, c.audio_max_length, c.batch_size, c.num_train_steps) == \
        ("medium", 6.25e-6, 320000, 1.6, 110000)
    c = load_config(ROOT / "config/audio-visual/av_multi_medium.yaml")
    assert (c.gradient_accumulation_steps, c.freeze_video_model, c.prob_use_av, c.prob_use_a) == (2, False, 0.5, 0.0)
    assert c.is_audio_visual and c.monitor == "val_noisy_en_babble/acc_av"
    c = load_config(ROOT / "config/audio-visual/av_en_large.yaml")
    assert c.prob_use_a == 0.0 and c.lang == "multi_en-st"  # key the original forgot, quirk kept


def test_unknown_key_suggests_closest(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("model_name: tiny\nlerning_rate: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert f"{p}:2:" in msg and "lerning_rate" in msg and "did you mean 'learning_rate'" in msg


def test_wrong_type_names_key_and_type(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("batch_size: four\n")
    with pytest.raises(ConfigError, match=r"c.yaml:1: key 'batch_size' expects number, got 'four'"):
        load_config(p)
    p.write_text("resume_training: 1\n")
    with pytest.raises(ConfigError, match="expects true/false"):
        load_config(p)
    p.write_text("spec_augment: ls-triple\n")
    with pytest.raises(ConfigError, match="spec_augment' must be one of"):
        load_config(p)


def test_overrides_work_for_every_key(tmp_path: Path):
    base = Config()
    for key in KEYS:
        value = getattr(base, key)
        if isinstance(value, bool):
            new = not value
        elif isinstance(value, int):
            new = value + 1
        elif isinstance(value, float):
            new = value / 2 if value else 0.5
        else:
            new = value
        if key in ("task", "whisper_task", "spec_augment", "on_bad_sample", "noise_offset_train", "noise_offset_eval",
                   "precision", "av_fusion", "accelerator", "monitor_mode", "val_normalizer", "n_mels",
                   "video_model_config", "video_model_mode", "tagging_input", "tagging_loss", "lr_schedule"):
            new = {"task": "flamingo", "whisper_task": "X-En", "spec_augment": "ls-double", "on_bad_sample": "skip",
                   "noise_offset_train": "zero", "noise_offset_eval": "random", "precision": "bf16-mixed",
                   "av_fusion": "separate", "accelerator": "cpu", "monitor_mode": "min",
                   "val_normalizer": "none", "n_mels": 128, "video_model_config": "base",
                   "video_model_mode": "pretrained", "tagging_input": "fbank", "tagging_loss": "CE",
                   "lr_schedule": "cosine"}[key]
        elif isinstance(value, str):
            new = "/abs/x" if key.endswith(("_dir", "_root", "_path", "_ckpt")) or key.startswith("noise_fn") \
                or key in PATH_KEYS else "abc"
        if key == "reduce_val":
            new = 7
        if key in ("prob_use_av", "prob_use_a", "noise_prob"):
            new = 0.25
        if key == "noise_snr_train":
            new = [-5, 5]
        text = yaml.safe_dump(new, default_flow_style=True).strip().removesuffix("...").strip()
        extra = ["prob_use_av=0.5"] if key == "prob_use_a" else []
        if key in REFUSED_KEYS:  # read by nothing: any other value is refused (tests/test_options_read.py)
            with pytest.raises(ConfigError, match=key):
                load_config(None, [*extra, f"{key}={text}"])
            continue
        cfg = load_config(None, [*extra, f"{key}={text}"])
        assert getattr(cfg, key) == new, key


def test_paths_resolve_against_cwd(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["muavic_root=corpus", "noise_fn=noise/train.tsv", "noise_snr_train=[-5, 5]"])
    assert cfg.muavic_root == str(tmp_path / "corpus")
    assert cfg.noise_fn == str(tmp_path / "noise/train.tsv")
    assert cfg.noise_snr_train == [-5.0, 5.0]


def test_cli_reports_config_errors_in_one_line(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("num_devices: two\n")
    out = subprocess.run([sys.executable, "-m", "whisper_flamingo.cli", "train", str(p)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("error: ")
    assert len(out.stderr.strip().splitlines()) == 1
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------------------- issue 12: a new user's config
def test_demo_paths_derive_from_work_dir(tmp_path: Path):
    """Overriding work_dir alone moves every path of the demo config; ${key} works for any key."""
    cfg = load_config(ROOT / "config/audio/demo.yaml", [f"work_dir={tmp_path}"], resolve=False)
    paths = {k: getattr(cfg, k) for k in ("model_name", "whisper_download_root", "muavic_root", "log_output_dir",
                                          "check_output_dir", "noise_fn", "noise_fn_val", "noise_fn_test")}
    assert all(v.startswith(f"{tmp_path}/") for v in paths.values()), paths
    assert cfg.noise_fn_val == f"{tmp_path}/corpus/noise/babble/valid.tsv"
    av = load_config(ROOT / "config/audio-visual/demo.yaml", [f"work_dir={tmp_path}"], resolve=False)
    assert av.pt_ckpt == f"{tmp_path}/checkpoints/demo_tiny.en/last.ckpt"
    assert av.video_model_ckpt == f"{tmp_path}/checkpoints/demo_vsr_tiny/last.ckpt"
    assert "demo_out" not in (ROOT / "config/audio/demo.yaml").read_text().split("work_dir: demo_out", 1)[1]
    assert load_config(None, ["train_id=run7", "check_output_dir=/x/${train_id}"]).check_output_dir == "/x/run7"
    with pytest.raises(ConfigError, match="names no key"):
        load_config(None, ["muavic_root=${wrk_dir}/c"])
    with pytest.raises(ConfigError, match="work_dir is empty"):
        load_config(None, ["muavic_root=${work_dir}/c"])


def test_missing_paths_are_listed_at_once(tmp_path: Path):
    cfg = load_config(ROOT / "config/audio/demo.yaml", [f"work_dir={tmp_path}"])
    with pytest.raises(ConfigError) as exc:
        cfg.check_paths()
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("5 input path(s) do not exist: ")
    for key in ("model_name", "muavic_root", "noise_fn", "noise_fn_val", "noise_fn_test"):
        assert f"{key}={getattr(cfg, key)}" in msg, key
    assert f"work_dir={tmp_path}" in msg
    (tmp_path / "corpus/noise/babble").mkdir(parents=True)
    for name in ("train.tsv", "babble/valid.tsv", "babble/test.tsv"):
        (tmp_path / "corpus/noise" / name).write_text("")
    (tmp_path / "models").mkdir()
    (tmp_path / "models/tiny.en.pt").write_bytes(b"x")
    cfg.check_paths()  # all there


def test_batch_and_interval_aliases_and_their_help():
    cfg = load_config(None, ["audio_max_length=96000", "batch_seconds=12", "validate_every_n_steps=7"])
    assert cfg.batch_size == 2.0 and cfg.validate_every_n_batches == 7
    # an override replaces the YAML's key through its alias
    cfg = load_config(ROOT / "config/audio/demo.yaml", ["validate_every_n_steps=3", "batch_seconds=30"])
    assert cfg.validate_every_n_batches == 3 and cfg.batch_size == 30 * 16000 / 96000
    with pytest.raises(ConfigError, match="same setting"):
        load_config(None, ["validate_every_n_steps=3", "validate_every_n_batches=4"])
    with pytest.raises(ConfigError, match="batch_seconds"):
        load_config(None, ["batch_seconds=-1"])
    out = subprocess.run([sys.executable, "-m", "whisper_flamingo.cli", "train", "--help-keys"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert "MULTIPLIER of audio_max_length" in out.stdout and "OPTIMIZER STEPS" in out.stdout
    assert "batch_seconds" in out.stdout and "validate_every_n_steps" in out.stdout
    readme = (ROOT / "README.md").read_text()
    assert "multiplier of `audio_max_length`" in readme and "counts **optimizer steps**" in readme
