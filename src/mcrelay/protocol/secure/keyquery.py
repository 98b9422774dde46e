"""KEY_QUERY and KEY_INFO: how a client learns the relay's static key on first use.

The query carries 16 random bytes and zeros to 96 bytes (the padding is not
checked); the answer, 52 bytes, carries the relay's static key and a tag =
BLAKE2s(digest 16, key = the query's nonce, data = that key). The tag ties the
answer to the query -- who cannot see the query cannot answer it -- but does not
authenticate the relay: first use is trust on first use.
"""

import hmac
import struct

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.cookies import mac
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted, header
from mcrelay.protocol.secure.noise import DH_BYTES

QUERY_NONCE_BYTES = 16
# +--------+----------+---------------------------------+
# | header | nonce    | padding: zeros, never checked   |
# | 4      | 16 bytes | 76 bytes                        |
# +--------+----------+---------------------------------+
KEY_QUERY = struct.Struct("<4s16s76x")
# +--------+-------------------+-----------------------------------+
# | header | relay static key  | tag = BLAKE2s-128(nonce; the key) |
# | 4      | 32 bytes          | 16 bytes                          |
# +--------+-------------------+-----------------------------------+
KEY_INFO = struct.Struct("<4s32s16s")


def encode_key_query(nonce: bytes) -> bytes:
    if len(nonce) != QUERY_NONCE_BYTES:
        raise LocalProtocolError(f"a KEY_QUERY nonce has 16 bytes, not {len(nonce)}")
    return KEY_QUERY.pack(header(DatagramType.KEY_QUERY), nonce)


def decode_key_query_untrusted(datagram: bytes) -> bytes:
    """The nonce of a KEY_QUERY (the relay answers with :func:`encode_key_info`)."""
    if datagram_type_untrusted(datagram) is not DatagramType.KEY_QUERY:
        raise RemoteProtocolError("not a KEY_QUERY")
    _, nonce = KEY_QUERY.unpack(datagram)
    found: bytes = nonce
    return found


def key_info_tag(query_nonce: bytes, relay_public: bytes) -> bytes:
    return mac(query_nonce, relay_public)


def encode_key_info(relay_public: bytes, query_nonce: bytes) -> bytes:
    if len(relay_public) != DH_BYTES:
        raise LocalProtocolError(f"a relay key has 32 bytes, not {len(relay_public)}")
    tag = key_info_tag(query_nonce, relay_public)
    return KEY_INFO.pack(header(DatagramType.KEY_INFO), relay_public, tag)


def decode_key_info_untrusted(datagram: bytes, query_nonce: bytes) -> bytes:
    """The relay key in a KEY_INFO answering our query with ``query_nonce``.

    A tag that does not match is ``not_from_relay``: not an answer to our query.
    """
    if datagram_type_untrusted(datagram) is not DatagramType.KEY_INFO:
        raise RemoteProtocolError("not a KEY_INFO")
    _, relay_public, tag = KEY_INFO.unpack(datagram)
    if not hmac.compare_digest(key_info_tag(query_nonce, relay_public), tag):
        raise RemoteProtocolError("KEY_INFO does not answer our query", DropReason.NOT_FROM_RELAY)
    key: bytes = relay_public
    return key


class KeyQuery:
    """A client's KEY_QUERY and the answers to it: two different keys mean refuse."""

    __slots__ = ("_keys", "datagram", "nonce")

    def __init__(self, nonce: bytes) -> None:
        self.datagram = encode_key_query(nonce)
        self.nonce = nonce
        self._keys: list[bytes] = []

    def read_answer_untrusted(self, datagram: bytes) -> bytes:
        """The relay key in a KEY_INFO answering this query (see :attr:`conflict`)."""
        key = decode_key_info_untrusted(datagram, self.nonce)
        if key not in self._keys and len(self._keys) < 2:
            self._keys.append(key)
        return key

    @property
    def key(self) -> bytes | None:
        """The key every answer so far gave; ``None`` before an answer or on a conflict."""
        return self._keys[0] if len(self._keys) == 1 else None

    @property
    def conflict(self) -> bool:
        """Two answers gave different keys: refuse to connect."""
        return len(self._keys) > 1
