"""Stage 1 entry point, original command line: ``python whisper_ft_muavic.py CONFIG.yaml [key=value ...]``."""

import sys

from whisper_flamingo.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
