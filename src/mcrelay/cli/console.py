"""A chat's console, whatever the profile: lines read from stdin go out as messages,
and the participant's events are printed as they come."""

import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TextIO, TypeVar

import trio

from mcrelay.cli.environment import Environment
from mcrelay.cli.text import message_bytes
from mcrelay.protocol.errors import LocalProtocolError

Event = TypeVar("Event")


async def print_events(
    events: AsyncIterator[Event], render: Callable[[Event], str], env: Environment
) -> None:
    """Each event as a line, written by a worker thread: a stdout nobody reads (a full
    pipe, a terminal paused with Ctrl-S) holds this task, never the client's loop, whose
    keep-alives and acknowledgements go on (events past the participant's queue are
    dropped and counted there)."""
    async for event in events:
        line = render(event) + "\n"
        await trio.to_thread.run_sync(_write, env.stdout, line, abandon_on_cancel=True)


def _write(out: TextIO, line: str) -> None:
    try:
        out.write(line)
        out.flush()
    except OSError as exc:
        if exc.errno == errno.EIO:  # the terminal hung up: nobody reads, as a closed pipe
            raise BrokenPipeError(errno.EPIPE, "the terminal hung up") from None
        raise


def _read_line(stdin: TextIO) -> str:
    """The next line; at the end of input, or once the terminal has hung up (EIO: it
    ended the chat with exit 1 and no goodbye, found by review), an empty one."""
    try:
        return stdin.readline()
    except OSError as exc:
        if exc.errno == errno.EIO:
            return ""
        raise


async def send_lines(
    send: Callable[[bytes], Awaitable[Any]], env: Environment, max_bytes: int
) -> None:
    """Each line of stdin as a message, until its end; a line that cannot go is said
    on stderr and skipped."""
    while line := await trio.to_thread.run_sync(_read_line, env.stdin, abandon_on_cancel=True):
        try:
            data = message_bytes(line.rstrip("\r\n"))
        except ValueError as exc:
            env.say(f"mcrelay: not sent: {exc}")
            continue
        if len(data) > max_bytes:
            env.say(f"mcrelay: line of over {max_bytes} bytes not sent")
            continue
        try:
            await send(data)
        except LocalProtocolError as exc:
            env.say(f"mcrelay: not sent: {exc}")
        except OSError as exc:  # no route for a moment, say: the chat goes on
            env.say(f"mcrelay: not sent: {exc.strerror or exc}")
