"""The ``mcrelay`` command: parse, run, and map every failure to one exit code."""

import argparse
import logging
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence

import trio

from mcrelay import __version__
from mcrelay.api.errors import ApiBindError
from mcrelay.cli import admin, chat, completion, daemon, keys
from mcrelay.cli.console import MessagesNotShown
from mcrelay.cli.environment import Environment, to_devnull
from mcrelay.cli.options import Parser, UsageError, check_variables
from mcrelay.cli.status import MEANINGS, ApiAnswerError, ApiError, ApiUnreachable, ExitStatus
from mcrelay.cli.text import printable
from mcrelay.client import RelayKeyMismatch, RelayUnreachable
from mcrelay.client.secure import SessionEnded
from mcrelay.daemon.legacy.keyfile import KeyFileError
from mcrelay.daemon.workers import WorkerStartError
from mcrelay.federation.epoch import EpochFileError
from mcrelay.federation.keyfile import ClusterKeyError
from mcrelay.logs import is_journal_stream, syslog_priority

Command = Callable[[argparse.Namespace, Environment], Awaitable[ExitStatus]]


def build_parser(env: Environment) -> argparse.ArgumentParser:
    codes = "".join(
        textwrap.fill(f"{int(code):>5}  {meaning}", 79, subsequent_indent=" " * 7) + "\n"
        for code, meaning in MEANINGS.items()
    )
    parser = Parser(
        prog="mcrelay",
        description="Secure group-messaging relay for local networks.",
        epilog="'mcrelay COMMAND --help' tells about each command.\n\n"
        f"exit status:\n{codes}\nerrors are one line on stderr, starting 'mcrelay: error:'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mcrelay {__version__}")
    subparsers = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")
    daemon.add_parser(subparsers, env.environ)
    chat.add_parsers(subparsers, env.environ)
    admin.add_parsers(subparsers, env.environ)
    keys.add_parsers(subparsers, env.environ)
    completion.add_parser(subparsers, env.environ)
    return parser


FAILURES: dict[type[Exception], ExitStatus] = {
    UsageError: ExitStatus.USAGE,
    ApiUnreachable: ExitStatus.UNREACHABLE,
    ApiAnswerError: ExitStatus.ERROR,
    RelayUnreachable: ExitStatus.UNREACHABLE,
    RelayKeyMismatch: ExitStatus.KEY_MISMATCH,
    SessionEnded: ExitStatus.ERROR,
    MessagesNotShown: ExitStatus.ERROR,
    KeyFileError: ExitStatus.USAGE,
    ClusterKeyError: ExitStatus.USAGE,
    EpochFileError: ExitStatus.USAGE,
    ApiBindError: ExitStatus.ERROR,
    WorkerStartError: ExitStatus.ERROR,
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
        check_variables(args)
        command: Command = args.command
        return await command(args, env)
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, BrokenPipeError):
            # Whoever read stdout stopped (`| head -1`, `| grep -q`): it has what it wanted.
            # (Not stderr's: Environment.say carries on without it.)
            return ExitStatus.OK
        if isinstance(leaf, ApiError):
            status: ExitStatus | None = _api_error_status(leaf)
        else:
            status = next((s for kind, s in FAILURES.items() if isinstance(leaf, kind)), None)
        if status is None:
            raise
        # printable: an API's message (or a path) may hold what a terminal acts on.
        env.say(f"{_error_prefix(env)}mcrelay: error: {printable(_error_text(leaf))}")
        return status


def _error_text(exc: BaseException) -> str:
    """The error's message; for an OSError without its ``[Errno N]``."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc)


def _error_prefix(env: Environment) -> str:
    """``<3>`` when stderr is the journal (the daemon under systemd), so that journald files
    the line at priority err, where ``journalctl -p err`` shows why a start failed."""
    if is_journal_stream(env.stderr, env.environ):
        return f"<{syslog_priority(logging.ERROR)}>"
    return ""


def main(argv: Sequence[str] | None = None, env: Environment | None = None) -> int:
    """Run the command in a new Trio run. Ctrl-C ends chat, events and the daemon the
    normal way (they listen for it); anywhere else it interrupts the command (130)."""
    env = env or Environment()
    status = ExitStatus.INTERRUPTED
    try:
        status = trio.run(run_command, sys.argv[1:] if argv is None else argv, env)
    except* KeyboardInterrupt:
        pass  # raised alone, or from inside a nursery: no traceback either way
    try:
        env.stdout.flush()
    except KeyboardInterrupt:
        # The flush waited for a reader that takes nothing (a full pipe, a paused
        # terminal), and Ctrl-C came again: give up what is left, at once and quietly
        # (the interpreter's own flush at exit would wait, then abort).
        os._exit(int(status))
    except BrokenPipeError:
        to_devnull(env.stdout)
    return int(status)
