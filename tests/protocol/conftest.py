"""Shared fixtures: the legacy test vectors (always from ``tests/data``) and their keys."""

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.legacy import crypto

VECTORS_PATH = Path(__file__).resolve().parents[1] / "data" / "legacy-vectors.json"


def load_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    return data


@pytest.fixture(scope="session")
def vectors() -> dict[str, Any]:
    return load_vectors()


@pytest.fixture(scope="session")
def relay_key(vectors: dict[str, Any]) -> rsa.RSAPrivateKey:
    return crypto.load_private_key_pem(vectors["keys"]["relay_private_pem"].encode("ascii"))


@pytest.fixture(scope="session")
def client_key(vectors: dict[str, Any]) -> rsa.RSAPrivateKey:
    return crypto.load_private_key_pem(vectors["keys"]["client_private_pem"].encode("ascii"))


def _synthetic_public_key(bits: int) -> rsa.RSAPublicKey:
    n = (1 << (bits - 1)) | random.Random(bits).getrandbits(bits - 1) | 1
    return rsa.RSAPublicNumbers(crypto.PUBLIC_EXPONENT, n).public_key()


@pytest.fixture(scope="session")
def synthetic_public_key() -> Callable[[int], rsa.RSAPublicKey]:
    """Make an RSA public key of exactly ``bits`` bits, with no cost of finding primes.

    Its modulus is not a product of two primes (nothing can decrypt for it), which
    a public key cannot tell: good for size checks and for encrypting to measure.
    """
    return _synthetic_public_key
