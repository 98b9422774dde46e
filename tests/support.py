"""Shared test helpers: a relay on loopback, participants, and a raw peer for crafted datagrams.

Rules for every test: loopback only (multicast interface pinned to 127.0.0.1),
port 0, no real sleep longer than a few milliseconds, no timing asserts; waits
are bounded by ``trio.fail_after`` and pytest-timeout. A test of the relay's own
behaviour runs it on the harness (``relay_harness``: a stub socket, inline crypto,
the mock clock) instead; the real daemon on loopback is for the tests where the
sockets are the point (end to end, the API, the CLI, the service's signals).
"""

import io
import socket
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.cli.environment import Environment
from mcrelay.cli.main import run_command
from mcrelay.cli.status import ExitStatus
from mcrelay.client import Participant, ParticipantEvent, open_participant
from mcrelay.daemon.legacy.profile import LegacyProfile
from mcrelay.daemon.relay import Relay
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import ClientBound, ServerKey
from mcrelay.service import Daemon, serve
from mcrelay.settings.config import RelayConfig
from mcrelay.sockets import open_client_socket
from thread_workers import use_thread_workers

GROUP = "224.1.1.1"
LOOPBACK = "127.0.0.1"
ANY_COUNT = 1 << 16
"""More TLVs than any datagram can hold: for tests of the framing alone."""
WAIT_S = 10.0
"""Upper bound on any wait in a test; reached only when something is broken."""


def write_key(path: Path, key: rsa.RSAPrivateKey) -> Path:
    path.write_bytes(crypto.private_key_to_pem(key))
    path.chmod(0o600)
    return path


def relay_config(key_file: Path, **overrides: Any) -> RelayConfig:
    """A relay on loopback; a TCP API without a token is allowed unless a test says not;
    one crypto worker process unless a test says more (each costs its start)."""
    overrides.setdefault("api_tcp_without_token", True)
    overrides.setdefault("crypto_workers", 1)
    overrides.setdefault("port", 0)
    return RelayConfig(group=GROUP, interface=LOOPBACK, key_file=key_file, **overrides)


@asynccontextmanager
async def running_daemon(config: RelayConfig) -> AsyncIterator[Daemon]:
    """The whole daemon (relay, and the API unless ``config.api`` is off) in this Trio run."""
    async with trio.open_nursery() as nursery:
        daemon: Daemon = await nursery.start(serve, config)
        yield daemon
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def running_relay(config: RelayConfig) -> AsyncIterator[Relay]:
    async with running_daemon(config) as daemon:
        yield daemon.relay


def join(
    relay: Relay, key: rsa.RSAPrivateKey, **overrides: Any
) -> AbstractAsyncContextManager[Participant]:
    options: dict[str, Any] = {"retry_interval_s": 0.2, "keepalive_interval_s": 1.0}
    options.update(overrides)
    return open_participant(
        destination=(GROUP, relay.address[1]), interface=LOOPBACK, key=key, **options
    )


async def next_event(participant: Participant) -> ParticipantEvent:
    with trio.fail_after(WAIT_S):
        return await participant.events.receive()


async def events_until(
    participant: Participant, done: Callable[[ParticipantEvent], bool]
) -> list[ParticipantEvent]:
    """Every event up to and including the first for which ``done`` is true."""
    seen: list[ParticipantEvent] = []
    while True:
        seen.append(await next_event(participant))
        if done(seen[-1]):
            return seen


async def wait_until(condition: Callable[[], bool]) -> None:
    """Poll a condition every few milliseconds (for counters the relay updates)."""
    with trio.fail_after(WAIT_S):
        while not condition():  # noqa: ASYNC110 - counters have no event to wait on
            await trio.sleep(0.005)


def legacy_of(relay: Relay) -> LegacyProfile:
    """The relay's legacy profile, which the relays of these tests serve."""
    assert relay.legacy is not None
    return relay.legacy


def dropped(relay: Relay, reason: str) -> int:
    counts = relay.statistics().dropped
    assert isinstance(counts, dict)
    value = counts[reason]
    assert isinstance(value, int)
    return value


class RawPeer:
    """A hand-driven client socket, for datagrams a real participant would never send."""

    def __init__(self, sock: trio.socket.SocketType, relay: Relay, key: rsa.RSAPrivateKey):
        self.sock = sock
        self.relay = relay
        self.key = key
        self.relay_key: rsa.RSAPublicKey | None = None

    @property
    def address(self) -> Address:
        host, port = self.sock.getsockname()[:2]
        return (host, port)

    async def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            await self.sock.sendto(datagram, (GROUP, self.relay.address[1]))

    async def receive(self) -> list[ClientBound]:
        with trio.fail_after(WAIT_S):
            data, _source = await self.sock.recvfrom(65535)
        return legacy.decode_relay_datagram_untrusted(data)

    async def register(self) -> None:
        await self.send(legacy.key_request())
        while not isinstance(answer := (await self.receive())[0], ServerKey):
            pass  # notices meant for an earlier registration
        self.relay_key = crypto.load_public_key_untrusted(answer.pem)
        await self.send(legacy.client_key(self.key.public_key()))
        await wait_until(lambda: self.relay.roster.at(self.address) is not None)

    def message(self, text: bytes, msg_id: bytes = b"\x00\x00\x00\x01") -> list[bytes]:
        assert self.relay_key is not None
        return legacy.message_datagrams(self.relay_key, text, msg_id)


@asynccontextmanager
async def raw_peer(relay: Relay, key: rsa.RSAPrivateKey) -> AsyncIterator[RawPeer]:
    sock = await open_client_socket(interface=LOOPBACK)
    with sock:
        yield RawPeer(sock, relay, key)


@asynccontextmanager
async def peer_on(host: str, relay: Relay, key: rsa.RSAPrivateKey) -> AsyncIterator[RawPeer]:
    """A raw peer whose datagrams come from ``host`` (another loopback address)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        await sock.bind((host, 0))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
        yield RawPeer(sock, relay, key)


@dataclass
class Console:
    """An Environment on string buffers, and the buffers to read back."""

    stdin_text: str = ""
    environ: dict[str, str] = field(default_factory=dict)
    stdout: io.StringIO = field(default_factory=io.StringIO)
    stderr: io.StringIO = field(default_factory=io.StringIO)

    def __post_init__(self) -> None:
        self.env = Environment(
            stdin=io.StringIO(self.stdin_text),
            stdout=self.stdout,
            stderr=self.stderr,
            environ=self.environ,
        )

    async def run(self, *argv: str) -> ExitStatus:
        with trio.fail_after(WAIT_S):
            return await run_command(list(argv), self.env)

    def out_lines(self) -> list[str]:
        """Complete lines written to stdout so far."""
        return self.stdout.getvalue().splitlines()

    def err_lines(self) -> list[str]:
        return self.stderr.getvalue().splitlines()


def hold_decryption(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """Every message waits in its worker thread, in flight, until the event is set (the
    relays made from now on run their RSA work in threads)."""
    use_thread_workers(monkeypatch)
    real = legacy.decrypt_payload_untrusted
    gate = threading.Event()

    def held(*args: Any) -> bytes:
        gate.wait(WAIT_S)
        return real(*args)

    monkeypatch.setattr(legacy, "decrypt_payload_untrusted", held)
    return gate


def assert_one_error_line(console: Console, *fragments: str) -> None:
    lines = console.err_lines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("mcrelay: error:"), lines
    for fragment in fragments:
        assert fragment in lines[0], lines
    assert "Traceback" not in console.stderr.getvalue()
