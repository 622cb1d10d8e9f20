"""Every command's options carry help, every ``--help`` ends with examples, and the top-level options
are checked (issue 12: a new user's first hour)."""

from __future__ import annotations

import argparse
import re

import pytest

from whisper_flamingo.cli import SUBCOMMANDS, build_parser
from whisper_flamingo.cli import main as cli_main


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {name: p for a in parser._actions if isinstance(a, argparse._SubParsersAction)
            for name, p in a.choices.items()}


def _undocumented(parser: argparse.ArgumentParser, where: str) -> list[str]:
    """Options and positionals without help, in ``parser`` and its nested sub-commands."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _undocumented(sub, f"{where} {name}")
        elif action.help in (None, "", argparse.SUPPRESS) and not isinstance(action, argparse._HelpAction):
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_has_help_and_every_command_ends_with_examples():
    parser = build_parser()
    commands = _subparsers(parser)
    assert set(commands) == set(SUBCOMMANDS)  # every command of this build was walked
    assert _undocumented(parser, "whisper-flamingo") == []
    for name, sub in commands.items():
        text = sub.format_help()
        tail = text[text.index("examples:"):] if "examples:" in text else ""
        examples = [line for line in tail.splitlines() if line.strip().startswith("whisper-flamingo ")]
        assert 2 <= len(examples) <= 3, (name, tail)
        assert all(re.match(rf"whisper-flamingo {re.escape(name)}\b", e.strip()) for e in examples), (name, examples)
        assert text.rstrip().endswith(tail.rstrip())  # the examples end the help
    top = parser.format_help()
    assert "examples:" in top and "Whisper" in top and "subcommand" not in parser.description


def test_log_level_is_checked_and_device_means_the_same_everywhere(capsys):
    with pytest.raises(SystemExit):
        cli_main(["--log-level", "foo", "models"])
    assert "'foo': use one of DEBUG, INFO, WARNING, ERROR, CRITICAL" in capsys.readouterr().err
    devices = {}
    for name, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if "--device" in action.option_strings:
                devices[name] = (action.default, action.help.split(",")[0])
    assert set(devices) >= {"decode", "extract-video-features"}
    assert len(set(devices.values())) == 1 and next(iter(devices.values()))[0] == "auto", devices


def test_an_error_met_under_an_open_progress_bar_starts_its_own_line(capsys):
    """Any command: a bar left open by the exception (e.g. a noise list's, an extraction's) is closed first."""
    import sys

    from tqdm import tqdm

    from whisper_flamingo.cli import run_guarded
    from whisper_flamingo.errors import DataError

    def fails(_args):
        bar = tqdm(total=10, desc="noise test.tsv", file=sys.stderr, mininterval=0)
        bar.update(3)
        raise DataError("noise file is silent", path="noise/x.wav")

    assert run_guarded(fails, None, debug=False) == 2
    err = capsys.readouterr().err
    assert "noise test.tsv" in err and "\nerror: noise/x.wav: noise file is silent\n" in err, repr(err)
