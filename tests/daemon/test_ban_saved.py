"""``BanFile.wait_saved``: an operator's ban is answered once the bans file holds it.

A ban was answered before the file was written, and a crash right after lost it, as it
brought a lifted one back (found by review). Real time throughout: the writes run in
threads, which the mock clock would race past.
"""

import threading
from pathlib import Path

import pytest
import trio
import trio.testing

from mcrelay.core.bans import parse_bans, serialize_bans
from mcrelay.daemon import banfile
from mcrelay.daemon.banfile import BanFile
from mcrelay.files import FileError, replace_private_file
from support import WAIT_S, wait_until

HOUR_S = 3600.0
SHORT_S = 0.05


def empty_file(tmp_path: Path) -> Path:
    """A bans file holding none (not a first start: no empty one is written first)."""
    path = tmp_path / "bans"
    path.write_bytes(serialize_bans([], 0.0, 0.0))
    path.chmod(0o600)
    return path


def held_in(path: Path) -> set[str]:
    return {str(each.target) for each in parse_bans(path.read_bytes())}


class GatedWrites:
    """The file's writes, each held until the gate opens (a slow fsync), and counted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.gate = threading.Event()
        self.started = 0
        self.done = 0
        monkeypatch.setattr(banfile, "replace_private_file", self.write)

    def write(self, path: Path, data: bytes, what: str) -> None:
        self.started += 1
        self.gate.wait(WAIT_S)
        replace_private_file(path, data, what=what)
        self.done += 1


async def test_a_wait_ends_once_the_write_holding_the_ban_has_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = empty_file(tmp_path)
    writes = GatedWrites(monkeypatch)
    ban_file = await BanFile.open(path)
    answers: list[bool] = []

    async def wait() -> None:
        answers.append(await ban_file.wait_saved(WAIT_S))

    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        nursery.start_soon(wait)
        await wait_until(lambda: writes.started == 1)
        await trio.testing.wait_all_tasks_blocked()  # the write runs: no answer meanwhile
        assert answers == []
        writes.gate.set()
        await wait_until(lambda: bool(answers))
        assert answers == [True]
        assert held_in(path) == {"10.0.0.7"}
        ban_file.bans.lift("10.0.0.7", trio.current_time())
        assert await ban_file.wait_saved(WAIT_S)
        assert held_in(path) == set()
        nursery.cancel_scope.cancel()


async def test_a_burst_of_bans_shares_a_few_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = empty_file(tmp_path)
    writes = GatedWrites(monkeypatch)
    ban_file = await BanFile.open(path)
    answers: list[bool] = []

    async def ban(n: int) -> None:
        ban_file.bans.ban(f"10.0.{n // 256}.{n % 256}", HOUR_S, trio.current_time())
        answers.append(await ban_file.wait_saved(WAIT_S))

    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        for n in range(1000):
            nursery.start_soon(ban, n)
        await wait_until(lambda: writes.started == 1)
        writes.gate.set()
        await wait_until(lambda: len(answers) == 1000)
        nursery.cancel_scope.cancel()
    assert all(answers)
    assert writes.done <= 2  # the first write, then one for all that came meanwhile
    assert len(held_in(path)) == 1000


async def test_a_write_that_fails_or_is_too_slow_is_answered_false(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = empty_file(tmp_path)
    failing = [True]

    def write(target: Path, data: bytes, what: str) -> None:
        if failing[0]:
            raise FileError(f"cannot write {what} {target}: No space left on device")
        replace_private_file(target, data, what=what)

    monkeypatch.setattr(banfile, "replace_private_file", write)
    monkeypatch.setattr(banfile, "BAN_WRITE_RETRY_S", HOUR_S)
    ban_file = await BanFile.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.7", HOUR_S, trio.current_time())
        with trio.fail_after(WAIT_S):
            assert not await ban_file.wait_saved(HOUR_S)  # the write failed
            # Writes failing, the next an hour away: the next ban is answered at once.
            ban_file.bans.ban("10.0.0.8", HOUR_S, trio.current_time())
            assert not await ban_file.wait_saved(HOUR_S)
        nursery.cancel_scope.cancel()
    assert held_in(path) == set()

    writes = GatedWrites(monkeypatch)  # a write that does not end in time
    ban_file = await BanFile.open(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(ban_file.run)
        ban_file.bans.ban("10.0.0.9", HOUR_S, trio.current_time())
        assert not await ban_file.wait_saved(SHORT_S)
        writes.gate.set()
        await wait_until(lambda: not ban_file.behind)
        nursery.cancel_scope.cancel()
