"""The Makefile's virtual-environment step, run twice at once as `make run` and `make test`
started together on a fresh clone do. A stand-in for python notes when two pip runs overlap."""

import os
import stat
import subprocess
from pathlib import Path

MAKEFILE = Path(__file__).resolve().parents[2] / "Makefile"
MAKE_TIMEOUT_S = 30

FAKE_PYTHON = """#!/bin/sh
# 'python -m venv DIR' makes DIR/bin/python, a copy of this script; 'python -m pip ...'
# takes a while, and notes in the log whether another pip ran meanwhile.
if [ "$1 $2" = "-m venv" ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
    exit
fi
if ! mkdir "$PIP_LOG.busy" 2>/dev/null; then
    echo "overlap: $*" >> "$PIP_LOG"
    exit
fi
echo "pip: $*" >> "$PIP_LOG"
sleep 0.3
rmdir "$PIP_LOG.busy"
"""


def test_two_makes_at_once_install_the_environment_once(tmp_path: Path) -> None:
    python = tmp_path / "python3"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "pyproject.toml").write_text("")
    log = tmp_path / "pip.log"
    argv = ["make", "-s", "-f", str(MAKEFILE), f"PYTHON={python}", ".venv/.installed-test"]
    environ = {**os.environ, "PIP_LOG": str(log)}
    makes = [
        subprocess.Popen(argv, cwd=tmp_path, env=environ, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outcomes = [(make.wait(timeout=MAKE_TIMEOUT_S), make.communicate()[1]) for make in makes]
    assert outcomes == [(0, ""), (0, "")]
    # One of them installed; the other waited, then found it done.
    assert log.read_text().splitlines() == [
        "pip: -m pip install --quiet --upgrade pip",
        "pip: -m pip install --quiet -e .[test]",
    ]
