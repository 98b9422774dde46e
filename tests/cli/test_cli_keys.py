"""``mcrelay keygen`` and ``mcrelay fingerprint``, run in-process."""

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mcrelay.cli.status import ExitStatus
from mcrelay.daemon.legacy.keyfile import load_or_create_key
from mcrelay.protocol.legacy import crypto
from support import Console, assert_one_error_line, relay_config, running_relay, write_key

Keys = list[rsa.RSAPrivateKey]


def assert_refused(console: Console, *fragments: str) -> None:
    assert_one_error_line(console, *fragments)
    assert console.stdout.getvalue() == ""


def is_fingerprint(text: str) -> bool:
    return text.startswith("SHA256:") and len(text) == len("SHA256:") + 43


# --- keygen ---------------------------------------------------------------------------------


async def test_keygen_writes_a_0600_key_and_prints_its_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    console = Console()
    assert await console.run("keygen", str(path)) == ExitStatus.OK
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = crypto.load_private_key_pem(path.read_bytes())
    [line] = console.out_lines()
    assert is_fingerprint(line)
    assert line == crypto.fingerprint(key.public_key())
    assert console.err_lines() == [f"mcrelay: wrote a new relay key to {path}"]
    # The daemon takes the file as it is.
    assert load_or_create_key(path).private_numbers() == key.private_numbers()


async def test_keygen_makes_missing_directories_only_with_parents(tmp_path: Path) -> None:
    path = tmp_path / "state" / "mcrelay" / "relay-key.pem"
    refused = Console()
    assert await refused.run("keygen", str(path)) == ExitStatus.USAGE
    assert_refused(refused, str(path.parent), "--parents")
    assert not (tmp_path / "state").exists()
    made = Console()
    assert await made.run("keygen", "--parents", str(path)) == ExitStatus.OK
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert made.out_lines() == [crypto.fingerprint(load_or_create_key(path).public_key())]


async def test_keygen_refuses_an_existing_file(tmp_path: Path, keys: Keys) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    pem = path.read_bytes()
    console = Console()
    assert await console.run("keygen", str(path)) == ExitStatus.USAGE
    assert_refused(console, str(path), "already exists")
    assert path.read_bytes() == pem


async def test_keygen_where_no_file_can_be_made(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    console = Console()
    assert await console.run("keygen", str(blocker / "relay-key.pem")) == ExitStatus.USAGE
    assert_refused(console, str(blocker / "relay-key.pem"), "not a directory")


async def test_keygen_needs_a_path() -> None:
    console = Console()
    assert await console.run("keygen") == ExitStatus.USAGE
    assert_refused(console, "path")


async def test_two_keygens_make_two_keys(tmp_path: Path) -> None:
    prints = []
    for name in ("a.pem", "b.pem"):
        console = Console()
        assert await console.run("keygen", str(tmp_path / name)) == ExitStatus.OK
        prints.extend(console.out_lines())
    assert len(set(prints)) == 2


# --- fingerprint ----------------------------------------------------------------------------


async def test_fingerprint_of_a_private_key_file(tmp_path: Path, keys: Keys) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.OK
    assert console.out_lines() == [crypto.fingerprint(keys[0].public_key())]
    assert console.err_lines() == []


async def test_fingerprint_of_a_public_key_file(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "relay-key.pub"
    path.write_bytes(crypto.public_key_to_pem(keys[0].public_key()))
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.OK
    assert console.out_lines() == [crypto.fingerprint(keys[0].public_key())]


async def test_fingerprint_of_a_pkcs1_public_key_file(tmp_path: Path, keys: Keys) -> None:
    path = tmp_path / "relay-key.pub"
    path.write_bytes(
        keys[0]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    )
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.OK
    assert console.out_lines() == [crypto.fingerprint(keys[0].public_key())]


async def test_fingerprint_does_not_check_the_mode(tmp_path: Path, keys: Keys) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    path.chmod(0o644)
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.OK
    assert console.out_lines() == [crypto.fingerprint(keys[0].public_key())]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


async def test_fingerprint_is_what_the_relay_announces(relay_key_file: Path) -> None:
    console = Console()
    assert await console.run("fingerprint", str(relay_key_file)) == ExitStatus.OK
    async with running_relay(relay_config(relay_key_file)) as relay:
        assert console.out_lines() == [relay.fingerprint]


async def test_fingerprint_matches_keygen(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    made = Console()
    assert await made.run("keygen", str(path)) == ExitStatus.OK
    read = Console()
    assert await read.run("fingerprint", str(path)) == ExitStatus.OK
    assert read.out_lines() == made.out_lines()


BROKEN_PRIVATE = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
BROKEN_PUBLIC = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"


def bad_contents(kind: str, keys: Keys) -> bytes:
    if kind == "encrypted":
        return keys[0].private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    if kind == "small RSA":
        small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        return crypto.public_key_to_pem(small.public_key())
    if kind == "EC":
        return ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    return {
        "garbage": b"hello\n",
        "empty": b"",
        "broken private": BROKEN_PRIVATE,
        "broken public": BROKEN_PUBLIC,
        "cut private": BROKEN_PRIVATE.split(b"-----END")[0],
        "huge": b"-----BEGIN PUBLIC KEY-----\n" + b"A" * 100_000,
    }[kind]


@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "No such file"),
        ("directory", "Is a directory"),
        ("garbage", "no PEM private key or public key"),
        ("empty", "no PEM private key or public key"),
        ("broken private", "not an unencrypted PEM private key"),
        ("broken public", "not a PEM public key"),
        ("cut private", "its contents cannot be decoded"),
        ("encrypted", "protected by a passphrase"),
        ("small RSA", "1024 bits"),
        ("EC", "not an RSA key"),
        ("huge", "over 65536 bytes"),
    ],
)
async def test_fingerprint_of_a_bad_file(
    tmp_path: Path, keys: Keys, kind: str, fragment: str
) -> None:
    path = tmp_path / "key.pem"
    if kind == "directory":
        path.mkdir()
    elif kind != "missing":
        path.write_bytes(bad_contents(kind, keys))
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.USAGE
    assert_refused(console, str(path), fragment)
    assert "http" not in console.stderr.getvalue()
