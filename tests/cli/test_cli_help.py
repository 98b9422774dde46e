"""What ``--help`` says, for every command: the defaults of the daemon's settings."""

import argparse

from mcrelay.cli.environment import Environment
from mcrelay.cli.main import build_parser
from mcrelay.settings.table import SETTINGS


def subcommand(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
    for name in names:
        [choices] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = choices.choices[name]
    return parser


def test_daemon_help_shows_every_default() -> None:
    parser = build_parser(Environment(environ={}))
    for command in (["daemon"], ["config", "check"]):
        helps = {a.dest: a.help or "" for a in subcommand(parser, *command)._actions}
        for setting in SETTINGS:
            assert "(default: " in helps[setting.name], setting.name
        assert "(default: 5007)" in helps["port"]
        assert "(default: 30)" in helps["client_timeout"]
        assert "(default: one per CPU)" in helps["crypto_workers"]
        assert "(default: none)" in helps["api_token_file"]
        assert "(default: unix:$RUNTIME_DIRECTORY/api.sock, else " in helps["api"]


def test_send_help_says_which_dash_reads_stdin() -> None:
    """The help said "'-' reads one per stdin line", but a '-' among other messages is
    sent as it is (found by review)."""
    parser = build_parser(Environment(environ={}))
    [text] = [a.help or "" for a in subcommand(parser, "send")._actions if a.dest == "text"]
    assert "a lone '-' reads one per stdin line" in text
    assert "a '-' beside other messages is sent as the text '-'" in text
