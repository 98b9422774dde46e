"""The real ``python -m mcrelay`` process where only a process shows it: pipes and bytes."""

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

from support import WAIT_S, relay_config, running_daemon

MCRELAY = [sys.executable, "-m", "mcrelay"]


def child_environ() -> dict[str, str]:
    """This process's environment without MCRELAY_* settings that would change the command."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MCRELAY_")}


@contextmanager
def closed_pipe() -> Iterator[int]:
    """The write end of a pipe nobody reads: a write to it fails with EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        yield write_end
    finally:
        os.close(write_end)


async def run(
    *argv: str, stdout: int | None = None, stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(WAIT_S * 3):
        return await trio.run_process(
            [*MCRELAY, *argv],
            stdin=stdin,
            stdout=stdout,
            capture_stdout=stdout is None,
            capture_stderr=True,
            env=child_environ(),
            check=False,
        )


# --- a reader that stops early ------------------------------------------------------------


async def test_config_check_into_a_closed_pipe_ends_quietly() -> None:
    with closed_pipe() as stdout:
        done = await run("config", "check", "--config", os.devnull, stdout=stdout)
    assert done.returncode == 0
    assert done.stderr == b""


async def test_api_commands_into_a_closed_pipe_end_quietly(relay_key_file: Path) -> None:
    async with running_daemon(relay_config(relay_key_file, api="127.0.0.1:0")) as daemon:
        api = daemon.api_urls[0].removeprefix("http://")
        for argv in (["status", "--json"], ["clients", "--json"], ["status"]):
            with closed_pipe() as stdout:
                done = await run(*argv, "--api", api, stdout=stdout)
            assert (argv, done.returncode, done.stderr) == (argv, 0, b"")
