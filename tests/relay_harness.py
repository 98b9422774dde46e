"""A relay on a stub socket, with inline crypto, in the test's own Trio run.

Used by the relay tests (with pytest-trio's ``autojump_clock``) and by the fuzz
target (``fuzz/fuzz_datagram.py``, with a ``MockClock`` it jumps itself). Nothing
goes on any network, and nothing runs outside the Trio thread, so a run is
deterministic and time is Trio's clock alone:

- :class:`StubSocket` stands in for the relay's UDP socket: it never receives,
  records every datagram the relay sends, and can stall (a send would block and
  the socket is not writable, as with a full NIC queue) or refuse an address;
- :class:`InlineWorkers` run the crypto jobs on the Trio thread when they are
  submitted (results still come back through the run loop, as from the threads),
  or hold them until the test releases them, in any order;
- :func:`open_relay` runs a :class:`~mcrelay.daemon.relay.Relay` on both;
- a :class:`Peer` is a client address with a key: its datagrams go in through
  ``Relay.handle_datagram`` at ``trio.current_time()``, and what the relay sent
  it comes out of the stub's record, decoded (and decrypted).
"""

import socket
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, cast

import outcome
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.daemon.relay import Relay
from mcrelay.daemon.workers import CryptoWorkers, Job
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import ClientBound, RelayedMessage
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.settings.config import RelayConfig

RELAY_ADDRESS: Address = ("127.0.0.1", 5007)
UNUSED_KEY_FILE = Path("/nonexistent/relay-key.pem")
"""A relay on the harness is given its key: it never reads a key file."""
UNUSABLE_PEM = crypto.public_key_to_pem(rsa.RSAPublicNumbers(65537, (1 << 2047) | 2).public_key())
"""A 2048-bit "RSA" key with an even modulus: it loads (the relay registers it), and
OpenSSL refuses to encrypt with it (every copy for its member fails to seal)."""


def client_address(n: int) -> Address:
    """The address of the ``n``-th client of a test: ``127.0.0.1:40000+n``."""
    return ("127.0.0.1", 40000 + n)


class StubSocket:
    """Stands in for the relay's UDP socket: never receives, records every send."""

    def __init__(self, address: Address = RELAY_ADDRESS) -> None:
        self.address = address
        # A socket pair whose first end the relay waits on: never readable, and
        # writable unless stall() filled the queue to its peer.
        self._waited, self._peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._waited.setblocking(False)
        self._peer.setblocking(False)
        self.sent: list[tuple[bytes, Address]] = []
        """Every datagram the relay sent, and where, in order."""
        self.sent_bytes = 0
        self.stalled = False
        self.refused: set[Address] = set()
        """Addresses a send to fails (``EHOSTUNREACH``), as to a host with no route."""

    def getsockname(self) -> Address:
        return self.address

    def fileno(self) -> int:
        return self._waited.fileno()

    def recvfrom(self, _size: int) -> NoReturn:
        raise BlockingIOError

    def sendto(self, data: bytes, address: Address) -> int:
        if self.stalled:
            raise BlockingIOError
        if address in self.refused:
            raise OSError(113, "No route to host")
        self.sent.append((data, address))
        self.sent_bytes += len(data)
        return len(data)

    def stall(self) -> None:
        """From now on a send would block, and the socket is not writable."""
        self.stalled = True
        while True:
            try:
                self._waited.send(b"\x00")
            except BlockingIOError:
                return

    def resume(self) -> None:
        """Writable again: whoever waits to send is woken."""
        self.stalled = False
        while True:
            try:
                self._peer.recv(1)
            except BlockingIOError:
                return

    def close(self) -> None:
        self._waited.close()
        self._peer.close()


class InlineWorkers(CryptoWorkers):
    """The crypto workers without processes: a job runs on the Trio thread when submitted,
    or, after :meth:`hold`, when the test releases it."""

    def __init__(self, count: int = 1) -> None:
        super().__init__(count)
        self.state: Any = None
        self.holding = False
        self.held: list[Job[Any]] = []
        """Jobs submitted while holding, in order, not yet run."""
        self.jobs_run = 0

    def install(self, build: Callable[[Any], object], argument: object) -> None:
        self.state = build(argument)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """No process to own (and resize() then only sets :attr:`count`)."""
        task_status.started()
        await trio.sleep_forever()

    def submit(self, job: Job[Any]) -> None:
        if self.holding:
            self.held.append(job)
        else:
            self._run(job)

    def hold(self) -> None:
        """Keep every job submitted from now on, until :meth:`release`."""
        self.holding = True

    def release(self, order: Sequence[int] | None = None) -> None:
        """Run the held jobs at these indexes of :attr:`held`, in this order (default:
        all, in the order they came); without ``order``, stop holding as well."""
        chosen = list(range(len(self.held)) if order is None else order)
        jobs = [self.held[index] for index in chosen]
        self.held = [job for index, job in enumerate(self.held) if index not in chosen]
        if order is None:
            self.holding = False
        for job in jobs:
            self._run(job)

    def _run(self, job: Job[Any]) -> None:
        result = outcome.capture(job.work.run, self.state)
        self.jobs_run += 1
        trio.lowlevel.current_trio_token().run_sync_soon(job.done, result)


def harness_config(**overrides: Any) -> RelayConfig:
    """A relay configuration for the harness (the socket's settings are not used)."""
    overrides.setdefault("crypto_workers", 2)
    return RelayConfig(
        group="224.1.1.1", port=0, interface="127.0.0.1", key_file=UNUSED_KEY_FILE, **overrides
    )


@dataclass
class Harness:
    relay: Relay
    sock: StubSocket
    workers: InlineWorkers
    key: rsa.RSAPrivateKey
    """The relay's key."""
    secure_key: KeyPair
    """The relay's secure profile key."""

    def peer(self, address: Address, key: rsa.RSAPrivateKey) -> "Peer":
        return Peer(self, address, key)

    async def members(self, keys: Sequence[rsa.RSAPrivateKey], count: int) -> list["Peer"]:
        """``count`` clients at ``client_address(0...)`` with ``keys[1:]``, registered,
        and the notices of their registration read."""
        peers = [self.peer(client_address(n), keys[1 + n]) for n in range(count)]
        for peer in peers:
            peer.register()
        await settle()
        for peer in peers:
            peer.take()
        return peers

    def sent_to(self, address: Address) -> list[bytes]:
        return [data for data, to in self.sock.sent if to == address]

    def dropped(self, reason: str) -> int:
        return self.relay.statistics().dropped[reason]

    def drops(self) -> dict[str, int]:
        """The drop reasons counted so far, with their counts (none at 0)."""
        return {reason: n for reason, n in self.relay.statistics().dropped.items() if n}


def running_tasks() -> int:
    """Every task in this Trio run (for tests that no task is left behind)."""
    root = trio.lowlevel.current_root_task()
    assert root is not None
    count, nurseries = 0, list(root.child_nurseries)
    while nurseries:
        for task in nurseries.pop().child_tasks:
            count += 1
            nurseries.extend(task.child_nurseries)
    return count


async def settle() -> None:
    """Until every task of the run waits (on the clock, a socket or an event): what the
    datagrams fed so far cause has happened. The clock does not move."""
    await trio.testing.wait_all_tasks_blocked()


@asynccontextmanager
async def open_relay(
    key: rsa.RSAPrivateKey,
    config: RelayConfig | None = None,
    *,
    secure_key: KeyPair | None = None,
    **overrides: Any,
) -> AsyncIterator[Harness]:
    """A relay on a :class:`StubSocket` and :class:`InlineWorkers`, running in this Trio
    run; ``overrides`` are settings for :func:`harness_config` (when no ``config``)."""
    config = config if config is not None else harness_config(**overrides)
    sock = StubSocket()
    workers = InlineWorkers(config.crypto_workers)
    secure_key = secure_key if secure_key is not None else KeyPair.generate()
    relay = Relay(config, cast(socket.socket, sock), key, secure_key=secure_key, workers=workers)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(relay.run)
            yield Harness(relay, sock, workers, key, secure_key)
            nursery.cancel_scope.cancel()
    finally:
        sock.close()


@dataclass
class Peer:
    """A client at ``address``: what it sends goes straight into the relay."""

    harness: Harness
    address: Address
    key: rsa.RSAPrivateKey
    read: int = 0
    """How much of the stub's record :meth:`take_raw` has looked at."""
    old_keys: list[rsa.RSAPrivateKey] = field(default_factory=list)

    @property
    def relay(self) -> Relay:
        return self.harness.relay

    def send(self, *datagrams: bytes) -> None:
        for datagram in datagrams:
            self.relay.handle_datagram(datagram, self.address, trio.current_time())

    def register(self) -> None:
        """Send its key (the relay needs no key request first)."""
        self.send(legacy.client_key(self.key.public_key()))

    def rekey(self, key: rsa.RSAPrivateKey) -> None:
        self.old_keys.append(self.key)
        self.key = key
        self.register()

    def registered(self) -> bool:
        return self.relay.roster.at(self.address) is not None

    def message(self, text: bytes, msg_id: bytes = b"\x00\x00\x00\x01") -> list[bytes]:
        """The datagrams of a message, as a client would send them (not sent)."""
        return legacy.message_datagrams(self.harness.key.public_key(), text, msg_id)

    def say(self, text: bytes, msg_id: bytes = b"\x00\x00\x00\x01") -> None:
        self.send(*self.message(text, msg_id))

    def take_raw(self) -> list[ClientBound]:
        """What the relay sent this peer since the last take, decoded."""
        sent = self.harness.sock.sent
        mine = [data for data, to in sent[self.read :] if to == self.address]
        self.read = len(sent)
        return [event for data in mine for event in legacy.decode_relay_datagram_untrusted(data)]

    def take(self) -> list[object]:
        """:meth:`take_raw`, each relayed message decrypted into a ``MessageReceived``
        (with its key at the time, or an earlier one of its keys)."""
        return [self.open(event) for event in self.take_raw()]

    def open(self, event: ClientBound) -> object:
        if not isinstance(event, RelayedMessage):
            return event
        for key in [self.key, *reversed(self.old_keys)]:
            try:
                return MessageReceived(
                    event.sender, crypto.decrypt_concatenated_untrusted(key, event.ciphertext)
                )
            except RemoteProtocolError:
                continue
        raise AssertionError(f"{self.address}: a relayed message none of its keys opens")

    def messages(self) -> list[MessageReceived]:
        """The messages among what it was sent since the last take (the rest is dropped)."""
        return [event for event in self.take() if isinstance(event, MessageReceived)]


@contextmanager
def stalled(sock: StubSocket) -> Iterator[None]:
    """A send would block within the block, and the socket is writable again after it."""
    sock.stall()
    try:
        yield
    finally:
        sock.resume()
