"""The ``mcrelay`` command: parse, run, and map every failure to one exit code."""

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

from mcrelay import __version__
from mcrelay.api.address import ApiBindError
from mcrelay.cli import admin, chat, daemon, keys
from mcrelay.cli.environment import Environment
from mcrelay.cli.options import Parser, UsageError
from mcrelay.cli.status import ApiError, ApiUnreachable, ExitStatus
from mcrelay.client import RelayKeyMismatch, RelayUnreachable
from mcrelay.daemon.keyfile import KeyFileError
from mcrelay.logs import is_journal_stream, syslog_priority

Command = Callable[[argparse.Namespace, Environment], Awaitable[ExitStatus]]


def build_parser(env: Environment) -> argparse.ArgumentParser:
    parser = Parser(prog="mcrelay", description="Secure group-messaging relay for local networks.")
    parser.add_argument("--version", action="version", version=f"mcrelay {__version__}")
    subparsers = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    daemon.add_parser(subparsers, env.environ)
    chat.add_parsers(subparsers, env.environ)
    admin.add_parsers(subparsers, env.environ)
    keys.add_parsers(subparsers, env.environ)
    return parser


FAILURES: dict[type[Exception], ExitStatus] = {
    UsageError: ExitStatus.USAGE,
    ApiUnreachable: ExitStatus.UNREACHABLE,
    RelayUnreachable: ExitStatus.UNREACHABLE,
    RelayKeyMismatch: ExitStatus.KEY_MISMATCH,
    KeyFileError: ExitStatus.ERROR,
    ApiBindError: ExitStatus.ERROR,
    OSError: ExitStatus.ERROR,
}


def _api_error_status(exc: ApiError) -> ExitStatus:
    return ExitStatus.SERVER_ERROR if exc.status >= 500 else ExitStatus.ERROR


def _leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member groups (nurseries wrap what they raise)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def run_command(argv: Sequence[str], env: Environment) -> ExitStatus:
    """Parse ``argv`` and run the command inside the current Trio run."""
    try:
        args = build_parser(env).parse_args(argv)
        command: Command = args.command
        return await command(args, env)
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, ApiError):
            status: ExitStatus | None = _api_error_status(leaf)
        else:
            status = next((s for kind, s in FAILURES.items() if isinstance(leaf, kind)), None)
        if status is None:
            raise
        env.say(f"{_error_prefix(env)}mcrelay: error: {leaf}")
        return status


def _error_prefix(env: Environment) -> str:
    """``<3>`` when stderr is the journal (the daemon under systemd), so that journald files
    the line at priority err, where ``journalctl -p err`` shows why a start failed."""
    if is_journal_stream(env.stderr, env.environ):
        return f"<{syslog_priority(logging.ERROR)}>"
    return ""


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    env = env or Environment()
    try:
        return int(trio.run(run_command, sys.argv[1:] if argv is None else argv, env))
    except KeyboardInterrupt:
        return ExitStatus.OK
