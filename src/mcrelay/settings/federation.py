"""The federation's settings: NATS server URLs, names, and what a relay is given to join.

A cluster name and a relay name are NATS subject tokens and appear in envelopes:
1 to 64 of ``[A-Za-z0-9_-]``. A relay's default name is its host name and port, with
any other character made a dash.
"""

import re
import socket
from urllib.parse import urlsplit

from mcrelay.protocol.federation.envelope import valid_relay_name
from mcrelay.settings.quoted import quoted

NATS_SCHEMES = ("nats", "tls")
DEFAULT_CLUSTER = "mcrelay"


def nats_urls(text: str) -> str:
    """``nats://HOST:PORT`` (or ``tls://``), comma-separated, as a canonical list."""
    urls = [url.strip() for url in text.split(",")]
    if urls == [""]:
        raise ValueError(f"{quoted(text)} names no NATS server: give nats://HOST:PORT[,...]")
    for url in urls:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValueError(f"{quoted(url)} is not a NATS URL (nats://HOST:PORT)") from None
        if parts.scheme not in NATS_SCHEMES or not parts.hostname or port is None:
            raise ValueError(
                f"{quoted(url)} is not a NATS URL (nats://HOST:PORT or tls://HOST:PORT)"
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
            raise ValueError(
                f"{quoted(url)}: give only nats://HOST:PORT; credentials go in federation_credentials"
            )
        if urls.count(url) > 1:
            raise ValueError(f"{quoted(text)} names {quoted(url)} twice")
    return ",".join(urls)


def check_nats_urls(value: str | None) -> None:
    if value is not None:
        nats_urls(value)


def check_name(value: str | None) -> None:
    if value is not None:
        name(value)


def name(text: str) -> str:
    if not valid_relay_name(text):
        raise ValueError(f"{quoted(text)} is not a name: 1 to 64 of A-Z, a-z, 0-9, '_' and '-'")
    return text


def default_relay_name(port: int) -> str:
    """The host name and the relay's port, as a name (``lab-1-4446``)."""
    host = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "relay"
    return f"{host[: 63 - len(str(port))]}-{port}"
