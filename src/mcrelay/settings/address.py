"""Where the control API listens: ``host:port``, ``[v6]:port``, ``unix:/path`` or ``off``."""

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mcrelay.settings.quoted import quoted

SOCKET_NAME = "api.sock"
MAX_SOCKET_PATH_BYTES = 107
"""A Unix socket's path, as bind() takes it: ``sun_path`` is 108 bytes, with its NUL."""
SYSTEM_RUNTIME_DIRECTORY = Path("/run/mcrelay")


def default_api_socket(environ: Mapping[str, str], euid: int) -> Path:
    """Where the daemon listens, and the CLI looks, when ``--api`` is not given.

    ``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``), else ``/run/mcrelay`` for
    root, else ``$XDG_RUNTIME_DIR/mcrelay``, else ``$XDG_STATE_HOME/mcrelay``
    (``~/.local/state/mcrelay`` when unset): in each case a directory no other user
    may write."""
    runtime = [d for d in environ.get("RUNTIME_DIRECTORY", "").split(":") if d]
    if runtime:
        return Path(runtime[0]) / SOCKET_NAME
    if euid == 0:
        return SYSTEM_RUNTIME_DIRECTORY / SOCKET_NAME
    if Path(environ.get("XDG_RUNTIME_DIR", "")).is_absolute():
        return Path(environ["XDG_RUNTIME_DIR"]) / "mcrelay" / SOCKET_NAME
    return state_home(environ) / "mcrelay" / SOCKET_NAME


def state_home(environ: Mapping[str, str]) -> Path:
    """``$XDG_STATE_HOME``, else ``~/.local/state``. A relative ``XDG_STATE_HOME`` is
    ignored, as the XDG spec says. Without a home (no ``$HOME``, a user without a passwd
    entry) it is under ``/nonexistent``, as for system users: a command that needs it
    then says it cannot make it, and every other command (``--help``) still works."""
    if Path(environ.get("XDG_STATE_HOME", "")).is_absolute():
        return Path(environ["XDG_STATE_HOME"])
    try:
        home = Path.home()
    except RuntimeError:  # "Could not determine home directory"
        home = Path("/nonexistent")
    return home / ".local" / "state"


def default_api(environ: Mapping[str, str]) -> str:
    return f"unix:{default_api_socket(environ, os.geteuid())}"


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
        # Both passed config check, then the daemon could not bind them: it exited 1, which
        # the unit restarts on, every 2 s (found by review).
        if path.endswith("/"):
            raise ValueError(
                f"unix:{path[:80]} names a directory: give the socket's own path, "
                f"as in unix:{path[:80]}{SOCKET_NAME}"
            )
        size = len(os.fsencode(path))
        if size > MAX_SOCKET_PATH_BYTES:
            raise ValueError(
                f"unix:{path[:40]}...: a Unix socket's path is {MAX_SOCKET_PATH_BYTES} bytes at "
                f"most (the system's limit), this one {size}: choose a shorter one"
            )
        return ApiAddress(path=Path(path))
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{quoted(text)} is not host:port, unix:/path or off") from None
    if not (sep and port.isascii() and port.isdigit() and len(port) <= 5) or int(port) > 0xFFFF:
        raise ValueError(f"{quoted(text)}: the port must be 0 to 65535")
    return ApiAddress(host=host, port=int(port))
