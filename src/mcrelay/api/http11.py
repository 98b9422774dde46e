"""hypercorn's connection, speaking HTTP/1.1 only, on an :class:`ApiStream`.

hypercorn switches a connection to HTTP/2 on an ``Upgrade: h2c`` request or on
the HTTP/2 preface (h2c with prior knowledge), where one connection carries 100
streams: so many event subscribers for one file descriptor, outside the caps.
The API speaks HTTP/1.1 only: the h2c upgrade is ignored (the request is
answered in HTTP/1.1, which RFC 9110, 7.8, allows) and a connection opening
with the preface is closed by its :class:`ApiStream`.

hypercorn closes a connection whose request headers take longer than its
keep-alive time (5 s), but gives the body that follows no time limit at all, and
answers (a 401, say) before reading it: a client that announced a body and never
sent it held its connection for good, token or not, up to the cap. A request's
body must come whole within :data:`REQUEST_BODY_S` of its headers.

This leans on hypercorn's internals (``TCPServer.run``, ``_read_data``,
``H11Protocol``), as of 0.18: pyproject.toml pins the versions it was written against.
"""

import math
from typing import cast

import h11
import trio
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import MAX_RECV, TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import parse_socket_addr

from mcrelay.api.connections import ApiStream

REQUEST_BODY_S = 10.0
"""From a request's headers to the last byte of its body, at most (the API's bodies
are at most 1 MiB, from local clients)."""


class Http11Protocol(H11Protocol):
    async def _check_protocol(self, event: h11.Request) -> None:
        """Never switch to HTTP/2 (see the module's docstring)."""


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

    async def _read_data(self) -> None:
        """``TCPServer._read_data``, with a deadline on a request's body (see the module)."""
        body_since: float | None = None
        request = -1
        """Which request of the connection ``body_since`` is of (pipelined: the next
        request's headers may be read with the previous one's body)."""
        while True:
            http = self._http
            if http.connection.their_state is not h11.SEND_BODY:
                body_since = None
            elif body_since is None or http.keep_alive_requests != request:
                body_since, request = trio.current_time(), http.keep_alive_requests
            deadline = math.inf if body_since is None else body_since + REQUEST_BODY_S
            try:
                with trio.fail_at(deadline):
                    data = await self.stream.receive_some(MAX_RECV)
            except (trio.ClosedResourceError, trio.BrokenResourceError, trio.TooSlowError):
                break
            await self.protocol.handle(RawData(bytes(data)))
            if data == b"":
                break
        await self.protocol.handle(Closed())
