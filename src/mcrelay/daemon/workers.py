"""Processes for the RSA work, fed over pipes; their answers come back to Trio in batches.

RSA in threads of the relay's process shared the GIL with its Trio thread: every system
call of the loop (a ``recvfrom`` per datagram, a ``sendto`` per copy) let a busy crypto
thread in, and the loop waited for it to let go. Past saturation, where the loop reads
more datagrams than it relays, that wait was most of its time, and the relay delivered
about 60 % of its peak. In processes of their own the workers cost the loop only the
pickles and a pipe write and read per batch (see ``bench/README.md``).

Each worker process (:mod:`mcrelay.daemon.worker_main`) is owned by a task of
:meth:`CryptoWorkers.run`'s nursery, which writes its jobs and reads its answers, in
order. Jobs wait in a :class:`~mcrelay.daemon.fairqueue.FairQueue`, a line per host
(the message's sender's) and within it per owner (the sender), taken in turns
weighted by the jobs' costs, so one host's backlog of costly jobs, however many
senders it has, delays another host's job by a round of turns, not by the whole
backlog. A worker that is up takes the next ones as it has room (at most
:data:`IN_FLIGHT_PER_WORKER`, and while those it holds cost less than
:data:`IN_FLIGHT_COST_PER_WORKER`), so a long job holds up only its own worker, and a
worker does not hold a queue of them that the turns cannot reorder. A worker that
dies, or answers nothing for
:data:`ANSWER_TIMEOUT_S`, fails the jobs it held (:class:`WorkerLost`) and is started
again (the others take the queue meanwhile); at the relay's end, its process is killed
once the messages in flight have settled.
"""

import logging
import math
import pickle
import sys
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import PIPE
from typing import Any, Generic, Protocol, TypeVar

import outcome
import trio

import mcrelay
from mcrelay.daemon import worker_main
from mcrelay.daemon.fairqueue import FairQueue

log = logging.getLogger(__name__)

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

IN_FLIGHT_PER_WORKER = 4
"""Jobs written to a worker and not yet answered: enough that it never waits for the
loop between two, few enough that the queue stays in the relay, shared."""
IN_FLIGHT_COST_PER_WORKER = 512
"""A worker holding jobs that cost this much (see :attr:`Work.cost`: about 11 ms) takes
no more until one is answered: a costly job, of which one keeps it busy, does not take
three more places ahead of other members' jobs."""
ROUND_COST = 512
"""The cost each host with jobs waiting is given per turn, and each of its owners per
turn within the host's (its jobs are taken while their cost is within it, the rest
carried to its next turn): about 11 ms of a worker's time; a job dearer than that
waits a few turns, others' jobs are taken meanwhile."""
READY_TIMEOUT_S = 10.0
"""A worker that has not said it is ready this long after its start is stopped."""
ANSWER_TIMEOUT_S = 30.0
"""A worker holding jobs that answers nothing for this long is stopped (hung: a job
takes milliseconds)."""
RESTART_DELAY_S = 1.0
"""How long a worker that died waits before it starts again; doubled after each start
that did not last :data:`RESTART_DELAY_MAX_S`, up to that (a worker that cannot start
must not spin)."""
RESTART_DELAY_MAX_S = 30.0


class Work(Protocol[T_co]):
    """A job's work: plain data, pickled across the pipe; ``run`` gets the worker's state."""

    @property
    def cost(self) -> int:
        """About how long it runs, in chunks encrypted for a 2048-bit recipient (about 22 us
        each): at least 1. The turns between hosts and owners weigh jobs by it."""
        ...

    def run(self, state: Any, /) -> T_co: ...


class WorkerLost(RuntimeError):
    """The worker process running the job ended before answering (its end is logged
    once, by the pool)."""


class WorkerStartError(Exception):
    """A crypto worker could not start when the relay did (it cannot relay legacy
    messages without them)."""


@dataclass(slots=True)
class Job(Generic[T]):
    work: Work[T]
    done: Callable[["outcome.Outcome[T]"], None]
    """Runs on the Trio thread as the answer comes: cannot await, and should not raise
    (what it raises is logged, and the job's other state is its own)."""
    host: str
    """Where it comes from (see :func:`mcrelay.core.profile.turn_host`): the hosts take
    turns."""
    owner: str
    """Whose job it is (the message's sender's id): within its host's turns, each
    owner's jobs take turns with the others'."""
    frame: bytes = b""
    """The work, pickled (by :meth:`CryptoWorkers.submit`)."""
    cost: int = 0
    """The work's cost, as :meth:`CryptoWorkers.submit` found it (a legacy job's sums
    over its recipients: not again at each look at a worker's load)."""


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
    """One worker: the jobs it was given and has not answered, in order."""

    in_flight: deque[Job[Any]] = field(default_factory=deque)
    wake: trio.Event = field(default_factory=trio.Event)
    up: bool = False
    """Its process is ready: it takes jobs."""
    retired: bool = False
    """Takes no more jobs: it ends once those it has are answered."""
    pid: int | None = None
    ready: trio.Event = field(default_factory=trio.Event)
    """Set once its first process is up, or ended before."""
    deadline: float = math.inf
    """When its process is stopped unless it answers: its start's ready deadline, then
    the oldest unanswered job's (none while it holds no job)."""
    waiting: trio.CancelScope | None = None
    """The scope its reader waits in, whose deadline is :attr:`deadline`."""

    def wanted(self) -> bool:
        """Not retired (a method: the answer can change across an await)."""
        return not self.retired

    def takes_jobs(self) -> bool:
        """Up and not retired."""
        return self.up and not self.retired

    def has_room(self) -> bool:
        """Could take a job now."""
        return (
            self.takes_jobs()
            and len(self.in_flight) < IN_FLIGHT_PER_WORKER
            and self.load() < IN_FLIGHT_COST_PER_WORKER
        )

    def load(self) -> int:
        """The cost of the jobs it holds."""
        return sum(job.cost for job in self.in_flight)

    def expect_answer_by(self, deadline: float) -> None:
        self.deadline = deadline
        if self.waiting is not None:
            self.waiting.deadline = deadline


def _command() -> list[str]:
    """The worker's command line: this interpreter, without the working directory on
    its path (``-P``: a ``pickle.py`` there would run with the relay key), and able to
    import this very ``mcrelay`` wherever it came from."""
    here = str(Path(mcrelay.__file__).resolve().parent.parent)
    code = f"import sys; sys.path.append({here!r}); from {worker_main.__name__} import main; main()"
    return [sys.executable, "-P", "-c", code]


class CryptoWorkers:
    """``count`` worker processes running :class:`Job` s; :meth:`run` owns them.

    :meth:`install` gives the state each worker builds at its start (before :meth:`run`)."""

    def __init__(self, count: int = 1) -> None:
        self._count = count
        self._setup: bytes | None = None
        self._queue: FairQueue[Job[Any]] = FairQueue(ROUND_COST)
        """Submitted jobs no worker has taken yet, in their hosts' and owners' lines."""
        self._workers: list[_Worker] = []
        self._nursery: trio.Nursery | None = None
        self._running = False
        """Every first worker was ready: :meth:`run` has started."""
        self._start_failures: list[str] = []
        """How the first workers that were not ready in time ended."""
        self.restarts = 0
        """Worker processes started again after one ended unasked."""

    @property
    def count(self) -> int:
        return self._count

    @property
    def up(self) -> int:
        """Workers whose process is ready and takes jobs now."""
        return sum(worker.takes_jobs() for worker in self._workers)

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
        raise WorkerStartError(f"a crypto worker could not start ({self._start_failures[0]})")

    def submit(self, job: Job[Any]) -> None:
        """Queue a job (from the Trio thread); never blocks. The caller bounds the jobs."""
        job.frame = worker_main.frame(job.work)
        job.cost = job.work.cost
        self._queue.push(job.host, job.owner, job, job.cost)
        self._feed()

    def start(self, work: Work[T], host: str, owner: str) -> "Running[T]":
        """Queue the ``work`` of ``owner`` on ``host`` now (from the Trio thread, never
        blocking); await the result."""
        running: Running[T] = Running()
        self.submit(Job(work, running.finish, host, owner))
        return running

    async def call(self, work: Work[T], host: str, owner: str) -> T:
        """Run the ``work`` of ``owner`` on ``host`` in a worker and wait for its result."""
        return await self.start(work, host, owner)

    def resize(self, count: int) -> None:
        """Have ``count`` workers: start more, or retire the surplus (each after the jobs
        it took). Called from the Trio thread only; before :meth:`run`, it only sets how
        many workers that starts."""
        self._count = count
        if self._nursery is None:
            return
        active = [worker for worker in self._workers if not worker.retired]
        for _ in range(count - len(active)):
            worker = _Worker()
            self._workers.append(worker)
            self._nursery.start_soon(self._serve, worker)
        surplus = max(0, len(active) - count)
        for worker in sorted(active, key=lambda worker: worker.up)[:surplus]:
            worker.retired = True
            worker.wake.set()

    async def _serve(self, worker: _Worker) -> None:
        """Run the worker's process, and another each time one ends with the worker
        still wanted; a first one that is not ready in time stops :meth:`run`."""
        delay = RESTART_DELAY_S
        try:
            while worker.wanted():  # (retired while it waited to start again: done)
                began = trio.current_time()
                try:
                    ended = await self._run_process(worker)
                except OSError as exc:
                    ended = f"not started: {exc.strerror or exc}"
                except Exception as exc:  # a bug here costs this worker, not the relay
                    log.exception("a crypto worker's task failed")
                    ended = f"failed: {exc!r}"
                lasted = trio.current_time() - began
                worker.up = False
                lost = list(worker.in_flight)
                worker.in_flight.clear()
                for job in lost:
                    self._done(job, outcome.Error(WorkerLost(f"the crypto worker ended ({ended})")))
                if not self._running:
                    self._start_failures.append(ended)
                    worker.ready.set()
                    return
                if not worker.wanted() and not lost:
                    return
                delay = RESTART_DELAY_S if lasted > RESTART_DELAY_MAX_S else delay
                log.error(
                    "a crypto worker ended (%s) with %d jobs unanswered; %s",
                    ended,
                    len(lost),
                    f"another in {delay:g} s" if worker.wanted() else "not started again",
                )
                if not worker.wanted():
                    return
                self.restarts += 1
                await trio.sleep(delay)
                delay = min(2 * delay, RESTART_DELAY_MAX_S)
        finally:
            self._workers.remove(worker)
            self._feed()

    def _feed(self) -> None:
        """Wake the workers that have room, if jobs wait."""
        if self._queue:
            for worker in self._workers:
                if worker.has_room():
                    worker.wake.set()

    async def _run_process(self, worker: _Worker) -> str:
        """One worker process, from its start to its end; how it ended."""
        process = await trio.lowlevel.open_process(
            _command(), stdin=PIPE, stdout=PIPE, start_new_session=True
        )
        worker.pid = process.pid
        worker.deadline = trio.current_time() + READY_TIMEOUT_S
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write, worker, process)
                stopped = await self._read(worker, process)
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                process.kill()
                for pipe in (process.stdin, process.stdout):
                    if pipe is not None:
                        await pipe.aclose()
                await process.wait()
            worker.pid = None
        return stopped or f"exit status {process.returncode}"

    async def _write(self, worker: _Worker, process: trio.Process) -> None:
        """The set-up, then jobs from the queue, in turns, as the worker has room (its
        share of them, when other workers have room too), until it is retired (then its stdin is
        closed: it ends once it answered) or its process ends (its reader then sees the
        end of its answers)."""
        assert process.stdin is not None
        assert self._setup is not None
        try:
            await process.stdin.send_all(self._setup)
            while True:
                if worker.retired:
                    await process.stdin.aclose()
                    return
                if worker.has_room() and self._queue:
                    share = -(-len(self._queue) // self._with_room())
                    if not worker.in_flight:  # its answer deadline starts now
                        worker.expect_answer_by(trio.current_time() + ANSWER_TIMEOUT_S)
                    taken: list[Job[Any]] = []
                    while self._queue and len(taken) < share and worker.has_room():
                        taken.append(self._queue.pop())
                        worker.in_flight.append(taken[-1])
                    await process.stdin.send_all(b"".join(job.frame for job in taken))
                else:
                    worker.wake = trio.Event()
                    await worker.wake.wait()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return

    def _with_room(self) -> int:
        """Workers that are up and could take a job now (at least 1)."""
        return max(1, sum(worker.has_room() for worker in self._workers))

    async def _read(self, worker: _Worker, process: trio.Process) -> str | None:
        """Answers, in order, until the end of the worker's stdout (None), or why the
        worker is stopped: not ready in time, silent with jobs in hand, or out of step."""
        assert process.stdout is not None
        buffer = bytearray()
        while True:
            with trio.CancelScope(deadline=worker.deadline) as waiting:
                worker.waiting = waiting
                try:
                    data = await process.stdout.receive_some(worker_main.READ_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
            if waiting.cancelled_caught:
                if not worker.up:
                    return f"not ready within {READY_TIMEOUT_S:g} s"
                return f"no answer for {ANSWER_TIMEOUT_S:g} s"
            if not data:
                return None
            buffer += data
            for answer in worker_main.split_frames(buffer):
                if not self._answer(worker, answer):
                    return "answered a job it was not given"

    def _answer(self, worker: _Worker, answer: bytes) -> bool:
        """Take one answer (False: there was no job for it)."""
        try:
            ok, value = pickle.loads(answer)  # noqa: S301 (from the worker we started)
        except Exception as exc:  # whatever it is, it costs this job
            ok, value = False, RuntimeError(f"an answer the relay could not read: {exc!r}")
        if not worker.up:  # its first answer: it has its state
            worker.up = True
            worker.ready.set()
            worker.wake.set()
            worker.expect_answer_by(math.inf)
            return True
        if not worker.in_flight:
            return False
        result: outcome.Outcome[Any] = outcome.Value(value) if ok else outcome.Error(value)
        self._done(worker.in_flight.popleft(), result)
        worker.expect_answer_by(
            trio.current_time() + ANSWER_TIMEOUT_S if worker.in_flight else math.inf
        )
        worker.wake.set()
        return True

    @staticmethod
    def _done(job: Job[Any], result: "outcome.Outcome[Any]") -> None:
        try:
            job.done(result)
        except Exception:
            # A bug in a callback must not take the run loop down with it.
            log.exception("a crypto job's completion failed")
