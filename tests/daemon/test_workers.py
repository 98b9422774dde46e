"""The crypto workers: jobs run in threads, results come back on the Trio thread."""

import functools
import threading

import outcome
import pytest
import trio
import trio.testing

from mcrelay.daemon.workers import CryptoWorkers, Job
from support import wait_until


def worker_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name == "mcrelay-crypto"]


async def test_results_and_errors_come_back_on_the_trio_thread() -> None:
    trio_thread = threading.current_thread()
    results: list[tuple[bool, object]] = []

    def done(result: outcome.Outcome[int]) -> None:
        assert threading.current_thread() is trio_thread
        results.append((isinstance(result, outcome.Value), result))

    def fail() -> int:
        raise ValueError("bad block")

    async with trio.open_nursery() as nursery:
        workers = CryptoWorkers(2)
        await nursery.start(workers.run)
        workers.submit(Job(lambda: threading.current_thread().name, done))
        workers.submit(Job(fail, done))
        await wait_until(lambda: len(results) == 2)
        assert sorted(ok for ok, _ in results) == [False, True]
        assert await workers.call(lambda: 6 * 7) == 42
        with pytest.raises(ValueError, match="bad block"):
            await workers.call(fail)
        nursery.cancel_scope.cancel()
    assert not worker_threads()


async def test_a_failing_completion_is_logged_and_the_rest_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    finished: list[int] = []

    def broken(_result: outcome.Outcome[int]) -> None:
        raise RuntimeError("bug in a callback")

    async with trio.open_nursery() as nursery:
        workers = CryptoWorkers(1)
        await nursery.start(workers.run)
        workers.submit(Job(lambda: 1, broken))
        workers.submit(Job(lambda: 2, lambda result: finished.append(result.unwrap())))
        await wait_until(lambda: finished == [2])
        nursery.cancel_scope.cancel()
    assert "a crypto job's completion failed" in caplog.text


async def test_resize_starts_and_stops_threads_and_stop_joins_them() -> None:
    async with trio.open_nursery() as nursery:
        workers = CryptoWorkers(1)
        await nursery.start(workers.run)
        assert len(worker_threads()) == 1
        workers.resize(3)
        assert (workers.count, len(worker_threads())) == (3, 3)
        workers.resize(1)
        await wait_until(lambda: len(worker_threads()) == 1)
        assert await workers.call(lambda: "still working") == "still working"
        workers.resize(2)
        assert len(worker_threads()) == 2
        nursery.cancel_scope.cancel()
    assert not worker_threads()


async def test_a_resize_before_run_starts_no_thread_and_sets_how_many_run_starts() -> None:
    workers = CryptoWorkers()
    workers.resize(3)
    assert (workers.count, len(worker_threads())) == (3, 0)
    async with trio.open_nursery() as nursery:
        await nursery.start(workers.run)
        assert len(worker_threads()) == 3
        nursery.cancel_scope.cancel()
    assert not worker_threads()


async def test_jobs_queued_at_stop_are_not_run() -> None:
    started, gate = threading.Event(), threading.Event()
    stopping = trio.Event()
    ran: list[int] = []

    def held(n: int) -> int:
        started.set()
        gate.wait(5)
        ran.append(n)
        return n

    async def open_the_gate_once_stopped() -> None:
        await stopping.wait()
        await trio.testing.wait_all_tasks_blocked()  # the stop emptied the queue, and joins
        gate.set()

    async with trio.open_nursery() as outer:
        outer.start_soon(open_the_gate_once_stopped)
        async with trio.open_nursery() as nursery:
            workers = CryptoWorkers(1)
            await nursery.start(workers.run)
            for n in range(5):
                workers.submit(Job(functools.partial(held, n), lambda _result: None))
            # The first job is running, the other four wait in the queue.
            assert await trio.to_thread.run_sync(started.wait, 5)
            nursery.cancel_scope.cancel()
            stopping.set()
    assert ran == [0]
