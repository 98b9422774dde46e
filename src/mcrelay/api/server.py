"""Opening the API's listening socket and serving the app on it with hypercorn."""

import errno
import logging
import os
import socket
import stat
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

from mcrelay.api.address import ApiAddress, ApiBindError

log = logging.getLogger(__name__)

UNIX_SOCKET_MODE = 0o660
LISTEN_BACKLOG = 64


def open_api_socket(address: ApiAddress) -> socket.socket:
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
        return sock
    except OSError as exc:
        raise ApiBindError(f"cannot listen on {address}: {exc.strerror or exc}") from None


def _open_unix(path: Path) -> socket.socket:
    # A directory made here is the owner's alone; one that exists (systemd's
    # RuntimeDirectory=, say) keeps the mode it was given.
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _remove_stale(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o777 & ~UNIX_SOCKET_MODE)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old_umask)
        os.chmod(path, UNIX_SOCKET_MODE)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _remove_stale(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ApiBindError(f"{path} exists and is not a socket; not replacing it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno != errno.ECONNREFUSED:
            raise
        log.info("replacing stale API socket %s", path)
        path.unlink()
    else:
        raise ApiBindError(f"another process is listening on {path}")
    finally:
        probe.close()


async def serve_api(
    app: QuartTrio,
    sock: socket.socket,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` on an already listening socket until cancelled (hypercorn owns the socket)."""
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("mcrelay.api.http")
    config.graceful_timeout = 1.0
    await serve(app, config, task_status=task_status)
