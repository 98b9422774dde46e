"""The relay's secure key file: the RSA key file's rules (mode, type, size, links, creation)
for a Curve25519 private key held as base64 text."""

import base64
import os
import stat
from pathlib import Path

import pytest

from mcrelay.daemon.legacy.keyfile import KeyFileError
from mcrelay.daemon.secure import keyfile as secure_keyfile
from mcrelay.daemon.secure.keyfile import generate_secure_key_file, load_or_create_secure_key
from mcrelay.protocol.secure.keys import KeyPair, private_key_text

PAIR = KeyPair.from_private(bytes(range(32)))
OTHER = KeyPair.from_private(bytes(range(1, 33)))


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def write_pair(path: Path, pair: KeyPair = PAIR, mode: int = 0o600) -> Path:
    path.write_bytes(private_key_text(pair))
    path.chmod(mode)
    return path


def test_a_key_file_is_the_base64_of_the_private_key_and_a_newline(tmp_path: Path) -> None:
    path = write_pair(tmp_path / "relay-secure.key")
    assert path.read_bytes() == base64.b64encode(bytes(range(32))) + b"\n"
    assert load_or_create_secure_key(path) == PAIR


def test_a_key_file_as_an_editor_or_wg_writes_it_is_loaded(tmp_path: Path) -> None:
    path = tmp_path / "relay-secure.key"
    path.write_bytes(b"  " + private_key_text(PAIR).strip() + b"\r\n\n")
    path.chmod(0o400)
    assert load_or_create_secure_key(path) == PAIR


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o602, 0o610, 0o601])
def test_a_key_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_pair(tmp_path / "relay-secure.key", mode=mode)
    with pytest.raises(KeyFileError) as caught:
        load_or_create_secure_key(path)
    assert str(caught.value) == (
        f"secure key file {path} has mode {mode:04o}; it must not be accessible to group "
        f"or others: chmod 600 {path}"
    )
    assert path.read_bytes() == private_key_text(PAIR)
    assert mode_of(path) == mode


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a key\n",
        base64.b64encode(bytes(32))[:-2] + b"\n",
        base64.b64encode(bytes(33)) + b"\n",
        private_key_text(PAIR) + private_key_text(OTHER),
        b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
        b"\xff" * 44,
    ],
    ids=["empty", "words", "short", "33 bytes", "two keys", "PEM", "binary"],
)
def test_a_file_that_is_no_key_says_so_whatever_its_mode_and_never_quotes_it(
    tmp_path: Path, data: bytes
) -> None:
    path = tmp_path / "relay-secure.key"
    path.write_bytes(data)
    path.chmod(0o644)
    with pytest.raises(KeyFileError) as caught:
        load_or_create_secure_key(path)
    assert str(caught.value) == (
        f"secure key file {path}: not a Curve25519 private key: the file must hold its 44 "
        "characters of base64 and nothing else"
    )
    assert path.read_bytes() == data


def test_a_symbolic_link_is_refused_and_never_created_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "key"
    link = tmp_path / "relay-secure.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_or_create_secure_key(link)
    assert not target.parent.exists()
    write_pair(tmp_path / "real.key")
    link.unlink()
    link.symlink_to(tmp_path / "real.key")
    with pytest.raises(KeyFileError, match="symbolic link; refusing to follow it"):
        load_or_create_secure_key(link)


def test_a_fifo_a_directory_and_a_huge_file_are_refused(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyFileError, match=r"cannot read secure key file .*: not a regular file"):
        load_or_create_secure_key(fifo)
    directory = tmp_path / "directory.key"
    directory.mkdir()
    with pytest.raises(KeyFileError, match=r"cannot read secure key file .*Is a directory"):
        load_or_create_secure_key(directory)
    huge = tmp_path / "huge.key"
    with huge.open("wb") as file:
        file.truncate(secure_keyfile.MAX_SECURE_KEY_FILE_BYTES + 1)
    huge.chmod(0o600)
    with pytest.raises(KeyFileError) as caught:
        load_or_create_secure_key(huge)
    assert str(caught.value) == (f"secure key file {huge} is over 1024 bytes: too large to be one")


def test_a_missing_key_is_created_0600_in_a_0700_directory_even_with_an_open_umask(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "relay-secure.key"
    previous = os.umask(0)
    try:
        created = load_or_create_secure_key(path)
    finally:
        os.umask(previous)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert path.read_bytes() == private_key_text(created)
    assert load_or_create_secure_key(path) == created
    assert sorted(p.name for p in path.parent.iterdir()) == ["relay-secure.key"]


def test_a_concurrent_start_keeps_the_key_that_landed_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay-secure.key"

    def make_while_another_start_writes_its_key() -> tuple[KeyPair, bytes]:
        write_pair(path, PAIR)
        return OTHER, private_key_text(OTHER)

    monkeypatch.setattr(secure_keyfile, "_make", make_while_another_start_writes_its_key)
    assert load_or_create_secure_key(path) == PAIR
    assert path.read_bytes() == private_key_text(PAIR)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relay-secure.key"]


def test_a_key_that_cannot_be_created_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(KeyFileError) as caught:
        load_or_create_secure_key(blocker / "relay-secure.key")
    assert str(caught.value) == (
        f"cannot read secure key file {blocker / 'relay-secure.key'}: Not a directory"
    )
    with pytest.raises(KeyFileError) as caught:
        generate_secure_key_file(blocker / "relay-secure.key")
    assert str(caught.value) == (
        f"cannot create secure key file {blocker / 'relay-secure.key'}: "
        f"{blocker} is not a directory"
    )


def test_generate_writes_a_0600_key_the_daemon_loads_and_never_replaces_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "new" / "relay-secure.key"
    pair = generate_secure_key_file(path)
    assert mode_of(path) == 0o600
    assert load_or_create_secure_key(path) == pair
    with pytest.raises(KeyFileError) as caught:
        generate_secure_key_file(path)
    assert str(caught.value) == f"secure key file {path} already exists; it is not replaced"
    assert load_or_create_secure_key(path) == pair
    assert generate_secure_key_file(tmp_path / "second.key") != pair


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_key_file_another_user_owns_is_refused(tmp_path: Path) -> None:
    # Found in review: as root, a 0600 key another user planted (in a shared directory,
    # say) was loaded: a relay or identity key the planter knows.
    path = tmp_path / "relay-secure.key"
    write_pair(path)
    os.chown(path, 65534, 65534)
    with pytest.raises(KeyFileError, match="belongs to uid 65534"):
        load_or_create_secure_key(path)


def test_an_all_zero_key_is_refused_and_kept(tmp_path: Path) -> None:
    """The daemon started with AAAA...= as its secure key: a key anyone holds (found by
    review). Refused, exit 2, and left for the operator to replace."""
    path = tmp_path / "relay-secure.key"
    path.write_bytes(base64.b64encode(bytes(32)) + b"\n")
    path.chmod(0o600)
    with pytest.raises(KeyFileError) as caught:
        load_or_create_secure_key(path)
    assert str(caught.value) == (
        f"secure key file {path}: a Curve25519 private key with no secret bits (all zero, "
        "as /dev/zero gives): anyone can compute it and act as its holder; make a new one"
    )
    assert path.read_bytes() == base64.b64encode(bytes(32)) + b"\n"
