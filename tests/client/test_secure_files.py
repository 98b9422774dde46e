"""The secure client's files: the known-relays file and the identity key."""

import concurrent.futures
import errno
import fcntl
import os
import re
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.client.secure_files import (
    hold_identity,
    load_known_relays,
    load_or_create_identity,
    parse_known_relays,
    remember_relay,
)
from mcrelay.files import FileError
from mcrelay.protocol.secure.keys import KeyPair, encode_key

KEY = KeyPair.from_private(bytes([3] * 32)).public
OTHER = KeyPair.from_private(bytes([4] * 32)).public


@given(st.text(max_size=300))
def test_any_text_is_relays_or_a_value_error_naming_its_line(text: str) -> None:
    try:
        known = parse_known_relays(text)
    except ValueError as exc:
        message = str(exc)
    else:
        assert all(len(key) == 32 for key in known.values())
        return
    assert message.startswith("line ")


def test_a_port_written_with_too_many_digits_is_said_so() -> None:
    """It was said to be out of 0 to 65535 (found by review)."""
    text = f"# pins\n127.0.0.1:017301 {encode_key(KEY)}\n"
    says = r"^line 2: '127.0.0.1:017301': a port has 5 digits at most, not 6 \(write 17301\)$"
    with pytest.raises(ValueError, match=says):
        parse_known_relays(text)


def test_remembering_adds_lines_and_keeps_the_file_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "known_relays"
    assert remember_relay(path, "127.0.0.1:5007", KEY) is None
    assert remember_relay(path, "[::1]:5007", KEY) is None
    assert remember_relay(path, "[::1]:5007", KEY) is None
    assert load_known_relays(path) == {"127.0.0.1:5007": KEY, "[::1]:5007": KEY}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert f"127.0.0.1:5007 {encode_key(KEY)}\n" in path.read_text()


def test_remembering_keeps_the_files_lines_and_its_link(tmp_path: Path) -> None:
    """The file was rewritten from the relays it listed: comments lost, a link (into a
    dotfiles checkout, say) replaced by a file (found by review)."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir(mode=0o700)
    target = dotfiles / "known_relays"
    target.write_text(f"# the office relay\n127.0.0.1:5007 {encode_key(KEY)}")
    target.chmod(0o600)
    path = tmp_path / "state" / "known_relays"
    path.parent.mkdir(mode=0o700)
    path.symlink_to(target)
    assert remember_relay(path, "[::1]:5007", OTHER) is None
    assert path.is_symlink()
    assert target.read_text() == (
        f"# the office relay\n127.0.0.1:5007 {encode_key(KEY)}\n[::1]:5007 {encode_key(OTHER)}\n"
    )
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_through_a_link_and_through_its_file_writers_share_one_lock(tmp_path: Path) -> None:
    """Locked beside the link, two clients kept 61 of 120 relays (found by review)."""
    target = tmp_path / "dotfiles" / "known_relays"
    target.parent.mkdir(mode=0o700)
    link = tmp_path / "state" / "known_relays"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(target)
    relays = [f"127.0.0.{n}:5007" for n in range(1, 41)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        done = [
            pool.submit(remember_relay, link if n % 2 else target, relay, KEY)
            for n, relay in enumerate(relays)
        ]
        assert [future.result() for future in done] == [None] * len(relays)
    assert sorted(load_known_relays(target)) == sorted(relays)


def test_a_link_turned_while_the_lock_is_taken_loses_no_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was read through the link, where it led then, and written where it led
    before: the first file got the second's lines (found by review)."""
    first, second = tmp_path / "first", tmp_path / "second"
    line = f"127.0.0.1:5001 {encode_key(KEY)}\n"
    for file in (first, second):
        file.write_text(f"# {file.name}\n{line}")
        file.chmod(0o600)
    link = tmp_path / "state" / "known_relays"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(first)
    flock = fcntl.flock
    turned: list[bool] = []

    def turn_once(fd: int, operation: int) -> None:
        flock(fd, operation)
        if not turned:
            turned.append(True)
            link.unlink()
            link.symlink_to(second)

    monkeypatch.setattr(fcntl, "flock", turn_once)
    assert remember_relay(link, "[::1]:5007", OTHER) is None
    assert first.read_text() == f"# first\n{line}"
    assert second.read_text() == f"# second\n{line}[::1]:5007 {encode_key(OTHER)}\n"


def test_a_lock_held_elsewhere_is_waited_for_a_time_only(tmp_path: Path) -> None:
    """A client stopped while it held the lock held every other client's first use of
    a relay for good (found by review)."""
    path = tmp_path / "known_relays"
    assert remember_relay(path, "127.0.0.1:5001", KEY) is None
    fd = os.open(tmp_path / "known_relays.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(FileError, match=r"another process has held it for 0\.05 s"):
            remember_relay(path, "[::1]:5007", OTHER, lock_wait_s=0.05)
        assert load_known_relays(path) == {"127.0.0.1:5001": KEY}
    finally:
        os.close(fd)
    assert remember_relay(path, "[::1]:5007", OTHER, lock_wait_s=0.05) is None
    assert load_known_relays(path) == {"127.0.0.1:5001": KEY, "[::1]:5007": OTHER}


def test_a_relay_that_would_make_the_file_too_long_is_not_kept(tmp_path: Path) -> None:
    """The next read would refuse the whole file (found by review)."""
    path = tmp_path / "known_relays"
    path.write_text("#" * (1024 * 1024 - 10) + "\n")
    path.chmod(0o600)
    with pytest.raises(FileError, match="would be over 1048576 bytes"):
        remember_relay(path, "127.0.0.1:5007", KEY)
    assert load_known_relays(path) == {}


def test_a_dangling_link_makes_no_directory(tmp_path: Path) -> None:
    path = tmp_path / "known_relays"
    path.symlink_to(tmp_path / "nowhere" / "sub" / "known_relays")
    with pytest.raises(FileError, match="in no directory"):
        remember_relay(path, "127.0.0.1:5007", KEY)
    assert not (tmp_path / "nowhere").exists()


def test_a_key_already_remembered_is_never_replaced(tmp_path: Path) -> None:
    """Another client wrote it since this one read the file: that key stays, and the
    caller is told of it."""
    path = tmp_path / "known_relays"
    remember_relay(path, "127.0.0.1:5007", KEY)
    assert remember_relay(path, "127.0.0.1:5007", OTHER) == KEY
    assert load_known_relays(path) == {"127.0.0.1:5007": KEY}


def test_comments_and_blank_lines_are_skipped() -> None:
    text = f"# relays\n\n  127.0.0.1:5007   {encode_key(KEY)}  \n"
    assert parse_known_relays(text) == {"127.0.0.1:5007": KEY}


def test_a_file_others_may_change_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "known_relays"
    path.write_text(f"127.0.0.1:5007 {encode_key(KEY)}\n")
    path.chmod(0o666)
    with pytest.raises(FileError, match="group or others may change it"):
        load_known_relays(path)


def test_a_file_in_a_directory_others_may_change_is_refused(tmp_path: Path) -> None:
    """Its mode was checked, not its directories': another user could swap in a list of
    their own (left from a review)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    path = shared / "known_relays"
    path.write_text(f"127.0.0.1:5007 {encode_key(KEY)}\n")
    path.chmod(0o600)
    with pytest.raises(FileError, match="shared"):
        load_known_relays(path)
    with pytest.raises(FileError, match="shared"):
        remember_relay(path, "[::1]:5007", KEY)
    shared.chmod(0o1777)  # sticky, as /tmp: only the file's owner may replace it
    assert load_known_relays(path) == {"127.0.0.1:5007": KEY}


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a link to another user takes root")
def test_another_users_link_in_a_sticky_directory_is_not_followed(tmp_path: Path) -> None:
    """Only where the link led was checked: another user's link in /tmp, turned at will,
    lost a client's pins (trust on first use again), and had it write the file and its
    lock wherever it led (found by review)."""
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    target = mine / "known_relays"
    target.write_text(f"127.0.0.1:5007 {encode_key(KEY)}\n")
    target.chmod(0o600)
    public = tmp_path / "pub"
    public.mkdir()
    public.chmod(0o1777)
    link = public / "known_relays"
    link.symlink_to(target)
    os.lchown(link, 61234, 61234)
    with pytest.raises(FileError, match=f"goes through the link {link}, which belongs to uid"):
        load_known_relays(link)
    with pytest.raises(FileError, match=f"goes through the link {link}, which belongs to uid"):
        remember_relay(link, "[::1]:5007", OTHER)
    assert sorted(p.name for p in mine.iterdir()) == ["known_relays"]
    os.lchown(link, os.geteuid(), os.getegid())
    assert remember_relay(link, "[::1]:5007", OTHER) is None
    assert load_known_relays(link) == {"127.0.0.1:5007": KEY, "[::1]:5007": OTHER}


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user takes root")
def test_another_users_lock_in_a_shared_directory_is_refused(tmp_path: Path) -> None:
    """Another user made known_relays.lock in /tmp and held it: every run said 'not
    remembered' and trusted on first use again (found by review). Refused at start."""
    public = tmp_path / "pub"
    public.mkdir()
    public.chmod(0o1777)
    path = public / "known_relays"
    assert remember_relay(path, "127.0.0.1:5007", KEY) is None
    lock = public / "known_relays.lock"
    os.chown(lock, 61234, 61234)
    refused = (
        f"cannot lock known-relays file {path}: {lock} belongs to uid 61234, in a directory "
        "others may change (mode 1777), who could hold it for good: keep the file in a "
        "directory of your own (--known-relays)"
    )
    with pytest.raises(FileError) as caught:
        load_known_relays(path)
    assert str(caught.value) == refused
    with pytest.raises(FileError) as caught:
        remember_relay(path, "[::1]:5007", OTHER)
    assert str(caught.value) == refused
    public.chmod(0o755)  # where they cannot make it: theirs only by root's hand
    assert remember_relay(path, "[::1]:5007", OTHER) is None


def test_a_lock_there_is_taken_on_a_read_only_file_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lock was opened to write, which a read-only file system refuses even for a
    lock already there; flock needs no more than reading (found by review)."""
    path = tmp_path / "known_relays"
    assert remember_relay(path, "127.0.0.1:5007", KEY) is None
    real_open = os.open

    def read_only(file: str | Path, flags: int, mode: int = 0o777) -> int:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
        return real_open(file, flags, mode)

    monkeypatch.setattr(os, "open", read_only)
    assert remember_relay(path, "127.0.0.1:5007", OTHER) == KEY
    with pytest.raises(FileError, match=r"cannot create known-relays file .*: Read-only"):
        remember_relay(path, "[::1]:5007", OTHER)


def test_a_lock_that_is_no_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "known_relays"
    (tmp_path / "known_relays.lock").mkdir()
    with pytest.raises(FileError, match=r"known_relays\.lock is not a regular file$"):
        remember_relay(path, "127.0.0.1:5007", KEY)


def test_the_identity_is_made_once_then_read(tmp_path: Path) -> None:
    path = tmp_path / "identity-key"
    made, created = load_or_create_identity(path)
    again, created_again = load_or_create_identity(path)
    assert created
    assert not created_again
    assert again == made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.chmod(0o644)
    with pytest.raises(FileError, match="chmod 600"):
        load_or_create_identity(path)


KNOWN = KeyPair.from_private(bytes([3] * 32)).public
OTHER = KeyPair.from_private(bytes([4] * 32)).public


def test_a_known_relay_written_otherwise_is_still_found(tmp_path: Path) -> None:
    # Found in review: the lines were kept under their text, and the client looks up
    # the address as it writes it: a pin written otherwise protected nothing.
    path = tmp_path / "known_relays"
    path.write_text(
        f"127.0.0.1:05007 {encode_key(KNOWN)}\n[::FFFF:7f00:1]:5007 {encode_key(KNOWN)}\n"
    )
    path.chmod(0o600)
    known = load_known_relays(path)
    assert known == {"127.0.0.1:5007": KNOWN, "[::ffff:7f00:1]:5007": KNOWN}


def test_a_relay_listed_twice_with_different_keys_is_refused() -> None:
    text = f"127.0.0.1:5007 {encode_key(KNOWN)}\n127.0.0.1:05007 {encode_key(OTHER)}\n"
    with pytest.raises(ValueError, match=re.escape("line 2: 127.0.0.1:5007 is also on line 1")):
        parse_known_relays(text)
    same = f"127.0.0.1:5007 {encode_key(KNOWN)}\n127.0.0.1:5007 {encode_key(KNOWN)}\n"
    assert parse_known_relays(same) == {"127.0.0.1:5007": KNOWN}


def test_the_identity_lock_refuses_a_fifo_or_a_link_swapped_in(tmp_path: Path) -> None:
    # Found in review: the lock opened the path again, following a link and waiting
    # on a FIFO swapped in after the key was read (the client hung).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(FileError, match="not a regular file"), hold_identity(fifo):
        pass
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FileError, match="cannot open"), hold_identity(link):
        pass


def test_two_clients_remembering_two_relays_at_once_keep_both(tmp_path: Path) -> None:
    # Found in review: read, change, rewrite without a lock: one entry could be lost.
    path = tmp_path / "known_relays"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for n in range(40):
            pool.submit(remember_relay, path, f"127.0.0.1:{5000 + n}", KNOWN)
    assert len(load_known_relays(path)) == 40


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    """Python's codec message, 'can't decode byte 0xff in position 1' (found by review)."""
    path = tmp_path / "known_relays"
    path.write_bytes(f"127.0.0.1:5007 {encode_key(KEY)}\n#\xff\n".encode("latin-1"))
    path.chmod(0o600)
    with pytest.raises(FileError, match=r"known_relays: line 2: not UTF-8 text$"):
        load_known_relays(path)
