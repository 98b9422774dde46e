"""The header every secure datagram starts with, and what its type says of its size.

A datagram whose first byte is :data:`MAGIC` (0x4D, 'M') is secure; any other is
legacy. The header is ``magic u8, type u8, reserved u16 = 0``.
"""

import struct
from enum import IntEnum

from mcrelay.protocol.errors import DropReason, RemoteProtocolError

# +--------+--------+----------------+
# | magic  | type   | reserved       |
# | 0x4D   | u8     | u16, zero      |
# +--------+--------+----------------+
HEADER = struct.Struct("<BBH")
MAGIC = 0x4D
TAG_BYTES = 16
"""A Poly1305 tag, or a BLAKE2s-128 digest (mac1, mac2, the KEY_INFO tag)."""


class DatagramType(IntEnum):
    INIT = 1
    RESPONSE = 2
    COOKIE = 3
    DATA = 4
    KEY_QUERY = 5
    KEY_INFO = 6


SIZES = {
    DatagramType.INIT: 152,
    DatagramType.RESPONSE: 96,
    DatagramType.COOKIE: 64,
    DatagramType.KEY_QUERY: 96,
    DatagramType.KEY_INFO: 52,
}
"""The exact size of each fixed-size datagram (DATA is variable)."""
DATA_HEADER_BYTES = HEADER.size + 4 + 8
"""DATA's header (the AEAD's associated data): the common header, receiver_index, counter."""
MIN_DATA_BYTES = DATA_HEADER_BYTES + TAG_BYTES


def header(type_: DatagramType) -> bytes:
    return HEADER.pack(MAGIC, type_, 0)


def datagram_type_untrusted(datagram: bytes) -> DatagramType:
    """The type of a secure datagram, checked against its size.

    Raises :class:`RemoteProtocolError` for a non-zero reserved field, an unknown
    type (``unknown_type``), or a size its type does not have.
    """
    if len(datagram) < HEADER.size:
        raise RemoteProtocolError(f"secure header cut short ({len(datagram)} bytes)")
    magic, type_, reserved = HEADER.unpack_from(datagram)
    if magic != MAGIC:
        raise RemoteProtocolError(f"first byte {magic:#04x} is not the secure magic")
    if reserved != 0:
        raise RemoteProtocolError(f"reserved field {reserved:#06x} is not zero")
    try:
        kind = DatagramType(type_)
    except ValueError:
        raise RemoteProtocolError(
            f"unknown datagram type {type_}", DropReason.UNKNOWN_TYPE
        ) from None
    expected = SIZES.get(kind)
    if expected is not None and len(datagram) != expected:
        raise RemoteProtocolError(f"{kind.name} of {len(datagram)} bytes, not {expected}")
    if kind is DatagramType.DATA and len(datagram) < MIN_DATA_BYTES:
        raise RemoteProtocolError(f"DATA of {len(datagram)} bytes, under {MIN_DATA_BYTES}")
    return kind
