"""``mcrelay keygen --secure`` and ``mcrelay fingerprint`` of secure keys, run in-process."""

import base64
import stat
from pathlib import Path

import pytest

from mcrelay.cli.status import ExitStatus
from mcrelay.daemon.secure.keyfile import load_or_create_secure_key
from mcrelay.protocol.secure.keys import KeyPair, client_id, encode_key, private_key_text
from support import Console, assert_one_error_line

PAIR = KeyPair.from_private(bytes(range(32)))


def assert_refused(console: Console, *fragments: str) -> None:
    assert_one_error_line(console, *fragments)
    assert console.stdout.getvalue() == ""


def write(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


async def test_keygen_secure_writes_a_0600_key_and_prints_its_public_key(tmp_path: Path) -> None:
    path = tmp_path / "relay-secure.key"
    console = Console()
    assert await console.run("keygen", "--secure", str(path)) == ExitStatus.OK
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    pair = load_or_create_secure_key(path)
    assert console.out_lines() == [encode_key(pair.public)]
    assert console.err_lines() == [f"mcrelay: wrote a new secure key to {path}"]
    assert len(path.read_bytes()) == 45


async def test_keygen_secure_makes_directories_only_with_parents_and_keeps_a_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "client-secure.key"
    refused = Console()
    assert await refused.run("keygen", "--secure", str(path)) == ExitStatus.USAGE
    assert_refused(refused, str(path.parent), "--parents")
    made = Console()
    assert await made.run("keygen", "--secure", "--parents", str(path)) == ExitStatus.OK
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    before = path.read_bytes()
    again = Console()
    assert await again.run("keygen", "--secure", str(path)) == ExitStatus.USAGE
    assert_refused(again, f"secure key file {path} already exists; it is not replaced")
    assert path.read_bytes() == before


async def test_fingerprint_of_a_secure_private_key_prints_its_public_key_and_client_id(
    tmp_path: Path,
) -> None:
    path = write(tmp_path / "relay-secure.key", private_key_text(PAIR))
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.OK
    assert console.out_lines() == [encode_key(PAIR.public), client_id(PAIR.public)]
    assert console.err_lines() == []


async def test_fingerprint_matches_keygen_secure(tmp_path: Path) -> None:
    path = tmp_path / "k"
    made = Console()
    assert await made.run("keygen", "--secure", str(path)) == ExitStatus.OK
    read = Console()
    assert await read.run("fingerprint", str(path)) == ExitStatus.OK
    assert read.out_lines()[0] == made.out_lines()[0]
    assert read.out_lines()[1].startswith("k:")


@pytest.mark.parametrize(
    ("data", "flags"),
    [
        (encode_key(PAIR.public).encode() + b"\n", ["--public"]),
        (f"  {encode_key(PAIR.public)}  alice's laptop\r\n".encode(), []),
    ],
    ids=["bare, --public", "KEY name"],
)
async def test_fingerprint_of_a_secure_public_key(
    tmp_path: Path, data: bytes, flags: list[str]
) -> None:
    path = write(tmp_path / "alice.pub", data, 0o644)
    console = Console()
    assert await console.run("fingerprint", *flags, str(path)) == ExitStatus.OK
    assert console.out_lines() == [encode_key(PAIR.public), client_id(PAIR.public)]


async def test_a_bare_key_others_may_read_is_no_private_key_and_says_so(tmp_path: Path) -> None:
    """A public key written with an open umask is not taken for a private key (which
    would print another key, in silence)."""
    path = write(tmp_path / "alice.pub", encode_key(PAIR.public).encode() + b"\n", 0o644)
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.USAGE
    assert_refused(console, f"key file {path} has mode 0644", "chmod 600")


async def test_fingerprint_public_never_shows_a_private_key_as_public(tmp_path: Path) -> None:
    # Found in review: --public on a private key file (0600) printed the private key's
    # base64 as the "public key", to be pasted into an authorized-keys file.
    path = write(tmp_path / "identity-key", private_key_text(PAIR), 0o600)
    console = Console()
    assert await console.run("fingerprint", "--public", str(path)) == ExitStatus.USAGE
    assert_refused(console, "readable by its owner alone", "drop --public")
    assert encode_key(PAIR.private) not in console.stdout.getvalue() + console.stderr.getvalue()


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "holds no PEM private key or public key, nor a secure key"),
        (b"hello\n", "holds no PEM private key or public key, nor a secure key"),
        (private_key_text(PAIR) * 2, "nor a secure key (one line: 44 characters of base64)"),
        (b"\xff" * 44, "nor a secure key"),
        (base64.b64encode(bytes(33))[:44] + b"\n", "not a Curve25519 private key"),
        (encode_key(PAIR.public)[:-2].encode() + b"j=\n", "not a Curve25519 private key"),
    ],
    ids=["empty", "word", "two lines", "binary", "33 bytes", "non-canonical"],
)
async def test_fingerprint_of_a_bad_secure_key_file(
    tmp_path: Path, data: bytes, fragment: str
) -> None:
    path = write(tmp_path / "key", data)
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.USAGE
    assert_refused(console, str(path), fragment)
    assert base64.b64encode(bytes(range(32))).decode() not in console.stderr.getvalue()


async def test_fingerprint_public_of_a_bad_public_key(tmp_path: Path) -> None:
    text = encode_key(PAIR.public)[:-2] + "j="
    path = write(tmp_path / "key.pub", f"{text} alice\n".encode(), 0o644)
    console = Console()
    assert await console.run("fingerprint", str(path)) == ExitStatus.USAGE
    assert_refused(console, f"key file {path}: {text!r} is not the base64 of a 32-byte key")


async def test_the_daemon_refuses_a_secure_key_others_may_read(
    tmp_path: Path, relay_key_file: Path
) -> None:
    secure = write(tmp_path / "relay-secure.key", private_key_text(PAIR), 0o644)
    console = Console()
    argv = ["--key-file", str(relay_key_file), "--port", "0", "--interface", "127.0.0.1"]
    assert await console.run("daemon", *argv, "--api", "off") == ExitStatus.USAGE
    assert console.err_lines()[-1] == (
        f"mcrelay: error: secure key file {secure} has mode 0644; it must not be accessible "
        f"to group or others: chmod 600 {secure}"
    )


async def test_config_check_reports_the_secure_settings_and_reads_the_authorized_keys(
    tmp_path: Path,
) -> None:
    authorized = write(tmp_path / "authorized-keys", f"{encode_key(PAIR.public)} alice\n".encode())
    key_file = tmp_path / "relay-key.pem"
    argv = ["config", "check", "--key-file", str(key_file), "--authorized-keys", str(authorized)]
    console = Console(environ={"MCRELAY_COOKIES": "always"})
    assert await console.run(*argv) == ExitStatus.OK
    lines = console.out_lines()
    assert f'secure_key_file = "{tmp_path / "relay-secure.key"}"  # default' in lines
    assert f'authorized_keys = "{authorized}"  # flag' in lines
    assert "bridge_legacy = false  # default" in lines
    assert 'cookies = "always"  # env MCRELAY_COOKIES' in lines
    assert "# profiles is not set  # default" in lines
    assert lines[-2:] == [
        "# profiles served: secure (legacy is off: authorized_keys without bridge_legacy)",
        f"# authorized keys: 1 key from {authorized}; secure members are restricted to those",
    ]
    authorized.write_text("alice\n")
    bad = Console()
    assert await bad.run(*argv) == ExitStatus.USAGE
    assert_refused(bad, f"authorized keys file {authorized}: line 1: a key is 44 characters")
    authorized.write_text("")
    named = Console()
    assert await named.run(*argv, "--profiles", "legacy,secure") == ExitStatus.USAGE
    assert_refused(
        named,
        "flag: 'profiles', flag: 'authorized_keys', default: 'bridge_legacy': profiles names "
        "legacy, but with authorized_keys",
    )
    bridged = Console()
    assert await bridged.run(*argv, "--profiles", "legacy,secure", "--bridge-legacy") == 0
    assert bridged.out_lines()[-1].startswith("# warning: a bridged legacy member reads")


async def test_config_check_reads_no_rsa_key_when_legacy_is_not_served(tmp_path: Path) -> None:
    """The daemon then neither reads nor makes one (found by review): a broken RSA key
    file beside a secure-only relay is no error of its settings."""
    key_file = write(tmp_path / "relay-key.pem", b"not a key")
    argv = ["config", "check", "--key-file", str(key_file)]
    refused = Console()
    assert await refused.run(*argv) == ExitStatus.USAGE
    assert "relay-key.pem" in refused.stderr.getvalue()
    secure_only = Console()
    assert await secure_only.run(*argv, "--profiles", "secure") == ExitStatus.OK
    assert secure_only.out_lines()[-1] == "# profiles served: secure"
