"""The chat's console: what it prints never holds the client's loop."""

import errno
import io
import threading
from typing import Any, TextIO, cast

import pytest
import trio

from mcrelay.cli.console import DROP_CHARS, LongLine, _write, print_events, read_line, send_lines
from mcrelay.cli.environment import Environment


class StuckOutput(io.StringIO):
    """A stdout nobody reads (a full pipe, a terminal on Ctrl-S): a write blocks until let
    go, or gives up after 2 s (then the loop was held all along)."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.held_the_loop = False

    def write(self, text: str) -> int:
        if not self.go.wait(2):
            self.held_the_loop = True
        return super().write(text)


async def test_a_stdout_that_blocks_does_not_stop_the_loop() -> None:
    """print() in the loop stopped every task with it: keep-alives too, so the relay
    timed the client out while its output was blocked (found by review)."""
    out = StuckOutput()
    events_in, events = trio.open_memory_channel[str](10)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(print_events, events, str.upper, Environment(stdout=out))
        await events_in.send("one")
        for _ in range(10):  # another task of the loop goes on while the write waits
            await trio.sleep(0.01)
        out.go.set()
        await events_in.send("two")
        await events_in.aclose()
    assert not out.held_the_loop
    assert out.getvalue() == "ONE\nTWO\n"


def test_output_to_a_terminal_that_hung_up_is_output_nobody_reads() -> None:
    """As a closed pipe (`| head -1`): the command ends with 0, not 'Input/output error'."""

    class HungUpOutput(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, buffer: Any, /) -> int:
            raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(BrokenPipeError):
        _write(io.TextIOWrapper(io.BufferedWriter(HungUpOutput())), "line\n")


class CountingInput:
    """Stdin that says the most characters one read asked for."""

    def __init__(self, text: str) -> None:
        self.text = io.StringIO(text)
        self.largest_read = 0

    def readline(self, size: int = -1) -> str:
        assert size > 0, "an unbounded read"
        self.largest_read = max(self.largest_read, size)
        return self.text.readline(size)


def test_a_line_longer_than_a_message_is_dropped_in_bounded_reads() -> None:
    """A line without end (/dev/zero) was read whole: gigabytes (found by review)."""
    counted = CountingInput("a" * 300_000 + "\nnext\n" + "b" * 10 + "\r\n" + "c" * 11 + "\n")
    stdin = cast(TextIO, counted)
    with pytest.raises(LongLine):
        read_line(stdin, 10, skip_long=True)
    assert read_line(stdin, 10) == "next\n"
    assert read_line(stdin, 10) == "b" * 10 + "\r\n"
    with pytest.raises(LongLine):  # its end read already: the next line is kept
        read_line(stdin, 10, skip_long=True)
    assert read_line(stdin, 10) == ""
    assert counted.largest_read <= DROP_CHARS


def test_a_command_that_stops_at_a_long_line_reads_no_more_of_it() -> None:
    """'post --lines < /dev/zero' and 'send - < /dev/zero' read on forever, to drop a
    line that has no end, before their usage error (found by review)."""
    endless = CountingInput("0" * 1_000_000)
    with pytest.raises(LongLine):
        read_line(cast(TextIO, endless), 10)
    assert endless.text.tell() == 12


async def test_the_chat_says_a_long_line_and_goes_on() -> None:
    sent: list[bytes] = []

    async def send(data: bytes) -> None:
        sent.append(data)

    err = io.StringIO()
    env = Environment(stdin=io.StringIO("x" * 100 + "\nshort\n"), stderr=err)
    await send_lines(send, env, 50)
    assert sent == [b"short"]
    assert err.getvalue() == "mcrelay: line of over 50 bytes not sent\n"
