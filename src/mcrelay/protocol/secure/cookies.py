"""mac1, mac2 and cookies: what keeps a relay under load from doing Curve25519 for spoofers.

INIT and RESPONSE both end with ``mac1 16, mac2 16``:

- mac1 = BLAKE2s(digest 16, key = BLAKE2s-256(b"mac1----" + K), data = the datagram
  up to mac1); K is the relay's static key for INIT, the client's for RESPONSE.
- mac2 = BLAKE2s(digest 16, key = cookie, data = the datagram up to mac2) when the
  client holds a cookie younger than 120 s, else zeros (always zeros in RESPONSE).

A cookie is BLAKE2s(digest 16, key = the relay's secret, data = the source address
in the legacy wire form). The relay sends it in COOKIE, sealed with
ChaCha20-Poly1305 under a per-reply subkey and bound to the INIT it answers by its
mac1 (the associated data).
"""

import hashlib
import hmac
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from mcrelay.protocol.addresses import Address, encode_address
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.header import (
    TAG_BYTES,
    DatagramType,
    datagram_type_untrusted,
    header,
)

MAC1_LABEL = b"mac1----"
COOKIE_LABEL = b"cookie--"
MACS_BYTES = 2 * TAG_BYTES
"""mac1 and mac2, the last 32 bytes of INIT and RESPONSE."""
COOKIE_BYTES = TAG_BYTES
COOKIE_SECRET_BYTES = 32
COOKIE_NONCE_BYTES = 24
ZERO_MAC = bytes(TAG_BYTES)

# +--------+----------------+----------+---------------------------+
# | header | receiver_index | nonce    | cookie (sealed) | tag     |
# | 4      | u32 LE         | 24 bytes | 16 bytes        | 16      |
# +--------+----------------+----------+---------------------------+
COOKIE_REPLY = struct.Struct("<4sI24s32s")
# ChaCha20-Poly1305's nonce for a COOKIE: 4 zero bytes + nonce[16:24].
COOKIE_AEAD_NONCE = struct.Struct("<4x8s")


def mac1_key(static_public: bytes) -> bytes:
    """BLAKE2s-256(b"mac1----" + K): the key of mac1 in datagrams to the holder of K."""
    return hashlib.blake2s(MAC1_LABEL + static_public).digest()


def cookie_key(relay_public: bytes) -> bytes:
    """BLAKE2s-256(b"cookie--" + relay static key): whence each COOKIE's subkey."""
    return hashlib.blake2s(COOKIE_LABEL + relay_public).digest()


def mac(key: bytes, data: bytes) -> bytes:
    """Keyed BLAKE2s with a 16-byte digest: mac1, mac2, the cookie, KEY_INFO's tag."""
    return hashlib.blake2s(data, key=key, digest_size=TAG_BYTES).digest()


def add_macs(body: bytes, mac1_key: bytes, cookie: bytes | None) -> bytes:
    """``body`` + mac1 + mac2 (zeros without a cookie)."""
    with_mac1 = body + mac(mac1_key, body)
    return with_mac1 + (ZERO_MAC if cookie is None else mac(cookie, with_mac1))


def mac1_of(datagram: bytes) -> bytes:
    return datagram[-MACS_BYTES:-TAG_BYTES]


def mac2_of(datagram: bytes) -> bytes:
    return datagram[-TAG_BYTES:]


def mac1_valid(datagram: bytes, mac1_key: bytes) -> bool:
    expected = mac(mac1_key, datagram[:-MACS_BYTES])
    return hmac.compare_digest(expected, mac1_of(datagram))


def mac2_valid(datagram: bytes, cookie: bytes) -> bool:
    return hmac.compare_digest(mac(cookie, datagram[:-TAG_BYTES]), mac2_of(datagram))


def make_cookie(secret: bytes, source: Address) -> bytes:
    """The cookie of a source address under one of the relay's secrets."""
    if len(secret) != COOKIE_SECRET_BYTES:
        raise LocalProtocolError(f"a cookie secret has 32 bytes, not {len(secret)}")
    return mac(secret, encode_address(source))


@dataclass(frozen=True, slots=True)
class CookieSeal:
    """The parts of sealing one cookie: the subkey and ChaCha20-Poly1305's nonce."""

    subkey: bytes
    aead_nonce: bytes

    @classmethod
    def of(cls, cookie_key: bytes, nonce: bytes) -> "CookieSeal":
        """subkey = BLAKE2s-256(key = cookie key, data = nonce[0:16]);
        AEAD nonce = 4 zero bytes + nonce[16:24]."""
        if len(nonce) != COOKIE_NONCE_BYTES:
            raise LocalProtocolError(f"a COOKIE nonce has 24 bytes, not {len(nonce)}")
        subkey = hashlib.blake2s(nonce[:16], key=cookie_key).digest()
        return cls(subkey, COOKIE_AEAD_NONCE.pack(nonce[16:]))


def encode_cookie_reply(
    receiver_index: int, cookie: bytes, *, nonce: bytes, cookie_key: bytes, init_mac1: bytes
) -> bytes:
    """The COOKIE answering an INIT whose sender_index and mac1 are given (64 bytes)."""
    if len(cookie) != COOKIE_BYTES:
        raise LocalProtocolError(f"a cookie has 16 bytes, not {len(cookie)}")
    seal = CookieSeal.of(cookie_key, nonce)
    sealed = ChaCha20Poly1305(seal.subkey).encrypt(seal.aead_nonce, cookie, init_mac1)
    return COOKIE_REPLY.pack(header(DatagramType.COOKIE), receiver_index, nonce, sealed)


def cookie_reply_index_untrusted(datagram: bytes) -> int:
    """A COOKIE's receiver_index: which INIT it says it answers."""
    if datagram_type_untrusted(datagram) is not DatagramType.COOKIE:
        raise RemoteProtocolError("not a COOKIE")
    _, receiver_index, _, _ = COOKIE_REPLY.unpack(datagram)
    index: int = receiver_index
    return index


def open_cookie_reply_untrusted(datagram: bytes, *, cookie_key: bytes, init_mac1: bytes) -> bytes:
    """The cookie in a COOKIE answering the INIT whose mac1 is ``init_mac1``.

    The caller matches :func:`cookie_reply_index_untrusted` to its INIT first.
    """
    if datagram_type_untrusted(datagram) is not DatagramType.COOKIE:
        raise RemoteProtocolError("not a COOKIE")
    _, _, nonce, sealed = COOKIE_REPLY.unpack(datagram)
    seal = CookieSeal.of(cookie_key, nonce)
    try:
        cookie: bytes = ChaCha20Poly1305(seal.subkey).decrypt(seal.aead_nonce, sealed, init_mac1)
    except InvalidTag:
        raise RemoteProtocolError(
            "COOKIE fails authentication for our INIT", DropReason.DECRYPT_FAILED
        ) from None
    return cookie
