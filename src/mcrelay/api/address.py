"""Where the control API listens: ``host:port``, ``[v6]:port``, ``unix:/path`` or ``off``."""

import ipaddress
from dataclasses import dataclass
from pathlib import Path

DEFAULT_API = "127.0.0.1:7507"


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
