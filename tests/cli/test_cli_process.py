"""The real ``python -m mcrelay`` process where only a process shows it: pipes and bytes."""

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.cli.signals import cancel_on_signal, ending_signals
from mcrelay.client import MessageReceived
from mcrelay.protocol.addresses import RELAY_ITSELF
from mcrelay.protocol.legacy.events import PeerLeft
from support import (
    LOOPBACK,
    WAIT_S,
    events_until,
    join,
    next_event,
    relay_config,
    running_daemon,
)

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
    output: dict[str, Any] = {"capture_stdout": True} if stdout is None else {"stdout": stdout}
    with trio.fail_after(WAIT_S * 3):
        return await trio.run_process(
            [*MCRELAY, *argv],
            stdin=stdin,
            capture_stderr=True,
            env=child_environ(),
            check=False,
            **output,
        )


def is_left(event: object) -> bool:
    return isinstance(event, PeerLeft)


# --- a reader that stops early ------------------------------------------------------------


async def test_config_check_into_a_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    config = tmp_path / "mcrelay.toml"
    config.write_text("")
    with closed_pipe() as stdout:
        done = await run("config", "check", "--config", str(config), stdout=stdout)
    assert done.returncode == 0
    assert done.stderr == b""


async def test_api_commands_into_a_closed_pipe_end_quietly(relay_key_file: Path) -> None:
    async with running_daemon(relay_config(relay_key_file, api="127.0.0.1:0")) as daemon:
        api = daemon.api_urls[0].removeprefix("http://")
        for argv in (["status", "--json"], ["clients", "--json"], ["status"]):
            with closed_pipe() as stdout:
                done = await run(*argv, "--api", api, stdout=stdout)
            assert (argv, done.returncode, done.stderr) == (argv, 0, b"")


# --- bytes that are not UTF-8 ---------------------------------------------------------------


async def test_send_and_post_pass_stdin_bytes_as_they_came(
    relay_key_file: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    async with running_daemon(relay_config(relay_key_file, api="127.0.0.1:0")) as daemon:
        async with join(daemon.relay, keys[1]) as a:
            flags = ["--interface", LOOPBACK, "--port", str(daemon.relay.address[1])]
            done = await run("send", *flags, "-", stdin=b"ok\n\xff\xfe\n")
            assert (done.returncode, b"Traceback" in done.stderr) == (0, False), done.stderr
            received = [e for e in await events_until(a, is_left) if isinstance(e, MessageReceived)]
            assert [e.data for e in received] == [b"ok", b"\xff\xfe"]
            api = daemon.api_urls[0].removeprefix("http://")
            done = await run("post", "--api", api, "--lines", stdin=b"\xe9t\xe9\nok\n")
            assert (done.returncode, done.stderr) == (0, b"")
            assert await next_event(a) == MessageReceived(RELAY_ITSELF, b"\xe9t\xe9")
            assert await next_event(a) == MessageReceived(RELAY_ITSELF, b"ok")


# --- errors -----------------------------------------------------------------------------


async def test_a_wrong_relay_fingerprint_is_one_error_line(relay_key_file: Path) -> None:
    async with running_daemon(relay_config(relay_key_file)) as daemon:
        flags = ["--interface", LOOPBACK, "--port", str(daemon.relay.address[1])]
        done = await run("send", *flags, "--relay-fingerprint", "SHA256:" + "A" * 43, "x")
    assert done.returncode == 5
    [line] = done.stderr.decode().splitlines()
    assert line.startswith("mcrelay: error: relay key SHA256:"), line


# --- Ctrl-C -------------------------------------------------------------------------------

ANNOUNCING_STDIN = """
import os, runpy, sys

class AnnouncingStdin:
    '''The real stdin, but each read first writes a byte to a pipe the test reads.'''

    def __init__(self, stream):
        self._stream = stream

    def __getattr__(self, name):
        return getattr(self._stream, name)

    def read(self, *args):
        os.write(int(os.environ["ANNOUNCE_FD"]), b"r")
        return self._stream.read(*args)

sys.stdin = AnnouncingStdin(sys.stdin)
sys.argv[0] = "mcrelay"
runpy.run_module("mcrelay", run_name="__main__")
"""

INTERRUPTED_WHILE_LOADING = """
import os, runpy, signal, sys

class InterruptOnImport:
    '''Ctrl-C the moment the command's modules start loading.'''

    def find_spec(self, name, path, target=None):
        if name == "trio":
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, InterruptOnImport())
sys.argv[0] = "mcrelay"
runpy.run_module("mcrelay", run_name="__main__")
"""


def test_ctrl_c_while_post_waits_on_stdin() -> None:
    announce, announced = os.pipe()
    argv = [sys.executable, "-c", ANNOUNCING_STDIN, "post", "--api", "127.0.0.1:9", "-"]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(announced,),
        env={**child_environ(), "ANNOUNCE_FD": str(announced)},
    )
    os.close(announced)
    try:
        assert os.read(announce, 1) == b"r"  # it is reading stdin, which stays open
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT_S) == 130
        assert proc.stderr is not None
        assert proc.stderr.read() == b""
    finally:
        os.close(announce)
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_ctrl_c_while_the_command_loads() -> None:
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_WHILE_LOADING, "--version"],
        capture_output=True,
        timeout=WAIT_S,
        env=child_environ(),
        check=False,
    )
    assert (done.returncode, done.stderr, done.stdout) == (130, b"", b"")


# --- a standard stream closed --------------------------------------------------------------


def closing(fd: int) -> Callable[[], None]:
    return lambda: os.close(fd)


def test_a_closed_stdout_or_stdin_is_no_traceback(relay_key_file: Path) -> None:
    """Each failed with a traceback ('NoneType' object has no attribute 'flush', or
    'isatty'), exit 1 (found by review)."""
    done = subprocess.run(
        [*MCRELAY, "fingerprint", str(relay_key_file)],
        capture_output=False,
        stderr=subprocess.PIPE,
        preexec_fn=closing(1),
        timeout=WAIT_S,
        env=child_environ(),
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, b"")
    done = subprocess.run(
        [*MCRELAY, "send", "-", "--relay", LOOPBACK, "--port", "9", "--secure", "--relay-key", "x"],
        capture_output=True,
        preexec_fn=closing(0),
        timeout=WAIT_S,
        env=child_environ(),
        check=False,
    )
    assert done.returncode == 2  # the bad key, said as such
    assert b"Traceback" not in done.stderr


def test_a_daemon_without_stderr_starts_and_stops(tmp_path: Path, relay_key_file: Path) -> None:
    """Its crypto workers could not start (they take the daemon's stderr): exit 1 (found
    by review). Ready when it tells NOTIFY_SOCKET so, as systemd hears it."""
    argv = ["daemon", "--port", "0", "--interface", LOOPBACK, "--key-file", str(relay_key_file)]
    argv += ["--secure-key-file", str(tmp_path / "secure.key"), "--api", "off"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(tmp_path / "notify.sock"))
        notify.settimeout(WAIT_S)
        environ = {**child_environ(), "NOTIFY_SOCKET": str(tmp_path / "notify.sock")}
        with subprocess.Popen(
            [*MCRELAY, *argv], stdout=subprocess.DEVNULL, preexec_fn=closing(2), env=environ
        ) as proc:
            try:
                assert b"READY=1" in notify.recv(4096)
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(WAIT_S) == 0
            finally:
                if proc.poll() is None:
                    proc.kill()


# --- a terminal that hangs up ---------------------------------------------------------------


HANGUP_AS_A_TERMINAL_HAS_IT = """
import runpy, signal, sys

# As a shell in a terminal starts it (a test runner's worker may ignore SIGHUP, and an
# ignored signal stays ignored across exec: the chat would take it for nohup's).
signal.signal(signal.SIGHUP, signal.SIG_DFL)
sys.argv[0] = "mcrelay"
runpy.run_module("mcrelay", run_name="__main__")
"""


@pytest.mark.parametrize("profile", [[], ["--secure"]], ids=["legacy", "secure"])
async def test_a_hangup_ends_a_chat_with_its_goodbye(
    relay_key_file: Path, keys: list[rsa.RSAPrivateKey], tmp_path: Path, profile: list[str]
) -> None:
    """The kernel's SIGHUP, when the chat's terminal hangs up, killed it before its
    goodbye; the relay kept the member until it timed out (found by review)."""
    async with running_daemon(relay_config(relay_key_file)) as daemon:
        relay = daemon.relay
        async with join(relay, keys[1]) as a:
            argv = [sys.executable, "-c", HANGUP_AS_A_TERMINAL_HAS_IT, "chat", "--stay", *profile]
            argv += ["--interface", LOOPBACK]
            argv += ["--port", str(relay.address[1])]
            environ = {**child_environ(), "XDG_STATE_HOME": str(tmp_path)}
            with subprocess.Popen(  # noqa: ASYNC220 (kept, to send it a signal)
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                env=environ,
            ) as chat:
                try:
                    assert chat.stdout is not None
                    with trio.fail_after(WAIT_S):  # its first line: a, present
                        line = await trio.to_thread.run_sync(
                            chat.stdout.readline, abandon_on_cancel=True
                        )
                    assert b'"present"' in line  # printed once the signals are listened for
                    chat.send_signal(signal.SIGHUP)
                    assert await trio.to_thread.run_sync(chat.wait, WAIT_S) == 0
                finally:
                    if chat.poll() is None:
                        chat.kill()
            await events_until(a, is_left)


def test_a_hangup_nohup_ignores_is_not_listened_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signal, "getsignal", lambda signum: signal.SIG_IGN)
    assert signal.SIGHUP not in ending_signals()


async def test_after_a_hangup_another_is_ignored() -> None:
    """A shell passes the kernel's hangup on to its jobs: the second killed the chat
    before its goodbye (found by review)."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # a runner's worker may ignore it
    try:
        with trio.fail_after(WAIT_S), trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                await nursery.start(cancel_on_signal, scope)
                os.kill(os.getpid(), signal.SIGHUP)
                await trio.sleep_forever()
        assert scope.cancelled_caught
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
