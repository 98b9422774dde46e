"""The admin CLI against an API that answers what it should not (another program on
the port, another version): one error line and exit 1, never a traceback; and nothing
an answer holds reaches the terminal as a control sequence (found by review)."""

import functools
import io
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
import trio

from mcrelay.cli import api_client
from mcrelay.cli.environment import Environment
from mcrelay.cli.status import ExitStatus
from mcrelay.cli.text import json_text
from support import Console, assert_one_error_line


@asynccontextmanager
async def raw_api(status: int, body: bytes, *, events: bool = False) -> AsyncIterator[str]:
    """An HTTP server on loopback answering every request with ``body``; its address."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                if not (data := await stream.receive_some()):
                    return
                request += data
            kind = "text/event-stream" if events else "application/json"
            length = "" if events else f"content-length: {len(body)}\r\n"
            head = (
                f"HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\n{length}connection: close\r\n\r\n"
            )
            await stream.send_all(head.encode() + body)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("argv", "body", "events"),
    [
        (["status"], b"<html>hi</html>", False),
        (["status"], b"null", False),
        (["clients"], b"[]", False),
        (["clients"], b"{}", False),
        (["kick", "1.2.3.4:5"], b'{"removed": 5}', False),
        *(
            # Left in the middle of httpx's chain of async generators (no aclosing
            # reaches the inner ones), which Trio closes later and warns of: the
            # command has already said its error and ended.
            pytest.param(
                ["events"],
                body,
                True,
                marks=pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
            )
            for body in (b"data: not json\n\n", b"data: 5\n\n")
        ),
    ],
)
async def test_an_answer_of_another_shape_is_one_error_line(
    argv: list[str], body: bytes, events: bool
) -> None:
    async with raw_api(200, body, events=events) as api:
        console = Console()
        assert await console.run(*argv, "--api", api) == ExitStatus.ERROR
    assert_one_error_line(console, "the API")


ESCAPES = "\x1b]0;pwned\x07\x1b[2J\x9b2J\u202e"


@pytest.mark.parametrize(
    ("argv", "status", "answer"),
    [
        (
            ["clients"],
            200,
            {
                "clients": [
                    {
                        "id": ESCAPES,
                        "profile": ESCAPES,
                        "host": "1.2.3.4",
                        "port": 1,
                        "fingerprint": ESCAPES,
                        "connected_at": ESCAPES,
                        "idle_s": 1.0,
                        "messages_in": 1,
                        "messages_out": 2,
                    }
                ],
                "count": 1,
            },
        ),
        (["clients", "--json"], 200, {"clients": [{"id": ESCAPES}], "count": 1}),
        (["bans"], 200, {"bans": [{"id": ESCAPES, "scope": "key", "until": "", "remaining_s": 3}]}),
        (["kick", "1.2.3.4:5"], 200, {"removed": [ESCAPES]}),
        (["status"], 400, {"error": {"code": ESCAPES, "message": ESCAPES}}),
    ],
)
async def test_what_an_answer_holds_reaches_no_terminal_raw(
    argv: list[str], status: int, answer: object
) -> None:
    async with raw_api(status, json.dumps(answer).encode()) as api:
        console = Console()
        await console.run(*argv, "--api", api)
    shown = console.stdout.getvalue() + console.stderr.getvalue()
    assert "Traceback" not in shown
    assert not set(shown) & set("\x1b\x07\x9b\u202e"), shown


def test_json_output_escapes_what_a_terminal_acts_on_and_stays_json() -> None:
    value = {"text": "café \x9b2J \u202e \x7f \U000e0001 ok", "n": [1]}
    text = json_text(value)
    assert json.loads(text) == value
    assert "café" in text  # readable text stays as it is
    assert not set(text) & set("\x9b\u202e\x7f\U000e0001")


def test_what_stdout_cannot_encode_is_escaped_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer's '€' on a Latin-1 terminal ended chat with a traceback (found by review)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="latin-1")
    monkeypatch.setattr(sys, "stdout", out)
    env = Environment(stdin=io.StringIO())
    print("10 € café", file=env.stdout, flush=True)
    assert out.buffer.getvalue() == "10 \\u20ac café\n".encode("latin-1")


@pytest.mark.parametrize(
    ("status", "exit_status"), [(200, ExitStatus.ERROR), (500, ExitStatus.SERVER_ERROR)]
)
async def test_an_answer_nested_too_deep_is_one_error_line(
    status: int, exit_status: ExitStatus
) -> None:
    """200,000 brackets made a RecursionError, which is no ValueError: a traceback
    (found by review)."""
    async with raw_api(status, b"[" * 200_000) as api:
        console = Console()
        assert await console.run("status", "--api", api) == exit_status
    assert_one_error_line(console, "")


@asynccontextmanager
async def trickling_api(
    pieces: list[bytes], *, events: bool, status: int = 200, length: int | None = 1000000
) -> AsyncIterator[str]:
    """A server that sends its head, then each of ``pieces`` 10 ms apart, then nothing
    (events: a stream; ``length`` None: a chunked body, the pieces its chunks)."""

    async def serve(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.receive_some()
            kind = "text/event-stream" if events else "application/json"
            framing = (
                "transfer-encoding: chunked" if length is None else f"content-length: {length}"
            )
            if events:
                framing = "connection: close"
            head = f"HTTP/1.1 {status} X\r\ncontent-type: {kind}\r\n{framing}\r\n\r\n"
            await stream.send_all(head.encode())
            for piece in pieces:
                await stream.send_all(piece)
                await trio.sleep(0.01)
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        )
        yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def test_an_answer_trickled_a_byte_at_a_time_is_given_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each read had 10 s, the whole answer forever: a byte every 5 s held `status` for
    good (found by review)."""
    monkeypatch.setattr(api_client, "ANSWER_DEADLINE_S", 0.3)
    async with trickling_api([b" "] * 1000, events=False) as api:
        console = Console()
        with trio.fail_after(5):
            assert await console.run("status", "--api", api) == ExitStatus.UNREACHABLE
    assert_one_error_line(console, "did not answer within")


async def test_a_daemon_that_answers_nothing_is_said_to_be_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A stopped daemon (SIGSTOP: its socket still takes connections) was given up by a
    read's 10 s timeout first, said as 'cannot reach the daemon's API at ...: ' and
    nothing more (found by review)."""
    monkeypatch.setattr(api_client, "ANSWER_DEADLINE_S", 0.6)
    monkeypatch.setattr(api_client, "REQUEST_TIMEOUT_S", 0.2)  # the old read timeout's

    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1")
        )
        api = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        console = Console()
        with trio.fail_after(5):
            assert await console.run("status", "--api", api) == ExitStatus.UNREACHABLE
        nursery.cancel_scope.cancel()
    assert_one_error_line(console, "did not answer within 1 s")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_an_event_line_without_end_is_refused_not_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """httpx's line reader held an endless line whole (found by review)."""
    monkeypatch.setattr(api_client, "MAX_EVENT_BYTES", 100)
    async with raw_api(200, b"data: " + b"x" * 1000, events=True) as api:
        console = Console()
        assert await console.run("events", "--api", api) == ExitStatus.ERROR
    assert_one_error_line(console, "over 100 bytes")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_event_lines_end_at_lf_crlf_or_cr_even_split_between_reads() -> None:
    """Sent 10 ms apart, so that each piece is a read of its own (the test first sent
    them together, and tested no split: found by review)."""
    pieces = [b'data: {"a"', b":1}\r", b"\n\r", b'\ndata: {"b":2}\r\r', b'data: {"c":3}\n\n']
    async with trickling_api(pieces, events=True) as api:
        console = Console()
        with trio.move_on_after(1):
            await console.run("events", "--json", "--api", api)
    assert [json.loads(line) for line in console.stdout.getvalue().splitlines()] == [
        {"a": 1},
        {"b": 2},
        {"c": 3},
    ]


async def test_an_event_streams_last_line_may_end_with_a_cr() -> None:
    """The CR held back as half a CRLF was never let go when the stream ended there."""
    async with raw_api(200, b'data: {"a":1}\r\r', events=True) as api:
        console = Console()
        await console.run("events", "--json", "--api", api)
    assert json.loads(console.stdout.getvalue()) == {"a": 1}


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_an_event_streams_error_answer_is_read_bounded() -> None:
    """An error's endless body was read whole, with no time limit (1 GiB in 3 s; found
    by review): at most 1 MiB of it, within 30 s."""
    chunk = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
    async with trickling_api([chunk] * 64, events=False, status=500, length=None) as api:
        console = Console()
        with trio.fail_after(10):
            assert await console.run("events", "--api", api) == ExitStatus.SERVER_ERROR
    assert_one_error_line(console, "HTTP 500")


def test_a_timeout_is_said_as_one() -> None:
    """httpx's timeouts have an empty message: 'cannot reach ...: ' said nothing (found by
    review)."""
    api = api_client.Api(httpx.AsyncClient(), "127.0.0.1:7507")
    message = str(api._unreachable(httpx.ConnectTimeout("")))
    assert message == "cannot reach the daemon's API at 127.0.0.1:7507: timed out"
