"""Client processes: started with ``spawn``, driven by commands over a pipe, stopped by pid.

A worker's ``main(conn, spec)`` sends one reply per command it gets; ``("stop",)``
ends it. An exception in a worker goes back as ``("error", traceback)`` and is
raised here as ``WorkerError``.
"""

import contextlib
import multiprocessing
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

COMMAND_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 5.0
_SPAWN = multiprocessing.get_context("spawn")


class WorkerError(RuntimeError):
    """A worker failed or did not answer in time."""


class Worker:
    def __init__(self, name: str, main: Callable[[Connection, Any], None], spec: Any) -> None:
        self.name = name
        self._conn, child = _SPAWN.Pipe()
        self._process = _SPAWN.Process(
            target=_serve, args=(main, child, spec), name=name, daemon=True
        )
        self._process.start()
        child.close()

    @property
    def pid(self) -> int:
        pid = self._process.pid
        assert pid is not None
        return pid

    def send(self, *command: Any) -> None:
        self._conn.send(command)

    def reply(self, timeout_s: float = COMMAND_TIMEOUT_S) -> Any:
        if not self._conn.poll(timeout_s):
            raise WorkerError(f"{self.name}: no answer in {timeout_s:g} s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            raise WorkerError(f"{self.name} exited ({self._process.exitcode})") from None
        if kind == "error":
            raise WorkerError(f"{self.name} failed:\n{value}")
        return value

    def call(self, *command: Any, timeout_s: float = COMMAND_TIMEOUT_S) -> Any:
        self.send(*command)
        return self.reply(timeout_s)

    def stop(self) -> None:
        """Ask it to stop; then SIGTERM, then SIGKILL, to this process only."""
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(("stop",))
            self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_TIMEOUT_S)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()


def _serve(main: Callable[[Connection, Any], None], conn: Connection, spec: Any) -> None:
    try:
        main(conn, spec)
    except Exception:
        conn.send(("error", traceback.format_exc()))


def call_all(
    workers: list[Worker], *command: Any, timeout_s: float = COMMAND_TIMEOUT_S
) -> list[Any]:
    """Send a command to every worker, then collect every reply (so they work in parallel)."""
    for worker in workers:
        worker.send(*command)
    return [worker.reply(timeout_s) for worker in workers]


def stop_all(workers: list[Worker]) -> None:
    for worker in workers:
        worker.stop()
