"""``make man``: the manual page made from the parser, with every command and exit status."""

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from mcrelay.cli.main import build_parser
from mcrelay.cli.manual import manual_parser
from mcrelay.cli.status import MEANINGS, ExitStatus
from support import Console

ROOT = Path(__file__).resolve().parents[2]
MAKE_TIMEOUT_S = 60


def commands() -> list[str]:
    parser = manual_parser()
    [subparsers] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return list(subparsers.choices)


def test_make_man_writes_a_page_with_every_command_and_exit_status(tmp_path: Path) -> None:
    # -o: use the virtual environment as it is (never install from a test).
    argv = ["make", "-s", "-C", str(ROOT), "-o", ".venv/.installed-test", "man"]
    argv += [f"MAN_DIR={tmp_path}", f"BIN={Path(sys.executable).parent}"]
    subprocess.run(argv, check=True, timeout=MAKE_TIMEOUT_S, capture_output=True)
    page = (tmp_path / "mcrelay.1").read_text()
    assert page.startswith('.TH MCRELAY "1"')
    for command in commands():
        assert f".SH COMMAND \\fI\\,'mcrelay {command}'" in page, command
    for heading in ("EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert f".SH {heading}" in page
    for code in ExitStatus:
        assert f".B {int(code)}\n" in page
    if shutil.which("groff"):
        rendered = subprocess.run(
            ["groff", "-man", "-Tutf8", str(tmp_path / "mcrelay.1")],
            capture_output=True,
            text=True,
            check=True,
            timeout=MAKE_TIMEOUT_S,
        )
        assert "error" not in rendered.stderr


def test_help_lists_every_exit_status() -> None:
    assert set(MEANINGS) == set(ExitStatus)
    epilog = build_parser(Console().env).epilog or ""
    for code in ExitStatus:
        assert f"{int(code):>5}  " in epilog


def test_the_readme_table_has_every_exit_status() -> None:
    readme = (ROOT / "README.md").read_text()
    for code in ExitStatus:
        assert f"\n| {int(code)} | " in readme
