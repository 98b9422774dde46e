"""hypercorn's connection, speaking HTTP/1.1 only, on an :class:`ApiStream`.

hypercorn switches a connection to HTTP/2 on an ``Upgrade: h2c`` request or on
the HTTP/2 preface (h2c with prior knowledge), where one connection carries 100
streams: so many event subscribers for one file descriptor, outside the caps.
The API speaks HTTP/1.1 only: the h2c upgrade is ignored (the request is
answered in HTTP/1.1, which RFC 9110, 7.8, allows) and a connection opening
with the preface is closed by its :class:`ApiStream`. A WebSocket upgrade is ignored
likewise (the API has no WebSocket).

hypercorn closes a connection whose request headers take longer than its
keep-alive time (5 s), but gives the body that follows no time limit at all, and
answers (a 401, say) before reading it: a client that announced a body and never
sent it held its connection for good, token or not, up to the cap. A request's
body must come whole within :data:`REQUEST_BODY_S` of its headers.

hypercorn restarts its keep-alive timer, or closes a ``Connection: close`` one, from
the task that ran the request, once the response is out; that task is being cancelled
by then, and so is the timer or the close: a connection that got its answer (a 401,
say) and sent nothing more stayed open for good, up to the cap (found by review). A
connection is idle from its start, and from the end of each response, until the next
request's headers are in; idle for the keep-alive time (5 s), it is closed, whatever
hypercorn's timer did. The reading task keeps that deadline, set again whenever the
protocol sends anything (the request's task changes the state as it answers).

A request pipelined behind one being answered waits in h11 (PAUSED), and hypercorn
stopped reading until the answer was out: behind an event stream, whose answer never
ends, the peer's close went unseen, and its subscriber slot stayed taken until a
heartbeat's write failed (found by review). Here the protocol returns instead of
waiting (:class:`ReadGate`), the reading task goes on reading (h11 buffers what comes,
up to :data:`MAX_HELD_BYTES`, then reading waits), and once the answer is out the
reading task has h11 go on with the request that waited. The end of the peer's bytes
(a half-close) ends an event stream's connection at once (when its answer begins, if
the end came first), and any other once what the peer asked is answered, the last
answer too (passed on at once, the end cut it short: found by review); a request
whose body can no longer come is h11's to refuse (400). An answer given before its
request's body is in (a 401, say) says ``Connection: close``: the connection serves
no other request. A connection closed from the writing side (a peer that reads
nothing, cut off) wakes the reading task, which may be waiting for an answer that
will not end now (found by review: its connection stayed, counted, for good); so
does hypercorn's decision to close (``Connection: close``, an answer given before its
request's body came), which it acts on from the request's task, cancelled by then (it
took the idle deadline, 5 s). The reading task closes, lingering: what the peer still
sends (that body, a stray CRLF, requests past the last) is read and dropped for up to
:data:`LINGER_S`, so that the kernel sends no reset, which would lose the answer the
peer has not read yet (found by review). A read that ran past its deadline ends the
loop, whatever else holds (one went round on a past deadline at full CPU: found by
review).

h11 leaves two rules of RFC 9112 to its user (:class:`Connection`): empty lines before
a request line are ignored (2.2; h11 refused them, so a client's stray CRLF between two
requests got a 400 for the second), up to :data:`MAX_EMPTY_LINE_BYTES`, and what came
with a request that closes the connection is dropped unread (9.6; h11 refused it, and
hypercorn's 400 took the place of the closing request's answer). Both found by review.

h11's refusal of a request (a 431 for a request line and headers over hypercorn's
``h11_max_incomplete_size``, 16 KiB; a 400, a 501) is hypercorn's to send, and it sent
it with no body and no type: here it carries the API's error object, as every other
error does (found by review).

This leans on hypercorn's internals (``TCPServer.run``, ``_read_data``,
``H11Protocol`` and its ``_send_error_response``), as of 0.18, and on h11's receive buffer, as of 0.16: pyproject.toml
pins the versions it was written against.
"""

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, Event, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.events import EndBody, Response
from hypercorn.protocol.events import Event as StreamEvent
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import parse_socket_addr

from mcrelay.api.connections import ApiStream
from mcrelay.api.serialize import error_json

REQUEST_BODY_S = 10.0
"""From a request's headers to the last byte of its body, at most (the API's bodies
are at most 1 MiB, from local clients)."""
CLOSE = (b"connection", b"close")
ANSWERED = frozenset({h11.IDLE, h11.DONE, h11.MUST_CLOSE, h11.CLOSED})
"""Our side's states with no response under way: the connection is idle then, unless a
request's body is coming."""


LINGER_S = 2.0
"""After our end of a connection, how long what the peer still sends is read and
dropped before the socket is closed."""
LINGER_BYTES = 1024 * 1024
"""And how much of it, at most."""
MAX_HELD_BYTES = 65536
"""Bytes of pipelined requests h11 may hold while an answer is under way; beyond them
the connection reads no more until it is out."""


PROTOCOL_ERRORS = {
    400: "the request is not well-formed HTTP/1.1",
    431: "the request line and headers are over {size} bytes",
    501: "the request's transfer coding is not supported (chunked is)",
}
"""The message of each refusal h11 hints at (any other says its status's phrase); its
code is the phrase, as the application's own HTTP errors' (``request_header_fields_too_large``)."""


LINE_ENDS = (b"\r", b"\n")
MAX_EMPTY_LINE_BYTES = 16 * 1024
"""Bytes of empty lines skipped before one request line, at most: past them h11
answers 400. (Without a bound, a client sending nothing but line ends held the loop
2.8 ms a read, and 64 such clients delayed the relay's datagrams by half a second:
found by review.)"""


class Connection(h11.Connection):
    """h11's server side, with RFC 9112's empty lines before a request line skipped and
    nothing read after a request that closes the connection (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skipped = 0
        """Bytes of empty lines skipped before the request line to come."""

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        buffer = self._receive_buffer
        if (
            self.their_state is h11.IDLE
            and buffer._data[:1] in LINE_ENDS  # most requests: no copy of what follows
            and self._skipped < MAX_EMPTY_LINE_BYTES
        ):
            # CR and LF alike (a CR read apart from its LF is taken too: h11 refused it).
            head = buffer._data[: MAX_EMPTY_LINE_BYTES - self._skipped]
            skipped = len(head) - len(head.lstrip(b"\r\n"))
            if skipped:
                buffer._extract(skipped)
                self._skipped += skipped
        event = super().next_event()
        if isinstance(event, h11.Request):
            self._skipped = 0
        if self.their_state is h11.MUST_CLOSE and buffer:
            buffer._extract(len(buffer))
        return event


class Paused(Exception):
    """h11 holds the next request until the answer under way is out."""


class ReadGate:
    """hypercorn's ``can_read`` event, which its protocol clears and waits on while h11
    is PAUSED: here the wait does not block, it raises :class:`Paused`, which
    :meth:`Http11Protocol.handle` takes; ``set`` (the answer is out) calls
    ``on_set``."""

    def __init__(self) -> None:
        self._set = False
        self.on_set: Callable[[], None] = lambda: None

    async def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if not self._set:
            raise Paused

    async def set(self) -> None:
        self._set = True
        self.on_set()

    def is_set(self) -> bool:
        return self._set


class Http11Protocol(H11Protocol):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.connection = Connection(
            h11.SERVER, max_incomplete_event_size=self.config.h11_max_incomplete_size
        )
        self.can_read = self.gate = ReadGate()
        self.paused = False
        """A request waits in h11 for the answer under way to be out."""
        self.endless = False
        """The answer under way is an event stream: it ends only with the connection."""
        self.ended = False
        """The connection is closed (from the writing side too: a write that failed)."""
        self.on_end: Callable[[], None] = lambda: None
        self.on_answer: Callable[[], None] = lambda: None
        """An answer begins (:attr:`endless` is known)."""

    async def handle(self, event: Event) -> None:
        if isinstance(event, Closed) and not self.ended:
            self.ended = True
            self.on_end()
        try:
            await super().handle(event)
        except Paused:
            self.paused = True

    async def stream_send(self, event: StreamEvent) -> None:
        if isinstance(event, Response):
            names = {name.lower(): value for name, value in event.headers}
            # An event stream's answer, not a HEAD's (which has a length: found by review).
            self.endless = names.get(b"content-type", b"").startswith(b"text/event-stream") and (
                b"content-length" not in names
            )
            said = b"connection" in names or (  # or hypercorn says it, at its last request
                self.keep_alive_requests >= self.config.keep_alive_max_requests
            )
            if self.connection.their_state is h11.SEND_BODY and not said:
                # Answered before its body is in (a 401, say): the connection will not
                # serve another request, so say so (a client that sent its next one
                # waited for the body's deadline, 10 s: found by review).
                event = dataclasses.replace(event, headers=[*event.headers, CLOSE])
            self.on_answer()
        elif isinstance(event, EndBody):
            self.endless = False
        await super().stream_send(event)

    async def resume(self) -> None:
        """The answer is out: on with the request that waited (and any behind it)."""
        self.paused = False
        try:
            await self._handle_events()
        except Paused:
            self.paused = True

    async def _send_error_response(self, status_code: int) -> None:
        """h11's refusal of what the peer sent (a 431 for a request line and headers over
        ``h11_max_incomplete_size``, a 400 for a request that is not HTTP/1.1, a 501 for
        a transfer coding it has not) carries the API's error object, as every other
        error does (hypercorn sent it with no body and no type: found by review). The
        connection closes after it, as hypercorn's did."""
        phrase = HTTPStatus(status_code).phrase
        message = PROTOCOL_ERRORS.get(status_code, phrase).format(
            size=self.config.h11_max_incomplete_size
        )
        body = json.dumps(error_json(phrase.lower().replace(" ", "_"), message)).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            CLOSE,
            *self.config.response_headers("h11"),
        ]
        await self._send_h11_event(h11.Response(status_code=status_code, headers=headers))
        await self._send_h11_event(h11.Data(data=body))
        await self._send_h11_event(h11.EndOfMessage())

    async def _check_protocol(self, event: h11.Request) -> None:
        """Never switch to HTTP/2 (see the module's docstring)."""

    async def _create_stream(self, request: h11.Request) -> None:
        """Never a WebSocket: the API has none, so an ``Upgrade: websocket`` is ignored
        as h2c's is, and the request answered in HTTP/1.1. (hypercorn took every byte
        after such a request for WebSocket frames: a request pipelined behind it made
        it fail with two tracebacks in the log, connection after connection: found by
        review.)"""
        headers = [(name, value) for name, value in request.headers if name != b"upgrade"]
        await super()._create_stream(
            h11.Request(
                method=request.method,
                target=request.target,
                headers=headers,
                http_version=request.http_version,
            )
        )


class HttpConnection(TCPServer):
    def __init__(
        self,
        app: AppWrapper,
        config: Config,
        context: WorkerContext,
        state: LifespanState,
        stream: ApiStream,
    ) -> None:
        # TCPServer's annotation says SSLStream; it uses what ApiStream has.
        super().__init__(app, config, context, state, stream)  # type: ignore[arg-type]
        self._api_stream = stream
        self._reading: trio.CancelScope | None = None
        """The wait for the peer's next bytes, under the connection's deadline."""
        self._idle_since: float | None = None
        self._body_since: float | None = None
        self._body_of = -1
        """Which request of the connection ``_body_since`` is of (pipelined: the next
        request's headers may be read with the previous one's body)."""
        self._closing = False
        """hypercorn has decided to close the connection."""
        self._peer_done = False
        """The peer has sent all it will (a half-close): what it asked is answered, then
        the connection ends, as hypercorn did (found by review)."""

    async def run(self) -> None:
        """``TCPServer.run`` with no TLS, our protocol for its ProtocolWrapper, and no
        keep-alive wait once the peer has closed."""
        sock = self._api_stream.socket
        try:
            client = parse_socket_addr(sock.family, sock.getpeername())
            server = parse_socket_addr(sock.family, sock.getsockname())
            async with TaskGroup() as task_group:
                self._task_group = task_group
                protocol = Http11Protocol(
                    self.app,
                    self.config,
                    self.context,
                    task_group,
                    ConnectionState(self.state),
                    False,
                    client,
                    server,
                    self.protocol_send,
                )
                # TCPServer calls only initiate() and handle(), which H11Protocol has.
                self.protocol = cast(ProtocolWrapper, protocol)
                self._http = protocol
                protocol.gate.on_set = self._answered
                protocol.on_end = self._ended
                protocol.on_answer = self._answering
                await self.protocol.initiate()
                await self.idle_task.restart(self._task_group, self._idle_timeout)
                await self._read_data()
                # The peer has gone (or sent its last byte): no request will come to
                # wait for, so the connection does not linger for the keep-alive time.
                await self.idle_task.stop()
        except OSError:
            pass
        finally:
            await self._close()

    async def protocol_send(self, event: Event) -> None:
        """The request's task answers, and moves the connection's state: the deadline of
        the read under way follows (at once: that task may be cancelled at its next
        checkpoint, which is what lost hypercorn's keep-alive timer)."""
        deadline = self._deadline()  # even with no read under way (h11 PAUSED: found by review)
        if self._reading is not None:
            self._reading.deadline = deadline
        if isinstance(event, Closed):
            # hypercorn closes from that task, cancelled before it is done (a
            # ``Connection: close`` answer was closed 5 s later, by the idle deadline):
            # the reading task ends the connection instead, at once, lingering
            # (``_close``: a peer still sending a body answered early, a 401 say, reads
            # the answer once its body is out, which a reset would lose).
            self._closing = True
            self._ended()
            await self.protocol.handle(Closed())
            return
        await super().protocol_send(event)

    async def _initiate_server_close(self) -> None:
        """hypercorn's idle timer ends the connection: the reading task closes it,
        lingering (hypercorn closed the socket itself, and the reset its kernel then
        sent threw away what a slow reader had not read yet: found by review)."""
        self._closing = True
        self._ended()
        await self.protocol.handle(Closed())

    async def _close(self) -> None:
        """hypercorn's close, lingering (RFC 9112, 9.6): after our end, what the peer
        still sends (a stray CRLF, requests past the last) is read and dropped,
        :data:`LINGER_S` and :data:`LINGER_BYTES` at most, so that the kernel does not
        answer it with a reset, which throws away what the peer has not read yet of
        our last answer (found by review)."""
        try:
            with contextlib.suppress(
                trio.BrokenResourceError, trio.BusyResourceError, trio.ClosedResourceError
            ):
                await self.stream.send_eof()
                with trio.move_on_after(LINGER_S):
                    dropped = 0
                    while dropped <= LINGER_BYTES:
                        data = await self.stream.receive_some(MAX_RECV)
                        if not data:
                            break
                        dropped += len(data)
        finally:
            await self.stream.aclose()

    def _answered(self) -> None:
        """The answer under way is out: a request that waited behind it is read now, or
        the end of a peer that has sent all it will."""
        if (self._http.paused or self._peer_done) and self._reading is not None:
            self._reading.cancel()

    def _answering(self) -> None:
        """An answer begins: an event stream's, to a peer that has sent all it will, ends
        the connection (it waited for an answer that does not end: found by review)."""
        if self._peer_done and self._http.endless and self._reading is not None:
            self._reading.cancel()

    def _ended(self) -> None:
        """The connection is closed: the reading task, which may be waiting for an
        answer that will not end now, stops (it waited for good, its connection counted
        against the cap: found by review)."""
        if self._reading is not None:
            self._reading.cancel()

    def _held_bytes(self) -> int:
        return len(self._http.connection.trailing_data[0])

    def _deadline(self) -> float:
        """When the peer must have sent its next bytes: a request's body within
        :data:`REQUEST_BODY_S` of its headers, the next request's headers within the
        keep-alive time of the connection going idle, else no limit (a response is under
        way)."""
        http = self._http
        now = trio.current_time()
        if http.connection.their_state is h11.SEND_BODY:
            self._idle_since = None
            if self._body_since is None or http.keep_alive_requests != self._body_of:
                self._body_since, self._body_of = now, http.keep_alive_requests
            return self._body_since + REQUEST_BODY_S
        self._body_since = None
        if http.connection.our_state in ANSWERED:
            if self._idle_since is None:
                self._idle_since = now
            return self._idle_since + self.config.keep_alive_timeout
        self._idle_since = None
        return math.inf

    async def _read_data(self) -> None:
        """``TCPServer._read_data``, under the connection's deadline, reading on while a
        request waits in h11 (see the module)."""
        http = self._http
        while not http.ended and not self._closing:
            if self._peer_done and http.endless:  # an event stream's peer has gone
                break
            if http.paused and http.gate.is_set():
                await http.resume()
                continue
            if self._peer_done and not http.paused and not self._request_in_and_answering():
                # All answered, or a request that cannot be whole now (h11 says 400).
                await self.protocol.handle(RawData(b""))
                break
            data = None
            with (
                trio.CancelScope(deadline=self._deadline()) as reading,
                contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError),
            ):
                self._reading = reading
                if self._peer_done or (http.paused and self._held_bytes() > MAX_HELD_BYTES):
                    await trio.sleep_forever()  # until the answer is out
                data = await self.stream.receive_some(MAX_RECV)
            self._reading = None
            if data is None and trio.current_time() >= reading.deadline:
                break  # past the deadline, whatever else (it spun on one: found by review)
            if data is None and (self._peer_done or (http.paused and http.gate.is_set())):
                continue  # the answer is out (or an event stream's began)
            if data is None:  # closed
                break
            if data == b"" and (http.paused or self._request_in_and_answering()):
                self._peer_done = True  # answer it first (an event stream: end now)
                continue
            if data and http.connection.their_state is h11.MUST_CLOSE:
                # After a request that closes the connection (HTTP/1.0's, say): ignored,
                # as RFC 9112, 9.6 asks (h11 raised, and the close cut the answer short:
                # found by review).
                continue
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())

    def _request_in_and_answering(self) -> bool:
        """The peer's request is whole, or answered early (its body still due: a 401), and
        its answer not out yet (ending the connection now would cut it: found by
        review)."""
        connection = self._http.connection
        whole = connection.their_state in (h11.DONE, h11.MUST_CLOSE)  # MUST_CLOSE: 1.0's
        begun = connection.our_state is h11.SEND_BODY
        return self._http.stream is not None and (whole or begun)
