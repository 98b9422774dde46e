"""RelayConfig's checks, the default key file location, and the key file on disk."""

import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.legacy.keyfile import KeyFileError, load_or_create_key
from mcrelay.protocol.legacy import crypto
from mcrelay.settings.config import KEY_FILE_NAME, RelayConfig, default_key_file
from support import write_key

Keys = list[rsa.RSAPrivateKey]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"port": 70000}, "port"),
        ({"port": -1}, "port"),
        ({"client_timeout_s": 0.0}, "client timeout"),
        ({"client_timeout_s": -1.0}, "client timeout"),
        ({"reassembly_timeout_s": 0.0}, "reassembly timeout"),
        ({"reassembly_timeout_s": -0.5}, "reassembly timeout"),
        ({"max_message_bytes": 0}, "max message bytes"),
        ({"max_message_bytes": 32769}, "max message bytes"),
        ({"crypto_workers": 0}, "crypto workers"),
        # Found by review: a client timeout of 1e-9 s had the cleanup loop spin a core;
        # a million crypto workers would have been started.
        ({"client_timeout_s": 0.09}, "client timeout"),
        ({"client_timeout_s": 86401.0}, "client timeout"),
        ({"reassembly_timeout_s": 0.009}, "reassembly timeout"),
        ({"reassembly_timeout_s": 3601.0}, "reassembly timeout"),
        ({"crypto_workers": 257}, "crypto workers"),
        ({"receive_buffer_bytes": 2**30}, "receive buffer bytes"),
    ],
)
def test_config_rejects_bad_values(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RelayConfig(key_file=tmp_path / "k.pem", **overrides)


def test_config_accepts_the_limits(tmp_path: Path) -> None:
    accepted: list[dict[str, Any]] = [
        {"port": 0},
        {"port": 65535},
        {"max_message_bytes": 1},
        {"max_message_bytes": 32768},
        {"crypto_workers": 1},
        {"crypto_workers": 256},
        {"client_timeout_s": 0.1, "reassembly_timeout_s": 0.01},
        {"client_timeout_s": 86400.0, "reassembly_timeout_s": 3600.0},
        {"receive_buffer_bytes": 2**30 - 1},
    ]
    for overrides in accepted:
        config = RelayConfig(key_file=tmp_path / "k.pem", **overrides)
        assert {name: getattr(config, name) for name in overrides} == overrides


def test_default_key_file_prefers_state_directory() -> None:
    environ = {"STATE_DIRECTORY": "/var/lib/one:/var/lib/two", "XDG_STATE_HOME": "/xdg"}
    assert default_key_file(environ) == Path("/var/lib/one") / KEY_FILE_NAME
    assert default_key_file({"STATE_DIRECTORY": "/srv/relay"}) == Path("/srv/relay/relay-key.pem")


def test_default_key_file_then_xdg_state_home() -> None:
    assert default_key_file({"XDG_STATE_HOME": "/xdg"}) == Path("/xdg/mcrelay/relay-key.pem")
    # An empty STATE_DIRECTORY is not set.
    environ = {"STATE_DIRECTORY": "", "XDG_STATE_HOME": "/xdg"}
    assert default_key_file(environ) == Path("/xdg/mcrelay/relay-key.pem")


def test_default_key_file_then_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    # The environ passed in is the only one read, not os.environ.
    monkeypatch.setenv("XDG_STATE_HOME", "/not/this/one")
    monkeypatch.setenv("STATE_DIRECTORY", "/nor/this")
    expected = tmp_path / ".local" / "state" / "mcrelay" / "relay-key.pem"
    assert default_key_file({}) == expected
    assert default_key_file({"XDG_STATE_HOME": ""}) == expected
    # A relative one is ignored, as the XDG spec says (it made keys under the cwd).
    assert default_key_file({"XDG_STATE_HOME": "rel"}) == expected


def test_without_a_home_the_state_is_under_nonexistent(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HOME and no passwd entry: Path.home() raised while the parser was built, so
    every command, --version too, was a traceback."""

    def no_home() -> Path:
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", no_home)
    expected = Path("/nonexistent/.local/state/mcrelay/relay-key.pem")
    assert default_key_file({}) == expected


def test_key_file_is_created_0600_with_its_directories(tmp_path: Path) -> None:
    path = tmp_path / "state" / "mcrelay" / "relay-key.pem"
    created = load_or_create_key(path)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Every directory made, not only the last (mkdir -p made "state" 0755).
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    pem = path.read_bytes()
    assert crypto.load_private_key_pem(pem).private_numbers() == created.private_numbers()

    loaded = load_or_create_key(path)
    assert loaded.private_numbers() == created.private_numbers()
    assert crypto.fingerprint(loaded.public_key()) == crypto.fingerprint(created.public_key())
    assert path.read_bytes() == pem  # loading does not rewrite it


def test_existing_key_file_is_loaded(tmp_path: Path, keys: Keys) -> None:
    path = write_key(tmp_path / "k.pem", keys[0])
    assert load_or_create_key(path).private_numbers() == keys[0].private_numbers()


def test_garbage_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    path.write_bytes(b"this is not a key\n")
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key") as caught:
        load_or_create_key(path)
    assert str(path) in str(caught.value)
    assert path.read_bytes() == b"this is not a key\n"  # never overwritten


def test_unreadable_key_path_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    path.mkdir()
    with pytest.raises(KeyFileError, match="cannot read key file") as caught:
        load_or_create_key(path)
    assert str(path) in str(caught.value)
    assert "Is a directory" in str(caught.value)


def test_key_file_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(KeyFileError, match="key file") as caught:
        load_or_create_key(blocker / "relay-key.pem")
    assert str(blocker / "relay-key.pem") in str(caught.value)


def test_state_directory_skips_empty_entries() -> None:
    assert default_key_file({"STATE_DIRECTORY": ":/var/lib/mcrelay"}) == Path(
        "/var/lib/mcrelay/relay-key.pem"
    )


def test_key_creation_leaves_no_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "relay-key.pem"
    load_or_create_key(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["relay-key.pem"]
