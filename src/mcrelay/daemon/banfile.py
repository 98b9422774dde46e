"""The relay's bans on disk, so that a restart (a crash, the watchdog, an upgrade) lifts
none of them.

The bans file (``bans-PORT`` in the state directory, beside the keys: each relay of a
machine has its own, where two sharing a state directory overwrote each other's,
found by review) is read at start as the key files are: a private file (mode 0600,
ours, no symbolic link, bounded); the bans that ended meanwhile are dropped. A file
that cannot be used stops the start (exit 2): starting without it would lift every ban
in silence. A port's file is written at its first start, empty. It is written again,
whole and atomically, each time the bans change (a ban added, replaced or lifted; not
when one ends), and when the wall clock moved against the monotonic one while bans are
in force (the file holds Unix ends), by one task, in a thread, one write at a time (a
write abandoned at stop still ends before the last one starts: the older one renamed
last, found by review). A write that fails is logged (once a minute) and counted
(``ban_writes_failed``) and tried again while a restart would find other bans in force
than now (none in force, and none in the file: nothing to lose); the bans held in
memory apply meanwhile. The last write, at stop, is always said when it fails and a
restart would find other bans in force.

An operator's ban or lift (``POST``/``DELETE /v1/bans``, a kick that bans) is answered
once the write that holds it has ended (:meth:`BanFile.wait_saved`, at most
:data:`SAVE_TIMEOUT_S`): it was answered before the file was written, and a crash then
lost bans acknowledged, and brought lifted ones back (found by review). The changes made
while one write runs share the next: a burst of a thousand bans is two writes, not a
thousand.
"""

import logging
import math
import os
import threading
import time
from functools import partial
from pathlib import Path

import trio

from mcrelay.core.bans import MAX_BANS_FILE_BYTES, BanList, SavedBan, parse_bans, serialize_bans
from mcrelay.files import FileError, load_private_file, replace_private_file
from mcrelay.logs import once_a_minute

log = logging.getLogger(__name__)

BANS_FILE_PREFIX = "bans-"
WHAT = "bans file"
BAN_WRITE_RETRY_S = 10.0
"""How long after a failed write the file is written again (the bans changed or not)."""
LAST_WRITE_TIMEOUT_S = 2.0
"""At stop, how long the last write of bans changed just before may take."""
SAVE_TIMEOUT_S = 2.0
"""How long an operator's ban or lift waits for the write that holds it; past this (or
when the write fails) the API answers ``"persisted": false``."""
CLOCK_CHECK_S = 60.0
"""How often the wall clock is compared with the monotonic one, while bans are held."""
CLOCK_STEP_S = 1.0
"""A wall clock moved by more than this since the last write is written again: the file
holds Unix ends, and one set right (behind at boot, say) left ends already past in it,
which the next restart dropped (found by review)."""


class BanFileError(Exception):
    """The bans file cannot be used at start; the message names it and says what to do."""


def bans_file(state_directory: Path, port: int) -> Path:
    """The bans file of the relay of UDP ``port`` (two relays of a machine: two ports)."""
    return state_directory / f"{BANS_FILE_PREFIX}{port}"


def other_ports_files(path: Path) -> list[Path]:
    """The bans files of other ports beside ``path``, to name when it is not there (a
    relay moved to another port starts with none of its bans; that was said nowhere:
    found by review)."""
    try:
        return sorted(
            other
            for other in path.parent.glob(f"{BANS_FILE_PREFIX}*")
            if other.name[len(BANS_FILE_PREFIX) :].isdigit()
        )
    except OSError:  # the directory, not there yet or not readable: the start says
        return []


def moved_warning(path: Path, others: list[Path]) -> str:
    names = ", ".join(other.name for other in others)
    return (
        f"no bans file {path.name} for this port, but {names} beside it: if this relay "
        f"took the place of that port's, stop it and rename the file to {path.name}"
    )


def read_bans_file(path: Path, *, any_owner: bool = False) -> list[SavedBan]:
    """The bans ``path`` holds (none when there is no file), as the daemon takes them at
    start; ``BanFileError`` when it would refuse them. ``any_owner``: ``config check``
    run as root for the daemon."""
    try:
        saved = load_private_file(
            path, what=WHAT, limit=MAX_BANS_FILE_BYTES, parse=parse_bans, any_owner=any_owner
        )
    except FileError as exc:
        raise BanFileError(
            f"{exc}; the relay does not start without its bans: fix the file, or remove "
            "it to lift every ban"
        ) from None
    return [] if saved is None else saved


class BanFile:
    """A relay's :class:`BanList`, kept in its bans file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bans = BanList(on_change=self._changed)
        self.write_failures = 0
        self._changes = 0
        self._written = 0
        """The changes the file holds: it is behind while fewer than ``_changes``."""
        self._failing = False
        self._pausing = False
        """A write failed: the next one is BAN_WRITE_RETRY_S away."""
        self._wake = trio.Event()
        self._write_ended = trio.Event()
        """Set, and replaced, as each write ends, done or failed: what waiters wait for."""
        self._failure_lines = once_a_minute()
        self._one_write = threading.Lock()
        """Held by the thread writing: writes end in the order they began."""
        self._written_offset: float | None = None
        """The wall clock less the monotonic one at the last write."""
        self._first = False
        """No file yet: one, empty, is written at the start of :meth:`run`."""
        self._written_until = -math.inf
        """When the last of the bans the file holds ends (monotonic; none: -inf)."""

    @classmethod
    async def open(cls, path: Path) -> "BanFile":
        """The bans kept in ``path``, those that ended dropped; ``BanFileError``."""
        saved = await trio.to_thread.run_sync(read_bans_file, path)
        ban_file = cls(path)
        # Written at once, empty: a relay of this port that never banned is then not taken
        # for one moved from another port at its next start (found by review).
        ban_file._first = not await trio.to_thread.run_sync(os.path.lexists, path)
        if ban_file._first and (others := await trio.to_thread.run_sync(other_ports_files, path)):
            log.warning("%s", moved_warning(path, others))
        now = trio.current_time()
        taken = ban_file.bans.restore(saved, now, time.time())
        ban_file._written_until = max(
            (ban.until for ban in ban_file.bans.active(now)), default=-math.inf
        )
        if saved:
            log.info(
                "bans file %s: %d bans in force, %d ended meanwhile",
                path,
                taken,
                len(saved) - taken,
            )
        return ban_file

    def _changed(self) -> None:
        self._changes += 1
        self._wake.set()

    @property
    def behind(self) -> bool:
        """The file does not hold the latest bans yet (being written, or failing)."""
        return self._written < self._changes

    async def wait_saved(self, timeout_s: float = SAVE_TIMEOUT_S) -> bool:
        """Whether the file holds the bans as they are now, once the write that takes
        them has ended (within ``timeout_s``); False when it failed, or the writes are
        failing (the next is BAN_WRITE_RETRY_S away): the bans apply, but a restart
        would not find them so."""
        changes = self._changes
        with trio.move_on_after(timeout_s):
            while self._written < changes:
                if self._pausing:
                    return False
                await self._write_ended.wait()
            return True
        return False

    def _at_risk(self) -> bool:
        """A restart would find other bans in force than now: the file is behind, and a
        ban is in force now or one it holds still is (a lift unwritten). A file behind
        on bans all ended, or on none (never written), loses nothing: it was retried
        and said for ever (found by review)."""
        now = trio.current_time()
        return self.behind and (bool(self.bans.active(now)) or self._written_until > now)

    def _clock_moved(self) -> bool:
        """The wall clock moved (by more than CLOCK_STEP_S) since the last write, and the
        file holds bans in force, whose Unix ends it then tells wrong."""
        now = trio.current_time()
        return (
            self._written_offset is not None
            and abs(time.time() - now - self._written_offset) > CLOCK_STEP_S
            and bool(self.bans.active(now))
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write the file whenever the bans changed, or the wall clock moved; at stop,
        once more if either happened since (within :data:`LAST_WRITE_TIMEOUT_S`)."""
        task_status.started()
        try:
            if self._first:
                await self._write_first()
            while True:
                with trio.move_on_after(CLOCK_CHECK_S):
                    await self._wake.wait()
                if not self._wake.is_set() and not self._clock_moved():
                    continue
                self._wake = trio.Event()
                if not await self._write():
                    self._pausing = True
                    await trio.sleep(BAN_WRITE_RETRY_S)
                    self._pausing = False
                    if self._at_risk() or self._clock_moved():
                        self._wake.set()
        finally:
            if self._at_risk() or self._clock_moved():
                with trio.move_on_after(LAST_WRITE_TIMEOUT_S) as last:
                    last.shield = True
                    await self._write(last=True)
                # Failed, or not done in time: said, whatever was said before (a clock's
                # rewrite too: found by review).
                if self._at_risk() or self._clock_moved():
                    log.error(
                        "bans file %s does not hold the latest bans (%d in force now): a "
                        "restart will find the list it holds",
                        self.path,
                        len(self.bans.active(trio.current_time())),
                    )

    async def _write_first(self) -> None:
        """The empty file of a port's first start: tried once, and said once if it fails
        (a state directory the daemon may not write, say), as a warning, not counted: no
        ban is at risk yet, and the first ban's write says what it must (it was counted
        and retried, an error each minute for ever: found by review)."""
        now, wall_now = trio.current_time(), time.time()
        data = serialize_bans([], now, wall_now)
        try:
            await trio.to_thread.run_sync(self._write_in_turn, data, abandon_on_cancel=True)
        except Exception as exc:
            log.warning("%s; a ban made later may not outlive a restart", self._reason(exc))

    async def _write(self, *, last: bool = False) -> bool:
        changes = self._changes
        now, wall_now = trio.current_time(), time.time()
        written = self.bans.active(now)
        data = serialize_bans(written, now, wall_now)
        write = partial(self._write_in_turn, data)
        try:
            await trio.to_thread.run_sync(write, abandon_on_cancel=True)
        except Exception as exc:  # a file error, or a bug: the relay goes on either way
            self._ended()
            self._failing = True
            self.write_failures += 1
            held = self._failure_lines.take(trio.current_time())
            if held is not None and not last:
                more = f" ({held} more failed writes since the last line)" if held else ""
                log.error(
                    "%s; the bans apply until the relay stops, but a restart would not "
                    "keep the latest (tried again every %g s)%s",
                    self._reason(exc),
                    BAN_WRITE_RETRY_S,
                    more,
                )
            return False
        self._written = changes
        self._ended()
        self._written_offset = wall_now - now
        self._written_until = max((ban.until for ban in written), default=-math.inf)
        if self._failing:
            self._failing = False
            log.info("bans file %s written again", self.path)
            # The next failure is news: said at once, not held behind this line's minute
            # (it left 'written again' as the last word: found by review).
            self._failure_lines = once_a_minute()
        return True

    def _ended(self) -> None:
        self._write_ended.set()
        self._write_ended = trio.Event()

    def _reason(self, exc: Exception) -> object:
        """What a failed write says: the file error's own words, else the file and the
        exception (a bug)."""
        return exc if isinstance(exc, FileError) else f"bans file {self.path}: {exc!r}"

    def _write_in_turn(self, data: bytes) -> None:
        with self._one_write:
            replace_private_file(self.path, data, what=WHAT)
