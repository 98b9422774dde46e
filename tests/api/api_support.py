"""Helpers for the control API tests: an HTTP client for a running daemon, error checks, SSE.

Every daemon here is the real one from ``support.running_daemon``: hypercorn serving
the Quart-Trio app on loopback port 0 (or a Unix socket in ``tmp_path``), in the
test's own Trio run. Waits are bounded by ``trio.fail_after(WAIT_S)``.
"""

import json
import math
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import trio

from mcrelay.daemon.relay import Relay
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.service import Daemon
from support import WAIT_S, relay_config, running_daemon

TOKEN = "s3cret"
RFC3339_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
CLIENT_FIELDS = frozenset(
    {
        "id",
        "profile",
        "host",
        "port",
        "fingerprint",
        "key_bits",
        "connected_at",
        "last_seen",
        "idle_s",
        "messages_in",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "relay",
    }
)


def client_id(address: Address) -> str:
    return format_address(address)


def parse_time(text: object) -> datetime:
    """An RFC 3339 UTC timestamp ending in ``Z``, as an aware datetime."""
    assert isinstance(text, str)
    assert RFC3339_UTC.match(text), text
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0)
    return parsed


@asynccontextmanager
async def api_client(
    daemon: Daemon, token: str | None = None, *, url: str | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client on the daemon's API, whether it listens on TCP or a Unix socket."""
    where = daemon.api_urls[0] if url is None else url
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    if where.startswith("http://unix:"):
        transport = httpx.AsyncHTTPTransport(uds=where.removeprefix("http://unix:"))
        base_url = "http://mcrelay"
    else:
        transport = httpx.AsyncHTTPTransport()
        base_url = where
    async with httpx.AsyncClient(
        transport=transport, base_url=base_url, headers=headers, timeout=WAIT_S
    ) as client:
        yield client


@dataclass
class ApiDaemon:
    daemon: Daemon
    http: httpx.AsyncClient

    @property
    def relay(self) -> Relay:
        return self.daemon.relay


DROP_INTERVAL_S = 0.05
"""The daemons here publish their counted drops this often (every second by default),
so a test waits little for a ``dropped`` event."""


@asynccontextmanager
async def api_daemon(key_file: Path, **overrides: Any) -> AsyncIterator[ApiDaemon]:
    """A daemon with its API on 127.0.0.1:0 and a client that sends its token, if any."""
    overrides.setdefault("api", "127.0.0.1:0")
    config = relay_config(key_file, **overrides)
    async with running_daemon(config) as daemon:
        daemon.relay.events.drop_interval_s = DROP_INTERVAL_S
        async with api_client(daemon, config.api_token) as http:
            yield ApiDaemon(daemon, http)


def api_port(api: ApiDaemon) -> int:
    return int(api.daemon.api_urls[0].rsplit(":", 1)[1])


async def connect(api: ApiDaemon) -> trio.SocketStream:
    return await trio.open_tcp_stream("127.0.0.1", api_port(api))


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    """Everything the server sends until it closes the connection (a reset counts as closed)."""
    received = b""
    with trio.fail_after(WAIT_S):
        while True:
            try:
                data = await stream.receive_some()
            except trio.BrokenResourceError:
                return received
            if not data:
                return received
            received += data


def assert_json_error(response: httpx.Response, status: int, code: str | None = None) -> Any:
    """The response is ``status`` with the API's error shape; returns its ``error`` object."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict)
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict)
    assert isinstance(error.get("code"), str), error
    assert isinstance(error.get("message"), str), error
    assert error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_well_formed(response: httpx.Response) -> None:
    """Never a server error; JSON always; the error shape on every error status."""
    assert response.status_code < 500, (response.status_code, response.text)
    if response.status_code >= 400:
        assert_json_error(response, response.status_code)
    else:
        assert response.headers["content-type"].startswith("application/json")
        response.json()


@dataclass
class SseFrame:
    """One Server-Sent Events frame: the text up to a blank line."""

    lines: list[str] = field(default_factory=list)
    fields: dict[str, list[str]] = field(default_factory=dict)
    comments: list[str] = field(default_factory=list)

    @property
    def raw(self) -> str:
        return "\n".join(self.lines)

    @property
    def id(self) -> int:
        (value,) = self.fields["id"]
        return int(value)

    @property
    def event(self) -> str:
        (value,) = self.fields["event"]
        return value

    @property
    def data(self) -> dict[str, Any]:
        value = json.loads("\n".join(self.fields["data"]))
        assert isinstance(value, dict)
        return value

    @property
    def is_comment(self) -> bool:
        return not self.fields


def parse_sse_line(frame: SseFrame, line: str) -> None:
    frame.lines.append(line)
    if line.startswith(":"):
        frame.comments.append(line[1:].strip())
        return
    name, _, value = line.partition(":")
    frame.fields.setdefault(name, []).append(value.removeprefix(" "))


class EventStream:
    """Frames of an open ``GET /v1/events`` response.

    A reader task takes the lines off the response as they come, so that closing the
    stream cancels it inside httpx's line iterators (which then finish) rather than
    leaving them suspended for the garbage collector.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._send, self._lines = trio.open_memory_channel[str | None](math.inf)

    async def read_lines(self) -> None:
        async for line in self.response.aiter_lines():
            self._send.send_nowait(line)
        self._send.send_nowait(None)

    async def next_frame(self) -> SseFrame:
        """The next frame, comment-only frames included."""
        frame = SseFrame()
        with trio.fail_after(WAIT_S):
            while (line := await self._lines.receive()) is not None:
                if line:
                    parse_sse_line(frame, line)
                elif frame.lines:
                    return frame
        raise AssertionError(f"the event stream ended; partial frame {frame.lines}")

    async def next_event(self) -> SseFrame:
        """The next frame that is an event (comments such as heartbeats skipped)."""
        while (frame := await self.next_frame()).is_comment:
            pass
        return frame

    async def next_of(self, *kinds: str) -> SseFrame:
        """The next event of one of ``kinds``, skipping others (such as ``dropped``)."""
        while (frame := await self.next_event()).event not in kinds:
            pass
        return frame


async def _open_stream(
    http: httpx.AsyncClient, *, task_status: trio.TaskStatus[EventStream]
) -> None:
    async with http.stream("GET", "/v1/events", timeout=None) as response:
        stream = EventStream(response)
        task_status.started(stream)
        await stream.read_lines()


@asynccontextmanager
async def event_stream(http: httpx.AsyncClient) -> AsyncIterator[EventStream]:
    """``GET /v1/events``, open and subscribed: its opening comment has arrived."""
    async with trio.open_nursery() as nursery:
        with trio.fail_after(WAIT_S):
            stream: EventStream = await nursery.start(_open_stream, http)
        assert stream.response.status_code == 200
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        opening = await stream.next_frame()
        assert opening.lines == [": mcrelay events"]
        yield stream
        nursery.cancel_scope.cancel()
