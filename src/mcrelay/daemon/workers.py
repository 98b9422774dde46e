"""Processes for the RSA work, fed over pipes; their answers come back to Trio in batches.

RSA in threads of the relay's process shared the GIL with its Trio thread: every system
call of the loop (a ``recvfrom`` per datagram, a ``sendto`` per copy) let a busy crypto
thread in, and the loop waited for it to let go. Past saturation, where the loop reads
more datagrams than it relays, that wait was most of its time, and the relay delivered
about 60 % of its peak. In processes of their own the workers cost the loop only the
pickles and a pipe write and read per batch (see ``bench/README.md``).

Each worker process (:mod:`mcrelay.daemon.worker_main`) is owned by a task of
:meth:`CryptoWorkers.run`'s nursery, which writes its jobs and reads its answers, in
order. A job goes to the worker with the fewest waiting. A worker that dies fails its
waiting jobs (:class:`WorkerLost`) and is started again; at the relay's end, its
process is killed once the messages in flight have settled.
"""

import logging
import pickle
import sys
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from subprocess import PIPE
from typing import Any, Generic, Protocol, TypeVar

import outcome
import trio

from mcrelay.daemon import worker_main

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

RESTART_DELAY_S = 1.0
"""How long a worker that died waits before it starts again (a worker that cannot
start must not spin)."""


class Work(Protocol[T_co]):
    """A job's work: plain data, pickled across the pipe; ``run`` gets the worker's state."""

    def run(self, state: Any, /) -> T_co: ...


class WorkerLost(RuntimeError):
    """The worker process running the job ended before answering."""


class WorkerStartError(Exception):
    """A crypto worker could not start when the relay did (it cannot relay legacy
    messages without them)."""


@dataclass(slots=True)
class Job(Generic[T]):
    work: Work[T]
    done: Callable[["outcome.Outcome[T]"], None]
    """Runs on the Trio thread as the answer comes: cannot await, and should not raise
    (what it raises is logged, and the job's other state is its own)."""


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


@dataclass(eq=False)
class _Worker:
    """One worker: its jobs not yet answered, in order, and the frames not yet written."""

    waiting: deque[Job[Any]] = field(default_factory=deque)
    outgoing: list[bytes] = field(default_factory=list)
    wake: trio.Event = field(default_factory=trio.Event)
    retired: bool = False
    """Given no more jobs: it ends once those it has are answered."""
    pid: int | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    """Set once its first process has its state (and answers jobs), or ended before."""


def _command() -> list[str]:
    """The worker's command line: this interpreter, in this environment."""
    return [sys.executable, "-m", worker_main.__name__]


class CryptoWorkers:
    """``count`` worker processes running :class:`Job` s; :meth:`run` owns them.

    :meth:`install` gives the state each worker builds at its start (before :meth:`run`)."""

    def __init__(self, count: int = 1) -> None:
        self._count = count
        self._setup: bytes | None = None
        self._workers: list[_Worker] = []
        self._nursery: trio.Nursery | None = None
        self._running = False
        """Every first worker was ready: :meth:`run` has started."""
        self._start_failures: list[str] = []
        """How the first workers that ended before they were ready ended."""

    @property
    def count(self) -> int:
        return self._count

    @property
    def pids(self) -> list[int]:
        """The worker processes running now."""
        return [worker.pid for worker in self._workers if worker.pid is not None]

    def install(self, build: Callable[[Any], object], argument: object) -> None:
        """Each worker's state is ``build(argument)``, made in the worker (both pickled)."""
        self._setup = worker_main.frame((build, argument))

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Started once every worker is ready (or :class:`WorkerStartError`)."""
        if self._setup is None:
            raise RuntimeError("the crypto workers were given no set-up")
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            self.resize(self._count)
            for worker in list(self._workers):
                await worker.ready.wait()
            if not self._start_failures:
                self._running = True
                task_status.started()
                await trio.sleep_forever()
            nursery.cancel_scope.cancel()
        raise WorkerStartError(
            f"a crypto worker ended before it was ready ({self._start_failures[0]})"
        )

    def submit(self, job: Job[Any]) -> None:
        """Queue a job (from the Trio thread); never blocks. The caller bounds the jobs."""
        data = worker_main.frame(job.work)
        worker = min(
            (worker for worker in self._workers if not worker.retired),
            key=lambda worker: len(worker.waiting),
        )
        worker.waiting.append(job)
        worker.outgoing.append(data)
        worker.wake.set()

    def start(self, work: Work[T]) -> "Running[T]":
        """Queue ``work`` now (from the Trio thread, never blocking); await the result."""
        running: Running[T] = Running()
        self.submit(Job(work, running.finish))
        return running

    async def call(self, work: Work[T]) -> T:
        """Run ``work`` in a worker and wait for its result."""
        return await self.start(work)

    def resize(self, count: int) -> None:
        """Have ``count`` workers: start more, or retire the surplus (each after the jobs
        it was given). Called from the Trio thread only; before :meth:`run`, it only
        sets how many workers that starts."""
        self._count = count
        if self._nursery is None:
            return
        active = [worker for worker in self._workers if not worker.retired]
        for _ in range(count - len(active)):
            worker = _Worker()
            self._workers.append(worker)
            self._nursery.start_soon(self._serve, worker)
        for worker in sorted(active, key=lambda worker: len(worker.waiting))[: len(active) - count]:
            worker.retired = True
            worker.wake.set()

    async def _serve(self, worker: _Worker) -> None:
        """Run the worker's process, and another each time one ends with the worker
        still wanted; a first one that ends before it is ready stops :meth:`run`."""
        try:
            while True:
                try:
                    ended = f"exit status {await self._run_process(worker)}"
                except OSError as exc:
                    ended = f"not started: {exc.strerror or exc}"
                if not self._running:
                    self._start_failures.append(ended)
                    worker.ready.set()
                    return
                if worker.retired and not worker.waiting:
                    return
                self._lost(worker, ended)
                if worker.retired:
                    return
                await trio.sleep(RESTART_DELAY_S)
        finally:
            self._workers.remove(worker)

    async def _run_process(self, worker: _Worker) -> int | None:
        """One worker process, from its start to its end; its exit status."""
        process = await trio.lowlevel.open_process(_command(), stdin=PIPE, stdout=PIPE)
        worker.pid = process.pid
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, worker, process)
                await self._read(worker, process)
                nursery.cancel_scope.cancel()
        finally:
            worker.pid = None
            with trio.CancelScope(shield=True):
                process.kill()
                await process.wait()
        return process.returncode

    def _lost(self, worker: _Worker, ended: str) -> None:
        lost = list(worker.waiting)
        worker.waiting.clear()
        worker.outgoing.clear()
        log.error(
            "a crypto worker ended (%s) with %d jobs unanswered; %s",
            ended,
            len(lost),
            "not started again" if worker.retired else "starting another",
        )
        error = WorkerLost(f"the crypto worker ended ({ended})")
        for job in lost:
            self._done(job, outcome.Error(error))

    async def _write(self, worker: _Worker, process: trio.Process) -> None:
        """Until the worker is retired and has all its jobs, or its process ends (its
        reader then sees the end of its answers)."""
        assert process.stdin is not None
        assert self._setup is not None
        try:
            await process.stdin.send_all(self._setup)
            while True:
                if worker.outgoing:
                    data = b"".join(worker.outgoing)
                    worker.outgoing.clear()
                    await process.stdin.send_all(data)
                elif worker.retired:
                    await process.stdin.aclose()
                    return
                else:
                    worker.wake = trio.Event()
                    await worker.wake.wait()
        except trio.BrokenResourceError:
            return

    async def _read(self, worker: _Worker, process: trio.Process) -> None:
        assert process.stdout is not None
        buffer = bytearray()
        ready = False
        while data := await process.stdout.receive_some(worker_main.READ_BYTES):
            buffer += data
            for answer in worker_main.split_frames(buffer):
                ok, value = pickle.loads(answer)  # noqa: S301 (from the worker we started)
                if not ready:  # its first answer: it has its state
                    ready = True
                    worker.ready.set()
                    continue
                result: outcome.Outcome[Any] = outcome.Value(value) if ok else outcome.Error(value)
                self._done(worker.waiting.popleft(), result)

    @staticmethod
    def _done(job: Job[Any], result: "outcome.Outcome[Any]") -> None:
        try:
            job.done(result)
        except Exception:
            # A bug in a callback must not take the run loop down with it.
            log.exception("a crypto job's completion failed")
