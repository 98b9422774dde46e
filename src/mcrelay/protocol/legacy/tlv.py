"""TLV framing: ``type: u16, length: u16, value`` in network byte order, back to back."""

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import IntEnum

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError

# +--------+--------+----------------+
# | type   | length | value ...      |
# | u16 BE | u16 BE | length bytes   |
# +--------+--------+----------------+
TLV_HEADER = struct.Struct("!HH")
MAX_TLV_VALUE_BYTES = 0xFFFF


class TlvType(IntEnum):
    FRAGMENT = 1
    ENCRYPTED_BLOCK = 3
    CLIENT_PUBLIC_KEY = 4
    SERVER_PUBLIC_KEY = 5
    RELAYED_MESSAGE = 6
    SERVER_KEY_REQUEST = 7
    DISCONNECT = 8
    KEEPALIVE = 9
    SENDER_INFO = 10
    CLIENT_CONNECTED = 11
    CLIENT_DISCONNECTED = 12


@dataclass(frozen=True, slots=True)
class Tlv:
    type: int
    value: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.type <= 0xFFFF:
            raise LocalProtocolError(f"TLV type {self.type} does not fit in 16 bits")
        if len(self.value) > MAX_TLV_VALUE_BYTES:
            raise LocalProtocolError(f"TLV value of {len(self.value)} bytes is over 65535")


def encode_tlv(type_: int, value: bytes = b"") -> bytes:
    """One TLV as bytes."""
    tlv = Tlv(type_, value)
    return TLV_HEADER.pack(tlv.type, len(tlv.value)) + tlv.value


def encode_tlvs(tlvs: Iterable[Tlv]) -> bytes:
    return b"".join(encode_tlv(tlv.type, tlv.value) for tlv in tlvs)


def decode_tlvs_untrusted(data: bytes, max_tlvs: int) -> list[Tlv]:
    """Split a datagram (or a reassembled payload) into at most ``max_tlvs`` TLVs.

    An empty input, a cut header or a length that runs past the end makes the
    whole input malformed; more than ``max_tlvs`` TLVs makes it ``too_large``.
    Either way nothing in it is returned, and the cost is bounded by ``max_tlvs``
    whatever the input holds. (The relay reads a client's datagrams with its own
    scan: ``wire.decode_client_datagram_untrusted``.)
    """
    if not data:
        raise RemoteProtocolError("empty datagram")
    tlvs: list[Tlv] = []
    offset = 0
    end = len(data)
    while offset < end:
        if len(tlvs) == max_tlvs:
            raise RemoteProtocolError(f"more than {max_tlvs} TLVs", DropReason.TOO_LARGE)
        if end - offset < TLV_HEADER.size:
            raise RemoteProtocolError(f"TLV header cut short at byte {offset}")
        type_, length = TLV_HEADER.unpack_from(data, offset)
        offset += TLV_HEADER.size
        if offset + length > end:
            raise RemoteProtocolError(
                f"TLV type {type_} claims {length} bytes, {end - offset} remain"
            )
        tlvs.append(Tlv(type_, bytes(data[offset : offset + length])))
        offset += length
    return tlvs
