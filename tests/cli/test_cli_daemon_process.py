"""The real ``python -m mcrelay`` process: start-up line, clean stop on signals, --version."""

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

import mcrelay
from mcrelay.daemon.banfile import bans_file
from mcrelay.protocol.legacy import crypto
from support import GROUP, LOOPBACK, WAIT_S, write_key

Keys = list[rsa.RSAPrivateKey]
SHUTDOWN_S = 2.0
"""The bound the issue sets on a clean stop after SIGINT or SIGTERM."""


def child_environ() -> dict[str, str]:
    """This process's environment without MCRELAY_* settings that would change the daemon."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MCRELAY_")}
    environ["PYTHONUNBUFFERED"] = "1"
    return environ


class Daemon:
    """A ``mcrelay daemon`` child whose stderr a thread reads line by line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, fragment: str, timeout_s: float = WAIT_S) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"no line with {fragment!r} on stderr; saw {self.seen}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"stderr ended without {fragment!r}; saw {self.seen}")
            self.seen.append(line)
            if fragment in line:
                return line

    def rest_of_stderr(self) -> list[str]:
        """Every line after the ones seen, once the process has exited."""
        self._reader.join(timeout=WAIT_S)
        while (line := self.lines.get_nowait()) is not None:
            self.seen.append(line)
        return self.seen


def daemon_argv(key_file: Path, *, port: int = 0, api: str = f"{LOOPBACK}:0") -> list[str]:
    """The daemon on loopback; the control API on an ephemeral loopback port, not 7507."""
    return [
        sys.executable,
        "-m",
        "mcrelay",
        "daemon",
        "--interface",
        LOOPBACK,
        "--port",
        str(port),
        "--key-file",
        str(key_file),
        "--api",
        api,
        *([] if api.startswith("unix:") else ["--api-tcp-without-token"]),
    ]


@contextmanager
def running_daemon(
    key_file: Path, *, port: int = 0, api: str = f"{LOOPBACK}:0"
) -> Iterator[Daemon]:
    argv = daemon_argv(key_file, port=port, api=api)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=child_environ(),
    )
    try:
        yield Daemon(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=WAIT_S)
        if proc.stderr is not None:
            proc.stderr.close()


def stop_and_wait(daemon: Daemon, signum: signal.Signals) -> int:
    os.kill(daemon.proc.pid, signum)
    started = time.monotonic()
    try:
        return daemon.proc.wait(timeout=SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"still running {time.monotonic() - started:.2f} s after {signum.name}; "
            f"stderr: {daemon.seen}"
        )


def check_listening_line(line: str, key: rsa.RSAPrivateKey) -> None:
    assert f"group={GROUP}" in line
    assert f"interface={LOOPBACK}" in line
    port = re.search(r"\bport=(\d+)\b", line)
    assert port is not None, line
    assert 0 < int(port.group(1)) <= 65535
    found = re.search(r"\bfingerprint=(SHA256:\S+)", line)
    assert found is not None, line
    assert found.group(1) == crypto.fingerprint(key.public_key())


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_daemon_starts_and_stops_cleanly_on_signal(
    tmp_path: Path, keys: Keys, signum: signal.Signals
) -> None:
    key_file = write_key(tmp_path / "k.pem", keys[0])
    with running_daemon(key_file) as daemon:
        line = daemon.wait_for_line("relay listening")
        assert re.search(r" version=\d+\.\d+\.\d+$", line), line
        check_listening_line(line, keys[0])
        api_line = daemon.wait_for_line("control API on")
        # The port the kernel gave, not the :0 asked (found by review).
        assert re.search(r"control API on 127\.0\.0\.1:[1-9][0-9]*$", api_line), api_line
        assert stop_and_wait(daemon, signum) == 0
        stderr = daemon.rest_of_stderr()
        assert any(f"stopping on {signum.name}" in seen for seen in stderr), stderr
        assert not any("Traceback" in seen for seen in stderr), stderr
    # The key given was used, not replaced.
    assert crypto.load_private_key_pem(key_file.read_bytes()).private_numbers() == (
        keys[0].private_numbers()
    )


def test_daemon_with_a_garbage_key_file_fails_with_one_line(tmp_path: Path) -> None:
    key_file = tmp_path / "k.pem"
    key_file.write_text("garbage\n")
    with running_daemon(key_file) as daemon:
        # A key to fix is a setting error (2), which the systemd unit does not restart on.
        assert_fails_to_start(daemon, str(key_file), status=2)
        assert not any("http" in line for line in daemon.seen), daemon.seen


def assert_fails_to_start(daemon: Daemon, *fragments: str, status: int = 1) -> None:
    assert daemon.proc.wait(timeout=WAIT_S) == status
    stderr = daemon.rest_of_stderr()
    errors = [line for line in stderr if line.startswith("mcrelay: error:")]
    assert len(errors) == 1, stderr
    for fragment in fragments:
        assert fragment in errors[0], stderr
    assert not any("Traceback" in line for line in stderr), stderr


def test_daemon_on_a_udp_port_in_use_fails_with_one_line(tmp_path: Path, keys: Keys) -> None:
    key_file = write_key(tmp_path / "k.pem", keys[0])
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # no SO_REUSEADDR: exclusive
    with holder:
        holder.bind((LOOPBACK, 0))
        port = holder.getsockname()[1]
        with running_daemon(key_file, port=port) as daemon:
            assert_fails_to_start(
                daemon, f"error: cannot bind UDP port {port}: Address already in use"
            )


def test_daemon_with_its_api_port_in_use_fails_with_one_line(tmp_path: Path, keys: Keys) -> None:
    key_file = write_key(tmp_path / "k.pem", keys[0])
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with holder:
        holder.bind((LOOPBACK, 0))
        holder.listen(1)
        api = f"{LOOPBACK}:{holder.getsockname()[1]}"
        with running_daemon(key_file, api=api) as daemon:
            assert_fails_to_start(daemon, api)


def test_version() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mcrelay", "--version"],
        capture_output=True,
        text=True,
        timeout=WAIT_S * 3,
        env=child_environ(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"mcrelay {mcrelay.__version__}"


def children(pid: int) -> list[int]:
    """The processes ``pid`` started that run now (its crypto workers)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(child) for child in (task / "children").read_text().split()]
        except FileNotFoundError:  # the thread ended meanwhile
            continue
    return found


def ended(pid: int) -> bool:
    """Gone, or a zombie no one has reaped yet."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return "\nState:\tZ" in status


def test_the_crypto_workers_end_with_the_daemon_even_when_it_is_killed(
    tmp_path: Path, keys: Keys
) -> None:
    """A worker ends at the end of its stdin: a daemon killed outright leaves none."""
    key_file = write_key(tmp_path / "k.pem", keys[0])
    with running_daemon(key_file) as daemon:
        daemon.wait_for_line("control API on")
        workers = children(daemon.proc.pid)
        assert workers, "no crypto worker process"
        daemon.proc.kill()
        daemon.proc.wait(timeout=WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while not all(ended(pid) for pid in workers):
            assert time.monotonic() < deadline, f"workers {workers} outlived their daemon"
            time.sleep(0.05)


def test_daemon_with_a_bans_file_it_cannot_use_fails_with_one_line(
    tmp_path: Path, keys: Keys
) -> None:
    """Starting without its bans would lift every one in silence."""
    key_file = write_key(tmp_path / "k.pem", keys[0])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:  # a port free now
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    bans = bans_file(tmp_path, port)
    bans.write_text("mcrelay-bans 1\n10.0.0.7 not-a-time 600\n")
    bans.chmod(0o600)
    with running_daemon(key_file, port=port) as daemon:
        assert_fails_to_start(
            daemon, str(bans), "line 2", "fix the file, or remove it to lift every ban", status=2
        )
