"""packaging/systemd/mcrelay.service: ``systemd-analyze verify`` has nothing to say about
it, and its sandbox keeps ``systemd-analyze security`` exposure at 2.0 or below.

These are static checks; test_systemd_container.py runs the unit under systemd, in a
booted container. ``verify`` wants ExecStart= to name an executable that exists, so each test
works on a copy that runs the ``mcrelay`` installed beside the interpreter running
the tests.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "packaging" / "systemd" / "mcrelay.service"
INSTALLED_MCRELAY = "/usr/local/bin/mcrelay"
MAX_EXPOSURE = 2.0
# `security --offline` and `verify --recursive-errors` appeared in systemd 250.
MIN_SYSTEMD_VERSION = 250
ANALYZE_TIMEOUT_S = 30
EXPOSURE_LINE = re.compile(r"Overall exposure level for (\S+): (\d+(?:\.\d+)?)")


@pytest.fixture(scope="module")
def analyze() -> str:
    """The systemd-analyze binary, or a skip saying why the unit cannot be checked."""
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not on PATH: cannot check the systemd unit")
    version = run_analyze(path, "--version").stdout
    match = re.match(r"systemd (\d+)", version)
    if match is None or int(match.group(1)) < MIN_SYSTEMD_VERSION:
        found = version.partition("\n")[0] or "no version"
        pytest.skip(
            f"systemd-analyze is too old ({found}): "
            f"security --offline needs systemd {MIN_SYSTEMD_VERSION} or later"
        )
    return path


@pytest.fixture
def unit_copy(tmp_path: Path) -> Path:
    """The unit, under its own name, with ExecStart= running the installed ``mcrelay``."""
    text = UNIT.read_text(encoding="utf-8")
    exec_start = f"ExecStart={INSTALLED_MCRELAY} "
    assert exec_start in text, f"the unit should run {INSTALLED_MCRELAY}"
    text = text.replace(exec_start, f"ExecStart={exec_path(installed_mcrelay())} ")
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    return copy


def installed_mcrelay() -> str:
    beside = Path(sys.executable).parent / "mcrelay"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("mcrelay")
    if found is None:
        pytest.skip("the mcrelay command is not installed, so ExecStart= has nothing to run")
    return found


def exec_path(path: str) -> str:
    """``path`` as the quoted first word of an Exec*= line (spaces, ``%`` specifiers)."""
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def run_analyze(analyze: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "SYSTEMD_LOG_LEVEL": "info",  # warnings show; a user's debug setting would not
        "SYSTEMD_LOG_COLOR": "0",
        "SYSTEMD_COLORS": "0",
        "SYSTEMD_PAGER": "cat",
    }
    return subprocess.run(
        [analyze, *args],
        capture_output=True,
        encoding="utf-8",
        errors="replace",
        env=env,
        timeout=ANALYZE_TIMEOUT_S,
        check=False,
    )


def verify(analyze: str, unit: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run ``verify``; also return the lines about ``unit`` (the host's other units, or a
    missing /run/systemd, may draw warnings of their own, which are not ours to fix)."""
    result = run_analyze(analyze, "verify", "--man=no", "--recursive-errors=no", str(unit))
    lines = (result.stdout + result.stderr).splitlines()
    return result, [line for line in lines if unit.name in line]


def test_verify_has_nothing_to_say_about_the_unit(analyze: str, unit_copy: Path) -> None:
    result, ours = verify(analyze, unit_copy)
    assert ours == []
    assert result.returncode == 0, result.stdout + result.stderr


def test_verify_names_the_unit_when_it_warns(analyze: str, unit_copy: Path) -> None:
    """The filter above would hide a mistake if verify stopped naming the file."""
    text = unit_copy.read_text(encoding="utf-8")
    unit_copy.write_text(text.replace("ProtectSystem=", "ProtectSytem="), encoding="utf-8")
    _, ours = verify(analyze, unit_copy)
    assert any("ProtectSytem" in line for line in ours), ours


def test_security_exposure_is_at_most_2(analyze: str, unit_copy: Path) -> None:
    result = run_analyze(
        analyze,
        "security",
        "--offline=true",
        "--no-pager",
        f"--threshold={round(MAX_EXPOSURE * 10)}",  # in tenths: exits non-zero above it
        str(unit_copy),
    )
    output = result.stdout + result.stderr
    match = EXPOSURE_LINE.search(output)
    assert match is not None, output
    assert match.group(1) == UNIT.name
    assert float(match.group(2)) <= MAX_EXPOSURE, output
    assert result.returncode == 0, output
