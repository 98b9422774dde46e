"""The relay's private key on disk: loaded, or created with mode 0600 on first start."""

import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol import crypto
from mcrelay.protocol.errors import LocalProtocolError

log = logging.getLogger(__name__)


class KeyFileError(Exception):
    """The key file cannot be read, created or used; the message says which and why."""


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _create(path)
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    try:
        return crypto.load_private_key_pem(data)
    except LocalProtocolError as exc:
        raise KeyFileError(f"key file {path}: {exc}") from None


def _create(path: Path) -> rsa.RSAPrivateKey:
    """Write a new key beside ``path`` and link it into place, so that no reader ever
    sees half a key and a concurrent start keeps whichever key landed first."""
    key = crypto.generate_private_key()
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(crypto.private_key_to_pem(key))
            file.flush()
            os.fsync(file.fileno())
        os.link(partial, path)
    except FileExistsError:
        return load_or_create_key(path)
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    finally:
        partial.unlink(missing_ok=True)
    log.info("created relay key %s", path)
    return key
