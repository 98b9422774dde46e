"""The relay's private key on disk: loaded, or created with mode 0600 on first start.

A key file is read through one descriptor, opened without following a symbolic link,
and its mode is checked on that descriptor (no window between checking and reading).
A key that group or others may read or write is refused: it is no longer a secret.
"""

import errno
import logging
import os
import stat
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol import crypto
from mcrelay.protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 64 * 1024
"""Far above any PEM key of 4096 bits (about 3.3 kB); anything larger is not a key file."""

_OPEN_FLAGS = (
    os.O_RDONLY
    | os.O_NOFOLLOW  # a symbolic link as the last component fails with ELOOP
    | os.O_NONBLOCK  # a FIFO opens at once (and is then refused) instead of hanging
    | os.O_CLOEXEC
)


class KeyFileError(Exception):
    """The key file cannot be read, created or used; the message says which and why."""


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """The key in ``path``, or a new key written there (0600) when there is no file."""
    key = _load(path)
    if key is not None:
        return key
    key = _create(path)
    if key is not None:
        log.info("created relay key %s", path)
        return key
    # A concurrent start linked its key into place first: use that one.
    key = _load(path)
    if key is None:
        raise KeyFileError(f"cannot read key file {path}: it vanished while being created")
    return key


def generate_key_file(path: Path) -> rsa.RSAPrivateKey:
    """Write a new key to ``path`` (mode 0600); an existing file (or link) is never replaced."""
    if os.path.lexists(path):  # before the slow key generation; the link below decides
        raise _exists(path)
    key = _create(path)
    if key is None:
        raise _exists(path)
    return key


def _exists(path: Path) -> KeyFileError:
    return KeyFileError(f"key file {path} already exists; it is not replaced")


def _load(path: Path) -> rsa.RSAPrivateKey | None:
    """The key in ``path``, or ``None`` when there is no such file."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise KeyFileError(
                f"key file {path} is a symbolic link; refusing to follow it: "
                "give the path of the key file itself"
            ) from None
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise KeyFileError(f"cannot read key file {path}: {os.strerror(errno.EISDIR)}")
        if not stat.S_ISREG(info.st_mode):
            raise KeyFileError(f"cannot read key file {path}: not a regular file")
        data = _read_at_most(fd, MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_KEY_FILE_BYTES:
        raise KeyFileError(f"key file {path}: over {MAX_KEY_FILE_BYTES} bytes, not a key")
    try:
        key = crypto.load_private_key_pem(data)
    except LocalProtocolError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None
    # Checked once the file is known to hold a key: a file that is not one is reported as
    # such first (it is to be replaced, whatever its mode), and the mode is the one read
    # through this descriptor, whatever happens to the path meanwhile.
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise KeyFileError(
            f"key file {path} has mode {mode:04o}; it must not be accessible to group or "
            f"others: chmod 600 {path}"
        )
    return key


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit and (chunk := os.read(fd, limit - size)):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _create(path: Path) -> rsa.RSAPrivateKey | None:
    """Write a new key beside ``path`` and link it into place, so that no reader ever
    sees half a key and a concurrent start keeps whichever key landed first.

    Returns ``None``, and writes nothing, when ``path`` already exists."""
    key = crypto.generate_private_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # mkstemp: mode 0600, O_EXCL and a random name, so no stale or planted file is reused.
        fd, partial_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileExistsError as exc:  # from mkdir: a file where a directory should be
        raise KeyFileError(
            f"cannot create key file {path}: {exc.filename} is not a directory"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    partial = Path(partial_name)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(crypto.private_key_to_pem(key))
            file.flush()
            os.fsync(file.fileno())
        os.link(partial, path)
        _sync_directory(path.parent)
    except FileExistsError:
        return None
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    return key


def _sync_directory(directory: Path) -> None:
    """Make the new link survive a crash, so a restart finds the key clients have pinned.
    Best effort: some file systems cannot sync a directory, and the key is in place."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
