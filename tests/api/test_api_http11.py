"""Two rules of RFC 9112 that h11 leaves to its user (``mcrelay.api.http11.Connection``).

Loopback only, port 0; every wait is bounded (``WAIT_S``).
"""

import re
from pathlib import Path

import pytest
import trio
from api_support import api_daemon, connect, read_until_closed

from mcrelay.api.http11 import MAX_EMPTY_LINE_BYTES

HEALTH = b"GET /healthz HTTP/1.1\r\nHost: mcrelay\r\n\r\n"
HEALTH_CLOSE = b"GET /healthz HTTP/1.1\r\nHost: mcrelay\r\nConnection: close\r\n\r\n"
HEALTH_10 = b"GET /healthz HTTP/1.0\r\n\r\n"


def statuses(answers: bytes) -> list[bytes]:
    return re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)


@pytest.mark.parametrize(
    "writes",
    [
        [b"\r\n" + HEALTH_CLOSE],
        [b"\n\r\n\r\n" + HEALTH_CLOSE],
        [HEALTH + b"\r\n" + HEALTH_CLOSE],
        [HEALTH, b"\r\n", HEALTH_CLOSE],
        [b"\r", b"\n" + HEALTH_CLOSE],  # h11 refused a CR read apart from its LF
    ],
    ids=[
        "before-the-first",
        "several-before-the-first",
        "between-in-one-write",
        "between",
        "cr-lf-apart",
    ],
)
async def test_empty_lines_before_a_request_line_are_ignored(
    relay_key_file: Path, writes: list[bytes]
) -> None:
    """RFC 9112, 2.2: h11 refused them, and the request after a stray CRLF got a 400
    (found by review)."""
    async with api_daemon(relay_key_file) as api, await connect(api) as stream:
        for data in writes:
            await stream.send_all(data)
            await trio.sleep(0.01)
        answers = await read_until_closed(stream)
    assert statuses(answers) == [b"200"] * b"".join(writes).count(b"GET ")


@pytest.mark.parametrize("closing", [HEALTH_CLOSE, HEALTH_10], ids=["close", "http10"])
async def test_a_request_in_the_same_write_as_a_closing_one_costs_it_nothing(
    relay_key_file: Path, closing: bytes
) -> None:
    """RFC 9112, 9.6: nothing after a request that closes the connection is processed.
    h11 refused what came with it, and hypercorn's 400 took the place of the closing
    request's answer (found by review)."""
    async with api_daemon(relay_key_file) as api, await connect(api) as stream:
        await stream.send_all(closing + HEALTH + HEALTH)
        answers = await read_until_closed(stream)
    assert statuses(answers) == [b"200"]


async def test_empty_lines_are_skipped_up_to_a_bound(relay_key_file: Path) -> None:
    """Without one, clients sending nothing but line ends held the loop 2.8 ms a read
    each (64 of them delayed the relay's datagrams by half a second: found by review)."""
    async with api_daemon(relay_key_file) as api, await connect(api) as stream:
        await stream.send_all(b"\n" * (MAX_EMPTY_LINE_BYTES + 1) + HEALTH_CLOSE)
        answers = await read_until_closed(stream)
    assert statuses(answers) == [b"400"]
