"""This relay's epoch in its federation: its start, and always after its last run's.

The others refuse envelopes of an epoch older than the newest they heard from a relay
name (a replay of a past run). The epoch is the time of the start in ns, but a clock
set back (a restored VM, a fast clock corrected) would then shut a restarted relay out:
so the last epoch is kept in the state directory, and a start takes one past it.
"""

from pathlib import Path

from mcrelay.files import FileError, load_private_file, replace_private_file

WHAT = "federation epoch file"
MAX_EPOCH = 2**64 - 1


class EpochFileError(ValueError):
    """The epoch file cannot be read or written (a setting to fix, as a key file is)."""


def epoch_file(state_directory: Path, relay: str) -> Path:
    return state_directory / f"federation-{relay}.epoch"


def next_epoch(path: Path, now_ns: int) -> int:
    """``now_ns``, or one past the epoch ``path`` holds if that is later; written back."""
    try:
        last = load_private_file(path, what=WHAT, limit=64, parse=_parse) or 0
        epoch = max(now_ns, last + 1)
        if epoch > MAX_EPOCH:
            raise EpochFileError(f"{WHAT} {path}: the epoch is spent; remove the file")
        replace_private_file(path, f"{epoch}\n".encode(), what=WHAT)
    except FileError as exc:
        raise EpochFileError(str(exc)) from None
    return epoch


def _parse(data: bytes) -> int:
    text = data.decode("ascii", errors="replace").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 20):
        raise ValueError("not an epoch (a decimal number of ns); remove the file")
    return int(text)
