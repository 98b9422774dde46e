"""The key file's permissions and type: refused when exposed, a link or not a file; keygen's file."""

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.legacy import keyfile
from mcrelay.daemon.legacy.keyfile import KeyFileError, generate_key_file, load_or_create_key
from mcrelay.protocol.legacy import crypto
from support import write_key

Keys = list[rsa.RSAPrivateKey]

running_as_root = os.geteuid() == 0


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


# --- load_or_create_key: the mode -----------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o666, 0o620, 0o602, 0o610, 0o601])
def test_key_file_open_to_group_or_others_is_refused(tmp_path: Path, keys: Keys, mode: int) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    path.chmod(mode)
    pem = path.read_bytes()
    with pytest.raises(KeyFileError) as caught:
        load_or_create_key(path)
    message = str(caught.value)
    assert message == (
        f"key file {path} has mode {mode:04o}; it must not be accessible to group or "
        f"others: chmod 600 {path}"
    )
    assert path.read_bytes() == pem  # neither replaced nor fixed behind the operator's back
    assert mode_of(path) == mode


@pytest.mark.parametrize("mode", [0o600, 0o400, 0o700])
def test_key_file_private_to_its_owner_is_loaded(tmp_path: Path, keys: Keys, mode: int) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    path.chmod(mode)
    assert load_or_create_key(path).private_numbers() == keys[0].private_numbers()


def test_key_file_refused_then_loaded_once_fixed(tmp_path: Path, keys: Keys) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create_key(path)
    path.chmod(0o600)
    assert load_or_create_key(path).private_numbers() == keys[0].private_numbers()


def test_a_file_that_is_no_key_says_so_whatever_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    path.write_bytes(b"not a key\n")
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="not an unencrypted PEM private key"):
        load_or_create_key(path)


# --- load_or_create_key: what the path is ---------------------------------------------------


def test_symbolic_link_to_a_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    target = write_key(tmp_path / "real-key.pem", keys[0])
    link = tmp_path / "relay-key.pem"
    link.symlink_to(target)
    with pytest.raises(KeyFileError) as caught:
        load_or_create_key(link)
    message = str(caught.value)
    assert str(link) in message
    assert "symbolic link" in message


def test_dangling_symbolic_link_is_refused_not_created_through(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "key.pem"
    link = tmp_path / "relay-key.pem"
    link.symlink_to(target)
    with pytest.raises(KeyFileError, match="symbolic link"):
        load_or_create_key(link)
    assert not target.exists()
    assert not target.parent.exists()
    assert link.is_symlink()


def test_a_symbolic_link_above_the_key_file_is_followed(tmp_path: Path, keys: Keys) -> None:
    """Only the file itself must not be a link: systemd's DynamicUser= makes the
    state directory a link into /var/lib/private."""
    real = tmp_path / "private" / "mcrelay"
    real.mkdir(parents=True)
    write_key(real / "relay-key.pem", keys[0])
    (tmp_path / "mcrelay").symlink_to(real)
    loaded = load_or_create_key(tmp_path / "mcrelay" / "relay-key.pem")
    assert loaded.private_numbers() == keys[0].private_numbers()


def test_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    os.mkfifo(path, 0o600)
    with pytest.raises(KeyFileError, match="not a regular file") as caught:
        load_or_create_key(path)
    assert str(path) in str(caught.value)


def test_directory_is_refused_as_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    path.mkdir(mode=0o755)
    with pytest.raises(KeyFileError, match="cannot read key file") as caught:
        load_or_create_key(path)
    assert "Is a directory" in str(caught.value)
    assert "mode" not in str(caught.value)


@pytest.mark.skipif(running_as_root, reason="root reads a file whatever its mode")
def test_unreadable_key_file_is_refused(tmp_path: Path, keys: Keys) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    path.chmod(0o200)
    with pytest.raises(KeyFileError, match="cannot read key file") as caught:
        load_or_create_key(path)
    assert str(path) in str(caught.value)
    assert "Permission denied" in str(caught.value)


def test_huge_file_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    path = tmp_path / "relay-key.pem"
    with path.open("wb") as file:
        file.truncate(keyfile.MAX_KEY_FILE_BYTES * 100)
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="too large to be one") as caught:
        load_or_create_key(path)
    assert str(path) in str(caught.value)


# --- creation -------------------------------------------------------------------------------


def test_created_key_is_0600_even_with_an_open_umask(tmp_path: Path) -> None:
    path = tmp_path / "state" / "relay-key.pem"
    with umask(0):
        created = load_or_create_key(path)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert load_or_create_key(path).private_numbers() == created.private_numbers()


def test_concurrent_start_keeps_the_key_that_landed_first(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay-key.pem"
    ours = keys[1]

    def generate_while_another_start_writes_its_key() -> rsa.RSAPrivateKey:
        write_key(path, keys[0])
        return ours

    monkeypatch.setattr(crypto, "generate_private_key", generate_while_another_start_writes_its_key)
    assert load_or_create_key(path).private_numbers() == keys[0].private_numbers()
    assert crypto.load_private_key_pem(path.read_bytes()).private_numbers() == (
        keys[0].private_numbers()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relay-key.pem"]


# --- generate_key_file ----------------------------------------------------------------------


def test_generate_key_file_writes_a_0600_key(tmp_path: Path) -> None:
    path = tmp_path / "new" / "relay-key.pem"
    with umask(0o022):
        key = generate_key_file(path)
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert crypto.load_private_key_pem(path.read_bytes()).private_numbers() == (
        key.private_numbers()
    )
    assert key.key_size == crypto.KEY_BITS
    assert sorted(p.name for p in path.parent.iterdir()) == ["relay-key.pem"]
    # The daemon accepts what keygen wrote.
    assert load_or_create_key(path).private_numbers() == key.private_numbers()


def test_generate_key_file_refuses_an_existing_file(tmp_path: Path, keys: Keys) -> None:
    path = write_key(tmp_path / "relay-key.pem", keys[0])
    pem = path.read_bytes()
    with pytest.raises(KeyFileError) as caught:
        generate_key_file(path)
    assert str(caught.value) == f"key file {path} already exists; it is not replaced"
    assert path.read_bytes() == pem


@pytest.mark.parametrize("kind", ["empty file", "directory", "dangling link"])
def test_generate_key_file_refuses_whatever_is_at_the_path(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "relay-key.pem"
    target = tmp_path / "target.pem"
    if kind == "empty file":
        path.write_bytes(b"")
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(target)
    said = "is a directory" if kind == "directory" else "already exists"
    with pytest.raises(KeyFileError, match=said):
        generate_key_file(path)
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relay-key.pem"]


def test_generate_key_file_loses_a_race_without_replacing_the_winner(
    tmp_path: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "relay-key.pem"

    def generate_while_someone_writes_the_file() -> rsa.RSAPrivateKey:
        write_key(path, keys[0])
        return keys[1]

    monkeypatch.setattr(crypto, "generate_private_key", generate_while_someone_writes_the_file)
    with pytest.raises(KeyFileError, match="already exists"):
        generate_key_file(path)
    assert crypto.load_private_key_pem(path.read_bytes()).private_numbers() == (
        keys[0].private_numbers()
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["relay-key.pem"]


def test_generate_key_file_where_it_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(KeyFileError, match="cannot create key file") as caught:
        generate_key_file(blocker / "relay-key.pem")
    assert str(blocker / "relay-key.pem") in str(caught.value)
    assert f"{blocker} is not a directory" in str(caught.value)
