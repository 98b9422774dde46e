"""A chat's console, whatever the profile: lines read from stdin go out as messages,
and the participant's events are printed as they come."""

import errno
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import IO, Any, AnyStr, BinaryIO, TextIO, TypeVar

import trio

from mcrelay.cli.environment import Environment
from mcrelay.cli.text import message_bytes
from mcrelay.protocol.errors import LocalProtocolError

Event = TypeVar("Event")

DROP_CHARS = 65536
"""What is read at a time of a line too long to send."""


async def print_events(
    events: AsyncIterator[Event], render: Callable[[Event], str], env: Environment
) -> None:
    """Each event as a line, written by a worker thread, until the participant closes its
    events: a stdout nobody reads (a full pipe, a terminal paused with Ctrl-S) holds this
    task, never the client's loop, whose keep-alives and acknowledgements go on (past
    its queue, the secure participant holds the relay's messages back; the legacy one
    drops them and counts them: :class:`MessagesNotShown`). Cancelling it ends it at
    once, even within a write that waits."""
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


class MessagesNotShown(Exception):
    """A legacy chat received more than its output took (exits 1). The legacy profile has
    no acknowledgements to hold back: a chat that stopped reading its socket would lose
    them in the kernel instead, unseen, and miss the relay's answers to its key checks."""


class LongLine(ValueError):
    """A line of stdin longer than any message (read to its end and dropped)."""


def read_line(stdin: TextIO, max_chars: int, *, skip_long: bool = False) -> str:
    """The next line, its end included; at the end of input, or once the terminal has
    hung up (EIO: it ended the chat with exit 1 and no goodbye, found by review), an
    empty one. A line of more than ``max_chars`` before its end raises
    :class:`LongLine`: such a line (of /dev/zero, say) was held whole, gigabytes of it
    (found by review). With ``skip_long`` (a chat, which goes on), it is first read on
    to its end a bounded piece at a time and dropped; without (a command that stops),
    not: /dev/zero has no end (found by review)."""
    line = _read(stdin, max_chars + 2, "")  # and its "\r\n"
    if len(line.rstrip("\r\n")) <= max_chars:
        return line
    if skip_long and not line.endswith("\n"):
        while (rest := _read(stdin, DROP_CHARS, "")) and not rest.endswith("\n"):
            pass
    raise LongLine(f"a line of over {max_chars} characters")


def read_bytes_line(stdin: BinaryIO, max_bytes: int) -> bytes:
    """:func:`read_line` of a binary stdin, as the bytes it came as; a line of more than
    ``max_bytes`` raises :class:`LongLine` (and is not read on)."""
    line = _read(stdin, max_bytes + 2, b"")
    if len(line.rstrip(b"\r\n")) <= max_bytes:
        return line
    raise LongLine(f"a line of over {max_bytes} bytes")


def _read(stdin: IO[AnyStr], size: int, empty: AnyStr) -> AnyStr:
    """The next line, or ``empty`` once the terminal has hung up."""
    try:
        return stdin.readline(size)
    except OSError as exc:
        if exc.errno == errno.EIO:
            return empty
        raise


async def send_lines(
    send: Callable[[bytes], Awaitable[Any]], env: Environment, max_bytes: int
) -> None:
    """Each line of stdin as a message, until its end; a line that cannot go is said
    on stderr and skipped."""
    while True:
        try:
            line = await trio.to_thread.run_sync(
                partial(read_line, env.stdin, max_bytes, skip_long=True), abandon_on_cancel=True
            )
        except LongLine:
            env.say(f"mcrelay: line of over {max_bytes} bytes not sent")
            continue
        if not line:
            return
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
