"""The daemon under test: ``python -m mcrelay daemon`` on loopback, stopped by its own pid."""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from relaybench.api import Api

INTERFACE = "127.0.0.1"
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 5.0
START_ATTEMPTS = 3
GENEROUS = "1000000"
# The daemon's anti-abuse limits on key answers and registrations are not what is
# measured: a benchmark registers hundreds or thousands of clients from 127.0.0.1
# within seconds, so every run lifts them (a run may add its own flags after these).
BENCH_LIMITS = (
    "--key-answers-per-source-burst", GENEROUS,
    "--key-answers-total-burst", GENEROUS,
    "--key-answers-total-per-s", GENEROUS,
    "--registrations-per-host-burst", GENEROUS,
    "--registrations-per-host-per-s", GENEROUS,
    "--registrations-total-burst", GENEROUS,
    "--registrations-total-per-s", GENEROUS,
    "--max-clients-per-host", GENEROUS,
    "--max-clients", GENEROUS,
)  # fmt: skip


def free_port(kind: int) -> int:
    """A port nobody holds on 127.0.0.1 right now (``kind``: SOCK_DGRAM or SOCK_STREAM)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((INTERFACE, 0))
        port: int = sock.getsockname()[1]
    return port


@dataclass
class Daemon:
    process: subprocess.Popen[bytes]
    port: int
    api: Api
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def address(self) -> tuple[str, int]:
        return (INTERFACE, self.port)

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


MODULE = ("-m", "mcrelay")
"""How the interpreter runs the command (a profiler may wrap it: ``bench/profile_secure.py``)."""


def daemon_command(
    key_file: Path, port: int, api_port: int, extra: Sequence[str], runner: Sequence[str] = MODULE
) -> list[str]:
    return [
        sys.executable, *runner, "daemon",
        "--interface", INTERFACE,
        "--port", str(port),
        "--key-file", str(key_file),
        "--api", f"{INTERFACE}:{api_port}",
        "--api-tcp-without-token",
        "--log-level", "warning",
        *BENCH_LIMITS,
        *extra,
    ]  # fmt: skip


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process we started, SIGKILL it if it has not gone in time."""
    if process.poll() is not None:
        return
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()


@contextlib.contextmanager
def running_daemon(
    workdir: Path, key_file: Path, extra: Sequence[str] = (), runner: Sequence[str] = MODULE
) -> Iterator[Daemon]:
    """Start the daemon on free loopback ports, wait until ``/readyz``; stop it on exit.

    The environment is cleared of ``MCRELAY_*`` so that nothing of the caller's leaks in.
    It logs at warning (nothing per client or message) to a file in ``workdir``."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MCRELAY_")}
    for attempt in range(1, START_ATTEMPTS + 1):
        port, api_port = free_port(socket.SOCK_DGRAM), free_port(socket.SOCK_STREAM)
        log = workdir / f"daemon-{port}.log"
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                daemon_command(key_file, port, api_port, extra, runner),
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        daemon = Daemon(process, port, Api(api_port), log)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while process.poll() is None and not daemon.api.ready():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon not ready after {READY_TIMEOUT_S:g} s")
                time.sleep(0.05)
            if process.poll() is None:
                yield daemon
                return
        finally:
            daemon.api.close()
            stop_process(process)
        # It exited before it served (most likely a port was taken meanwhile).
        if attempt == START_ATTEMPTS:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{daemon.log_tail()}")
