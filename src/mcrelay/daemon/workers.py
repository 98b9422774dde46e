"""Threads for the RSA work, fed from a queue; results come back to Trio in batches.

``trio.to_thread.run_sync`` costs a thread hand-off and a task wake per call, on the
Trio thread, which at the relay's rates was a third of the daemon's CPU. Here the
loop only appends to a queue; each worker takes one job at a time, and finished
jobs are handed back together: one ``run_sync_soon`` wakes the loop for every job
that finished meanwhile, and their ``done`` callbacks run there, in order.
"""

import logging
import queue
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import outcome
import trio

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class Job(Generic[T]):
    work: Callable[[], T]
    """Runs in a worker thread; whatever it raises is handed to ``done`` as an ``Error``."""
    done: Callable[["outcome.Outcome[T]"], None]
    """Runs on the Trio thread, from a ``run_sync_soon`` callback: cannot await, and
    should not raise (what it raises is logged, and the job's other state is its own)."""


class Running(Generic[T]):
    """A job's result to come: awaiting it waits (if need be) and returns or raises it."""

    __slots__ = ("_finished", "_result")

    def __init__(self) -> None:
        self._finished = trio.Event()
        self._result: outcome.Outcome[T] | None = None

    def finish(self, result: "outcome.Outcome[T]") -> None:
        self._result = result
        self._finished.set()

    def __await__(self) -> Generator[Any, None, T]:
        if self._result is None:
            yield from self._finished.wait().__await__()
        assert self._result is not None
        return self._result.unwrap()


_STOP = object()


class CryptoWorkers:
    """``count`` threads running :class:`Job` s; :meth:`run` owns them."""

    def __init__(self, count: int = 1) -> None:
        self._count = count
        self._jobs: queue.SimpleQueue[Job[Any] | object] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._finished: list[tuple[Job[Any], outcome.Outcome[Any]]] = []
        self._lock = threading.Lock()
        self._flush_scheduled = False
        self._running = 0
        """Threads started and not sent a stop."""
        self._token: trio.lowlevel.TrioToken | None = None

    @property
    def count(self) -> int:
        return self._count

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._token = trio.lowlevel.current_trio_token()
        try:
            self.resize(self._count)
            task_status.started()
            await trio.sleep_forever()
        finally:
            self._stop_all()
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._join_all)

    def submit(self, job: Job[Any]) -> None:
        """Queue a job (from the Trio thread); never blocks. The caller bounds the queue."""
        self._jobs.put(job)

    def start(self, work: Callable[[], T]) -> "Running[T]":
        """Queue ``work`` now (from the Trio thread, never blocking); await the result."""
        running: Running[T] = Running()
        self.submit(Job(work, running.finish))
        return running

    async def call(self, work: Callable[[], T]) -> T:
        """Run ``work`` in a worker and wait for its result."""
        return await self.start(work)

    def resize(self, count: int) -> None:
        """Have ``count`` threads: start more, or stop the surplus (each after the jobs
        queued before the resize). Called from the Trio thread only; before :meth:`run`,
        it only sets how many threads that starts."""
        self._count = count
        if self._token is None:
            return
        self._threads = [thread for thread in self._threads if thread.is_alive()]
        for _ in range(count - self._running):
            thread = threading.Thread(target=self._work, name="mcrelay-crypto", daemon=True)
            thread.start()
            self._threads.append(thread)
        for _ in range(self._running - count):
            self._jobs.put(_STOP)
        self._running = count

    def _stop_all(self) -> None:
        while True:
            try:
                self._jobs.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._jobs.put(_STOP)
        self._running = 0

    def _join_all(self) -> None:
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            assert isinstance(job, Job)
            try:
                self._hand_back(job, outcome.capture(job.work))
            except trio.RunFinishedError:
                return

    def _hand_back(self, job: Job[Any], result: "outcome.Outcome[Any]") -> None:
        """Queue a finished job for the Trio thread; wake it unless a wake is pending."""
        with self._lock:
            self._finished.append((job, result))
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        assert self._token is not None
        self._token.run_sync_soon(self._flush)

    def _flush(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
            self._flush_scheduled = False
        for job, result in finished:
            try:
                job.done(result)
            except Exception:
                # A bug in a callback must not take the run loop down with it.
                log.exception("a crypto job's completion failed")
