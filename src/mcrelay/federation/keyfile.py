"""The cluster key on disk: the 32-byte secret every relay of a cluster seals its envelopes
with, made by ``mcrelay keygen --federation`` and given to each relay as a copy.

The file holds the key as standard base64 and a newline (as the secure key file does);
it is read without following a symbolic link, must be a regular file of at most
``MAX_CLUSTER_KEY_FILE_BYTES`` that belongs to this user, and is refused when group or
others may access it (``files.load_private_file``). Errors never quote the file's
bytes: they would show a secret in a log. A key is identified by its fingerprint, so
that operators can compare copies without showing the key.
"""

import base64
import binascii
import errno
import hashlib
import os
from pathlib import Path

from mcrelay.files import (
    FileError,
    load_private_file,
    read_regular_file,
    write_new_private_file,
)

CLUSTER_KEY_BYTES = 32
MAX_CLUSTER_KEY_FILE_BYTES = 1024
"""Far above the 45 bytes of a key and its newline; anything larger is not a key file."""
FINGERPRINT_HEX_DIGITS = 16
WHAT = "cluster key file"


class ClusterKeyError(ValueError):
    """The cluster key file cannot be read, used or written; the message names it and why."""


def read_cluster_key(path: Path, *, any_owner: bool = False) -> bytes:
    """The 32 bytes of the cluster key in ``path`` (``any_owner``: as
    :func:`~mcrelay.files.load_private_file`)."""
    try:
        key = load_private_file(
            path,
            what=WHAT,
            limit=MAX_CLUSTER_KEY_FILE_BYTES,
            parse=parse_cluster_key_text,
            any_owner=any_owner,
        )
    except FileError as exc:
        raise ClusterKeyError(str(exc)) from None
    if key is None:
        raise ClusterKeyError(f"cannot read {WHAT} {path}: {os.strerror(errno.ENOENT)}")
    return key


def write_cluster_key(path: Path, parents: bool) -> bytes:
    """A new random cluster key, written to ``path`` (mode 0600) and returned. An existing
    file (or link) is never replaced; missing directories are made (mode 0700) only with
    ``parents``."""
    if not parents and not os.path.lexists(path.parent):
        raise ClusterKeyError(
            f"directory {path.parent} does not exist; create it, or give --parents"
        )
    try:
        return write_new_private_file(path, _make, what=WHAT)
    except FileError as exc:
        raise ClusterKeyError(str(exc)) from None


def cluster_key_fingerprint(key: bytes) -> str:
    """The first 16 hex digits of the key's SHA-256: the same for every copy of one key."""
    return hashlib.sha256(key).hexdigest()[:FINGERPRINT_HEX_DIGITS]


def cluster_key_text(key: bytes) -> bytes:
    """A cluster key file's bytes: the key's standard base64 and a newline."""
    return base64.b64encode(key) + b"\n"


def parse_cluster_key_text(data: bytes) -> bytes:
    """The key a cluster key file's bytes hold (blank space around it is ignored);
    ``ValueError`` for anything else, without quoting the bytes."""
    text = data.strip()
    if not text:
        raise ValueError("not a cluster key: the file is empty")
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "not a cluster key: the file must hold one line of base64 and nothing else"
        ) from None
    if len(key) != CLUSTER_KEY_BYTES:
        raise ValueError(
            f"not a cluster key: it holds {len(key)} bytes of base64, a cluster key is "
            f"{CLUSTER_KEY_BYTES} (make one with: mcrelay keygen --federation PATH)"
        )
    if base64.b64encode(key) != text:
        raise ValueError("not a cluster key: its base64 is not written the one standard way")
    return key


def _make() -> tuple[bytes, bytes]:
    key = os.urandom(CLUSTER_KEY_BYTES)
    return key, cluster_key_text(key)


MAX_BUS_FILE_BYTES = 1024 * 1024
"""Far above a .creds file, an nkey seed or a CA bundle."""


def check_bus_files(
    credentials: Path | None, nkey_seed: Path | None, ca: Path | None, *, any_owner: bool = False
) -> None:
    """Refuse the NATS files (``federation_credentials``, ``federation_nkey_file``,
    ``federation_tls_ca``) that cannot serve, before nats-py reads them in its thread,
    where a missing or unreadable one is a warning that names no file, retried forever,
    and a FIFO hangs the thread. Each must be a regular, non-empty file of bounded size;
    the credentials and the seed, secrets, are private files as the keys are. Raises
    :class:`ClusterKeyError` naming the file; ``any_owner`` as for the cluster key."""
    files = (
        (credentials, "NATS credentials file", True),
        (nkey_seed, "NATS nkey seed file", True),
        (ca, "NATS TLS CA file", False),
    )
    try:
        for path, what, private in files:
            if path is not None:
                _check_bus_file(path, what, private=private, any_owner=any_owner)
    except FileError as exc:
        raise ClusterKeyError(str(exc)) from None


def _check_bus_file(path: Path, what: str, *, private: bool, any_owner: bool) -> None:
    if private:
        data = load_private_file(
            path, what=what, limit=MAX_BUS_FILE_BYTES, parse=bytes, any_owner=any_owner
        )
    else:
        contents = read_regular_file(path, what=what, limit=MAX_BUS_FILE_BYTES)
        data = None if contents is None else contents.data
    if data is None:
        raise FileError(f"cannot read {what} {path}: {os.strerror(errno.ENOENT)}")
    if not data.strip():
        raise FileError(f"{what} {path} is empty")
