from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.legacy import crypto
from support import write_key


@pytest.fixture(scope="session")
def keys() -> list[rsa.RSAPrivateKey]:
    """RSA keys made once per run (key generation is slow): [relay, a, b, c, d]."""
    return [crypto.generate_private_key() for _ in range(5)]


@pytest.fixture
def relay_key_file(tmp_path: Path, keys: list[rsa.RSAPrivateKey]) -> Path:
    return write_key(tmp_path / "relay-key.pem", keys[0])
