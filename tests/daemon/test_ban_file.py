"""The bans file: read at start as the key files are (a bad one stops the start), and
written again whenever the bans change, so that a restart lifts none of them."""

import logging
import os
import stat
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import trio

from mcrelay.core.bans import BANS_FILE_HEADER, MAX_BANS_FILE_BYTES, SavedBan, parse_bans
from mcrelay.daemon import banfile
from mcrelay.daemon.banfile import BanFile, BanFileError, bans_file, read_bans_file
from mcrelay.files import FileError, replace_private_file
from support import WAIT_S, wait_until

HOUR_S = 3600.0
RETRY_S = 0.01


def write_bans(path: Path, *lines: str, mode: int = 0o600) -> Path:
    path.write_text("".join(f"{line}\n" for line in [BANS_FILE_HEADER, *lines]))
    path.chmod(mode)
    return path


def failing_writes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """The file's writes fail (a full disk) while the returned flag is true."""
    failing = [True]

    def write(path: Path, data: bytes, what: str) -> None:
        if failing[0]:
            raise FileError(f"cannot write {what} {path}: No space left on device")
        path.write_bytes(data)

    monkeypatch.setattr(banfile, "replace_private_file", write)
    return failing


def shifted_wall_clock(monkeypatch: pytest.MonkeyPatch, offset_s: float) -> list[float]:
    """The bans file's wall clock, the real one plus the returned list's one value."""
    offset = [offset_s]
    monkeypatch.setattr(banfile, "time", SimpleNamespace(time=lambda: time.time() + offset[0]))
    return offset


async def banned_and_written(ban_file: BanFile, path: Path) -> None:
    """10.0.0.7 banned for an hour, once the file holds it."""
    ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
    await wait_until(lambda: path.exists() and len(saved_in(path)) == 1)


def refused_writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every write refused (a directory the daemon may not write), each one's data kept;
    retries 10 ms apart, in real time (the writes run in threads)."""
    tries: list[bytes] = []

    def write(path: Path, data: bytes, what: str) -> None:
        tries.append(data)
        raise FileError(f"cannot create {what} {path}: Permission denied")

    monkeypatch.setattr(banfile, "replace_private_file", write)
    monkeypatch.setattr(banfile, "BAN_WRITE_RETRY_S", RETRY_S)
    return tries


def saved_in(path: Path) -> list[SavedBan]:
    return parse_bans(path.read_bytes())


async def test_bans_are_written_as_they_change_and_taken_back_at_start(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bans"
    ban_file = await BanFile.open(path)
    assert len(ban_file.bans) == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        ban_file.bans.ban(("10.0.0.8", 4000), HOUR_S, trio.current_time())
        await wait_until(lambda: path.exists() and len(saved_in(path)) == 2)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        ban_file.bans.lift(("10.0.0.8", 4000), trio.current_time())
        await wait_until(lambda: [s.target for s in saved_in(path)] == ["10.0.0.7"])
        nursery.cancel_scope.cancel()
    (held,) = ban_file.bans.active(trio.current_time())
    again = await BanFile.open(path)
    (ban,) = again.bans.active(trio.current_time())
    assert ban.target == "10.0.0.7"
    assert ban.until == pytest.approx(held.until, abs=0.01)
    assert 0 < ban.until - trio.current_time() <= HOUR_S


async def test_bans_that_ended_while_the_relay_was_down_are_dropped(tmp_path: Path) -> None:
    now = time.time()
    path = write_bans(
        tmp_path / "bans", f"10.0.0.1 {now - 1:.6f} 600", f"10.0.0.2 {now + 600:.6f} 600"
    )
    ban_file = await BanFile.open(path)
    assert [ban.id for ban in ban_file.bans.active(trio.current_time())] == ["10.0.0.2"]


async def test_a_ban_made_just_before_the_stop_is_written_at_the_stop(tmp_path: Path) -> None:
    path = tmp_path / "bans"
    ban_file = await BanFile.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        nursery.cancel_scope.cancel()  # before the writer woke
    assert [s.target for s in saved_in(path)] == ["10.0.0.7"]


async def test_a_ban_that_ends_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[bytes] = []
    monkeypatch.setattr(banfile, "replace_private_file", lambda _p, data, what: writes.append(data))
    monkeypatch.setattr(banfile, "CLOCK_CHECK_S", RETRY_S)  # real time: writes in threads
    ban_file = await BanFile.open(tmp_path / "bans")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", 0.05, trio.current_time())
        await wait_until(lambda: not ban_file.behind)
        written = len(writes)
        await wait_until(lambda: not ban_file.bans.active(trio.current_time()))
        await trio.sleep(50 * RETRY_S)  # 50 of the clock's checks
        nursery.cancel_scope.cancel()
    assert len(writes) == written


async def test_a_failed_write_is_counted_logged_once_a_minute_and_tried_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Real time (the writes are real, in threads: the mock clock would race past them).
    monkeypatch.setattr(banfile, "BAN_WRITE_RETRY_S", RETRY_S)
    caplog.set_level(logging.INFO, logger=banfile.__name__)
    blocker = tmp_path / "state"
    path = blocker / "bans"
    ban_file = await BanFile.open(path)
    blocker.write_text("a file where the state directory should be\n")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        await wait_until(lambda: ban_file.write_failures == 1)
        ban_file.bans.ban("10.0.0.8", HOUR_S, trio.current_time())
        await wait_until(lambda: ban_file.write_failures >= 3)
        # The bans apply all the same; one line said it, naming the file.
        assert len(ban_file.bans.active(trio.current_time())) == 2
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert f"cannot create bans file {path}" in errors[0].getMessage()
        assert "a restart would not keep the latest" in errors[0].getMessage()
        blocker.unlink()
        await wait_until(lambda: not ban_file.behind)
        assert {s.target for s in saved_in(path)} == {"10.0.0.7", "10.0.0.8"}
        nursery.cancel_scope.cancel()
    assert f"bans file {path} written again" in caplog.text


async def test_a_last_write_that_fails_at_the_stop_is_said_always(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write within a minute of the last line said nothing, and neither did the
    last one, at stop: the operator's last word was 'written again' (found by review)."""
    caplog.set_level(logging.INFO, logger=banfile.__name__)
    monkeypatch.setattr(banfile, "BAN_WRITE_RETRY_S", HOUR_S)
    failing_writes(monkeypatch)
    ban_file = await BanFile.open(tmp_path / "bans")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        await wait_until(lambda: ban_file.write_failures == 1)  # said: the first in a minute
        ban_file.bans.ban("10.0.0.8", HOUR_S, trio.current_time())
        nursery.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2
    assert errors[1] == (
        f"bans file {tmp_path / 'bans'} does not hold the latest bans (2 in force now): a "
        "restart will find the list it holds"
    )


async def test_a_write_abandoned_at_the_stop_ends_before_the_last_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write under way at stop was abandoned and the last one started beside it: the
    older, slower one renamed last and the file lost the latest ban (found by review)."""
    path = tmp_path / "bans"
    started, slow, first_done = threading.Event(), threading.Event(), threading.Event()

    def write(target: Path, data: bytes, what: str) -> None:
        if b"10.0.0.8" in data:
            replace_private_file(target, data, what=what)
            return
        started.set()  # the first: slow, as an fsync can be
        slow.wait(WAIT_S)
        replace_private_file(target, data, what=what)
        first_done.set()

    monkeypatch.setattr(banfile, "replace_private_file", write)
    ban_file = await BanFile.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        await wait_until(started.is_set)
        ban_file.bans.ban("10.0.0.8", HOUR_S, trio.current_time())
        threading.Timer(0.2, slow.set).start()  # once the last write waits its turn
        nursery.cancel_scope.cancel()
    await wait_until(first_done.is_set)
    assert [s.target for s in saved_in(path)] == ["10.0.0.7", "10.0.0.8"]


async def test_a_write_that_breaks_in_any_way_never_ends_the_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write's FileNotFoundError (the working directory removed) ended the relay: only
    FileError was caught (found by review)."""

    def write(path: Path, data: bytes, what: str) -> None:
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(banfile, "replace_private_file", write)
    monkeypatch.setattr(banfile, "BAN_WRITE_RETRY_S", HOUR_S)
    ban_file = await BanFile.open(tmp_path / "bans")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        await wait_until(lambda: ban_file.write_failures == 1)
        nursery.cancel_scope.cancel()
    assert ban_file.write_failures == 2  # and the last one, said


def test_each_relay_of_a_machine_has_its_own_bans_file(tmp_path: Path) -> None:
    """Two relays sharing a state directory overwrote each other's bans (found by
    review): the file is named by the relay's UDP port."""
    assert bans_file(tmp_path, 5007) == tmp_path / "bans-5007"
    assert bans_file(tmp_path, 5008) != bans_file(tmp_path, 5007)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "not a bans file"),
        (b"10.0.0.1 100 1\n", "not a bans file"),
        (f"{BANS_FILE_HEADER}\nnobody 100 1\n".encode(), "line 2: 'nobody' is no ban's id"),
        (b"x" * (MAX_BANS_FILE_BYTES + 1), f"is over {MAX_BANS_FILE_BYTES} bytes"),
    ],
)
def test_a_bans_file_that_is_not_one_refuses_the_start_saying_what_to_do(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    path = tmp_path / "bans"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(BanFileError) as caught:
        read_bans_file(path)
    message = str(caught.value)
    assert str(path) in message
    assert reason in message
    assert message.endswith("fix the file, or remove it to lift every ban")
    assert "\n" not in message


def test_a_bans_file_others_may_change_is_refused(tmp_path: Path) -> None:
    path = write_bans(tmp_path / "bans", "10.0.0.1 100 1", mode=0o644)
    with pytest.raises(BanFileError, match=f"has mode 0644.*chmod 600 {path}"):
        read_bans_file(path)


def test_a_bans_file_that_is_a_link_or_not_a_file_is_refused(tmp_path: Path) -> None:
    target = write_bans(tmp_path / "elsewhere")
    link = tmp_path / "bans"
    link.symlink_to(target)
    # It said "give the path of the file itself", of a file whose path no one gives.
    with pytest.raises(BanFileError, match=r"symbolic link.*put the file itself there"):
        read_bans_file(link)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(BanFileError, match="not a regular file"):
        read_bans_file(fifo)


def test_a_bans_file_of_another_user_is_refused_unless_any_owner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_bans(tmp_path / "bans", "10.0.0.1 100 1")
    monkeypatch.setattr(os, "geteuid", lambda: path.stat().st_uid + 1)
    with pytest.raises(BanFileError, match="belongs to uid") as refused:
        read_bans_file(path)
    # It said "a private key is its owner's ... make a new one" of a bans file (review).
    assert "key is" not in str(refused.value)
    assert "chown it if it is this user's" in str(refused.value)
    assert read_bans_file(path, any_owner=True) == [SavedBan("10.0.0.1", 100.0, 1.0)]


def test_no_bans_file_is_no_bans(tmp_path: Path) -> None:
    assert read_bans_file(tmp_path / "bans") == []


async def test_a_relay_moved_to_another_port_is_told_of_the_other_ports_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It started with no bans, in silence, with bans-OLDPORT beside (found by review)."""
    write_bans(bans_file(tmp_path, 5007), f"10.0.0.1 {time.time() + 600:.6f} 600")
    (tmp_path / "bans-notes").write_text("")
    ban_file = await BanFile.open(bans_file(tmp_path, 5008))
    assert len(ban_file.bans) == 0
    assert caplog.messages == [
        "no bans file bans-5008 for this port, but bans-5007 beside it: if this relay took "
        "the place of that port's, stop it and rename the file to bans-5008"
    ]


async def test_a_failure_after_a_success_is_said_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was held behind the minute of the line before: 'written again' stayed the last
    word while the file fell behind again (found by review)."""
    caplog.set_level(logging.INFO, logger=banfile.__name__)
    monkeypatch.setattr(banfile, "BAN_WRITE_RETRY_S", RETRY_S)
    failing = failing_writes(monkeypatch)
    ban_file = await BanFile.open(tmp_path / "bans")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        await wait_until(lambda: ban_file.write_failures == 1)
        failing[0] = False
        await wait_until(lambda: not ban_file.behind)
        failing[0] = True
        ban_file.bans.ban("10.0.0.8", HOUR_S, trio.current_time())
        await wait_until(lambda: ban_file.write_failures >= 2)
        failing[0] = False
        await wait_until(lambda: not ban_file.behind)
        nursery.cancel_scope.cancel()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2


async def test_a_wall_clock_set_right_writes_the_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Written only when the bans changed, the file kept the ends of a clock a day behind
    once it was set right, and the next restart dropped a ban with an hour left (found
    by review). A step of the wall clock is written again, at the next check or the stop."""
    offset = shifted_wall_clock(monkeypatch, -86_400.0)
    monkeypatch.setattr(banfile, "CLOCK_CHECK_S", 0.01)
    path = tmp_path / "bans"
    ban_file = await BanFile.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        await banned_and_written(ban_file, path)
        assert saved_in(path)[0].until_wall < time.time()  # as the clock behind says
        offset[0] = 0.0  # set right
        await wait_until(lambda: saved_in(path)[0].until_wall > time.time() + HOUR_S - 60)
        nursery.cancel_scope.cancel()


async def test_a_step_just_before_the_stop_is_written_at_the_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    offset = shifted_wall_clock(monkeypatch, -86_400.0)
    path = tmp_path / "bans"
    ban_file = await BanFile.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        await banned_and_written(ban_file, path)
        offset[0] = 0.0
        nursery.cancel_scope.cancel()
    assert saved_in(path)[0].until_wall > time.time() + HOUR_S - 60


async def test_a_relay_that_never_banned_is_not_taken_for_one_moved_at_its_next_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two relays sharing a state directory: the one that never banned was told at each
    start that the other's file might be its own (found by review). Its own, empty, is
    written at its first start."""
    write_bans(bans_file(tmp_path, 5007), f"10.0.0.1 {time.time() + 600:.6f} 600")
    for _ in range(2):
        ban_file = await BanFile.open(bans_file(tmp_path, 5008))
        async with trio.open_nursery() as nursery:
            await nursery.start(ban_file.run)
            await wait_until(lambda: bans_file(tmp_path, 5008).exists())
            nursery.cancel_scope.cancel()
    assert len(caplog.messages) == 1
    assert saved_in(bans_file(tmp_path, 5008)) == []


async def test_a_first_empty_file_that_cannot_be_written_is_said_once_not_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A state directory the daemon may not write: its first start's empty file was
    counted and retried, an error each minute for ever and one at each stop, with no
    ban at risk (found by review)."""
    tries = refused_writes(monkeypatch)
    monkeypatch.setattr(banfile, "CLOCK_CHECK_S", RETRY_S)
    ban_file = await BanFile.open(tmp_path / "bans")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        await wait_until(lambda: bool(tries))
        await trio.sleep(50 * RETRY_S)  # 50 retries' time: none comes
        nursery.cancel_scope.cancel()
    assert (len(tries), ban_file.write_failures) == (1, 0)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"cannot create bans file {tmp_path / 'bans'}: Permission denied; a ban made "
            "later may not outlive a restart",
        )
    ]


async def test_a_clocks_rewrite_that_fails_at_the_stop_is_said(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was silent: the failure line is held at stop, and the stop's own line asked
    only whether the bans had changed (found by review)."""
    offset = shifted_wall_clock(monkeypatch, 0.0)
    path = tmp_path / "bans"
    ban_file = await BanFile.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        await banned_and_written(ban_file, path)
        failing_writes(monkeypatch)
        offset[0] = 3600.0
        nursery.cancel_scope.cancel()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        f"bans file {path} does not hold the latest bans (1 in force now): a restart will "
        "find the list it holds"
    ]


async def test_a_file_behind_on_no_ban_in_force_is_not_retried_nor_said_at_stop(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No file could be written, a ban was made and lifted: every 10 s a write, each
    minute an error, and one at stop, though a restart lost nothing (found by review)."""
    tries = refused_writes(monkeypatch)
    ban_file = await BanFile.open(tmp_path / "bans")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        await wait_until(lambda: ban_file.write_failures >= 1)
        ban_file.bans.lift("10.0.0.7", trio.current_time())
        await wait_until(lambda: not ban_file._at_risk())
        tried = len(tries)
        await trio.sleep(50 * RETRY_S)  # 50 retries' time: none comes
        nursery.cancel_scope.cancel()
    assert len(tries) <= tried + 1  # one under way at most
    stops = [m for m in caplog.messages if "does not hold the latest bans" in m]
    assert stops == []


async def test_a_first_write_broken_by_a_bug_names_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write(path: Path, data: bytes, what: str) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(banfile, "replace_private_file", write)
    ban_file = await BanFile.open(tmp_path / "bans")
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        await wait_until(lambda: bool(caplog.messages))
        nursery.cancel_scope.cancel()
    assert caplog.messages == [
        f"bans file {tmp_path / 'bans'}: RuntimeError('boom'); a ban made later may not "
        "outlive a restart"
    ]
