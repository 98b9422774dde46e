"""DATA datagrams: the frames' plaintext under one direction's transport key.

A DATA is its 16-byte header (magic, type 4, reserved zero, receiver_index, counter)
and the ChaCha20-Poly1305 ciphertext of the plaintext, with nonce = 4 zero bytes +
counter u64 LE and the header as associated data: nothing in it can change unseen.

A receiver reads the header with :func:`peek_data_untrusted` (no decryption) to find
the keypair by ``receiver_index`` and drop a counter already too old for its replay
window, then opens the datagram with :meth:`TransportKey.open_untrusted`, and only
then marks the counter in the window (:mod:`mcrelay.protocol.secure.replay`).
"""

import struct
from typing import NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.frames import MAX_PLAINTEXT_BYTES
from mcrelay.protocol.secure.header import MAGIC, MIN_DATA_BYTES, DatagramType
from mcrelay.protocol.secure.replay import REJECT_AFTER_MESSAGES

# +-------+--------+----------+----------------+---------+------------------------+
# | magic | type 4 | reserved | receiver_index | counter | ciphertext | tag       |
# | 0x4D  | u8     | u16 = 0  | u32 LE         | u64 LE  | plaintext  | 16 bytes  |
# +-------+--------+----------+----------------+---------+------------------------+
# The first 16 bytes are the AEAD's associated data.
DATA_HEADER = struct.Struct("<BBHIQ")
# +---------------+---------+
# | 4 zero bytes  | counter |
# |               | u64 LE  |
# +---------------+---------+
NONCE = struct.Struct("<4xQ")
KEY_BYTES = 32
MAX_INDEX = 0xFFFFFFFF


class DataHeader(NamedTuple):
    """What a DATA says of itself before it is opened: which keypair, which counter.
    (Read from the wire's u32 and u64: a tuple, made for every datagram, no checks.)"""

    receiver_index: int
    counter: int


class OpenedData(NamedTuple):
    """An authenticated DATA: its header's fields and its plaintext (the frames)."""

    receiver_index: int
    counter: int
    plaintext: bytes


class TransportKey:
    """One direction's transport key (32 bytes from Noise Split): seals or opens DATA.

    Its ChaCha20-Poly1305 context is made once, here: making one per datagram costs
    more than sealing a small datagram.
    """

    __slots__ = ("_aead",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise LocalProtocolError(f"a transport key of {len(key)} bytes, not {KEY_BYTES}")
        self._aead = ChaCha20Poly1305(key)

    def seal(self, receiver_index: int, counter: int, plaintext: bytes) -> bytes:
        """The DATA carrying ``plaintext`` to the peer that chose ``receiver_index``.

        Raises :class:`LocalProtocolError` for a plaintext over 1,200 bytes, or a
        counter at or past ``REJECT_AFTER_MESSAGES`` (the keypair is spent).
        """
        if len(plaintext) > MAX_PLAINTEXT_BYTES:
            raise LocalProtocolError(
                f"a DATA plaintext of {len(plaintext)} bytes, over {MAX_PLAINTEXT_BYTES}"
            )
        if not 0 <= counter < REJECT_AFTER_MESSAGES:
            raise LocalProtocolError(f"counter {counter} is past the keypair's last")
        if not 0 <= receiver_index <= MAX_INDEX:
            raise LocalProtocolError(f"receiver_index {receiver_index} is not a u32")
        header = DATA_HEADER.pack(MAGIC, DatagramType.DATA, 0, receiver_index, counter)
        return header + self._aead.encrypt(NONCE.pack(counter), plaintext, header)

    def open_untrusted(self, datagram: bytes) -> OpenedData:
        """The authenticated contents of a DATA sealed with this key.

        Raises :class:`RemoteProtocolError`: ``malformed`` for a bad header (as
        :func:`peek_data_untrusted`), ``decrypt_failed`` when the AEAD refuses it (a
        forged or damaged datagram, or another keypair's). The counter is not checked
        here: the caller's replay window does that next.
        """
        receiver_index, counter = _header_untrusted(datagram)
        split = DATA_HEADER.size
        try:
            plaintext = self._aead.decrypt(NONCE.pack(counter), datagram[split:], datagram[:split])
        except InvalidTag:
            raise RemoteProtocolError(
                f"DATA counter {counter} fails authentication", DropReason.DECRYPT_FAILED
            ) from None
        return OpenedData(receiver_index, counter, plaintext)


def peek_data_untrusted(datagram: bytes) -> DataHeader:
    """The header of a DATA, checked but not authenticated: act on nothing but a lookup.

    Raises :class:`RemoteProtocolError` (``malformed``) for a datagram that is not a
    DATA of at least 32 bytes with a zero reserved field.
    """
    return DataHeader(*_header_untrusted(datagram))


def _header_untrusted(datagram: bytes) -> tuple[int, int]:
    if len(datagram) < MIN_DATA_BYTES:
        raise RemoteProtocolError(f"DATA of {len(datagram)} bytes, under {MIN_DATA_BYTES}")
    magic, type_, reserved, receiver_index, counter = DATA_HEADER.unpack_from(datagram)
    if magic != MAGIC or type_ != DatagramType.DATA:
        raise RemoteProtocolError(f"datagram {magic:#04x} type {type_} is not a secure DATA")
    if reserved != 0:
        raise RemoteProtocolError(f"reserved field {reserved:#06x} is not zero")
    return receiver_index, counter
