"""Crypto workers in threads of the test's process, for tests that hold a job where it
runs (a monkeypatched function waiting on a ``threading.Event``): the relay's own
workers are processes, out of a monkeypatch's reach."""

import queue
import threading
from collections.abc import Callable
from typing import Any

import outcome
import pytest
import trio

from mcrelay.daemon import relay as relay_module
from mcrelay.daemon.workers import CryptoWorkers, Job

_STOP = object()


class ThreadWorkers(CryptoWorkers):
    """``count`` threads taking the jobs in the order they came (no resize)."""

    def __init__(self, count: int = 1) -> None:
        super().__init__(count)
        self._state: Any = None
        self._jobs: queue.SimpleQueue[Job[Any] | object] = queue.SimpleQueue()

    def install(self, build: Callable[[Any], object], argument: object) -> None:
        self._state = build(argument)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        token = trio.lowlevel.current_trio_token()
        threads = [
            threading.Thread(target=self._work, args=(token,), daemon=True)
            for _ in range(self.count)
        ]
        for thread in threads:
            thread.start()
        try:
            task_status.started()
            await trio.sleep_forever()
        finally:
            for _ in threads:
                self._jobs.put(_STOP)

    def submit(self, job: Job[Any]) -> None:
        self._jobs.put(job)

    def resize(self, count: int) -> None:
        """The threads stay as they started."""

    def _work(self, token: trio.lowlevel.TrioToken) -> None:
        while (job := self._jobs.get()) is not _STOP:
            assert isinstance(job, Job)
            result = outcome.capture(job.work.run, self._state)
            try:
                token.run_sync_soon(job.done, result)
            except trio.RunFinishedError:
                return


def use_thread_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Relays made from now on (in this test) run their RSA work in threads."""
    monkeypatch.setattr(relay_module, "CryptoWorkers", ThreadWorkers)
