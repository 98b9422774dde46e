"""The relay's epoch: its start, and always after its last run's, whatever the clock."""

import logging
from pathlib import Path

import pytest

from mcrelay.federation import epoch
from mcrelay.federation.epoch import EpochFileError, epoch_file, next_epoch
from mcrelay.files import FileError


def test_the_epoch_is_the_start_and_is_kept(tmp_path: Path) -> None:
    path = epoch_file(tmp_path / "state", "r1")
    assert next_epoch(path, 1000) == 1000
    assert path.read_text() == "1000\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert next_epoch(path, 5000) == 5000


def test_a_clock_set_back_still_gives_a_later_epoch(tmp_path: Path) -> None:
    path = epoch_file(tmp_path, "r1")
    next_epoch(path, 5000)
    assert next_epoch(path, 1000) == 5001
    assert next_epoch(path, 1000) == 5002


@pytest.mark.parametrize("text", ["", "soon", "-5", "1" * 25])
def test_a_broken_epoch_file_is_an_error_to_fix(tmp_path: Path, text: str) -> None:
    path = epoch_file(tmp_path, "r1")
    path.write_text(text)
    path.chmod(0o600)
    with pytest.raises(EpochFileError, match="remove the file"):
        next_epoch(path, 1000)


def full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    def write(path: Path, data: bytes, what: str) -> None:
        raise FileError(f"cannot create {what} {path}: No space left on device")

    monkeypatch.setattr(epoch, "replace_private_file", write)


def test_a_file_that_cannot_be_written_behind_the_clock_is_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk stopped a federated relay's start (exit 2, never restarted by the
    unit), though the clock's epoch needs no file (found by review)."""
    path = epoch_file(tmp_path, "r1")
    next_epoch(path, 5000)
    full_disk(monkeypatch)
    assert next_epoch(path, 9000) == 9000
    assert path.read_text() == "5000\n"
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(
        f"cannot create federation epoch file {path}: No space left on device; starting "
        "with epoch 9000"
    )


@pytest.mark.parametrize("now_ns", [1000, 5000])
def test_a_file_that_cannot_be_written_with_the_clock_behind_stops_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now_ns: int
) -> None:
    """Then only the file makes the epoch later than the last run's."""
    path = epoch_file(tmp_path, "r1")
    next_epoch(path, 5000)
    full_disk(monkeypatch)
    with pytest.raises(EpochFileError, match="No space left on device"):
        next_epoch(path, now_ns)
