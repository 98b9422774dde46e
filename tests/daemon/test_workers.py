"""The crypto workers: jobs run in processes of their own, answers come back to Trio."""

import os
import pickle
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import outcome
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.core.opened import Opened
from mcrelay.daemon import workers as workers_module
from mcrelay.daemon.legacy import sealing
from mcrelay.daemon.legacy.sealing import KeyStore, OpenJob, Recipient, SealJob, relay_key_der
from mcrelay.daemon.worker_main import frame, split_frames
from mcrelay.daemon.workers import CryptoWorkers, Job, WorkerLost, WorkerStartError
from mcrelay.protocol import legacy
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import RelayedMessage
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from support import wait_until

Keys = list[rsa.RSAPrivateKey]

SENDER = ("127.0.0.1", 40000)
HOST = "127.0.0.1"
OWNER = "127.0.0.1:40000"


def started(keys: Keys, count: int = 1) -> CryptoWorkers:
    workers = CryptoWorkers(count)
    workers.install(KeyStore.from_der, relay_key_der(keys[0]))
    return workers


def payload(keys: Keys, plaintext: bytes) -> bytes:
    blocks = crypto.encrypt_blocks(keys[0].public_key(), plaintext)
    return b"".join(encode_tlv(TlvType.ENCRYPTED_BLOCK, block) for block in blocks)


def recipient(keys: Keys, index: int) -> Recipient:
    key = keys[index].public_key()
    return Recipient(crypto.key_digest(key), crypto.key_der(key), key.key_size)


def relayed_ciphertext(copy: bytes) -> bytes:
    [event] = legacy.decode_relay_datagram_untrusted(copy)
    assert isinstance(event, RelayedMessage)
    return event.ciphertext


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_job_runs_in_a_worker_process_and_its_error_keeps_its_reason(
    keys: Keys,
) -> None:
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        job = OpenJob(payload(keys, b"hello"), 1000, SENDER, (recipient(keys, 1),))
        opened = await workers.call(job, HOST, OWNER)
        assert opened.plaintext == b"hello"
        assert opened.sealed is not None
        [copy] = opened.sealed
        assert isinstance(copy, bytes)
        assert legacy.decode_relay_datagram_untrusted(copy) == [
            RelayedMessage(SENDER, relayed_ciphertext(copy))
        ]
        assert crypto.decrypt_concatenated_untrusted(keys[1], relayed_ciphertext(copy)) == b"hello"
        with pytest.raises(RemoteProtocolError) as raised:
            await workers.call(OpenJob(b"\x00" * 40, 1000, SENDER, None), HOST, OWNER)
        assert raised.value.reason is DropReason.TOO_LARGE  # its reason crossed with it
        [pid] = workers.pids
        assert pid != os.getpid()
        nursery.cancel_scope.cancel()
    assert not alive(pid)


async def test_answers_come_in_the_order_of_the_jobs_and_a_failing_completion_is_logged(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    finished: list[bytes] = []

    def broken(_result: outcome.Outcome[object]) -> None:
        raise RuntimeError("bug in a callback")

    def keep(result: outcome.Outcome[Opened]) -> None:
        finished.append(result.unwrap().plaintext)

    texts = [b"%d" % n for n in range(20)]
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        workers.submit(
            Job(OpenJob(payload(keys, b"first"), 1000, SENDER, None), broken, HOST, OWNER)
        )
        for text in texts:
            workers.submit(Job(OpenJob(payload(keys, text), 1000, SENDER, None), keep, HOST, OWNER))
        await wait_until(lambda: len(finished) == len(texts))
        assert finished == texts
        nursery.cancel_scope.cancel()
    assert "a crypto job's completion failed" in caplog.text


async def test_a_worker_that_dies_fails_the_jobs_it_held_and_the_others_take_the_queue(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    results: list[outcome.Outcome[object]] = []
    async with trio.open_nursery() as nursery:
        workers = started(keys, 2)
        await nursery.start(workers.run)
        stopped, other = workers.pids
        os.kill(stopped, signal.SIGSTOP)  # it takes its share of jobs, and answers none
        for n in range(10):
            workers.submit(
                Job(SealJob(SENDER, b"%d" % n, (recipient(keys, 1),)), results.append, HOST, OWNER)
            )
        await wait_until(lambda: len(results) == 10 - workers_module.IN_FLIGHT_PER_WORKER)
        os.kill(stopped, signal.SIGKILL)
        await wait_until(lambda: len(results) == 10)
        lost = [r for r in results if isinstance(r, outcome.Error)]
        assert len(lost) == workers_module.IN_FLIGHT_PER_WORKER
        assert all(isinstance(r.error, WorkerLost) for r in lost)
        assert len({id(r.error) for r in lost}) == len(lost)  # each its own traceback
        # Before the dead one is started again (a second later), the other takes it all.
        opened = await workers.call(
            OpenJob(payload(keys, b"again"), 1000, SENDER, None), HOST, OWNER
        )
        assert (opened.plaintext, workers.pids, workers.up) == (b"again", [other], 1)
        assert workers.restarts == 1
        await wait_until(lambda: workers.up == 2)
        nursery.cancel_scope.cancel()
    assert "a crypto worker ended (exit status -9) with 4 jobs unanswered; another in 1 s" in (
        caplog.text
    )


async def test_a_worker_that_answers_nothing_is_stopped_and_its_jobs_fail(
    keys: Keys, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers_module, "ANSWER_TIMEOUT_S", 0.3)
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        [pid] = workers.pids
        os.kill(pid, signal.SIGSTOP)
        with pytest.raises(WorkerLost, match=r"no answer for 0.3 s"):
            await workers.call(SealJob(SENDER, b"held", (recipient(keys, 1),)), HOST, OWNER)
        assert not alive(pid)
        nursery.cancel_scope.cancel()
    assert "a crypto worker ended (no answer for 0.3 s) with 1 jobs unanswered" in caplog.text


async def test_a_worker_that_is_not_ready_in_time_stops_run(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(workers_module, "READY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(
        workers_module, "_command", lambda: [sys.executable, "-c", "import time; time.sleep(30)"]
    )
    with pytest.raises(WorkerStartError, match=r"could not start \(not ready within 0.3 s\)"):
        await started(keys).run()


async def test_a_worker_ignores_sigterm_sighup_and_sigint_and_ends_with_its_relay(
    keys: Keys,
) -> None:
    """systemd's stop and reload reach every process of the unit: the workers go on
    sealing the messages in flight until the relay has settled them."""
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        await wait_until(lambda: bool(workers.pids))
        [pid] = workers.pids
        await workers.call(SealJob(SENDER, b"ready", (recipient(keys, 1),)), HOST, OWNER)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            os.kill(pid, signum)
        opened = await workers.call(
            OpenJob(payload(keys, b"still here"), 1000, SENDER, None), HOST, OWNER
        )
        assert (opened.plaintext, workers.pids) == (b"still here", [pid])
        nursery.cancel_scope.cancel()
    assert not alive(pid)


async def test_resize_starts_and_retires_workers(keys: Keys) -> None:
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        workers.resize(2)  # before run: only how many run starts
        assert (workers.count, workers.pids) == (2, [])
        await nursery.start(workers.run)
        await wait_until(lambda: len(workers.pids) == 2)
        two = list(workers.pids)
        workers.resize(3)
        await wait_until(lambda: len(workers.pids) == 3)
        first = list(workers.pids)
        assert set(two) < set(first)  # more: the ones running keep running
        workers.resize(1)
        await wait_until(lambda: len(workers.pids) == 1)
        assert sum(alive(pid) for pid in first) == 1
        opened = await workers.call(
            OpenJob(payload(keys, b"one left"), 1000, SENDER, None), HOST, OWNER
        )
        assert (workers.count, opened.plaintext) == (1, b"one left")
        nursery.cancel_scope.cancel()


async def test_run_without_a_set_up_is_refused() -> None:
    with pytest.raises(RuntimeError, match="no set-up"):
        await CryptoWorkers().run()


def test_a_worker_keeps_the_keys_it_loaded_up_to_its_bound(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealing, "KEYS_KEPT", 2)
    store = KeyStore(keys[0])
    one, two, three = (recipient(keys, index) for index in (1, 2, 3))
    first = store.public(one)
    assert store.public(one) is first
    store.public(two)
    store.public(one)  # used last: kept
    store.public(three)  # two goes
    assert store.public(one) is first
    assert crypto.same_key(store.public(two), keys[2].public_key())


def test_a_jobs_cost_counts_its_chunks_decrypted_and_sealed(keys: Keys) -> None:
    """In chunks encrypted for a recipient; a decrypted block costs DECRYPT_COST."""
    few = tuple(recipient(keys, 1) for _ in range(3))
    many = (recipient(keys, 1),) * (sealing.SEAL_INLINE_MAX + 1)
    text = b"x" * (2 * crypto.CHUNK_BYTES + 1)  # 3 chunks
    assert SealJob(SENDER, text, few).cost == 9
    assert SealJob(SENDER, b"", few).cost == 3
    opened = payload(keys, text)
    assert OpenJob(opened, 1000, SENDER, None).cost == 3 * sealing.DECRYPT_COST
    assert OpenJob(opened, 1000, SENDER, many).cost == 3 * sealing.DECRYPT_COST
    assert OpenJob(opened, 1000, SENDER, few).cost == 3 * (sealing.DECRYPT_COST + 3)
    assert OpenJob(b"", 1000, SENDER, few).cost == sealing.DECRYPT_COST + 3
    # A long message is sealed for fewer recipients a job (48 KB: 253 chunks, 4).
    per_job = [
        {len(batch) for batch in sealing.seal_batches(chunks, many * 2)}
        for chunks in (1, 64, 65, 253, 2000)
    ]
    assert per_job == [{16, 2}, {16, 2}, {15, 4}, {4, 2}, {1}]


def test_a_recipients_chunks_cost_by_its_keys_size(keys: Keys) -> None:
    """Measured (see CHUNK_COST_EXPONENT): a 4096-bit recipient's chunk takes 3.1 to 3.7
    times a 2048-bit one's, a 3072-bit one's 1.7 to 2; review 15 found 12 KB sealed for 4
    recipients of 4096 bits counted as 2048-bit ones, a third of what it took. A job
    then seals for fewer of them, within SEAL_JOB_COST."""
    digest, der, _ = recipient(keys, 1)
    text = b"x" * 12_000  # 64 chunks
    costs = {
        bits: SealJob(SENDER, text, (Recipient(digest, der, bits),) * 4).cost
        for bits in (2048, 3072, 4096)
    }
    assert costs[2048] == 4 * 64
    assert 1.7 <= costs[3072] / costs[2048] <= 2.0
    assert 3.1 <= costs[4096] / costs[2048] <= 3.7
    large = (Recipient(digest, der, 4096),) * 16
    assert [len(batch) for batch in sealing.seal_batches(64, large)] == [4, 4, 4, 4]
    opened = payload(keys, text)
    assert (
        OpenJob(opened, 20_000, SENDER, large[:4]).cost == 64 * sealing.DECRYPT_COST + costs[4096]
    )
    assert OpenJob(opened, 20_000, SENDER, large[:5]).cost == 64 * sealing.DECRYPT_COST


async def test_a_worker_that_cannot_start_stops_run(keys: Keys) -> None:
    workers = CryptoWorkers(2)
    workers.install(KeyStore.from_der, b"not a key")
    with pytest.raises(WorkerStartError, match=r"could not start \(exit status 1\)"):
        await workers.run()


@given(
    st.lists(st.binary(max_size=300) | st.integers() | st.text(max_size=50), max_size=20),
    st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=30),
)
def test_frames_cut_anywhere_come_back_whole_and_in_order(
    values: list[object], cuts: list[int]
) -> None:
    stream = b"".join(frame(value) for value in values)
    buffer, decoded, at = bytearray(), [], 0
    for size in cuts * (len(stream) // sum(cuts) + 1):
        buffer += stream[at : at + size]
        at += size
        decoded += [pickle.loads(data) for data in split_frames(buffer)]
        if at >= len(stream):
            break
    assert decoded == values
    assert not buffer


async def test_two_jobs_queued_at_once_go_one_to_each_worker(keys: Keys) -> None:
    """Each worker takes its share of what waits: a worker that is busy (here: stopped)
    holds one of the two jobs, not both."""
    results: list[outcome.Outcome[object]] = []
    async with trio.open_nursery() as nursery:
        workers = started(keys, 2)
        await nursery.start(workers.run)
        stopped, _other = workers.pids
        os.kill(stopped, signal.SIGSTOP)
        for text in (b"one", b"two"):
            workers.submit(
                Job(SealJob(SENDER, text, (recipient(keys, 1),)), results.append, HOST, OWNER)
            )
        await wait_until(lambda: len(results) == 1)
        await trio.testing.wait_all_tasks_blocked()
        assert len(results) == 1
        os.kill(stopped, signal.SIGCONT)
        await wait_until(lambda: len(results) == 2)
        nursery.cancel_scope.cancel()


async def test_one_owners_backlog_does_not_hold_another_owners_job(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A member's 30 costly jobs queued ahead of another member's one: that one is
    taken at the other's first turn, in the worker's first batch (it came last, and
    was answered last, when the queue was one line)."""
    monkeypatch.setattr(workers_module, "ROUND_COST", 4)
    costly = b"x" * 4 * crypto.CHUNK_BYTES  # 4 chunks: a turn's worth
    finished: list[str] = []
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)

        def done(name: str) -> Callable[[outcome.Outcome[object]], None]:
            return lambda _result: finished.append(name)

        for n in range(30):
            work = SealJob(SENDER, costly, (recipient(keys, 1),))
            workers.submit(Job(work, done(f"flood {n}"), "10.0.0.1", "flood"))
        other = SealJob(SENDER, b"hi", (recipient(keys, 2),))
        workers.submit(Job(other, done("other"), "10.0.0.2", "other"))
        await wait_until(lambda: len(finished) == 31)
        assert finished[:3] == ["flood 0", "other", "flood 1"]
        assert finished[3:] == [f"flood {n}" for n in range(2, 30)]
        nursery.cancel_scope.cancel()


async def test_a_worker_holding_jobs_of_its_cost_bound_takes_no_more(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Costly jobs are not written four to a busy worker (here: stopped) where the
    turns cannot reorder them: it holds one, the other worker takes the rest."""
    monkeypatch.setattr(workers_module, "IN_FLIGHT_COST_PER_WORKER", 4)
    costly = b"x" * 4 * crypto.CHUNK_BYTES
    results: list[outcome.Outcome[object]] = []
    async with trio.open_nursery() as nursery:
        workers = started(keys, 2)
        await nursery.start(workers.run)
        stopped, _other = workers.pids
        os.kill(stopped, signal.SIGSTOP)
        for _ in range(4):
            workers.submit(
                Job(SealJob(SENDER, costly, (recipient(keys, 1),)), results.append, HOST, OWNER)
            )
        await wait_until(lambda: len(results) == 3)
        os.kill(stopped, signal.SIGCONT)
        await wait_until(lambda: len(results) == 4)
        nursery.cancel_scope.cancel()


async def test_a_job_given_to_a_worker_idle_for_longer_than_the_answer_deadline_is_answered(
    keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer deadline runs from the job's hand-over, not from the worker's last
    answer (a quiet relay lost the first message after each long silence)."""
    monkeypatch.setattr(workers_module, "ANSWER_TIMEOUT_S", 0.3)
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        [pid] = workers.pids
        await trio.sleep(0.5)
        opened = await workers.call(
            OpenJob(payload(keys, b"after a silence"), 1000, SENDER, None), HOST, OWNER
        )
        assert (opened.plaintext, workers.pids, workers.restarts) == (
            b"after a silence",
            [pid],
            0,
        )
        nursery.cancel_scope.cancel()


FAKE_WORKER = """
import os
from mcrelay.daemon.worker_main import frame, split_frames
buffer, frames = bytearray(), []
def read_frame():
    while not frames:
        global buffer
        buffer += os.read(0, 65536)
        frames.extend(split_frames(buffer))
    return frames.pop(0)
read_frame()  # the set-up
os.write(1, frame((True, None)))  # ready
read_frame()  # a job
os.write(1, frame((True, "answer")) + frame((True, "one too many")))
while os.read(0, 65536):
    pass
"""


async def test_a_worker_that_answers_a_job_it_was_not_given_is_stopped_not_the_relay(
    keys: Keys, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers_module, "_command", lambda: [sys.executable, "-c", FAKE_WORKER])
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        job = workers.start(SealJob(SENDER, b"x", (recipient(keys, 1),)), HOST, OWNER)
        await nursery.start(workers.run)
        assert await job == "answer"  # type: ignore[comparison-overlap]
        await wait_until(lambda: workers.restarts == 1)
        nursery.cancel_scope.cancel()
    assert "a crypto worker ended (answered a job it was not given) with 0 jobs" in caplog.text


async def test_a_module_in_the_working_directory_does_not_run_in_a_worker(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker holds the relay key: a ``pickle.py`` where the daemon was started from
    must not be what it imports."""
    (tmp_path / "pickle.py").write_text("raise SystemExit(7)\n")
    monkeypatch.chdir(tmp_path)
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        opened = await workers.call(
            OpenJob(payload(keys, b"safe"), 1000, SENDER, None), HOST, OWNER
        )
        assert opened.plaintext == b"safe"
        nursery.cancel_scope.cancel()
