"""The relay's private key on disk: loaded, or created with mode 0600 on first start.

A key file is read as :mod:`mcrelay.files` reads every file, and without following a
symbolic link; its mode is checked on the descriptor the key came through (no window
between checking and reading). A key that group or others may read or write is
refused: it is no longer a secret.
"""

import logging
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.files import FileError, read_regular_file, require_private
from mcrelay.protocol.errors import LocalProtocolError
from mcrelay.protocol.legacy import crypto

log = logging.getLogger(__name__)

MAX_KEY_FILE_BYTES = 64 * 1024
"""Far above any PEM key of 4096 bits (about 3.3 kB); anything larger is not a key file."""


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
        contents = read_regular_file(
            path, what="key file", limit=MAX_KEY_FILE_BYTES, follow_symlinks=False
        )
        if contents is None:
            return None
        try:
            key = crypto.load_private_key_pem(contents.data)
        except LocalProtocolError as exc:
            raise KeyFileError(f"key file {path}: {exc}") from None
        # Checked once the file is known to hold a key: a file that is not one is reported
        # as such first (it is to be replaced, whatever its mode), and the mode is the one
        # read through the same descriptor as the data, whatever happens to the path.
        require_private(path, contents, "key file")
    except FileError as exc:
        raise KeyFileError(str(exc)) from None
    return key


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
