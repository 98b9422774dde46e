"""A reader that stops reading its event stream holds neither the relay, the API nor shutdown.

hypercorn writes inside a shielded cancel scope; these tests stall such a write
(a reader with a tiny receive buffer that never reads, and megabytes of events)
and check that the relay relays, the API answers, a SIGTERM stops the daemon
within its grace and a second SIGTERM at once. Loopback only; waits bounded.
"""

import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
from api_support import api_client
from cryptography.hazmat.primitives.asymmetric import rsa

import mcrelay.api.connections
from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.daemon.notify import Notifier
from mcrelay.protocol.legacy.events import PeerJoined
from mcrelay.service import Daemon, run_daemon
from support import WAIT_S, hold_decryption, join, next_event, relay_config, wait_until

Keys = list[rsa.RSAPrivateKey]
PADDING = "x" * 8192
"""Events of 8 KB: the queue's 1,024 of them are more than the kernel buffers hold."""


@dataclass
class Running:
    daemon: Daemon
    signals: trio.MemorySendChannel[int]
    stopped: trio.Event


@asynccontextmanager
async def daemon_with_signals(key_file: Path, grace_s: float) -> AsyncIterator[Running]:
    """``run_daemon`` with its API on loopback, driven by the test's signals; on exit, waits
    (bounded) until it has returned."""
    send, receive = trio.open_memory_channel[int](8)
    config = relay_config(key_file, api="127.0.0.1:0")
    stopped = trio.Event()

    async def run(task_status: trio.TaskStatus[Daemon]) -> None:
        await run_daemon(
            config,
            receive,
            reload=None,
            notifier=Notifier({}),
            grace_s=grace_s,
            task_status=task_status,
        )
        stopped.set()

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            daemon = await nursery.start(run)
            yield Running(daemon, send, stopped)
            with trio.fail_after(WAIT_S):
                await stopped.wait()


@asynccontextmanager
async def stalled_reader(daemon: Daemon) -> AsyncIterator[trio.socket.SocketType]:
    """``GET /v1/events`` from a socket with a tiny receive buffer that never reads,
    and the event queue filled with megabytes: the server's write is stalled."""
    host, port = daemon.api_urls[0].removeprefix("http://").rsplit(":", 1)
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect((host, int(port)))
        await sock.send(b"GET /v1/events HTTP/1.1\r\nHost: mcrelay\r\n\r\n")
        hub = daemon.relay.events
        await wait_until(lambda: hub.subscribers == 1)
        for n in range(2 * 1024):
            hub.publish("client_left", client=f"10.0.0.1:{n}", reason="timeout", padding=PADDING)
        await trio.sleep(0.1)
        # The stream's task is stuck in a write: its queue no longer drains.
        (queued,) = hub.queued()
        assert queued > 0
        yield sock


@pytest.fixture
def long_send_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """No write deadline within the test: only closing the sockets can end the stall."""
    monkeypatch.setattr(mcrelay.api.connections, "SEND_TIMEOUT_S", 600.0)


@pytest.mark.usefixtures("long_send_timeout")
async def test_a_stalled_reader_holds_neither_relay_nor_api_nor_shutdown(
    relay_key_file: Path, keys: Keys
) -> None:
    async with daemon_with_signals(relay_key_file, grace_s=0.5) as running:
        daemon = running.daemon
        async with stalled_reader(daemon):
            async with join(daemon.relay, keys[1]) as a, join(daemon.relay, keys[2]) as b:
                assert await next_event(a) == PeerJoined(b.address)
                assert await next_event(b) == PeerPresent(a.address)
                await a.send("relayed anyway")
                assert await next_event(b) == MessageReceived(a.address, b"relayed anyway")
            async with api_client(daemon) as http:
                assert (await http.get("/healthz")).status_code == 200
                assert (await http.get("/v1/status")).json()["statistics"]["event_subscribers"] == 1
            await running.signals.send(signal.SIGTERM)
            with trio.fail_after(WAIT_S):  # the grace is 0.5 s
                await running.stopped.wait()


@pytest.mark.usefixtures("long_send_timeout")
async def test_a_second_sigterm_stops_at_once_with_a_stalled_reader(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = hold_decryption(monkeypatch)
    async with daemon_with_signals(relay_key_file, grace_s=600.0) as running:
        relay = running.daemon.relay
        async with stalled_reader(running.daemon):
            async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
                assert await next_event(a) == PeerJoined(b.address)
                # A message in flight, so that the first signal waits for its grace.
                await a.send("held")
                await wait_until(lambda: relay.statistics().pending_relays == 1)
                await running.signals.send(signal.SIGTERM)
                await wait_until(lambda: relay.stopping)
                await running.signals.send(signal.SIGTERM)
                await wait_until(lambda: relay.events.subscribers == 0)  # the API stopped
                gate.set()  # the worker thread may end (the daemon waits for its threads)
                with trio.fail_after(WAIT_S):  # well before the 600 s grace
                    await running.stopped.wait()


async def test_a_reader_that_takes_nothing_is_disconnected(
    relay_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcrelay.api.connections, "SEND_TIMEOUT_S", 0.2)
    async with daemon_with_signals(relay_key_file, grace_s=0.5) as running:
        daemon = running.daemon
        async with stalled_reader(daemon) as sock:
            await wait_until(lambda: daemon.relay.events.subscribers == 0)
            await wait_until(lambda: len(daemon.api.connections) == 0)
            received = b""
            with trio.fail_after(WAIT_S):
                while chunk := await sock.recv(65536):  # what was sent, then the end
                    received += chunk
            assert received.startswith(b"HTTP/1.1 200 ")
        await running.signals.send(signal.SIGTERM)


async def test_the_daemon_stops_while_a_reader_stalls_a_response(relay_key_file: Path) -> None:
    """Not only event streams: any response a reader leaves unread (pipelined requests)."""
    async with daemon_with_signals(relay_key_file, grace_s=0.5) as running:
        host, port = running.daemon.api_urls[0].removeprefix("http://").rsplit(":", 1)
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect((host, int(port)))
            request = b"GET /v1/openapi.json HTTP/1.1\r\nHost: mcrelay\r\n\r\n"
            with trio.move_on_after(1.0):  # until the server stops reading them too
                for _ in range(5000):
                    await sock.send(request)
            await running.signals.send(signal.SIGTERM)
            with trio.move_on_after(WAIT_S):  # the grace is 0.5 s
                await running.stopped.wait()
            assert running.stopped.is_set(), "the daemon did not stop"


async def test_a_sigterm_ends_each_event_stream_whole_after_a_last_event(
    relay_key_file: Path,
) -> None:
    """The streams were cut at stop as at a crash: a watcher could not tell the two
    apart (found by review). The body ends with its last chunk, after relay_stopping."""
    async with daemon_with_signals(relay_key_file, grace_s=0.5) as running:
        async with api_client(running.daemon) as http, http.stream("GET", "/v1/events") as stream:
            await wait_until(lambda: running.daemon.relay.events.subscribers == 1)
            await running.signals.send(signal.SIGTERM)
            body = b"".join([chunk async for chunk in stream.aiter_bytes()])  # ends, whole
    assert body.startswith(b": mcrelay events\n\n")
    assert b"event: relay_stopping\n" in body
