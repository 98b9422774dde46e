"""Two rules of RFC 9112 that h11 leaves to its user (``mcrelay.api.http11.Connection``),
and h11's refusals of a request, which carry the API's error object.

Loopback only, port 0; every wait is bounded (``WAIT_S``).
"""

import json
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


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (
            b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: mcrelay\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (
            b"GET /healthz HTTP/1.1\r\nHost: mcrelay\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (
            b"POST /v1/messages HTTP/1.1\r\nHost: mcrelay\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
            "not_implemented",
        ),
    ],
    ids=["request-line", "headers", "garbage", "transfer-coding"],
)
async def test_a_request_h11_refuses_gets_the_json_error(
    relay_key_file: Path, request_bytes: bytes, status: int, code: str
) -> None:
    """docs/api.md: errors are always the JSON error object; hypercorn answered these
    with no body and no content type (found by review)."""
    async with api_daemon(relay_key_file) as api, await connect(api) as stream:
        await stream.send_all(request_bytes)
        answer = await read_until_closed(stream)
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    assert status_line.startswith(f"HTTP/1.1 {status} "), status_line
    headers = dict(line.lower().split(": ", 1) for line in lines)
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert int(headers["content-length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(json.loads(body)) == {"error"}
    assert error["code"] == code
    assert error["message"]


async def test_a_refused_head_request_gets_no_body(relay_key_file: Path) -> None:
    """A HEAD request's answer has none, an error's too (RFC 9110, 9.3.2)."""
    async with api_daemon(relay_key_file) as api, await connect(api) as stream:
        await stream.send_all(
            b"HEAD /healthz HTTP/1.1\r\nHost: mcrelay\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
        )
        answer = await read_until_closed(stream)
    assert statuses(answer) == [b"400"]
    assert answer.endswith(b"\r\n\r\n")
