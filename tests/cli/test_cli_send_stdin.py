"""``send -`` holds stdin's messages as the bytes they came as, bounded in all: each line
was held as text, then copied to bytes, a byte that is not UTF-8 as a surrogate of 4
(10,000 lines of 64 KiB of 0xff took 1.9 GiB: found by review)."""

import io
import tracemalloc

import pytest

import mcrelay.cli.chat as chat
from mcrelay.cli.environment import Environment
from mcrelay.cli.status import ExitStatus
from mcrelay.protocol.secure.messages import MAX_CHAT_BYTES
from support import Console, assert_one_error_line

FLAGS = ["--relay", "127.0.0.1", "--port", "9", "--interface", "127.0.0.1"]


def binary_stdin(data: bytes) -> io.TextIOWrapper:
    """A stdin as the process has it: text over bytes, not-UTF-8 bytes as surrogates."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="surrogateescape")


async def test_past_its_total_stdin_is_refused_before_any_goes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(chat, "MAX_SEND_BYTES", 100)
    console = Console(stdin_text="x" * 60 + "\n" + "y" * 41 + "\n")
    assert await console.run("send", *FLAGS, "-") == ExitStatus.USAGE
    assert_one_error_line(console, "more than 100 bytes of messages on stdin")


async def test_at_its_total_stdin_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to the total, the command goes on (here to a relay that is not there)."""
    monkeypatch.setattr(chat, "MAX_SEND_BYTES", 100)
    console = Console(stdin_text="x" * 60 + "\r\n" + "y" * 40 + "\n")
    flags = [*FLAGS, "--register-timeout", "0.01"]
    assert await console.run("send", *flags, "-") == ExitStatus.UNREACHABLE


def test_lines_are_read_as_the_bytes_they_came_as() -> None:
    stdin = binary_stdin(b"caf\xe9\n\xff\xfe\r\nlast")
    env = Environment(stdin=stdin, stdout=io.StringIO(), stderr=io.StringIO(), environ={})
    assert chat._stdin_messages(env, 100) == [b"caf\xe9", b"\xff\xfe", b"last"]


def test_stdin_is_held_once_as_bytes() -> None:
    line = b"\xff" * 65_536 + b"\n"
    data = line * 64  # 4 MiB
    env = Environment(
        stdin=binary_stdin(data), stdout=io.StringIO(), stderr=io.StringIO(), environ={}
    )
    tracemalloc.start()
    try:
        messages = chat._stdin_messages(env, MAX_CHAT_BYTES)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(messages) == 64
    assert peak < 1.5 * len(data)  # it was 5 times: as text of 4 bytes a byte, then bytes
