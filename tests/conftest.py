from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.legacy import crypto
from support import write_key
from thread_workers import use_thread_workers


@pytest.fixture(scope="session")
def keys() -> list[rsa.RSAPrivateKey]:
    """RSA keys made once per run (key generation is slow): [relay, a, b, c, d]."""
    return [crypto.generate_private_key() for _ in range(5)]


@pytest.fixture
def relay_key_file(tmp_path: Path, keys: list[rsa.RSAPrivateKey]) -> Path:
    return write_key(tmp_path / "relay-key.pem", keys[0])


@pytest.fixture(autouse=True)
def _thread_workers_on_the_mock_clock(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A test on Trio's mock clock cannot wait for a real process (the clock jumps past
    a worker's start deadline while it starts): its relays run their RSA in threads."""
    if "autojump_clock" in request.fixturenames or "mock_clock" in request.fixturenames:
        use_thread_workers(monkeypatch)
