"""The cluster key file: written whole with mode 0600 and never over another file; read only
when it is one key of base64 in a regular file private to this user."""

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.federation.keyfile import (
    ClusterKeyError,
    check_bus_files,
    cluster_key_fingerprint,
    cluster_key_text,
    parse_cluster_key_text,
    read_cluster_key,
    write_cluster_key,
)


def write_key_file(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


def test_a_written_key_is_read_back(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    key = write_cluster_key(path, parents=False)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == base64.b64encode(key) + b"\n"
    assert read_cluster_key(path) == key
    assert write_cluster_key(tmp_path / "second.key", parents=False) != key


def test_an_existing_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "cluster.key"
    key = write_cluster_key(path, parents=False)
    with pytest.raises(ClusterKeyError) as caught:
        write_cluster_key(path, parents=True)
    assert str(caught.value) == f"cluster key file {path} already exists; it is not replaced"
    assert read_cluster_key(path) == key
    link = tmp_path / "link.key"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(ClusterKeyError, match="already exists"):
        write_cluster_key(link, parents=False)
    assert not (tmp_path / "nowhere").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.key", "link.key"]


def test_directories_are_made_only_with_parents(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "mcrelay" / "cluster.key"
    with pytest.raises(ClusterKeyError, match=f"directory {path.parent} does not exist"):
        write_cluster_key(path, parents=False)
    assert not (tmp_path / "etc").exists()
    key = write_cluster_key(path, parents=True)
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_cluster_key(path) == key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o620, 0o602, 0o610, 0o601, 0o644])
def test_a_key_group_or_others_may_access_is_refused(tmp_path: Path, mode: int) -> None:
    path = write_key_file(tmp_path / "cluster.key", cluster_key_text(bytes(32)), mode)
    with pytest.raises(ClusterKeyError) as caught:
        read_cluster_key(path)
    assert str(caught.value) == (
        f"cluster key file {path} has mode {mode:04o}; it must not be accessible to group or "
        f"others: chmod 600 {path}"
    )
    assert stat.S_IMODE(path.stat().st_mode) == mode  # never fixed behind the operator's back


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_key_private_to_its_owner_is_read(tmp_path: Path, mode: int) -> None:
    key = bytes(range(32))
    path = write_key_file(tmp_path / "cluster.key", b"  " + cluster_key_text(key) + b"\n", mode)
    assert read_cluster_key(path) == key


def test_a_key_another_user_owns_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_key_file(tmp_path / "cluster.key", cluster_key_text(bytes(32)))
    ours = os.geteuid()
    if ours == 0:
        os.chown(path, 65534, 65534)
        owner = 65534
    else:
        monkeypatch.setattr(os, "geteuid", lambda: ours + 1)
        owner = ours
    with pytest.raises(ClusterKeyError, match=f"{path} belongs to uid {owner}, not to this user"):
        read_cluster_key(path)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "the file is empty"),
        (b"\n \n", "the file is empty"),
        (b"not base64 at all!\n", "one line of base64"),
        (cluster_key_text(bytes(32)) * 2, "one line of base64"),
        (b"\xff\xfe" * 22 + b"\n", "one line of base64"),
        (base64.b64encode(bytes(16)) + b"\n", "holds 16 bytes of base64, a cluster key is 32"),
        (base64.b64encode(bytes(33)) + b"\n", "holds 33 bytes"),
        (base64.b64encode(bytes(32))[:-2] + b"B=\n", "not written the one standard way"),
    ],
)
def test_a_file_that_holds_no_key_is_refused_without_quoting_it(
    tmp_path: Path, data: bytes, fragment: str
) -> None:
    path = write_key_file(tmp_path / "cluster.key", data)
    with pytest.raises(ClusterKeyError) as caught:
        read_cluster_key(path)
    message = str(caught.value)
    assert message.startswith(f"cluster key file {path}: not a cluster key")
    assert fragment in message
    assert "AAAA" not in message


def test_what_is_not_a_regular_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ClusterKeyError, match="No such file or directory"):
        read_cluster_key(tmp_path / "missing.key")
    with pytest.raises(ClusterKeyError, match="Is a directory"):
        read_cluster_key(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ClusterKeyError, match="not a regular file"):
        read_cluster_key(fifo)
    target = write_key_file(tmp_path / "cluster.key", cluster_key_text(bytes(32)))
    link = tmp_path / "link.key"
    link.symlink_to(target)
    with pytest.raises(ClusterKeyError, match="is a symbolic link; refusing to follow it"):
        read_cluster_key(link)
    big = write_key_file(tmp_path / "big.key", b"A" * 2000)
    with pytest.raises(ClusterKeyError, match="too large"):
        read_cluster_key(big)


def test_the_fingerprint_is_the_start_of_the_keys_sha256() -> None:
    key = bytes(range(32))
    assert cluster_key_fingerprint(key) == hashlib.sha256(key).hexdigest()[:16]
    assert cluster_key_fingerprint(key) != cluster_key_fingerprint(bytes(32))


@given(st.binary(min_size=32, max_size=32))
def test_every_key_round_trips_through_its_text(key: bytes) -> None:
    assert parse_cluster_key_text(cluster_key_text(key)) == key


@given(st.binary(max_size=80))
def test_any_bytes_are_a_key_or_a_value_error(data: bytes) -> None:
    try:
        key = parse_cluster_key_text(data)
    except ValueError as exc:
        error = str(exc)
    else:
        assert cluster_key_text(key) == data.strip() + b"\n"
        return
    assert error.startswith("not a cluster key")


def nats_files(tmp_path: Path) -> dict[str, Path]:
    """A .creds file, an nkey seed file and a CA file, as an operator gives them."""
    files = {"credentials": tmp_path / "relay.creds", "nkey_seed": tmp_path / "relay.nk"}
    for path in files.values():
        path.write_text("-----BEGIN NATS USER JWT-----\n...\n")
        path.chmod(0o600)
    files["ca"] = tmp_path / "ca.pem"
    files["ca"].write_text("-----BEGIN CERTIFICATE-----\n...\n")
    return files


def check(files: dict[str, Path], *, any_owner: bool = False) -> None:
    check_bus_files(files["credentials"], files["nkey_seed"], files["ca"], any_owner=any_owner)


def test_the_nats_files_given_are_looked_at_before_nats_py_reads_them(tmp_path: Path) -> None:
    """nats-py read them in its thread: a missing one was a warning naming no file,
    retried forever; a FIFO hung the thread (found by review)."""
    files = nats_files(tmp_path)
    check(files)
    check_bus_files(None, None, None)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for name in files:
        for bad, why in [
            (tmp_path / "missing", "No such file"),
            (fifo, "not a regular file"),
            (tmp_path, "Is a directory"),
        ]:
            with pytest.raises(ClusterKeyError) as caught:
                check(files | {name: bad})
            assert f"file {bad}" in str(caught.value)
            assert why in str(caught.value)
        empty = tmp_path / f"empty-{name}"
        empty.write_bytes(b"\n")
        empty.chmod(0o600)
        with pytest.raises(ClusterKeyError, match="is empty"):
            check(files | {name: empty})
    files["nkey_seed"].chmod(0o644)  # a secret
    with pytest.raises(ClusterKeyError, match="chmod 600"):
        check(files)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives a file away")
def test_config_check_looks_at_files_of_another_owner(tmp_path: Path) -> None:
    """Run by root for the daemon's user, config check once refused that user's files."""
    files = nats_files(tmp_path)
    os.chown(files["nkey_seed"], 1234, 1234)
    key = write_key_file(tmp_path / "federation.key", cluster_key_text(bytes(32)))
    os.chown(key, 1234, 1234)
    with pytest.raises(ClusterKeyError, match="belongs to uid 1234"):
        check(files)
    with pytest.raises(ClusterKeyError, match="belongs to uid 1234"):
        read_cluster_key(key)
    check(files, any_owner=True)
    assert read_cluster_key(key, any_owner=True) == bytes(32)
