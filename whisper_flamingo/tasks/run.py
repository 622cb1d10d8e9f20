"""One training job from a resolved config: model, data, task, trainer, resume."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl

from whisper_flamingo.config import Config, save_config
from whisper_flamingo.errors import ConfigError
from whisper_flamingo.tasks.trainer import LAST, build_trainer

log = logging.getLogger(__name__)


def load_model_for(cfg: Config):
    """The Whisper model named by ``model_name``, initialised from ``pt_ckpt`` when given."""
    from whisper_flamingo.checkpoints import load_stage1_checkpoint, load_whisper

    model = load_whisper(cfg.model_name, download_root=cfg.whisper_download_root)
    if cfg.n_mels and cfg.n_mels != model.dims.n_mels:
        raise ConfigError(f"key 'n_mels' is {cfg.n_mels} but model '{cfg.model_name}' takes "
                          f"{model.dims.n_mels} mel bins; remove n_mels or set it to {model.dims.n_mels}")
    if cfg.pt_ckpt:
        load_stage1_checkpoint(model, cfg.pt_ckpt)
        log.info("initialised Whisper from %s", cfg.pt_ckpt)
    return model


def tokenizer_for(model):
    from whisper.tokenizer import get_tokenizer

    return get_tokenizer(model.is_multilingual, num_languages=model.num_languages, task="transcribe")


def train(cfg: Config) -> Path:
    """Train from ``cfg``: stage 1 (audio-only), or stage 2 (Whisper-Flamingo) for an audio-visual
    config (``cfg.is_audio_visual``); return the checkpoint folder."""
    from whisper_flamingo.cli import route_library_logs
    from whisper_flamingo.data.datamodule import MuavicDataModule
    from whisper_flamingo.tasks.asr import WhisperASRTask, count_parameters, human

    route_library_logs()

    pl.seed_everything(cfg.seed, workers=True)
    ckpt_dir = cfg.checkpoint_dir
    last = ckpt_dir / LAST
    resume = bool(cfg.resume_training and last.is_file())
    if cfg.resume_training and not resume:
        log.info("resume_training is set but %s does not exist yet: starting a new run", last)
    elif not cfg.resume_training and last.is_file():
        log.warning("%s exists and resume_training is false: starting a new run that will overwrite it "
                    "(set resume_training=true to continue it)", last)

    stage = 2 if cfg.is_audio_visual else 1
    model = load_model_for(cfg)
    if stage == 2:
        from whisper_flamingo.checkpoints import build_stage2_model

        model = build_stage2_model(cfg, model)
    total, trainable = count_parameters(model)
    log.info("model %s: %s parameters (%s trainable)", cfg.model_name, human(total), human(trainable))
    tokenizer = tokenizer_for(model)
    datamodule = MuavicDataModule(cfg, n_mels=model.dims.n_mels, multilingual=model.is_multilingual, stage=stage)
    datamodule.setup("fit")
    if stage == 2:
        from whisper_flamingo.tasks.flamingo import WhisperFlamingoTask

        task = WhisperFlamingoTask(cfg, model, tokenizer, val_names=datamodule.val_names)
    else:
        task = WhisperASRTask(cfg, model, tokenizer, val_names=datamodule.val_names)
    # stage 2: a dropped modality leaves parameters without gradients (as the original, DDP must allow it)
    trainer = build_trainer(cfg, find_unused_parameters=stage == 2)
    if trainer.is_global_zero:
        save_config(cfg, ckpt_dir)
        log.info("resolved config saved to %s", ckpt_dir / "config.yaml")
    if resume:
        log.info("resuming from %s", last)
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(last))
    else:
        if cfg.validate_before_training and datamodule.val_names:
            trainer.validate(task, datamodule=datamodule, verbose=False)
        trainer.fit(task, datamodule=datamodule)
    if trainer.is_global_zero:
        log.info("training finished at step %d; checkpoints in %s", trainer.global_step, ckpt_dir)
    return ckpt_dir
