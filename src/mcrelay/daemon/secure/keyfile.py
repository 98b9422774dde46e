"""The relay's secure (Curve25519) key on disk: loaded, or created with mode 0600 on
first start, by the rules of the RSA key file (``legacy/keyfile.py``).

The file holds the private key as standard base64 and a newline, as WireGuard's; it
is read without following a symbolic link, must be a regular file of at most
``MAX_SECURE_KEY_FILE_BYTES``, and is refused when group or others may access it.
Errors are the RSA key file's :class:`KeyFileError` (the command exits 2).
"""

import logging
from pathlib import Path

from mcrelay.daemon.legacy.keyfile import KeyFileError
from mcrelay.files import (
    FileError,
    load_or_create_private_file,
    load_private_file,
    write_new_private_file,
)
from mcrelay.protocol.secure.keys import KeyPair, parse_private_key_text, private_key_text

log = logging.getLogger(__name__)

MAX_SECURE_KEY_FILE_BYTES = 1024
"""Far above the 45 bytes of a key and its newline; anything larger is not a key file."""
WHAT = "secure key file"


def load_or_create_secure_key(path: Path) -> KeyPair:
    """The key pair in ``path``, or a new one written there (0600) when there is no file."""
    try:
        pair, created = load_or_create_private_file(
            path,
            what=WHAT,
            limit=MAX_SECURE_KEY_FILE_BYTES,
            parse=parse_private_key_text,
            make=_make,
        )
    except FileError as exc:
        raise KeyFileError(str(exc)) from None
    if created:
        log.info("created secure relay key %s", path)
    return pair


def read_secure_key_file(path: Path, *, any_owner: bool = False) -> KeyPair | None:
    """As :func:`~mcrelay.daemon.legacy.keyfile.read_key_file`, for the secure key."""
    try:
        return load_private_file(
            path,
            what=WHAT,
            limit=MAX_SECURE_KEY_FILE_BYTES,
            parse=parse_private_key_text,
            any_owner=any_owner,
        )
    except FileError as exc:
        raise KeyFileError(str(exc)) from None


def generate_secure_key_file(path: Path) -> KeyPair:
    """Write a new key pair's private key to ``path`` (mode 0600); an existing file (or
    link) is never replaced."""
    try:
        return write_new_private_file(path, _make, what=WHAT)
    except FileError as exc:
        raise KeyFileError(str(exc)) from None


def _make() -> tuple[KeyPair, bytes]:
    pair = KeyPair.generate()
    return pair, private_key_text(pair)
