"""The crypto workers: jobs run in processes of their own, answers come back to Trio."""

import os
import signal

import outcome
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon import workers as workers_module
from mcrelay.daemon.legacy import sealing
from mcrelay.daemon.legacy.sealing import KeyStore, OpenJob, SealJob, relay_key_der
from mcrelay.daemon.workers import CryptoWorkers, Job, WorkerLost, WorkerStartError
from mcrelay.protocol import legacy
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import RelayedMessage
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from support import wait_until

Keys = list[rsa.RSAPrivateKey]

SENDER = ("127.0.0.1", 40000)


def started(keys: Keys, count: int = 1) -> CryptoWorkers:
    workers = CryptoWorkers(count)
    workers.install(KeyStore.from_der, relay_key_der(keys[0]))
    return workers


def payload(keys: Keys, plaintext: bytes) -> bytes:
    blocks = crypto.encrypt_blocks(keys[0].public_key(), plaintext)
    return b"".join(encode_tlv(TlvType.ENCRYPTED_BLOCK, block) for block in blocks)


def recipient(keys: Keys, index: int) -> tuple[bytes, bytes]:
    key = keys[index].public_key()
    return crypto.key_digest(key), crypto.key_der(key)


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
        opened = await workers.call(job)
        assert opened.plaintext == b"hello"
        assert opened.sealed is not None
        [copy] = opened.sealed
        assert isinstance(copy, bytes)
        assert legacy.decode_relay_datagram_untrusted(copy) == [
            RelayedMessage(SENDER, relayed_ciphertext(copy))
        ]
        assert crypto.decrypt_concatenated_untrusted(keys[1], relayed_ciphertext(copy)) == b"hello"
        with pytest.raises(RemoteProtocolError) as raised:
            await workers.call(OpenJob(b"\x00" * 40, 1000, SENDER, None))
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

    def keep(result: outcome.Outcome[list[object]]) -> None:
        [copy] = result.unwrap()
        assert isinstance(copy, bytes)
        finished.append(copy)

    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        workers.submit(Job(SealJob(SENDER, b"first", (recipient(keys, 1),)), broken))
        for n in range(20):
            workers.submit(Job(SealJob(SENDER, b"%d" % n, (recipient(keys, 1),)), keep))
        await wait_until(lambda: len(finished) == 20)
        nursery.cancel_scope.cancel()
    assert "a crypto job's completion failed" in caplog.text


async def test_a_worker_that_dies_fails_its_jobs_and_another_takes_its_place(
    keys: Keys, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(workers_module, "RESTART_DELAY_S", 0.01)
    results: list[outcome.Outcome[object]] = []
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        await wait_until(lambda: bool(workers.pids))
        [pid] = workers.pids
        for n in range(10):
            workers.submit(Job(SealJob(SENDER, b"%d" % n, (recipient(keys, 1),)), results.append))
        os.kill(pid, signal.SIGKILL)  # before it was written a single job
        await wait_until(lambda: len(results) == 10)
        assert all(
            isinstance(result, outcome.Error) and isinstance(result.error, WorkerLost)
            for result in results
        )
        opened = await workers.call(OpenJob(payload(keys, b"again"), 1000, SENDER, None))
        assert opened.plaintext == b"again"
        assert workers.pids != [pid]
        nursery.cancel_scope.cancel()
    assert "a crypto worker ended (exit status -9) with 10 jobs unanswered" in caplog.text


async def test_a_worker_ignores_sigterm_and_sigint_and_ends_with_its_relay(keys: Keys) -> None:
    """systemd's stop and a terminal's Ctrl-C reach the whole group: the workers go on
    sealing the messages in flight until the relay has settled them."""
    async with trio.open_nursery() as nursery:
        workers = started(keys)
        await nursery.start(workers.run)
        await wait_until(lambda: bool(workers.pids))
        [pid] = workers.pids
        await workers.call(SealJob(SENDER, b"ready", (recipient(keys, 1),)))
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
        opened = await workers.call(OpenJob(payload(keys, b"still here"), 1000, SENDER, None))
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
        workers.resize(3)
        await wait_until(lambda: len(workers.pids) == 3)
        first = list(workers.pids)
        workers.resize(1)
        await wait_until(lambda: len(workers.pids) == 1)
        assert sum(alive(pid) for pid in first) == 1
        opened = await workers.call(OpenJob(payload(keys, b"one left"), 1000, SENDER, None))
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


async def test_a_worker_that_cannot_start_stops_run(keys: Keys) -> None:
    workers = CryptoWorkers(2)
    workers.install(KeyStore.from_der, b"not a key")
    with pytest.raises(WorkerStartError, match=r"ended before it was ready \(exit status 1\)"):
        await workers.run()
