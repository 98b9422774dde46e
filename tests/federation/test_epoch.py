"""The relay's epoch: its start, and always after its last run's, whatever the clock."""

from pathlib import Path

import pytest

from mcrelay.federation.epoch import EpochFileError, epoch_file, next_epoch


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
