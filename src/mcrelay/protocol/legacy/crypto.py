"""RSA-OAEP(SHA-256) blocks, keys and fingerprints, as the legacy profile uses them."""

import base64
import hashlib
import re
from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError

KEY_BITS = 2048
PUBLIC_EXPONENT = 65537
MIN_PEER_KEY_BITS = 2048
MAX_PEER_KEY_BITS = 4096
MAX_PEM_BYTES = 4096
SPKI_BEGIN = b"-----BEGIN PUBLIC KEY-----"
SPKI_END = b"-----END PUBLIC KEY-----"
MIN_PEM_BYTES = len(SPKI_BEGIN) + len(SPKI_END) + 392
"""The shortest value :func:`wire_public_key_untrusted` accepts: the BEGIN and END lines
around the base64 (392 characters) of a 2048-bit key's 294-byte SubjectPublicKeyInfo,
with no line break. The relay refuses a shorter one unparsed (a datagram holds 16,376
empty keys)."""
_BASE64_LINES = re.compile(rb"[A-Za-z0-9+/=\r\n]*")
"""What lies between a wire key's BEGIN and END lines: base64 lines, no header."""
CHUNK_BYTES = 190
"""Plaintext per OAEP block, whatever the key's size: the page's chunks of at most 190
bytes, what a 2048-bit key's block carries (key_bytes - 2*32 - 2). A larger key's block
would carry more (318, 446), but the page cuts 190 for every key: with them a relayed
message near the largest is too large a datagram for a 3072- or 4096-bit recipient,
which the page's relay skips (cutting by the key's size was a departure: found by
review)."""

_OAEP = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def block_bytes(key: rsa.RSAPublicKey | rsa.RSAPrivateKey) -> int:
    """Size of one ciphertext block for this key (256 for 2048 bits)."""
    return (key.key_size + 7) // 8


def chunk(data: bytes, size: int) -> list[bytes]:
    """Split in pieces of at most ``size``; empty data is one empty chunk."""
    return [data[i : i + size] for i in range(0, len(data), size)] or [b""]


def encrypt_blocks(key: rsa.RSAPublicKey, plaintext: bytes) -> list[bytes]:
    return [key.encrypt(piece, _OAEP) for piece in chunk(plaintext, CHUNK_BYTES)]


def encrypted_size(key: rsa.RSAPublicKey, plaintext_bytes: int) -> int:
    """Bytes of :func:`encrypt_blocks` output for a plaintext of this size."""
    chunks = max(1, -(-plaintext_bytes // CHUNK_BYTES))
    return chunks * block_bytes(key)


def decrypt_block_untrusted(key: rsa.RSAPrivateKey, block: bytes) -> bytes:
    if len(block) != block_bytes(key):
        raise RemoteProtocolError(
            f"ciphertext block of {len(block)} bytes, key needs {block_bytes(key)}",
            DropReason.DECRYPT_FAILED,
        )
    try:
        return key.decrypt(block, _OAEP)
    except ValueError:
        raise RemoteProtocolError("OAEP decryption failed", DropReason.DECRYPT_FAILED) from None


def decrypt_concatenated_untrusted(key: rsa.RSAPrivateKey, value: bytes) -> bytes:
    """Decrypt a run of key-size blocks (a RELAYED_MESSAGE value) and join the plaintexts."""
    size = block_bytes(key)
    if not value or len(value) % size:
        raise RemoteProtocolError(
            f"{len(value)} bytes is not a whole number of {size}-byte blocks",
            DropReason.DECRYPT_FAILED,
        )
    return b"".join(
        decrypt_block_untrusted(key, value[i : i + size]) for i in range(0, len(value), size)
    )


def generate_private_key(bits: int = KEY_BITS) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)


def private_key_to_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(data: bytes) -> rsa.RSAPrivateKey:
    """Load our own key (a file we trust); raises ``LocalProtocolError`` on anything but RSA."""
    # cryptography's own messages run over several sentences and end in a URL.
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise LocalProtocolError(
            "not an unencrypted PEM private key: it is protected by a passphrase"
        ) from None
    except UnsupportedAlgorithm:
        raise LocalProtocolError(
            "not an unencrypted PEM private key: an unsupported kind"
        ) from None
    except ValueError:
        raise LocalProtocolError(
            "not an unencrypted PEM private key: its contents cannot be decoded"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise LocalProtocolError("the key is not an RSA key")
    if not MIN_PEER_KEY_BITS <= key.key_size <= MAX_PEER_KEY_BITS:
        raise LocalProtocolError(f"RSA key of {key.key_size} bits; use 2048 to 4096")
    return key


def public_key_to_pem(key: rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def wire_public_key_untrusted(value: bytes) -> rsa.RSAPublicKey:
    """The key of a CLIENT_PUBLIC_KEY or SERVER_PUBLIC_KEY value: PEM
    SubjectPublicKeyInfo, as the page says, and nothing else (OpenSSL also reads PKCS#1's
    RSA PUBLIC KEY, text around the block and RFC 1421 headers inside it: found by
    review); then as
    :func:`load_public_key_untrusted`."""
    block = value.strip()
    if not (
        block.startswith(SPKI_BEGIN)
        and block.endswith(SPKI_END)
        and block.count(b"-----") == 4
        and _BASE64_LINES.fullmatch(block, len(SPKI_BEGIN), len(block) - len(SPKI_END))
    ):
        raise RemoteProtocolError("not a PEM SubjectPublicKeyInfo", DropReason.BAD_KEY)
    return load_public_key_untrusted(value)


@lru_cache(maxsize=1024)
def load_public_key_untrusted(pem: bytes) -> rsa.RSAPublicKey:
    """A peer's RSA public key of 2048 to 4096 bits, or ``RemoteProtocolError(BAD_KEY)``.

    Cached by PEM bytes: keys are immutable, and a flood of the same key costs one parse.
    """
    if len(pem) > MAX_PEM_BYTES:
        raise RemoteProtocolError(f"public key of {len(pem)} bytes", DropReason.BAD_KEY)
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise RemoteProtocolError("not a PEM public key", DropReason.BAD_KEY) from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise RemoteProtocolError("public key is not RSA", DropReason.BAD_KEY)
    if not MIN_PEER_KEY_BITS <= key.key_size <= MAX_PEER_KEY_BITS:
        raise RemoteProtocolError(f"RSA key of {key.key_size} bits", DropReason.BAD_KEY)
    if key.public_numbers().e != PUBLIC_EXPONENT:
        # The profile's keys use e = 65537. A huge exponent makes every encryption slow,
        # and OpenSSL refuses some outright (over 3072 bits with e over 64 bits).
        raise RemoteProtocolError(
            f"RSA public exponent {key.public_numbers().e}", DropReason.BAD_KEY
        )
    return key


def same_key(a: rsa.RSAPublicKey, b: rsa.RSAPublicKey) -> bool:
    """Two keys are the same key when their public numbers are equal."""
    return a.public_numbers() == b.public_numbers()


def fingerprint(key: rsa.RSAPublicKey) -> str:
    """``SHA256:`` and the unpadded base64 of the SHA-256 of the DER public key (in the format OpenSSH prints, over the DER SubjectPublicKeyInfo)."""
    return digest_fingerprint(key_digest(key))


def key_digest(key: rsa.RSAPublicKey) -> bytes:
    """The SHA-256 of the key's DER SubjectPublicKeyInfo: what the fingerprint shows, and
    a legacy member's id in origins."""
    return der_digest(key_der(key))


def der_digest(der: bytes) -> bytes:
    """:func:`key_digest` of a key already as DER (:func:`key_der`)."""
    return hashlib.sha256(der).digest()


def key_der(key: rsa.RSAPublicKey) -> bytes:
    """The key's DER SubjectPublicKeyInfo."""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def digest_fingerprint(digest: bytes) -> str:
    """The fingerprint of a key, from :func:`key_digest`."""
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")
