"""``mcrelay completion SHELL``: scripts the shells accept, and that complete commands,
flags, choices and paths. Each shell runs only where it is installed."""

import shutil
import subprocess
from pathlib import Path

import pytest

from mcrelay.cli.status import ExitStatus
from support import Console, assert_one_error_line

SHELL_TIMEOUT_S = 30


async def script(shell: str, tmp_path: Path) -> Path:
    console = Console()
    assert await console.run("completion", shell) == ExitStatus.OK
    path = tmp_path / f"mcrelay.{shell}"
    path.write_text(console.stdout.getvalue())
    return path


def run_shell(*argv: str) -> list[str]:
    if shutil.which(argv[0]) is None:
        pytest.skip(f"{argv[0]} is not installed")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=SHELL_TIMEOUT_S, check=True)
    assert done.stderr == ""
    return done.stdout.splitlines()


BASH_COMPLETE = """
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); COMPREPLY=()
_shtab_mcrelay
printf '%s\\n' "${COMPREPLY[@]}"
"""


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["s"], ["send", "status"]),
        (["send", "--re"], ["--relay", "--relay-fingerprint", "--register-timeout", "--relay-key"]),
        (["completion", ""], ["bash", "zsh", "fish"]),
        (["clients", "--sort", "i"], ["id", "idle_s"]),
        (["rel"], ["relays"]),
        (["keygen", "--f"], ["--federation"]),
    ],
)
async def test_bash_completes_commands_flags_and_choices(
    tmp_path: Path, words: list[str], expected: list[str]
) -> None:
    path = await script("bash", tmp_path)
    completed = run_shell("bash", "-c", BASH_COMPLETE, "bash", str(path), "mcrelay", *words)
    assert completed == expected


async def test_bash_completes_a_key_path_with_file_names(tmp_path: Path) -> None:
    path = await script("bash", tmp_path)
    (tmp_path / "relay-key.pem").write_text("")
    word = str(tmp_path / "relay-k")
    completed = run_shell("bash", "-c", BASH_COMPLETE, "bash", str(path), "mcrelay", "keygen", word)
    assert completed == [str(tmp_path / "relay-key.pem")]


async def test_zsh_accepts_its_script(tmp_path: Path) -> None:
    path = await script("zsh", tmp_path)
    assert run_shell("zsh", "-n", str(path)) == []


async def test_fish_completes_commands_and_flags(tmp_path: Path) -> None:
    path = await script("fish", tmp_path)
    source = f"source {path}; complete -C'mcrelay s'; complete -C'mcrelay kick --ba'"
    completed = [line.split("\t")[0] for line in run_shell("fish", "--no-config", "-c", source)]
    assert completed == ["send", "status", "--ban"]


async def test_an_unknown_shell_is_a_usage_error() -> None:
    console = Console()
    assert await console.run("completion", "tcsh") == ExitStatus.USAGE
    assert_one_error_line(console, "bash", "zsh", "fish")
