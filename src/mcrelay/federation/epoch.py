"""This relay's epoch in its federation: its start, and always after its last run's.

The others refuse envelopes of an epoch older than the newest they heard from a relay
name (a replay of a past run). The epoch is the time of the start in ns, but a clock
set back (a restored VM, a fast clock corrected) would then shut a restarted relay out:
so the last epoch is kept in the state directory, and a start takes one past it.

Only that start needs the file written: a clock past the epoch kept (the usual start)
gives one the others take whether or not it is written, so a file that cannot be
written then (a full disk) is a warning, and the relay starts. It stopped the start
(exit 2, which the systemd unit does not restart on), for good while the disk stayed
full (found by review). What is lost is only the guard of the next start, should the
clock be set back meanwhile: the warning says so.
"""

import logging
from pathlib import Path

from mcrelay.files import FileError, load_private_file, replace_private_file

log = logging.getLogger(__name__)

WHAT = "federation epoch file"
MAX_EPOCH = 2**64 - 1


class EpochFileError(ValueError):
    """The epoch file cannot be read, or written when the clock is behind the epoch it
    holds (a setting to fix, as a key file is)."""


def epoch_file(state_directory: Path, relay: str) -> Path:
    return state_directory / f"federation-{relay}.epoch"


def next_epoch(path: Path, now_ns: int) -> int:
    """``now_ns``, or one past the epoch ``path`` holds if that is later; written back
    (a failed write is an error only in that second case)."""
    try:
        last = load_private_file(path, what=WHAT, limit=64, parse=_parse) or 0
    except FileError as exc:
        raise EpochFileError(str(exc)) from None
    epoch = max(now_ns, last + 1)
    if epoch > MAX_EPOCH:
        raise EpochFileError(f"{WHAT} {path}: the epoch is spent; remove the file")
    try:
        replace_private_file(path, f"{epoch}\n".encode(), what=WHAT)
    except FileError as exc:
        if epoch != now_ns:  # the clock is behind: only the file makes this epoch later
            raise EpochFileError(str(exc)) from None
        log.warning(
            "%s; starting with epoch %d, the clock's, past the one kept: a next start with "
            "the clock set back before it could be refused by the other relays, as a "
            "replay of this run",
            exc,
            epoch,
        )
    return epoch


def _parse(data: bytes) -> int:
    text = data.decode("ascii", errors="replace").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise ValueError("not an epoch (a decimal number of ns); remove the file")
    return int(text)
