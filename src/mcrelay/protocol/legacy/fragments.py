"""FRAGMENT (type 1) values, and cutting a message payload into them."""

import struct
from dataclasses import dataclass

from mcrelay.protocol.errors import LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv

# +-----------+--------+--------+--------------------------+
# | msg_id    | seq    | total  | piece ...                |
# | 4 bytes   | u16 BE | u16 BE | at most FRAGMENT_SIZE    |
# +-----------+--------+--------+--------------------------+
FRAGMENT_HEADER = struct.Struct("!4sHH")
MSG_ID_BYTES = 4
FRAGMENT_SIZE = 256
MAX_FRAGMENTS = 176
"""The largest message's fragment count: 32 KiB of plaintext in 2048-bit blocks."""


@dataclass(frozen=True, slots=True)
class Fragment:
    msg_id: bytes
    seq: int
    total: int
    piece: bytes

    def __post_init__(self) -> None:
        if len(self.msg_id) != MSG_ID_BYTES:
            raise LocalProtocolError(f"msg_id must be {MSG_ID_BYTES} bytes")
        if not (0 <= self.seq <= 0xFFFF and 0 <= self.total <= 0xFFFF):
            raise LocalProtocolError("seq and total must fit in 16 bits")


def decode_fragment_untrusted(value: bytes) -> Fragment:
    """A FRAGMENT value; its seq/total rules are the reassembler's business."""
    if len(value) < FRAGMENT_HEADER.size:
        raise RemoteProtocolError(f"FRAGMENT value of {len(value)} bytes, header needs 8")
    msg_id, seq, total = FRAGMENT_HEADER.unpack_from(value)
    return Fragment(msg_id, seq, total, bytes(value[FRAGMENT_HEADER.size :]))


def encode_fragment(fragment: Fragment) -> bytes:
    """One datagram holding one FRAGMENT TLV."""
    header = FRAGMENT_HEADER.pack(fragment.msg_id, fragment.seq, fragment.total)
    return encode_tlv(TlvType.FRAGMENT, header + fragment.piece)


def split_payload(payload: bytes, msg_id: bytes, size: int = FRAGMENT_SIZE) -> list[Fragment]:
    """Cut a message payload into fragments of at most ``size`` bytes (seq is 0-based)."""
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
    if len(pieces) > MAX_FRAGMENTS:
        raise LocalProtocolError(f"payload needs {len(pieces)} fragments, over {MAX_FRAGMENTS}")
    return [Fragment(msg_id, seq, len(pieces), piece) for seq, piece in enumerate(pieces)]
