"""The clients' side of the legacy protocol, cheap enough to run by the thousand.

Built on the sans-I/O code of ``mcrelay.protocol``. A benchmark message opens
with a stamp (step, sender, sequence number) in its first 190-byte block,
encrypted afresh for each message; the blocks after it are the same filler for
every message, encrypted once. So a sender pays one RSA public-key operation per
message whatever its size (before its step starts: see ``senders``), and the
relay still decrypts, and re-encrypts for every recipient, every block.
"""

import struct

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol import legacy
from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.fragments import encode_fragment, split_payload
from mcrelay.protocol.legacy.tlv import TLV_HEADER, TlvType, decode_tlvs_untrusted, encode_tlv

# +----------+------------+----------+
# | step u32 | sender u32 | seq u32  |
# +----------+------------+----------+
STAMP = struct.Struct("!III")
MIN_MESSAGE_BYTES = STAMP.size
SENDER_INFO_TYPE = TLV_HEADER.pack(TlvType.SENDER_INFO, 0)[:2]
RELAYED_TYPE = TLV_HEADER.pack(TlvType.RELAYED_MESSAGE, 0)[:2]


def registration(key: rsa.RSAPublicKey) -> bytes:
    """CLIENT_PUBLIC_KEY and SERVER_KEY_REQUEST in one datagram: an answer means both arrived."""
    return legacy.client_key(key) + legacy.key_request()


def relay_key_untrusted(data: bytes) -> bytes | None:
    """The PEM in a SERVER_PUBLIC_KEY of this datagram, if it holds one."""
    try:
        tlvs = decode_tlvs_untrusted(data, len(data) // TLV_HEADER.size + 1)
    except RemoteProtocolError:
        return None
    return next((tlv.value for tlv in tlvs if tlv.type == TlvType.SERVER_PUBLIC_KEY), None)


class MessageMaker:
    """The FRAGMENT datagrams of stamped messages of one size, for one relay key."""

    def __init__(self, relay_key: rsa.RSAPublicKey, size: int) -> None:
        if size < MIN_MESSAGE_BYTES:
            raise ValueError(f"messages of at least {MIN_MESSAGE_BYTES} bytes")
        self._key = relay_key
        self._head_bytes = min(size, crypto.CHUNK_BYTES)
        filler = bytes(size - self._head_bytes)
        self._tail = (
            b"".join(
                encode_tlv(TlvType.ENCRYPTED_BLOCK, block)
                for block in crypto.encrypt_blocks(relay_key, filler)
            )
            if filler
            else b""
        )

    def datagrams(self, msg_id: int, step: int, sender: int, seq: int) -> list[bytes]:
        stamp = STAMP.pack(step, sender, seq)
        head = stamp + bytes(self._head_bytes - STAMP.size)
        (block,) = crypto.encrypt_blocks(self._key, head)
        payload = encode_tlv(TlvType.ENCRYPTED_BLOCK, block) + self._tail
        fragments = split_payload(payload, (msg_id & 0xFFFFFFFF).to_bytes(4, "big"))
        return [encode_fragment(fragment) for fragment in fragments]


def relayed_block(data: bytes, block_bytes: int) -> bytes | None:
    """The first ciphertext block of a SENDER_INFO + RELAYED_MESSAGE datagram, else None.

    Only the TLV types and lengths are read: this is how receivers count copies
    without decrypting them."""
    if len(data) < 2 * TLV_HEADER.size or data[:2] != SENDER_INFO_TYPE:
        return None
    _type, length = TLV_HEADER.unpack_from(data, 0)
    offset = TLV_HEADER.size + length
    if data[offset : offset + 2] != RELAYED_TYPE:
        return None
    start = offset + TLV_HEADER.size
    return data[start : start + block_bytes]


def read_stamp_untrusted(key: rsa.RSAPrivateKey, block: bytes) -> tuple[int, int, int]:
    """(step, sender, seq) from a relayed message's first block (raises on garbage)."""
    plaintext = crypto.decrypt_block_untrusted(key, block)
    if len(plaintext) < STAMP.size:
        raise RemoteProtocolError(f"a stamp of {len(plaintext)} bytes")
    step, sender, seq = STAMP.unpack_from(plaintext)
    return step, sender, seq


def bare_copy(sender: bytes, ciphertext_bytes: int) -> bytes:
    """A datagram of a relayed message's size (what the bare forwarder sends), all zeros inside."""
    return encode_tlv(TlvType.SENDER_INFO, sender) + encode_tlv(
        TlvType.RELAYED_MESSAGE, bytes(ciphertext_bytes)
    )
