"""The daemon as a process: SIGTERM with a stalled reader, a reload at the connection limit,
and an open-file limit that leaves the API no connection.

Loopback only: the relay on port 0, the API on a Unix socket in the test's
directory; every wait is bounded.
"""

import contextlib
import os
import queue
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.api.connections import FD_RESERVE, Connections
from mcrelay.api.errors import NoRoomForApi
from mcrelay.service import SHUTDOWN_GRACE_S
from support import LOOPBACK, WAIT_S, write_key

Keys = list[rsa.RSAPrivateKey]
EXIT_SLACK_S = 3.0
"""Beyond the shutdown grace, for the interpreter to start and stop on a busy machine."""
NOFILE = 100
ROOM = NOFILE - FD_RESERVE
"""The open-file limit of the reload test's daemon, and the API connections that fit."""


def limited(nofile: int) -> str:
    """A Python program: the daemon under an open-file limit of ``nofile``."""
    return (
        "import resource, runpy, sys;"
        f"resource.setrlimit(resource.RLIMIT_NOFILE, ({nofile}, {nofile}));"
        "sys.argv[0] = 'mcrelay';"
        "runpy.run_module('mcrelay', run_name='__main__')"
    )


class Process:
    """A daemon child whose stderr a thread reads line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.seen: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.put(line.rstrip("\n"))
        self._lines.put(None)

    def wait_for_line(self, fragment: str) -> str:
        deadline = time.monotonic() + WAIT_S
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                break
            if line is None:
                break
            self.seen.append(line)
            if fragment in line:
                return line
        pytest.fail(f"no line with {fragment!r} on stderr; saw {self.seen}")


@contextmanager
def daemon(argv: list[str]) -> Iterator[Process]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MCRELAY_")}
    environ["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
    )
    try:
        yield Process(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT_S)
        if proc.stderr is not None:
            proc.stderr.close()


def daemon_args(config: Path) -> list[str]:
    """``daemon`` on loopback with its settings file."""
    return ["daemon", "--config", str(config), "--interface", LOOPBACK, "--port", "0"]


def settings_file(tmp_path: Path, key: rsa.RSAPrivateKey) -> Path:
    """Settings with the API on ``tmp_path/api.sock``."""
    path = tmp_path / "mcrelay.toml"
    key_file = write_key(tmp_path / "k.pem", key)
    api = f"unix:{tmp_path / 'api.sock'}"
    path.write_text(f"api = '{api}'\n[relay]\nkey_file = '{key_file}'\n")
    return path


def connect(path: Path, stack: ExitStack) -> socket.socket:
    sock = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    sock.settimeout(WAIT_S)
    sock.connect(str(path))
    return sock


def stall(sock: socket.socket, request: bytes) -> None:
    """Send ``request`` over and over without reading, until the server stops taking them:
    it is stuck writing responses nobody reads."""
    sock.settimeout(0.3)
    deadline = time.monotonic() + WAIT_S
    try:
        while time.monotonic() < deadline:
            sock.sendall(request)
    except TimeoutError:
        return
    pytest.fail("the server kept reading")


def test_sigterm_with_stalled_readers_exits_0_within_the_grace(tmp_path: Path, keys: Keys) -> None:
    argv = [sys.executable, "-m", "mcrelay", *daemon_args(settings_file(tmp_path, keys[0]))]
    with daemon(argv) as process, ExitStack() as stack:
        process.wait_for_line("control API on")
        events = connect(tmp_path / "api.sock", stack)
        events.sendall(b"GET /v1/events HTTP/1.1\r\nHost: mcrelay\r\n\r\n")
        responses = connect(tmp_path / "api.sock", stack)
        stall(responses, b"GET /v1/openapi.json HTTP/1.1\r\nHost: mcrelay\r\n\r\n")
        os.kill(process.proc.pid, signal.SIGTERM)
        try:
            assert process.proc.wait(timeout=SHUTDOWN_GRACE_S + EXIT_SLACK_S) == 0
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running after SIGTERM; stderr: {process.seen}")
        process.wait_for_line("stopping on SIGTERM")


def test_reload_works_at_the_connection_limit(tmp_path: Path, keys: Keys) -> None:
    config = settings_file(tmp_path, keys[0])
    argv = [sys.executable, "-c", limited(NOFILE), *daemon_args(config)]
    with daemon(argv) as process, ExitStack() as stack:
        process.wait_for_line("control API on")
        answers: list[bytes] = []
        for _ in range(NOFILE + 20):  # more than the process may open
            sock = connect(tmp_path / "api.sock", stack)
            # A refused connection may be closed before the request is written.
            with contextlib.suppress(BrokenPipeError):
                sock.sendall(b"GET /v1/events HTTP/1.1\r\nHost: mcrelay\r\n\r\n")
            answers.append(sock.recv(12))
        assert answers.count(b"HTTP/1.1 200") == ROOM
        assert answers.count(b"HTTP/1.1 503") == len(answers) - ROOM
        config.write_text(config.read_text() + "client_timeout = 7\n")
        os.kill(process.proc.pid, signal.SIGHUP)
        process.wait_for_line("configuration reloaded")
        os.kill(process.proc.pid, signal.SIGTERM)
        assert process.proc.wait(timeout=SHUTDOWN_GRACE_S + EXIT_SLACK_S) == 0
        process.wait_for_line("stopping on SIGTERM")
        assert any(f"serves {ROOM} connections at most" in line for line in process.seen)
        stderr = "\n".join(process.seen)
        assert "Too many open files" not in stderr
        assert "Traceback" not in stderr


def test_an_open_file_limit_that_leaves_the_api_no_room_stops_the_start(
    tmp_path: Path, keys: Keys
) -> None:
    """It started with "the API serves 0 connections at most", and refused every one
    (found by review)."""
    config = settings_file(tmp_path, keys[0])
    argv = [sys.executable, "-c", limited(FD_RESERVE), *daemon_args(config)]
    with daemon(argv) as process:
        line = process.wait_for_line("mcrelay: error:")
        assert process.proc.wait(timeout=WAIT_S) == 2
    assert line.endswith(
        f"the open-file limit ({FD_RESERVE}) leaves the API no connection beside the "
        f"{FD_RESERVE} files kept for the relay: raise it to {FD_RESERVE + 128} "
        "(LimitNOFILE= under systemd, ulimit -n in a shell), or give --api off"
    )
    assert not (tmp_path / "api.sock").exists()


def test_a_limit_lowered_from_outside_leaves_the_api_serving_none(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """At start it stops the daemon; on a later change of the cap (a reload), the relay
    goes on."""
    monkeypatch.setattr(resource, "setrlimit", lambda *_: None)  # never this process's own
    monkeypatch.setattr(resource, "getrlimit", lambda _: (FD_RESERVE, FD_RESERVE))
    with pytest.raises(NoRoomForApi, match=f"the open-file limit \\({FD_RESERVE}\\)"):
        Connections().fit(8)
    connections = Connections()
    monkeypatch.setattr(resource, "getrlimit", lambda _: (FD_RESERVE + 8, FD_RESERVE + 8))
    connections.fit(8)
    assert not connections.full(8)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (FD_RESERVE, FD_RESERVE))
    assert connections.full(9)
    assert caplog.messages[-1].endswith("or give --api off; the API serves none meanwhile")
