"""The original decoding entry point; same flags as ``whisper-flamingo decode``.

Example: ``python whisper_decode_video.py --lang en --model-type small --use-original-whisper 1
--modalities asr --noise-snr 0 1000 --noise-fn noise/babble/lrs3/test.tsv --muavic-root .``
"""

from __future__ import annotations

import argparse
import sys

from whisper_flamingo.cli import run_guarded, setup_logging
from whisper_flamingo.commands import decode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="whisper_decode_video.py", description=decode.__doc__.splitlines()[0],
                                     epilog=decode.EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    decode.add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging("INFO")
    return run_guarded(decode.run, args, args.debug)


if __name__ == "__main__":
    sys.exit(main())
