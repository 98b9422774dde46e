"""The API's connections: a deadline on every write, a cap on their number, all closed at stop.

hypercorn writes a response inside a shielded cancel scope, so neither a
cancelled request nor the daemon's shutdown reaches a write to a peer that has
stopped reading. Each connection's :class:`ApiStream` bounds its writes with a
deadline of its own, which the shield does not stop: a peer that takes nothing
for ``SEND_TIMEOUT_S`` is disconnected. :class:`Connections` knows every open
stream and closes them all when the API stops (closing a socket wakes a send
blocked in it, shielded or not), so a stalled reader never holds shutdown.
"""

import contextlib
import json
import logging
import resource
import socket

import trio

from mcrelay.api.errors import NoRoomForApi
from mcrelay.logs import once_a_minute

log = logging.getLogger(__name__)

SEND_TIMEOUT_S = 5.0
"""A peer that takes none of a response's bytes for this long is disconnected."""
FD_RESERVE = 64
"""File descriptors kept free beside the API's connections: the relay's sockets, the
files a reload reads, the log. The connection cap is lowered to leave them."""
HTTP2_PREFACE_START = b"PRI "
"""How an HTTP/2 client with prior knowledge opens a connection (RFC 9113, 3.4); the
method PRI means nothing else. The API speaks HTTP/1.1 only."""
CONNECTIONS_RETRY_AFTER_S = 1


def error_response(status: str, code: str, message: str, retry_after_s: int) -> bytes:
    """A whole HTTP/1.1 response with the API's JSON error body, closing the connection."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: {retry_after_s}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_MANY_CONNECTIONS = error_response(
    "503 Service Unavailable",
    "too_many_connections",
    "the API has as many connections open as it serves (api_max_connections); retry later",
    CONNECTIONS_RETRY_AFTER_S,
)


class ApiStream:
    """One accepted connection, as hypercorn's ``TCPServer`` uses it (``socket``,
    ``receive_some``, ``send_all``, ``send_eof``, ``aclose``)."""

    def __init__(self, sock: trio.socket.SocketType, send_timeout_s: float) -> None:
        self.socket = sock
        self._stream = trio.SocketStream(sock)
        self._send_timeout_s = send_timeout_s
        self._opening: bytes | None = b""
        """The connection's first bytes, until they show it is not HTTP/2."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = bytes(await self._stream.receive_some(max_bytes))
        if self._opening is not None:
            self._check_opening(self._opening + data[: len(HTTP2_PREFACE_START)])
        return data

    def _check_opening(self, opening: bytes) -> None:
        """Close a connection that opens as HTTP/2 does, before hypercorn switches to it."""
        if len(opening) < len(HTTP2_PREFACE_START) and HTTP2_PREFACE_START.startswith(opening):
            self._opening = opening  # too early to tell
            return
        self._opening = None
        if opening.startswith(HTTP2_PREFACE_START):
            self.close_now()
            raise trio.BrokenResourceError("HTTP/2 is not served: the API speaks HTTP/1.1")

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Send it all; a peer that takes nothing for the send timeout is disconnected."""
        with memoryview(data) as view:
            if not view:
                await trio.lowlevel.checkpoint()
                return
            sent = 0
            while sent < len(view):
                with trio.move_on_after(self._send_timeout_s) as waiting:
                    sent += await self._send(view[sent:])
                if waiting.cancelled_caught:
                    self.close_now()
                    raise trio.BrokenResourceError(
                        f"the peer took nothing for {self._send_timeout_s:g} s"
                    )

    async def _send(self, data: memoryview) -> int:
        try:
            return await self.socket.send(data)
        except OSError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()

    def close_now(self) -> None:
        """Close the socket; a task blocked sending or receiving on it wakes at once."""
        self.socket.close()


class Connections:
    """The open API connections, their cap, and the counts of what was refused."""

    def __init__(self) -> None:
        self.send_timeout_s = SEND_TIMEOUT_S
        self.refused = 0
        self.accept_errors = 0
        self._open: set[ApiStream] = set()
        self._wanted = 0
        self._room = 0
        self._error_log = once_a_minute()

    def __len__(self) -> int:
        return len(self._open)

    def fit(self, wanted: int) -> None:
        """Take ``wanted`` (api_max_connections) as the cap, lowered to what fits under the
        open-file limit beside ``FD_RESERVE`` (said in the log); at start and on a change.

        :class:`NoRoomForApi` at start when none fits; later (the limit lowered from
        outside) the API then serves none, as said in the log."""
        if wanted == self._wanted:
            return
        try:
            room = connection_room(wanted)
        except NoRoomForApi as exc:
            if not self._wanted:
                raise
            log.error("%s; the API serves none meanwhile", exc)
            room = 0
        self._wanted, self._room = wanted, room

    def full(self, wanted: int) -> bool:
        """Whether one more connection would pass the cap."""
        self.fit(wanted)
        return len(self._open) >= self._room

    def add(self, sock: socket.socket) -> ApiStream:
        stream = ApiStream(trio.socket.from_stdlib_socket(sock), self.send_timeout_s)
        self._open.add(stream)
        return stream

    def discard(self, stream: ApiStream) -> None:
        self._open.discard(stream)
        stream.close_now()

    def refuse(self, sock: socket.socket) -> None:
        """A 503 if the socket takes it at once (a fresh socket does), then closed."""
        self.refused += 1
        with sock, contextlib.suppress(OSError):  # gone, or it would block: the close says it
            sock.setblocking(False)
            sock.send(TOO_MANY_CONNECTIONS)

    def accept_failed(self, exc: OSError) -> None:
        """Count a failed accept; log one line a minute at most, however often it fails."""
        self.accept_errors += 1
        held = self._error_log.take(trio.current_time())
        if held is not None:
            log.error(
                "the API cannot accept connections: %s (%d more times since the last "
                "report); the relay goes on, the API retries",
                exc.strerror or exc,
                held,
            )

    def close_all(self) -> None:
        """Close every connection now (the API is stopping)."""
        for stream in self._open:
            stream.close_now()


def connection_room(wanted: int) -> int:
    """How many API connections fit under RLIMIT_NOFILE with ``FD_RESERVE`` left free,
    up to ``wanted``; the soft limit is raised toward the hard one if that is needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = wanted + FD_RESERVE
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", target, exc)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return wanted
    room = max(0, soft - FD_RESERVE)
    if not room:
        raise NoRoomForApi(
            f"the open-file limit ({soft}) leaves the API no connection beside the "
            f"{FD_RESERVE} files kept for the relay: raise it to {needed} (LimitNOFILE= "
            "under systemd, ulimit -n in a shell), or give --api off"
        )
    log.warning(
        "api_max_connections is %d, but the open-file limit (%d) leaves room for %d "
        "beside the %d kept for the relay: the API serves %d connections at most",
        wanted,
        soft,
        room,
        FD_RESERVE,
        room,
    )
    return room
