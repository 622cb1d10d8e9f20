"""The task registry, the ``task`` / ``whisper_task`` / ``sync_batchnorm`` keys, and the evaluation split by rank."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from whisper_flamingo.config import load_config
from whisper_flamingo.data.sampler import LengthBatchSampler
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.tasks import registry
from whisper_flamingo.tasks.registry import get_task, resolve_sync_batchnorm, task_for

ROOT = Path(__file__).resolve().parents[1]
#: configs without a task key (the original's and the demos'); the lip-reading demo names its task
SHIPPED = sorted(p for p in (ROOT / "config").glob("audio*/*.yaml") if p.stem != "demo_vsr")


def test_builtin_tasks_map_to_module_datamodule_and_builder():
    from whisper_flamingo.tasks.asr import WhisperASRTask, asr_datamodule, build_whisper
    from whisper_flamingo.tasks.flamingo import WhisperFlamingoTask, build_flamingo, flamingo_datamodule

    asr, flamingo = get_task("asr"), get_task("flamingo")
    assert (asr.module, asr.datamodule, asr.model_builder) == (WhisperASRTask, asr_datamodule, build_whisper)
    assert (flamingo.module, flamingo.datamodule, flamingo.model_builder) == \
        (WhisperFlamingoTask, flamingo_datamodule, build_flamingo)
    # as the original: stage 2 lets DDP skip unused parameters and syncs BatchNorm, stage 1 neither
    assert (asr.find_unused_parameters, asr.sync_batchnorm) == (False, False)
    assert (flamingo.find_unused_parameters, flamingo.sync_batchnorm) == (True, True)
    assert registry.task_names() == ["asr", "flamingo", "mae", "tagging", "vsr"]


def test_tagging_configs_load_and_name_the_tagging_task():
    from whisper_flamingo.models.registry import get_entry
    from whisper_flamingo.tasks.tagging import TaggingTask, build_tagging_model, tagging_datamodule

    tagging = get_task("tagging")
    assert (tagging.module, tagging.datamodule, tagging.model_builder) == \
        (TaggingTask, tagging_datamodule, build_tagging_model)
    for path in sorted((ROOT / "config" / "tagging").glob("*.yaml")):
        cfg = load_config(path, resolve=False)
        assert task_for(cfg).name == ("mae" if path.stem.startswith("mae_") else "tagging")
        get_entry(cfg.tagging_model)  # a registry model


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_old_configs_infer_their_task(path: Path):
    cfg = load_config(path)
    assert cfg.task == "auto"
    assert task_for(cfg).name == ("flamingo" if path.parent.name == "audio-visual" else "asr")


def test_the_lip_reading_demo_config_names_the_vsr_task():
    cfg = load_config(ROOT / "config/audio-visual/demo_vsr.yaml")
    assert task_for(cfg).name == "vsr" and cfg.video_model_config == "tiny"


def test_task_key_overrides_the_inference_and_unknown_task_is_one_line():
    cfg = load_config(ROOT / "config/audio-visual/demo.yaml", ["task=asr"])
    assert task_for(cfg).name == "asr"
    with pytest.raises(ConfigError) as err:
        task_for(load_config(None, ["task=taggin"]))
    msg = str(err.value)
    assert "\n" not in msg and "key 'task'" in msg and "'taggin'" in msg and "asr, flamingo" in msg
    out = subprocess.run([sys.executable, "-m", "whisper_flamingo.cli", "train", "config/audio/demo.yaml",
                          "task=taggin", "--print-config"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert [line for line in out.stderr.splitlines() if line.startswith("error: ")] == [f"error: {msg}"]


def test_earlier_task_values_are_read_as_whisper_task(tmp_path: Path):
    p = tmp_path / "c.yaml"
    p.write_text("lang: es\ntask: X-En\n")
    cfg = load_config(p)
    assert (cfg.task, cfg.whisper_task, cfg.task_name, cfg.resolved_whisper_task) == ("auto", "X-En", "asr", "X-En")
    cfg = load_config(None, ["lang=multi_en-st", "task=flamingo"])
    assert (cfg.task_name, cfg.resolved_whisper_task) == ("flamingo", "En-X")


def test_trainer_gets_sync_batchnorm_and_ddp_settings_from_the_task(tmp_path: Path):
    from whisper_flamingo.tasks.trainer import build_trainer

    def cfg(*extra: str):
        return load_config(ROOT / "config/audio-visual/demo.yaml",
                           [f"log_output_dir={tmp_path}", f"check_output_dir={tmp_path}", *extra])

    flamingo, asr = get_task("flamingo"), get_task("asr")
    assert resolve_sync_batchnorm(cfg("num_devices=4"), flamingo, gpu=True) is True
    assert resolve_sync_batchnorm(cfg("num_devices=4"), asr, gpu=True) is False
    assert resolve_sync_batchnorm(cfg("num_devices=4", "sync_batchnorm=false"), flamingo, gpu=True) is False
    assert resolve_sync_batchnorm(cfg("num_devices=4"), flamingo, gpu=False) is False  # torch: GPUs only
    with pytest.raises(ConfigError, match="key 'sync_batchnorm' is true but SyncBatchNorm needs GPUs"):
        resolve_sync_batchnorm(cfg("num_devices=2", "sync_batchnorm=true"), flamingo, gpu=False)
    on = build_trainer(cfg("accelerator=cpu", "sync_batchnorm=true"))
    off = build_trainer(cfg("accelerator=cpu"))
    assert on._accelerator_connector._layer_sync is not None and off._accelerator_connector._layer_sync is None
    # DDP settings come from the task spec too
    ddp = {task: build_trainer(cfg("accelerator=cpu", "num_devices=2", f"task={task}")).strategy for task in
           ("asr", "flamingo")}
    assert {t: s._ddp_kwargs.get("find_unused_parameters") for t, s in ddp.items()} == {"asr": False, "flamingo": True}


def test_eval_sampler_splits_batches_by_rank_without_repeats():
    lengths = [5, 9, 3, 7, 7, 1, 8, 2, 6, 4, 9]
    whole = LengthBatchSampler(lengths, 12, shuffle=False, drop_last=False, order="descending")
    for world in (2, 3, 4):
        shares = [list(LengthBatchSampler(lengths, 12, shuffle=False, drop_last=False, order="descending",
                                          num_replicas=world, rank=r, even=False)) for r in range(world)]
        assert sorted(b for s in shares for b in s) == sorted(list(whole))  # every batch once, none repeated
        assert [len(s) for s in shares] == [len(range(r, len(whole), world)) for r in range(world)]
        assert max(len(s) for s in shares) - min(len(s) for s in shares) <= 1
    # more ranks than batches: the rank without a share gets one empty batch (it still runs the loop)
    few = [LengthBatchSampler([3, 4], 100, shuffle=False, drop_last=False, num_replicas=2, rank=r, even=False)
           for r in (0, 1)]
    assert [list(s) for s in few] == [[[1, 0]], [[]]] and [len(s) for s in few] == [1, 1]
    # training samplers still pad (every rank the same number of batches)
    train = [LengthBatchSampler(lengths, 12, shuffle=True, drop_last=False, num_replicas=3, rank=r)
             for r in range(3)]
    assert len({len(list(s)) for s in train}) == 1


def test_validation_decoding_uses_the_runaway_guard():
    """Training-time validation decodes greedily with the guard on (``decode`` has it off by default)."""
    from whisper_flamingo.decoding.search import SearchOptions
    from whisper_flamingo.tasks.asr import validation_search

    opts = validation_search()
    assert opts.beam_size == 1 and opts.runaway_guard
    assert opts.budget(2.0) < SearchOptions().budget(2.0) == 224
