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
    key = crypto.generate_private_key()
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process created it between our read and our create: use theirs.
        return load_or_create_key(path)
    except OSError as exc:
        raise KeyFileError(f"cannot create key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as file:
        file.write(crypto.private_key_to_pem(key))
    log.info("created relay key %s", path)
    return key
