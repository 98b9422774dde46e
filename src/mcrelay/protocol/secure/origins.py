"""Origins: who a relayed CHAT comes from, or whom a PRESENCE is about.

An origin is ``kind u8`` (0 the relay, 1 a secure client, 2 a legacy client), an ``id``
of 32 bytes (a secure client's static public key; the SHA-256 of a legacy client's RSA
SubjectPublicKeyInfo DER, ``protocol.legacy.crypto.key_digest``; zeros for the relay),
and ``addr_len u8`` + the address in the legacy profile's format (6 bytes IPv4, 18
bytes IPv6; none for the relay).
"""

import struct
from dataclasses import dataclass
from enum import IntEnum

from mcrelay.protocol.addresses import (
    IPV4_ADDRESS_BYTES,
    IPV6_ADDRESS_BYTES,
    Address,
    decode_address_untrusted,
    encode_address,
)
from mcrelay.protocol.errors import LocalProtocolError, RemoteProtocolError

# +--------+----------+----------+---------------------------+
# | kind   | id       | addr_len | address                   |
# | u8     | 32 bytes | u8       | addr_len bytes: 0, 6, 18  |
# +--------+----------+----------+---------------------------+
ORIGIN_HEAD = struct.Struct("<B32sB")
ID_BYTES = 32
NO_ID = bytes(ID_BYTES)


class OriginKind(IntEnum):
    RELAY = 0
    SECURE_CLIENT = 1
    LEGACY_CLIENT = 2


@dataclass(frozen=True, slots=True)
class Origin:
    """A member (secure or legacy) by its key id and address, or the relay itself."""

    kind: OriginKind
    id: bytes
    address: Address | None

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise LocalProtocolError(f"origin kind {self.kind} is not one of 0, 1, 2")
        if len(self.id) != ID_BYTES:
            raise LocalProtocolError(f"an origin id of {len(self.id)} bytes, not {ID_BYTES}")
        if self.kind == OriginKind.RELAY:
            if self.id != NO_ID or self.address is not None:
                raise LocalProtocolError("the relay's origin has a zero id and no address")
        elif self.address is None:
            raise LocalProtocolError(f"an origin of kind {self.kind} needs an address")
        else:
            encode_address(self.address)


_KINDS = frozenset(OriginKind)
RELAY_ORIGIN = Origin(OriginKind.RELAY, NO_ID, None)
"""The origin of what the relay's operator posts."""


def encode_origin(origin: Origin) -> bytes:
    address = b"" if origin.address is None else encode_address(origin.address)
    return ORIGIN_HEAD.pack(origin.kind, origin.id, len(address)) + address


def decode_origin_untrusted(body: bytes, offset: int) -> tuple[Origin, int]:
    """The origin at ``offset`` in ``body``, and the offset just past it.

    Raises :class:`RemoteProtocolError` (``malformed``) for an origin cut short, of an
    unknown kind, or whose id or address its kind does not allow.
    """
    if len(body) - offset < ORIGIN_HEAD.size:
        raise RemoteProtocolError(f"origin cut short at byte {offset}")
    kind, id_, addr_len = ORIGIN_HEAD.unpack_from(body, offset)
    offset += ORIGIN_HEAD.size
    if kind == OriginKind.RELAY:
        if id_ != NO_ID or addr_len != 0:
            raise RemoteProtocolError("the relay's origin with an id or an address")
        return RELAY_ORIGIN, offset
    if kind not in (OriginKind.SECURE_CLIENT, OriginKind.LEGACY_CLIENT):
        raise RemoteProtocolError(f"unknown origin kind {kind}")
    if addr_len not in (IPV4_ADDRESS_BYTES, IPV6_ADDRESS_BYTES):
        raise RemoteProtocolError(f"an origin address of {addr_len} bytes, not 6 or 18")
    if len(body) - offset < addr_len:
        raise RemoteProtocolError(f"origin address cut short at byte {offset}")
    address = decode_address_untrusted(body[offset : offset + addr_len])
    return Origin(OriginKind(kind), id_, address), offset + addr_len
