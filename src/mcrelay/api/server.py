"""Where the API listens (TCP on loopback, a Unix socket, or nowhere) and serving it with hypercorn."""

import errno
import ipaddress
import logging
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio

log = logging.getLogger(__name__)

DEFAULT_API = "127.0.0.1:7507"
UNIX_SOCKET_MODE = 0o660
LISTEN_BACKLOG = 64


class ApiBindError(Exception):
    """The API cannot listen where it was told to; the message says why."""


@dataclass(frozen=True, slots=True)
class ApiAddress:
    host: str = ""
    port: int = 0
    path: Path | None = None

    @property
    def is_loopback(self) -> bool:
        return self.path is not None or ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        if self.path is not None:
            return f"unix:{self.path}"
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_api_address(text: str) -> ApiAddress | None:
    """``host:port``, ``[v6]:port``, ``unix:/path`` or ``off`` (None); ``ValueError`` otherwise."""
    if text == "off":
        return None
    if text.startswith("unix:"):
        path = text.removeprefix("unix:")
        if not path:
            raise ValueError("unix: needs a path, as in unix:/run/mcrelay/api.sock")
        return ApiAddress(path=Path(path))
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r} is not host:port, unix:/path or off") from None
    if not sep or not port.isdigit() or int(port) > 0xFFFF:
        raise ValueError(f"{text!r}: the port must be 0 to 65535")
    return ApiAddress(host=host, port=int(port))


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
