"""Peer addresses: the 6- or 18-byte wire form and the ``ip:port`` text form."""

import functools
import ipaddress
import struct

from mcrelay.protocol.errors import LocalProtocolError, RemoteProtocolError

Address = tuple[str, int]
"""A peer as ``(ip, port)``, the way it appears as a datagram's source."""

RELAY_ITSELF: Address = ("0.0.0.0", 0)
"""The sender of a message injected by the relay's operator."""

# IPv4: | address: 4 bytes | port: u16 BE |   (6 bytes)
# IPv6: | address: 16 bytes | port: u16 BE |  (18 bytes)
PORT = struct.Struct("!H")
IPV4_ADDRESS_BYTES = 4 + PORT.size
IPV6_ADDRESS_BYTES = 16 + PORT.size


ENCODED_ADDRESSES_CACHED = 4096
"""Wire forms kept: the relay encodes each sender's address once per copy it relays."""


@functools.lru_cache(maxsize=ENCODED_ADDRESSES_CACHED)
def encode_address(address: Address) -> bytes:
    host, port = address
    if not 0 <= port <= 0xFFFF:
        raise LocalProtocolError(f"port {port} out of range")
    try:
        packed = ipaddress.ip_address(host).packed
    except ValueError as exc:
        raise LocalProtocolError(f"not an IP address: {host!r}") from exc
    return packed + PORT.pack(port)


def decode_address_untrusted(value: bytes) -> Address:
    if len(value) not in (IPV4_ADDRESS_BYTES, IPV6_ADDRESS_BYTES):
        raise RemoteProtocolError(f"address of {len(value)} bytes (need 6 or 18)")
    (port,) = PORT.unpack_from(value, len(value) - PORT.size)
    host = ipaddress.ip_address(bytes(value[: -PORT.size]))
    return (str(host), port)


def format_address(address: Address) -> str:
    """``ip:port``, or ``[ip]:port`` for IPv6: the id of a client."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> Address:
    """The inverse of :func:`format_address`; raises ``ValueError`` with a readable reason."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"{text!r} is not ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{text!r}: write IPv6 addresses as [addr]:port")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{text!r}: {host!r} is not an IP address") from None
    significant = port_text.lstrip("0")  # (int() of thousands of digits is slow)
    if not (port_text.isascii() and port_text.isdigit()) or len(significant) > 5:
        raise ValueError(f"{text!r}: port must be 0 to 65535")
    port = int(significant or "0")
    if port > 0xFFFF:
        raise ValueError(f"{text!r}: port must be 0 to 65535")
    if len(port_text) > 5:  # (said "must be 0 to 65535" of 017301: found by review)
        raise ValueError(
            f"{text!r}: a port has 5 digits at most, not {len(port_text)} (write {port})"
        )
    return (str(ip), port)
