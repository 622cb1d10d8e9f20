"""``whisper-flamingo tensorboard RUN_DIR``: serve training runs' TensorBoard logs on 127.0.0.1.

``RUN_DIR`` is a ``log_output_dir`` (every run under it) or one run's folder
(``<log_output_dir>/<train_name>/<train_id>``).  Scalars (``train/loss``, ``val/wer``, ...) are
under the Scalars tab and through TensorBoard's HTTP API (``/data/plugin/scalars/tags``).  On a
cluster, reach it from your machine with an SSH tunnel: ``ssh -L 6006:127.0.0.1:6006 LOGIN_NODE``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from whisper_flamingo.errors import ConfigError

EXAMPLES = """examples:
  whisper-flamingo tensorboard logs/                     # every run under log_output_dir
  whisper-flamingo tensorboard logs/whisper/my_run --port 6007
"""

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a log_output_dir or one run's folder (holding events.out.tfevents.*)")
    parser.add_argument("--port", type=int, default=6006, help="port (default: 6006; 0 = any free port)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only)")


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such folder; pass a log_output_dir or a run folder under it")
    if not any(run_dir.rglob("events.out.tfevents.*")):
        log.warning("%s holds no TensorBoard event files yet; they appear once a run logs", run_dir)
    from tensorboard import program

    for name in ("tensorboard", "absl"):  # their start-up chatter; errors still show
        logging.getLogger(name).setLevel(logging.WARNING)
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(run_dir), "--host", args.host, "--port", str(args.port),
                          "--reload_interval", "5"])
    url = board.launch()
    sys.stdout.write(f"TensorBoard for {run_dir} at {url} (Ctrl-C stops it)\n")
    sys.stdout.flush()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
