"""mcrelay.files: private files written whole and never half, lists of trust only their owner changes."""

import os
import stat
import time
from pathlib import Path

import pytest

from mcrelay import files
from mcrelay.files import (
    FileError,
    load_private_file,
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


def test_a_private_file_others_could_replace_through_its_directory_is_refused(
    tmp_path: Path,
) -> None:
    """A state directory of mode 0777 was taken: anyone could swap the relay's key for one
    they made, and so know (found by review). Read or written, the same answer."""
    shared = tmp_path / "shared"
    shared.mkdir()
    replace_private_file(shared / "key", b"secret", what="key file")
    shared.chmod(0o777)
    refused = f"key file {shared / 'key'} is in {shared}, which group or others may change"
    with pytest.raises(FileError, match=refused):
        load_private_file(shared / "key", what="key file", limit=64, parse=bytes)
    with pytest.raises(FileError, match=refused):
        replace_private_file(shared / "key", b"other", what="key file")
    assert (shared / "key").read_bytes() == b"secret"
    shared.chmod(0o1777)  # sticky: only a file's owner may replace it
    assert load_private_file(shared / "key", what="key file", limit=64, parse=bytes) == b"secret"


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a link to another user takes root")
def test_another_users_link_in_a_sticky_directory_is_refused(tmp_path: Path) -> None:
    """Sticky stops others replacing a link they do not own, not its owner turning it: a
    link another user made in /tmp swapped the relay's state directory (found by
    review). Theirs is refused there, read or written, by root's ``config check`` too
    (on another user's behalf); ours, or theirs where they cannot write, is followed."""
    state = tmp_path / "state"
    replace_private_file(state / "key", b"secret", what="key file")
    public = tmp_path / "pub"
    public.mkdir()
    public.chmod(0o1777)
    link = public / "mc"
    link.symlink_to(state)
    os.lchown(link, 61234, 61234)
    refused = (
        f"key file {link / 'key'} goes through the link {link}, which belongs to uid 61234, "
        "in a directory others may change (mode 1777): they could turn it elsewhere; give a "
        "path that does not go through it"
    )
    with pytest.raises(FileError) as caught:
        load_private_file(link / "key", what="key file", limit=64, parse=bytes)
    assert str(caught.value) == refused
    with pytest.raises(FileError, match="goes through the link"):
        replace_private_file(link / "key", b"other", what="key file")
    with pytest.raises(FileError, match="goes through the link"):
        load_private_file(link / "key", what="key file", limit=64, parse=bytes, any_owner=True)
    public.chmod(0o755)  # their link, where they cannot turn it
    assert load_private_file(link / "key", what="key file", limit=64, parse=bytes) == b"secret"
    public.chmod(0o1777)
    os.lchown(link, 0, 0)
    assert load_private_file(link / "key", what="key file", limit=64, parse=bytes) == b"secret"


def test_what_a_writer_killed_mid_write_left_is_removed_by_the_next(tmp_path: Path) -> None:
    """A kill -9 between writing a new key beside its place and linking it left a whole
    private key there for good (found by review). One being written now is left alone."""
    stale = tmp_path / ".key.abc123.tmp"
    stale.write_bytes(b"a whole private key")
    old = time.time() - files.STALE_PARTIAL_S - 1
    os.utime(stale, (old, old))
    fresh = tmp_path / ".key.def456.tmp"
    fresh.write_bytes(b"another writer's, now")
    other = tmp_path / ".keys.abc123.tmp"  # another file's
    other.write_bytes(b"x")
    os.utime(other, (old, old))
    replace_private_file(tmp_path / "key", b"new", what="key file")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".key.def456.tmp",
        ".keys.abc123.tmp",
        "key",
    ]


def test_what_a_creator_killed_mid_write_left_is_removed_when_the_file_is_read(
    tmp_path: Path,
) -> None:
    """A key file is never written again once there, so the whole private key a creator
    killed before linking it left beside it stayed for good (found by review). Reading
    the file removes it once stale; config check, on another's behalf, changes nothing."""
    key = tmp_path / "key"
    replace_private_file(key, b"secret", what="key file")
    stale = tmp_path / ".key.abc123.tmp"
    stale.write_bytes(b"a whole private key")
    fresh = tmp_path / ".key.def456.tmp"
    fresh.write_bytes(b"another writer's, now")
    old = time.time() - files.STALE_PARTIAL_S - 1
    os.utime(stale, (old, old))
    load_private_file(key, what="key file", limit=64, parse=bytes, any_owner=True)
    assert stale.exists()
    assert load_private_file(key, what="key file", limit=64, parse=bytes) == b"secret"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".key.def456.tmp", "key"]


def test_a_new_private_file_at_a_directory_says_so(tmp_path: Path) -> None:
    """'keygen DIR' said 'already exists' (found by review)."""
    with pytest.raises(FileError, match=r"is a directory: give the path of a file in it$"):
        write_new_private_file(tmp_path, lambda: (None, b"x"), what="key file")


def test_an_absolute_path_is_checked_when_the_working_directory_is_gone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check asked os.getcwd() for an absolute path too: once the directory the daemon
    started in was removed, its next ban's write raised FileNotFoundError, which ended
    the relay (found by review)."""
    gone = tmp_path / "release"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    replace_private_file(tmp_path / "state" / "bans", b"x", what="bans file")
    assert load_private_file(tmp_path / "state" / "bans", what="bans file", limit=8, parse=bytes)


@pytest.mark.skipif(os.geteuid() != 0, reason="writes as root into another user's directory")
def test_root_writes_into_the_directory_of_the_daemons_user(tmp_path: Path) -> None:
    """'sudo mcrelay keygen --secure /var/lib/mcrelay/...' (systemd's StateDirectory, owned
    by the service's user) was refused (found by review); a mode others may write is not."""
    state = tmp_path / "mcrelay"
    state.mkdir(mode=0o700)
    os.chown(state, 61234, 61234)
    write_new_private_file(state / "new.key", lambda: (None, b"k"), what="key file")
    # Only keygen's: the daemon (or a client) run as root would refuse to read it back,
    # so it writes none there either (it started once, then never: found by review).
    with pytest.raises(FileError, match="which belongs to uid 61234"):
        replace_private_file(state / "bans-5007", b"b", what="bans file")
    state.chmod(0o777)
    with pytest.raises(FileError, match="which group or others may change"):
        write_new_private_file(state / "other.key", lambda: (None, b"k"), what="key file")
