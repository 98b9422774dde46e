"""hypercorn's connection, speaking HTTP/1.1 only, on an :class:`ApiStream`.

hypercorn switches a connection to HTTP/2 on an ``Upgrade: h2c`` request or on
the HTTP/2 preface (h2c with prior knowledge), where one connection carries 100
streams: so many event subscribers for one file descriptor, outside the caps.
The API speaks HTTP/1.1 only: the h2c upgrade is ignored (the request is
answered in HTTP/1.1, which RFC 9110, 7.8, allows) and a connection opening
with the preface is closed by its :class:`ApiStream`.

This leans on hypercorn's internals (``TCPServer.run``, ``H11Protocol``), as of
0.18: pyproject.toml pins the versions it was written against.
"""

from typing import cast

import h11
from hypercorn.config import Config
from hypercorn.protocol import ProtocolWrapper
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import AppWrapper, ConnectionState, LifespanState
from hypercorn.utils import parse_socket_addr

from mcrelay.api.connections import ApiStream


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
