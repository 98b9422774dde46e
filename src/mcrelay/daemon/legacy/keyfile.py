"""The relay's private key on disk: loaded, or created with mode 0600 on first start.

A key file is read as :mod:`mcrelay.files` reads every private file, without following
a symbolic link; its mode is checked on the descriptor the key came through (no
window between checking and reading). A key that group or others may read or write
is refused: it is no longer a secret.
"""

import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.files import (
    FileError,
    load_or_create_private_file,
    load_private_file,
    write_new_private_file,
)
from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.legacy import crypto

log = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 64 * 1024
"""Far above any PEM key of 4096 bits (about 3.3 kB); anything larger is not a key file."""
WHAT = "key file"


class KeyFileError(Exception):
    """The key file cannot be read, created or used; the message says which and why."""


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The key in ``path``, or a new key written there (0600) when there is no file."""
    try:
        key, created = load_or_create_private_file(
            path, what=WHAT, limit=MAX_KEY_FILE_BYTES, parse=_parse, make=_make
        )
    except FileError as exc:
        raise KeyFileError(str(exc)) from None
    if created:
        log.info("created relay key %s", path)
    return key


def read_key_file(path: Path, *, any_owner: bool = False) -> rsa.RSAPrivateKey | None:
    """The key in ``path`` as the daemon would take it, or None when there is none (it is
    made at start); ``KeyFileError`` when the daemon would refuse it. ``any_owner``:
    ``config check`` run as root for the daemon."""
    try:
        return load_private_file(
            path, what=WHAT, limit=MAX_KEY_FILE_BYTES, parse=_parse, any_owner=any_owner
        )
    except FileError as exc:
        raise KeyFileError(str(exc)) from None


def generate_key_file(path: Path) -> rsa.RSAPrivateKey:
    """Write a new key to ``path`` (mode 0600); an existing file (or link) is never replaced."""
    try:
        return write_new_private_file(path, _make, what=WHAT)
    except FileError as exc:
        raise KeyFileError(str(exc)) from None


def _parse(data: bytes) -> rsa.RSAPrivateKey:
    try:
        return crypto.load_private_key_pem(data)
    except LocalProtocolError as exc:
        raise ValueError(str(exc)) from None


def _make() -> tuple[rsa.RSAPrivateKey, bytes]:
    key = crypto.generate_private_key()
    return key, crypto.private_key_to_pem(key)
