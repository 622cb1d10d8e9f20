"""``whisper-flamingo train CONFIG.yaml [key=value ...]``: train from a YAML config."""

from __future__ import annotations

import argparse
import sys

from whisper_flamingo.config import describe_keys, load_config

EXAMPLES = """examples:
  whisper-flamingo train config/audio/demo.yaml muavic_root=data/synthetic
  whisper-flamingo train config/audio/audio_en_large.yaml --print-config
  whisper-flamingo train config/tagging/ast_esc50.yaml      # folds: 5 -> fold1..fold5, acc_fold.csv
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (e.g. config/audio/demo.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="override any config key, e.g. learning_rate=1e-4 noise_snr_train=[-5,5]")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config and exit")
    parser.add_argument("--help-keys", action="store_true", help="list every config key and exit")


def run(args: argparse.Namespace) -> int:
    if args.help_keys:
        sys.stdout.write(describe_keys() + "\n")
        return 0
    if not args.config:
        from whisper_flamingo.errors import ConfigError

        raise ConfigError("no config given; usage: whisper-flamingo train CONFIG.yaml [key=value ...]")
    cfg = load_config(args.config, args.overrides)
    from whisper_flamingo.tasks.registry import check_task_name

    check_task_name(cfg.task_name)  # an unknown task fails here, before any model is built
    if args.print_config:
        sys.stdout.write(cfg.to_yaml())
        return 0
    from whisper_flamingo.tasks.run import TrainingStopped, train

    try:
        if cfg.folds:  # cross-validation (AST's ESC-50 recipe): one run per fold, then acc_fold.csv
            from whisper_flamingo.tasks.folds import train_folds

            train_folds(cfg)
        else:
            train(cfg)
    except TrainingStopped as err:  # SIGTERM: last.ckpt saved; one line, the status of a TERM-killed process
        sys.stderr.write(f"{err}\n")
        return 143
    return 0
