"""Opening the API's listening socket, and serving the app on it with hypercorn's parts."""

import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import trio
from hypercorn.config import Config
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import LifespanState
from hypercorn.utils import repr_socket_addr, wrap_app

from mcrelay.api.app import create_app
from mcrelay.api.connections import ApiStream, Connections
from mcrelay.api.context import ApiContext
from mcrelay.api.errors import ApiBindError
from mcrelay.api.http11 import HttpConnection
from mcrelay.files import make_private_directories
from mcrelay.settings.address import ApiAddress

log = logging.getLogger(__name__)

UNIX_SOCKET_MODE = 0o660
LISTEN_BACKLOG = 256
ACCEPT_BATCH = 64
"""Connections taken per wake of the accept loop before it yields."""
ACCEPT_RETRY_S = 0.1
"""After a failed accept (out of file descriptors), wait this long before the next."""
IGNORED_ACCEPT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        *("ECONNABORTED", "EPROTO", "EPERM", "ENETDOWN", "ENOPROTOOPT", "EHOSTDOWN"),
        *("ENONET", "EHOSTUNREACH", "EOPNOTSUPP", "ENETUNREACH"),
    )
    if hasattr(errno, name)
)
"""A connection that failed before we took it (trio's SocketListener skips the same)."""


@dataclass(frozen=True, slots=True)
class ApiSocket:
    """The API's listening socket, and for a Unix one the file it made, held open
    (``O_PATH``) so that no other file takes its inode number: :meth:`close` removes
    that file only while it is still the one at the path. A stop removed whatever was
    there: another daemon's socket bound since (found by review)."""

    sock: socket.socket
    path: Path | None = None
    pin: int | None = None
    """An ``O_PATH`` descriptor of the socket file bound."""

    def close(self) -> None:
        self.sock.close()
        if self.path is not None and self.pin is not None:
            _unlink_if_pinned(self.path, self.pin)
            os.close(self.pin)


def open_api_socket(address: ApiAddress) -> ApiSocket:
    """A listening socket; a stale Unix socket is replaced, a live one refused."""
    try:
        if address.path is not None:
            return _open_unix(address.path)
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address.host, address.port))
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            sock.close()
            raise
        return ApiSocket(sock)
    except FileExistsError as exc:  # from mkdir: a file where a directory should be
        raise ApiBindError(
            f"cannot listen on {address}: {exc.filename} is not a directory"
        ) from None
    except OSError as exc:
        raise ApiBindError(f"cannot listen on {address}: {exc.strerror or exc}") from None


def _open_unix(path: Path) -> ApiSocket:
    # A directory made here is the owner's alone; one that exists (systemd's
    # RuntimeDirectory=, say) keeps the mode it was given.
    make_private_directories(path.parent)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Made with its mode by the umask: a chmod by path after bind would follow a
        # link put there meanwhile, in a directory others may write.
        old_umask = os.umask(0o777 & ~UNIX_SOCKET_MODE)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        pin = _pin(path)
    except BaseException:
        sock.close()
        raise
    try:
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        ApiSocket(sock, path, pin).close()
        raise
    return ApiSocket(sock, path, pin)


def _remove_stale(path: Path) -> None:
    try:
        pin = _pin(path)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISSOCK(os.fstat(pin).st_mode):
            raise ApiBindError(f"{path} exists and is not a socket; not replacing it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError as exc:
                if exc.errno != errno.ECONNREFUSED:
                    raise
            else:
                raise ApiBindError(f"another process is listening on {path}")
        # The one probed, not another daemon's bound there meanwhile.
        if _unlink_if_pinned(path, pin):
            log.info("replaced stale API socket %s", path)
    finally:
        os.close(pin)


def _pin(path: Path) -> int:
    """``path`` itself (not what a link there names), held open: while it is, no other
    file gets its inode number, which names it in :func:`_unlink_if_pinned`."""
    return os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)


def _unlink_if_pinned(path: Path, pin: int) -> bool:
    """Remove ``path`` if it is still the file ``pin`` holds; whether it did. Looked at,
    then removed: a file put there between the two goes too, but that is a moment, not
    a whole run."""
    held = os.fstat(pin)
    try:
        now = path.lstat()
        if (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


async def serve_api(
    context: ApiContext,
    sock: socket.socket,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API on a listening socket until cancelled; then close every connection.

    hypercorn's parts (its Lifespan, WorkerContext and a TCPServer per connection) run
    under our own accept loop, as its ``worker_serve`` runs them under
    ``trio.serve_listeners``: so that every connection is capped, tracked and closed
    at once on the way out (see connections.py), whatever its reader does."""
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("mcrelay.api.http")
    app = wrap_app(create_app(context), config.wsgi_max_body_size, "asgi")
    state: LifespanState = {}
    lifespan = Lifespan(app, config, state)
    worker = WorkerContext(None)
    connections = context.connections
    sock.setblocking(False)
    url = f"http://{repr_socket_addr(sock.family, sock.getsockname())}"
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as nursery:

            async def serve_one(stream: ApiStream) -> None:
                try:
                    await HttpConnection(app, config, worker, state, stream).run()
                except Exception:
                    # A bug costs its connection, never the API or the relay.
                    log.exception("an API connection failed")
                finally:
                    connections.discard(stream)

            def max_connections() -> int:
                return context.relay.config.api_max_connections

            connections.fit(max_connections())
            nursery.start_soon(
                accept_connections, sock, connections, max_connections, serve_one, nursery
            )
            task_status.started([url])
            try:
                await trio.sleep_forever()
            finally:
                connections.close_all()


class Listener(Protocol):
    """A listening socket, as the accept loop uses it."""

    def fileno(self) -> int: ...

    def accept(self) -> tuple[socket.socket, Any]: ...


async def accept_connections(
    listener: Listener,
    connections: Connections,
    max_connections: Callable[[], int],
    serve_one: Callable[[ApiStream], Awaitable[None]],
    nursery: trio.Nursery,
) -> None:
    """Take connections as they come: each served in ``nursery``, or refused past the cap.

    Each wake takes every connection waiting, up to ``ACCEPT_BATCH``: a burst must not
    wait in the backlog behind the new connections' own start, or it overflows it
    (a client's connect to a full Unix socket backlog fails)."""
    while True:
        await trio.lowlevel.wait_readable(listener)
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno not in IGNORED_ACCEPT_ERRNOS:
                    # Out of file descriptors or memory, most likely: the connection waits
                    # in the backlog; try again soon.
                    connections.accept_failed(exc)
                    await trio.sleep(ACCEPT_RETRY_S)
                break
            if connections.full(max_connections()):
                connections.refuse(sock)
            else:
                nursery.start_soon(serve_one, connections.add(sock))
