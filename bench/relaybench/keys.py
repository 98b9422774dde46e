"""The keys of one benchmark run: the relay's (written to its key file) and the clients'."""

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.legacy.keyfile import generate_key_file
from mcrelay.protocol.legacy import crypto


@dataclass(frozen=True)
class BenchKeys:
    key_file: Path
    relay: rsa.RSAPrivateKey
    client: rsa.RSAPrivateKey
    """Every sender and receiver registers with this one key: 2048-bit keys are slow to make."""

    @classmethod
    def create(cls, workdir: Path) -> "BenchKeys":
        key_file = workdir / "relay-key.pem"
        return cls(key_file, generate_key_file(key_file), crypto.generate_private_key())

    @property
    def relay_public_pem(self) -> bytes:
        return crypto.public_key_to_pem(self.relay.public_key())

    @property
    def client_private_pem(self) -> bytes:
        return crypto.private_key_to_pem(self.client)

    @property
    def client_public_pem(self) -> bytes:
        return crypto.public_key_to_pem(self.client.public_key())
