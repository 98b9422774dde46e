"""Curve25519 keys as text: standard base64 (44 characters, as WireGuard shows them),
a private key file's bytes, the API's client id (``k:`` + unpadded base64url), and
``--authorized-keys`` lines.

Every parse error is a :class:`KeyTextError` (a ``ValueError``) whose message is one
line the CLI can show as it is. No file is read here: callers pass the text.
"""

import base64
import binascii
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.secure.noise import DH_BYTES, public_key

KEY_TEXT_CHARS = 44
"""Standard base64 of 32 bytes, with its one ``=``."""
CLIENT_ID_PREFIX = "k:"
CLIENT_ID_CHARS = len(CLIENT_ID_PREFIX) + 43
MAX_KEY_NAME_CHARS = 128
"""The longest name an authorized-keys line may give a key."""


class KeyTextError(ValueError):
    """Text that is not a key (or not a line of keys); the message is one line."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A Curve25519 key pair, raw 32 bytes each; the private key never shows in a repr."""

    private: bytes = field(repr=False)
    public: bytes

    @classmethod
    def from_private(cls, private: bytes) -> "KeyPair":
        return cls(private, public_key(private))

    @classmethod
    def generate(cls, random_bytes: Callable[[int], bytes] = os.urandom) -> "KeyPair":
        """Any 32 random bytes are a private key (X25519 clamps them when it uses them)."""
        return cls.from_private(random_bytes(DH_BYTES))

    def __post_init__(self) -> None:
        if len(self.private) != DH_BYTES or len(self.public) != DH_BYTES:
            raise LocalProtocolError("a Curve25519 key has 32 bytes")


def _check_key_bytes(key: bytes) -> None:
    if len(key) != DH_BYTES:
        raise KeyTextError(f"a Curve25519 key has 32 bytes, not {len(key)}")


def encode_key(key: bytes) -> str:
    """The 44-character standard base64 of a 32-byte key."""
    _check_key_bytes(key)
    return base64.b64encode(key).decode("ascii")


def decode_key(text: str) -> bytes:
    """The 32 bytes that ``text`` (standard base64, 44 characters) stands for.

    Whitespace around the text is ignored; anything else that is not exactly the
    base64 :func:`encode_key` writes is refused, so one key has one spelling.
    """
    stripped = text.strip()
    shown = stripped if len(stripped) <= 60 else stripped[:57] + "..."
    if len(stripped) != KEY_TEXT_CHARS:
        raise KeyTextError(f"a key is 44 characters of base64, {shown!r} has {len(stripped)}")
    try:
        key = base64.b64decode(stripped.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise KeyTextError(f"{shown!r} is not base64") from None
    if len(key) != DH_BYTES or encode_key(key) != stripped:
        raise KeyTextError(f"{shown!r} is not the base64 of a 32-byte key")
    return key


PRIVATE_KEY_TEXT_ERROR = (
    "not a Curve25519 private key: the file must hold its 44 characters of base64 and nothing else"
)


WEAK_PRIVATE_KEY_ERROR = (
    "a Curve25519 private key with no secret bits (all zero, as /dev/zero gives): anyone "
    "can compute it and act as its holder; make a new one"
)


def no_secret_bits(private: bytes) -> bool:
    """Whether X25519 clamps ``private`` to the scalar an all-zero key gives (2**254), so
    that its public key is known to all. (Clamping makes every public key one of prime
    order: no private key has one of low order; this is the weak one.)"""
    return private[0] & 0xF8 == 0 and not any(private[1:31]) and private[31] & 0x3F == 0


def private_key_text(pair: KeyPair) -> bytes:
    """A private key file's bytes: the private key's base64 and a newline (as ``wg genkey``)."""
    return encode_key(pair.private).encode("ascii") + b"\n"


def parse_private_key_text(data: bytes) -> KeyPair:
    """The key pair whose private key a file's bytes hold (:func:`private_key_text`; blank
    space around the key is ignored). The error never quotes the bytes: they would show
    most of a secret in a log. A key with no secret bits (all zero) is refused: the relay
    started with one, which anyone could hold as well (found by review)."""
    try:
        private = decode_key(data.decode("ascii"))
    except (UnicodeDecodeError, KeyTextError):
        raise KeyTextError(PRIVATE_KEY_TEXT_ERROR) from None
    if no_secret_bits(private):
        raise KeyTextError(WEAK_PRIVATE_KEY_ERROR)
    return KeyPair.from_private(private)


def client_id(key: bytes) -> str:
    """A secure client's id in the API: ``k:`` + unpadded base64url of its static key."""
    _check_key_bytes(key)
    return CLIENT_ID_PREFIX + base64.urlsafe_b64encode(key).decode("ascii").rstrip("=")


def parse_client_id(text: str) -> bytes:
    """The static key that a client id (:func:`client_id`) names."""
    body = text.removeprefix(CLIENT_ID_PREFIX)
    valid = (
        text.startswith(CLIENT_ID_PREFIX)
        and len(text) == CLIENT_ID_CHARS
        and body.isascii()
        and all(c.isalnum() or c in "-_" for c in body)
    )
    if valid:
        key = base64.urlsafe_b64decode(body + "=")
        if client_id(key) == text:
            return key
    shown = text if len(text) <= 60 else text[:57] + "..."
    raise KeyTextError(f"{shown!r} is not a client id (k: and 43 characters of base64url)")


@dataclass(frozen=True, slots=True)
class AuthorizedKey:
    key: bytes
    name: str


@dataclass(frozen=True, slots=True)
class LineError:
    """Line ``line`` (counted from 1) of an authorized-keys text, and what is wrong with it."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass(frozen=True, slots=True)
class AuthorizedKeys:
    """The keys of an authorized-keys text that parsed, and the lines that did not."""

    entries: tuple[AuthorizedKey, ...]
    errors: tuple[LineError, ...]


def parse_authorized_key(line: str) -> AuthorizedKey:
    """One ``KEY name`` line: the key's base64, whitespace, then its name (the rest).

    The name is required, at most 128 characters, printable.
    """
    parts = line.strip().split(maxsplit=1)
    if not parts:
        raise KeyTextError("an empty line is not a key")
    key = decode_key(parts[0])
    name = parts[1].strip() if len(parts) > 1 else ""
    if not name:
        raise KeyTextError("the key has no name (write: KEY name)")
    if len(name) > MAX_KEY_NAME_CHARS:
        raise KeyTextError(f"a name is at most {MAX_KEY_NAME_CHARS} characters, not {len(name)}")
    if not name.isprintable():
        raise KeyTextError(f"the name {name!r} holds a control character")
    return AuthorizedKey(key, name)


def parse_authorized_keys(text: str) -> AuthorizedKeys:
    """Every line of an authorized-keys file's text.

    Blank lines and lines whose first non-blank character is ``#`` are skipped. A
    line that does not parse, or names a key already listed, is an error for that
    line; the other lines still count.
    """
    entries: list[AuthorizedKey] = []
    errors: list[LineError] = []
    first_line: dict[bytes, int] = {}
    for number, line in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            entry = parse_authorized_key(stripped)
        except KeyTextError as error:
            errors.append(LineError(number, str(error)))
            continue
        if entry.key in first_line:
            errors.append(LineError(number, f"key already listed on line {first_line[entry.key]}"))
            continue
        first_line[entry.key] = number
        entries.append(entry)
    return AuthorizedKeys(tuple(entries), tuple(errors))
