"""mcrelay.files: private files written whole and never half, lists of trust only their owner changes."""

import os
import stat
from pathlib import Path

import pytest

from mcrelay import files
from mcrelay.files import (
    FileError,
    read_regular_file,
    replace_private_file,
    require_trusted_writers,
    write_new_private_file,
)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def contents_of(path: Path) -> files.FileContents:
    contents = read_regular_file(path, what="list", limit=1024)
    assert contents is not None
    return contents


def test_replace_private_file_writes_0600_in_a_0700_directory_and_leaves_nothing_else(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "list"
    previous = os.umask(0)
    try:
        replace_private_file(path, b"one\n", what="list")
        assert path.read_bytes() == b"one\n"
        path.chmod(0o644)
        replace_private_file(path, b"two\n", what="list")
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"two\n"
    assert mode_of(path) == 0o600
    assert mode_of(path.parent) == 0o700
    assert sorted(p.name for p in path.parent.iterdir()) == ["list"]


def test_replace_private_file_where_no_directory_can_be(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(FileError) as caught:
        replace_private_file(blocker / "list", b"x", what="list")
    assert str(caught.value) == (
        f"cannot create list {blocker / 'list'}: {blocker} is not a directory"
    )


def test_replace_private_file_over_a_directory_fails_and_leaves_no_partial_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "list").mkdir()
    with pytest.raises(FileError) as caught:
        replace_private_file(tmp_path / "list", b"x", what="list")
    assert str(caught.value).startswith(f"cannot write list {tmp_path / 'list'}: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list"]


def test_write_new_private_file_makes_nothing_when_the_path_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"old")
    made: list[int] = []

    def make() -> tuple[int, bytes]:
        made.append(1)
        return 1, b"new"

    with pytest.raises(FileError) as caught:
        write_new_private_file(path, make, what="key")
    assert str(caught.value) == f"key {path} already exists; it is not replaced"
    assert made == []
    assert path.read_bytes() == b"old"
    assert write_new_private_file(tmp_path / "other", make, what="key") == 1
    assert mode_of(tmp_path / "other") == 0o600


def test_the_owner_is_read_through_the_same_descriptor(tmp_path: Path) -> None:
    path = tmp_path / "list"
    path.write_text("x")
    assert contents_of(path).owner == os.geteuid()


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o444, 0o755])
def test_a_list_of_trust_only_its_owner_may_change_is_accepted(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "list"
    path.write_text("x")
    path.chmod(mode)
    require_trusted_writers(path, contents_of(path), "list")


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666, 0o620])
def test_a_list_of_trust_group_or_others_may_change_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "list"
    path.write_text("x")
    path.chmod(mode)
    with pytest.raises(FileError) as caught:
        require_trusted_writers(path, contents_of(path), "list")
    assert str(caught.value) == (
        f"list {path} has mode {mode:04o}; group or others may change it: chmod go-w {path}"
    )


def test_a_list_of_trust_someone_else_owns_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "list"
    path.write_text("x")
    contents = contents_of(path)
    ours = os.geteuid()
    if ours == 0:
        contents = files.FileContents(contents.data, contents.mode, 4242)
    else:
        monkeypatch.setattr(os, "geteuid", lambda: ours + 1)
    with pytest.raises(FileError, match=r"belongs to uid \d+, neither root nor this user"):
        require_trusted_writers(path, contents, "list")
