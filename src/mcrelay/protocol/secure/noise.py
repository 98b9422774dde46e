"""The Noise Protocol Framework (revision 34), as much of it as the secure profile uses.

One-way and interactive patterns without PSKs (the profile's IK, and XK for the
cacophony vectors), on Curve25519 (``cryptography``'s X25519), ChaChaPoly
(``cryptography``'s ChaCha20Poly1305) and BLAKE2s or SHA256 (``hashlib``, HKDF over
HMAC as the spec's section 4.3 says). The objects are the spec's: :class:`CipherState`,
:class:`SymmetricState` and :class:`HandshakeState` with ``Split``.

Keys are raw 32-byte strings. The ephemeral private key is an argument, so the
caller draws it (and tests pin it). Reading a peer's message raises only
:class:`RemoteProtocolError` (``handshake_failed``): a failed AEAD, a message of the
wrong length, or a Curve25519 point of low order.
"""

import hashlib
import hmac
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError

DH_BYTES = 32
AEAD_TAG_BYTES = 16
MAX_NONCE = 2**64 - 1
"""Reserved by the spec: a CipherState never encrypts with it."""
# ChaChaPoly's 96-bit nonce: 32 zero bits, then the counter n u64 LE.
CHACHA_NONCE = struct.Struct("<4xQ")

HASHES: dict[str, Callable[..., Any]] = {
    "BLAKE2s": hashlib.blake2s,
    "SHA256": hashlib.sha256,
}


@dataclass(frozen=True, slots=True)
class Pattern:
    """A handshake pattern: the pre-messages' tokens and each message's tokens.

    ``pre_initiator`` and ``pre_responder`` are the keys each side knows of the other
    before the first message (``"s"``: the static key).
    """

    pre_initiator: tuple[str, ...]
    pre_responder: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]


PATTERNS = {
    "IK": Pattern((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
    "XK": Pattern((), ("s",), (("e", "es"), ("e", "ee"), ("s", "se"))),
}


def public_key(private: bytes) -> bytes:
    """The Curve25519 public key of a raw 32-byte private key."""
    if len(private) != DH_BYTES:
        raise LocalProtocolError(f"a Curve25519 private key has 32 bytes, not {len(private)}")
    key = X25519PrivateKey.from_private_bytes(private).public_key()
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def dh(private: bytes, public: bytes) -> bytes | None:
    """X25519; ``None`` when ``public`` is of low order (the result would be all zeros)."""
    ours = X25519PrivateKey.from_private_bytes(private)
    try:
        return ours.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        return None


class CipherState:
    """A key ``k`` (or none) and the nonce ``n`` counted from 0: ChaChaPoly per the spec."""

    __slots__ = ("_aead", "key", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        self.key = key
        self.nonce = 0
        self._aead = None if key is None else ChaCha20Poly1305(key)

    def _next_nonce(self) -> bytes:
        if self.nonce >= MAX_NONCE:
            raise LocalProtocolError("the CipherState's nonces are spent")
        nonce = CHACHA_NONCE.pack(self.nonce)
        self.nonce += 1
        return nonce

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        return self._aead.encrypt(self._next_nonce(), plaintext, ad)

    def decrypt_with_ad_untrusted(self, ad: bytes, ciphertext: bytes) -> bytes:
        """The plaintext; the nonce advances only when the tag is good."""
        if self._aead is None:
            return ciphertext
        if self.nonce >= MAX_NONCE:
            raise RemoteProtocolError("the CipherState's nonces are spent")
        try:
            plaintext = self._aead.decrypt(CHACHA_NONCE.pack(self.nonce), ciphertext, ad)
        except InvalidTag:
            raise RemoteProtocolError(
                "Noise message fails authentication", DropReason.HANDSHAKE_FAILED
            ) from None
        self.nonce += 1
        return plaintext


class SymmetricState:
    """The chaining key ``ck``, the handshake hash ``h`` and the CipherState they key."""

    __slots__ = ("_hash", "cipher", "ck", "h")

    def __init__(self, protocol_name: str) -> None:
        hash_name = protocol_name.rsplit("_", 1)[-1]
        if hash_name not in HASHES:
            raise LocalProtocolError(f"no hash function {hash_name!r}")
        self._hash = HASHES[hash_name]
        name = protocol_name.encode("ascii")
        size = self._hash().digest_size
        self.h = name.ljust(size, b"\0") if len(name) <= size else self._hash(name).digest()
        self.ck = self.h
        self.cipher = CipherState()

    def _hkdf(self, input_key_material: bytes, outputs: int) -> list[bytes]:
        temp_key = hmac.new(self.ck, input_key_material, self._hash).digest()
        result: list[bytes] = []
        previous = b""
        for index in range(1, outputs + 1):
            previous = hmac.new(temp_key, previous + bytes([index]), self._hash).digest()
            result.append(previous)
        return result

    def copy(self) -> "SymmetricState":
        twin = object.__new__(SymmetricState)
        twin._hash, twin.ck, twin.h = self._hash, self.ck, self.h
        twin.cipher = CipherState(self.cipher.key)
        twin.cipher.nonce = self.cipher.nonce
        return twin

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = self._hkdf(input_key_material, 2)
        self.cipher = CipherState(temp_k[:32])

    def mix_hash(self, data: bytes) -> None:
        self.h = self._hash(self.h + data).digest()

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash_untrusted(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad_untrusted(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split_keys(self) -> tuple[bytes, bytes]:
        """Split's two keys: the initiator sends with the first, the responder with the second."""
        temp_k1, temp_k2 = self._hkdf(b"", 2)
        return temp_k1[:32], temp_k2[:32]

    def split(self) -> tuple[CipherState, CipherState]:
        first, second = self.split_keys()
        return CipherState(first), CipherState(second)


class HandshakeState:
    """One side of a handshake: :meth:`write_message` and :meth:`read_message_untrusted`
    in the pattern's turn, then :meth:`split` once :attr:`finished`.

    ``protocol_name`` is the full name (``Noise_IK_25519_ChaChaPoly_BLAKE2s``); ``s``
    and ``e`` are our private keys, ``rs`` the peer's static key when the pattern
    gives it before the first message; ``s_public``, the public key of ``s``, spares a
    scalar multiplication when the caller has it. ``e`` may be set later, before the message
    that sends it. A failed read leaves the state unusable: read a :meth:`copy` when
    a forged message must not spoil the genuine one that may follow.
    """

    __slots__ = (
        "_messages",
        "_pattern",
        "_s_public",
        "e",
        "initiator",
        "re",
        "rs",
        "s",
        "symmetric",
    )

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes,
        e: bytes | None = None,
        s: bytes | None = None,
        s_public: bytes | None = None,
        rs: bytes | None = None,
    ) -> None:
        parts = protocol_name.split("_")
        if len(parts) != 5 or parts[0] != "Noise" or parts[2:4] != ["25519", "ChaChaPoly"]:
            raise LocalProtocolError(f"not a protocol this module speaks: {protocol_name!r}")
        if parts[1] not in PATTERNS:
            raise LocalProtocolError(f"no handshake pattern {parts[1]!r}")
        pattern = PATTERNS[parts[1]]
        self.symmetric = SymmetricState(protocol_name)
        self.initiator = initiator
        self.s = s
        self._s_public = s_public if s_public is not None or s is None else public_key(s)
        self.e = e
        self.rs = rs
        self.re: bytes | None = None
        self._pattern = pattern
        self._messages = list(pattern.messages)
        self.symmetric.mix_hash(prologue)
        for token in pattern.pre_initiator:
            self.symmetric.mix_hash(self._pre_message_key(token, mine=initiator))
        for token in pattern.pre_responder:
            self.symmetric.mix_hash(self._pre_message_key(token, mine=not initiator))

    def _pre_message_key(self, token: str, *, mine: bool) -> bytes:
        if token != "s":  # noqa: S105 (a Noise token, not a password)
            raise LocalProtocolError(f"pre-message token {token!r} is not supported")
        key = self._s_public if mine else self.rs
        if key is None:
            raise LocalProtocolError("the pattern needs a static key known before the handshake")
        return key

    def copy(self) -> "HandshakeState":
        twin = object.__new__(HandshakeState)
        twin.symmetric = self.symmetric.copy()
        twin.initiator, twin.s, twin._s_public, twin.e = (
            self.initiator,
            self.s,
            self._s_public,
            self.e,
        )
        twin.rs, twin.re = self.rs, self.re
        twin._pattern, twin._messages = self._pattern, list(self._messages)
        return twin

    @property
    def finished(self) -> bool:
        return not self._messages

    @property
    def handshake_hash(self) -> bytes:
        return self.symmetric.h

    def _next_tokens(self, *, writing: bool) -> tuple[str, ...]:
        if not self._messages:
            raise LocalProtocolError("the handshake is already finished")
        initiators_turn = (len(self._pattern.messages) - len(self._messages)) % 2 == 0
        if writing != (initiators_turn == self.initiator):
            raise LocalProtocolError(f"not this side's turn to {'write' if writing else 'read'}")
        return self._messages.pop(0)

    def _mix_dh(self, token: str, *, reading: bool) -> None:
        mine, theirs = (token[0], token[1]) if self.initiator else (token[1], token[0])
        private = self.e if mine == "e" else self.s
        public = self.re if theirs == "e" else self.rs
        if private is None or public is None:
            raise LocalProtocolError(f"token {token!r} needs a key this side does not have")
        shared = dh(private, public)
        if shared is None:
            if reading:
                raise RemoteProtocolError(
                    "the peer's Curve25519 key is of low order", DropReason.HANDSHAKE_FAILED
                )
            raise LocalProtocolError("a Curve25519 key we were given is of low order")
        self.symmetric.mix_key(shared)

    def write_message(self, payload: bytes) -> bytes:
        message = bytearray()
        for token in self._next_tokens(writing=True):
            match token:
                case "e":
                    if self.e is None:
                        raise LocalProtocolError("the ephemeral key is not set")
                    ephemeral = public_key(self.e)
                    message += ephemeral
                    self.symmetric.mix_hash(ephemeral)
                case "s":
                    if self._s_public is None:
                        raise LocalProtocolError("the pattern sends a static key this side lacks")
                    message += self.symmetric.encrypt_and_hash(self._s_public)
                case _:
                    self._mix_dh(token, reading=False)
        message += self.symmetric.encrypt_and_hash(payload)
        return bytes(message)

    def read_message_untrusted(self, message: bytes) -> bytes:
        """The payload of the peer's next message; raises only :class:`RemoteProtocolError`."""
        offset = 0

        def take(size: int) -> bytes:
            nonlocal offset
            if len(message) - offset < size:
                raise RemoteProtocolError(
                    f"Noise message of {len(message)} bytes is cut short",
                    DropReason.HANDSHAKE_FAILED,
                )
            offset += size
            return message[offset - size : offset]

        for token in self._next_tokens(writing=False):
            match token:
                case "e":
                    self.re = take(DH_BYTES)
                    self.symmetric.mix_hash(self.re)
                case "s":
                    keyed = self.symmetric.cipher.key is not None
                    sealed = take(DH_BYTES + AEAD_TAG_BYTES if keyed else DH_BYTES)
                    self.rs = self.symmetric.decrypt_and_hash_untrusted(sealed)
                case _:
                    self._mix_dh(token, reading=True)
        if len(message) - offset < (AEAD_TAG_BYTES if self.symmetric.cipher.key is not None else 0):
            raise RemoteProtocolError(
                "Noise message has no room for its payload's tag", DropReason.HANDSHAKE_FAILED
            )
        return self.symmetric.decrypt_and_hash_untrusted(message[offset:])

    def split_keys(self) -> tuple[bytes, bytes]:
        """Transport keys: (initiator to responder, responder to initiator)."""
        if not self.finished:
            raise LocalProtocolError("Split before the handshake is finished")
        return self.symmetric.split_keys()

    def split(self) -> tuple[CipherState, CipherState]:
        first, second = self.split_keys()
        return CipherState(first), CipherState(second)
