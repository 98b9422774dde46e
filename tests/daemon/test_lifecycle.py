"""Reload (SIGHUP) and drain-then-stop (SIGTERM), in-process, with the test's own signals."""

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import ExitStack, asynccontextmanager, closing
from functools import partial
from pathlib import Path

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.daemon.notify import Notifier
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy.events import PeerJoined
from mcrelay.service import Daemon, apply_reload, run_daemon
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.resolve import resolve
from support import WAIT_S, hold_decryption, join, legacy_of, next_event, wait_until

Keys = list[rsa.RSAPrivateKey]


class NotifyListener:
    """The systemd side of NOTIFY_SOCKET: a datagram socket the test owns."""

    def __init__(self, sock: trio.socket.SocketType, path: Path) -> None:
        self.sock, self.path = sock, path

    async def next(self) -> dict[str, str]:
        with trio.fail_after(WAIT_S):
            data = await self.sock.recv(4096)
        return dict(line.split("=", 1) for line in data.decode().splitlines())

    async def until(self, name: str) -> dict[str, str]:
        while name not in (message := await self.next()):
            pass
        return message


@asynccontextmanager
async def notify_listener(tmp_path: Path) -> AsyncIterator[NotifyListener]:
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with sock:
        await sock.bind(str(tmp_path / "notify.sock"))
        yield NotifyListener(sock, tmp_path / "notify.sock")


class Harness:
    """A daemon configured by a file the test rewrites, and a channel of signals."""

    def __init__(self, tmp_path: Path, key_file: Path) -> None:
        self.file = tmp_path / "mcrelay.toml"
        self.key_file = key_file
        self.write("")
        self.send_signal, self._signals = trio.open_memory_channel[int](8)

    def write(self, extra: str) -> None:
        self.file.write_text(
            f"port = 0\ninterface = '127.0.0.1'\napi = 'off'\nkey_file = '{self.key_file}'\n"
            + extra
        )

    def load(self) -> RelayConfig:
        return resolve({}, {}, self.file).config

    async def start(
        self,
        nursery: trio.Nursery,
        notifier: Notifier,
        grace_s: float = 2.0,
        reload: Callable[[], RelayConfig] | None = None,
    ) -> Daemon:
        run = partial(
            run_daemon,
            self.load(),
            self._signals,
            reload=self.load if reload is None else reload,
            settings_file=self.file,
            notifier=notifier,
            grace_s=grace_s,
        )
        daemon: Daemon = await nursery.start(run)
        return daemon


async def test_reload_applies_live_settings_and_keeps_the_rest(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with ExitStack() as stack:
        async with notify_listener(tmp_path) as heard, trio.open_nursery() as nursery:
            harness = Harness(tmp_path, relay_key_file)
            notifier = stack.enter_context(closing(Notifier({"NOTIFY_SOCKET": str(heard.path)})))
            daemon = await harness.start(nursery, notifier)
            ready = await heard.until("READY")
            assert ready["STATUS"] == "serving 0 clients, 0 messages relayed"
            port = daemon.relay.address[1]

            harness.write(
                "client_timeout = 7\nmax_clients = 3\nreassembly_timeout = 0.2\n"
                "group = '239.9.9.9'\n"
            )
            await harness.send_signal.send(signal.SIGHUP)
            reloading = await heard.next()
            assert reloading["RELOADING"] == "1"
            assert abs(int(reloading["MONOTONIC_USEC"]) - time.monotonic_ns() // 1000) < 60_000_000
            assert (await heard.next())["READY"] == "1"
            config = daemon.relay.config
            assert (config.client_timeout_s, config.max_clients) == (7.0, 3)
            assert daemon.relay.roster.max_members == 3
            assert legacy_of(daemon.relay).reassembler.timeout_s == 0.2
            assert config.group == "224.1.1.1"  # needs a restart: reported, not applied
            assert daemon.relay.address[1] == port
            reloaded = [m for m in caplog.messages if m.startswith("configuration reloaded")]
            assert reloaded == [
                "configuration reloaded; changed: client_timeout, reassembly_timeout, max_clients"
            ]

            harness.write("client_timeout = 'soon'\n")
            await harness.send_signal.send(signal.SIGHUP)
            await heard.until("READY")
            assert daemon.relay.config.client_timeout_s == 7.0  # a bad file changes nothing
            assert sum(m.startswith("configuration reloaded") for m in caplog.messages) == 1

            await harness.send_signal.send(signal.SIGTERM)
            assert (await heard.next())["STOPPING"] == "1"


async def test_sigterm_lets_a_message_in_flight_go_out(
    tmp_path: Path, relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = hold_decryption(monkeypatch)
    async with trio.open_nursery() as nursery:
        harness = Harness(tmp_path, relay_key_file)
        daemon = await harness.start(nursery, Notifier({}))
        async with join(daemon.relay, keys[1]) as a, join(daemon.relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            assert await next_event(b) == PeerPresent(a.address)
            await a.send("last one")
            await wait_until(lambda: daemon.relay.statistics().pending_relays == 1)
            await harness.send_signal.send(signal.SIGTERM)
            await wait_until(lambda: daemon.relay.stopping)
            gate.set()
            assert await next_event(b) == MessageReceived(a.address, b"last one")


async def test_a_second_sigterm_stops_at_once(
    tmp_path: Path,
    relay_key_file: Path,
    keys: Keys,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With five messages held in crypto and a grace of 60 s, the first SIGTERM would wait
    for them; the second stops the daemon at once, the messages undelivered."""
    caplog.set_level(logging.INFO)
    gate = hold_decryption(monkeypatch)
    grace_s = 60.0
    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            harness = Harness(tmp_path, relay_key_file)
            daemon = await harness.start(nursery, Notifier({}), grace_s=grace_s)
            relay = daemon.relay
            sender, other = ("127.0.0.1", 40001), ("127.0.0.1", 40002)
            for source, key in ((sender, keys[1]), (other, keys[2])):
                relay.handle_datagram(
                    legacy.client_key(key.public_key()), source, trio.current_time()
                )
            for n in range(5):
                text = f"slow {n}".encode()
                for datagram in legacy.message_datagrams(
                    keys[0].public_key(), text, n.to_bytes(4, "big")
                ):
                    relay.handle_datagram(datagram, sender, trio.current_time())
            assert relay.statistics().pending_relays == 5
            start = trio.current_time()
            await harness.send_signal.send(signal.SIGTERM)
            await harness.send_signal.send(signal.SIGTERM)
            # The daemon cancels everything as it logs this, the crypto still held; the
            # worker threads are then let go so that they can be joined.
            await wait_until(lambda: "second SIGTERM: stopping now" in caplog.messages)
            gate.set()
    assert trio.current_time() - start < grace_s
    statistics = relay.statistics()
    assert (statistics.counters.messages_relayed, statistics.counters.copies_sent) == (0, 0)
    # Every message cancelled on its way settled its place: none is left pending.
    assert statistics.pending_relays == 0


@pytest.mark.parametrize(
    ("environ", "watchdog_s"),
    [
        ({"WATCHDOG_USEC": "2500000"}, 2.5),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}, 2.5),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        # isdigit() takes these; int() refused the first (a traceback at start) and read
        # the second as 7.
        ({"WATCHDOG_USEC": "\u00b2"}, None),
        ({"WATCHDOG_USEC": "\u0667"}, None),
        ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": "\u00b2"}, None),
    ],
)
def test_the_watchdog_is_read_from_what_systemd_sets(
    environ: dict[str, str], watchdog_s: float | None
) -> None:
    with closing(Notifier(environ)) as notifier:
        assert notifier.watchdog_s == watchdog_s


def test_an_unreachable_notify_socket_is_said_once_a_minute(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """It was a warning at every watchdog ping, without end (found by review)."""
    now = [0.0]
    environ = {"NOTIFY_SOCKET": str(tmp_path / "nobody")}
    with closing(Notifier(environ, clock=lambda: now[0])) as notifier:
        for second in range(60):
            now[0] = float(second)
            notifier.notify("WATCHDOG=1")
        now[0] = 60.0
        notifier.notify("STOPPING=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "mcrelay.daemon.notify"]
    assert len(lines) == 2
    assert lines[0].startswith("cannot notify systemd (WATCHDOG=1): ")
    assert lines[1].startswith("cannot notify systemd (STOPPING=1): ")
    assert lines[1].endswith(" (59 more not sent before this one)")


async def test_the_watchdog_stops_when_the_receive_loop_stops_turning(
    tmp_path: Path, relay_key_file: Path, autojump_clock: trio.testing.MockClock
) -> None:
    with ExitStack() as stack:
        async with notify_listener(tmp_path) as heard, trio.open_nursery() as nursery:
            environ = {"NOTIFY_SOCKET": str(heard.path), "WATCHDOG_USEC": "1000000"}
            notifier = stack.enter_context(closing(Notifier(environ)))
            daemon = await Harness(tmp_path, relay_key_file).start(nursery, notifier)
            await heard.until("READY")
            await heard.until("WATCHDOG")
            await heard.until("WATCHDOG")
            daemon.relay.stop_receiving()  # as if the loop had ended
            pings = 0
            with trio.move_on_after(10):  # mock time: ten seconds of silence cost nothing
                while True:
                    pings += "WATCHDOG" in await heard.next()
            assert pings <= 1  # one may already have been on its way
            nursery.cancel_scope.cancel()


async def test_a_reload_that_fails_in_any_way_keeps_the_daemon(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)

    def outcomes() -> list[str]:
        return [m for m in caplog.messages if m.startswith(("reload failed", "configuration"))]

    async with trio.open_nursery() as nursery:
        harness = Harness(tmp_path, relay_key_file)
        daemon = await harness.start(nursery, Notifier({}))

        async def reload(text: str | None) -> str:
            """Reload from a file holding ``text`` (none: no file); how it ended."""
            done = len(outcomes())
            if text is None:
                harness.file.unlink()
            else:
                harness.write(text)
            await harness.send_signal.send(signal.SIGHUP)
            await wait_until(lambda: len(outcomes()) > done)
            return outcomes()[-1]

        for text in ("x = [" * 2000 + "]" * 2000 + "\n", "port = 1\n[network]\nport = 2\n", None):
            outcome = await reload(text)
            assert outcome.startswith("reload failed"), (text and text[:20], outcome)
            assert daemon.relay.config.client_timeout_s == 30.0
        assert await reload("client_timeout = 4\n") == (
            "configuration reloaded; changed: client_timeout"
        )
        assert daemon.relay.config.client_timeout_s == 4.0
        nursery.cancel_scope.cancel()


async def test_a_reload_with_a_fifo_for_token_file_is_refused_and_the_relay_goes_on(
    tmp_path: Path, relay_key_file: Path, keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    """Reading a FIFO blocked the event loop until someone wrote to it: a reload froze the
    relay. Files are now refused unless regular, and read off the loop."""
    fifo = tmp_path / "token"
    os.mkfifo(fifo, 0o600)
    async with trio.open_nursery() as nursery:
        harness = Harness(tmp_path, relay_key_file)
        daemon = await harness.start(nursery, Notifier({}))
        async with join(daemon.relay, keys[1]) as a, join(daemon.relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            harness.write(f"api_token_file = '{fifo}'\nclient_timeout = 9\n")
            await harness.send_signal.send(signal.SIGHUP)
            await wait_until(lambda: "not a regular file" in caplog.text)
            assert daemon.relay.config.client_timeout_s != 9.0
            await a.send("still relaying")
            while (event := await next_event(b)) != MessageReceived(a.address, b"still relaying"):
                assert isinstance(event, PeerJoined | PeerPresent)
        nursery.cancel_scope.cancel()


async def test_a_stop_during_a_reload_is_not_held_by_it(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A reload waiting on its files (a hung file system: up to 20 s) held a SIGTERM,
    and a second one, until it was done, then was applied (found by review)."""
    released = threading.Event()
    with ExitStack() as stack:
        stack.callback(released.set)
        async with notify_listener(tmp_path) as heard, trio.open_nursery() as nursery:
            harness = Harness(tmp_path, relay_key_file)

            def hung() -> RelayConfig:
                released.wait(60)
                return harness.load()

            notifier = stack.enter_context(closing(Notifier({"NOTIFY_SOCKET": str(heard.path)})))
            await harness.start(nursery, notifier, reload=hung)
            await heard.until("READY")
            await harness.send_signal.send(signal.SIGHUP)
            assert (await heard.next())["RELOADING"] == "1"
            await harness.send_signal.send(signal.SIGHUP)  # one more asked: never run
            await harness.send_signal.send(signal.SIGTERM)
            assert (await heard.next())["STOPPING"] == "1"
    assert not any(m.startswith("configuration reloaded") for m in caplog.messages)


async def test_a_reload_whose_files_hang_is_given_up(
    tmp_path: Path, relay_key_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    released = threading.Event()
    async with trio.open_nursery() as nursery:
        harness = Harness(tmp_path, relay_key_file)
        daemon = await harness.start(nursery, Notifier({}))

        def hung() -> RelayConfig:
            released.wait(WAIT_S)
            return harness.load()

        with trio.fail_after(WAIT_S):
            await apply_reload(daemon, hung, timeout_s=0.05)
        assert "took over 0.05 s" in caplog.text
        released.set()
        nursery.cancel_scope.cancel()
