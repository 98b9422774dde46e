"""Secure-profile clients for the benchmark: many on raw sockets in one process.

Built from the sans-I/O parts exactly as ``tests/secure_harness.py`` builds its
peer (an ``Initiator`` per INIT, ``Keypair.from_handshake``, a ``Session`` with
``Role.CLIENT``; ``session.datagrams(now)`` out, ``session.receive_untrusted`` in,
the channel's events), driven by a plain ``selectors`` loop instead of Trio. Each
client has its own Curve25519 key (one key, one member) and its own non-blocking
UDP socket on 127.0.0.1; it sends unicast to the relay's port only.

Not a product client (that is ``mcrelay.protocol.secure.client``): no rekey (a
benchmark daemon lives far less than the 120 s before one is due), no roaming, no
cookies (registration is paced below the relay's load threshold instead).
"""

import heapq
import os
import selectors
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import MessageDelivered
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.handshake import Initiator, tai64n
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.session import Session

INIT_RETRY_S = 1.0
REGISTER_TIMEOUT_S = 60.0
INITS_PER_S = 80.0
"""Handshakes a process starts per second: two processes together stay below the 200
INITs a second past which the relay wants cookies (that is not what is measured)."""
DRAIN_BATCH = 64
HOST = "127.0.0.1"


@dataclass(eq=False)
class SecureClient:
    sock: socket.socket
    relay: Address
    relay_key: bytes
    static: KeyPair = field(default_factory=KeyPair.generate)
    epoch: int = field(default_factory=lambda: int.from_bytes(os.urandom(4), "little"))
    session: Session | None = None
    initiator: Initiator | None = None
    init_sent_at: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    """Datagrams it dropped, by the reason the protocol gave (a RESPONSE to an INIT it
    already replaced is ``unknown_index``), and ``send_blocked`` for one a full send
    buffer refused (the channel sends it again): the step tables show them."""

    def start_handshake(self, now: float) -> None:
        self.initiator = Initiator(
            self.static,
            self.relay_key,
            ephemeral_private=os.urandom(32),
            sender_index=int.from_bytes(os.urandom(4), "little"),
            timestamp=tai64n(time.time_ns()),
            epoch=self.epoch,
        )
        self.init_sent_at = now
        self._send(self.initiator.datagram, self.relay)

    def receive(self, data: bytes, now: float) -> list[bytes]:
        """Act on one datagram from the relay; the message bodies it delivered."""
        try:
            kind = datagram_type_untrusted(data)
            if kind is DatagramType.RESPONSE and self.initiator is not None:
                established = self.initiator.read_response_untrusted(data)
                self.initiator = None
                keypair = Keypair.from_handshake(established.keys, established.relay_epoch, now)
                self.session = Session(
                    Role.CLIENT, keypair, self.relay, now, initial_rtt_s=now - self.init_sent_at
                )
            elif kind is DatagramType.DATA and self.session is not None:
                header = peek_data_untrusted(data)
                opener = self.session.keypair(header.receiver_index, now)
                if opener is None:
                    self.errors["no_keypair"] += 1
                    return []
                self.session.receive_untrusted(opener, data, header.counter, self.relay, now)
        except RemoteProtocolError as exc:
            self.errors[exc.reason] += 1
            return []
        bodies = []
        session = self.session
        while session is not None and (event := session.channel.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                bodies.append(event.body)
        return bodies

    def flush(self, now: float) -> float:
        """Send what the session has due; its next deadline (``inf`` without one)."""
        if self.session is None:
            return float("inf")
        for data, address in self.session.datagrams(now):
            self._send(data, address)
        return self.session.next_deadline()

    def _send(self, data: bytes, address: Address) -> None:
        try:
            self.sock.sendto(data, address)
        except BlockingIOError:
            self.errors["send_blocked"] += 1


OnBody = Callable[[SecureClient, bytes, float], None]
"""What a process does with each message body its clients deliver (client, body, now)."""


class Clients:
    """Many clients in one selector loop, each woken at its session's deadline."""

    def __init__(
        self, count: int, relay: Address, relay_key: bytes, receive_buffer_bytes: int
    ) -> None:
        self.clients: list[SecureClient] = []
        self._selector = selectors.DefaultSelector()
        self._by_fd: dict[int, SecureClient] = {}
        self._timers: list[tuple[float, int, SecureClient]] = []
        self._due: dict[SecureClient, float] = {}
        """Each client's earliest deadline in ``_timers`` (later entries are stale)."""
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
            # They send unicast only; pinned anyway, so nothing could leave by multicast.
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(HOST))
            sock.bind((HOST, 0))
            sock.setblocking(False)
            client = SecureClient(sock, relay, relay_key)
            self.clients.append(client)
            self._by_fd[sock.fileno()] = client
            self._selector.register(sock, selectors.EVENT_READ)

    def errors(self) -> Counter[str]:
        """Every client's :attr:`SecureClient.errors` together."""
        total: Counter[str] = Counter()
        for client in self.clients:
            total.update(client.errors)
        return total

    def add_reader(self, conn: Connection) -> None:
        """Something else to wake for (the worker's pipe): :meth:`poll` returns it."""
        self._selector.register(conn, selectors.EVENT_READ)

    def wake(self, client: SecureClient, now: float) -> None:
        """Flush ``client`` now and keep its next deadline (unless an earlier one is
        kept already: waking then finds nothing due, and keeps the next)."""
        deadline = client.flush(now)
        if deadline < self._due.get(client, float("inf")):
            self._due[client] = deadline
            heapq.heappush(self._timers, (deadline, id(client), client))

    def poll(self, until: float, on_body: OnBody) -> list[object]:
        """Wait until ``until`` at most (or a datagram, or another reader); act on what
        came and on every deadline passed. The other readers that are ready."""
        now = time.monotonic()
        if self._timers:
            until = min(until, self._timers[0][0])
        others: list[object] = []
        touched: set[SecureClient] = set()
        for key, _events in self._selector.select(max(0.0, until - now)):
            client = self._by_fd.get(key.fd)
            if client is None:
                others.append(key.fileobj)
                continue
            now = time.monotonic()
            for _ in range(DRAIN_BATCH):
                try:
                    data = client.sock.recv(65536)
                except BlockingIOError:
                    break
                for body in client.receive(data, now):
                    on_body(client, body, now)
            touched.add(client)
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            deadline, _, client = heapq.heappop(self._timers)
            if self._due.get(client) == deadline:
                del self._due[client]
                touched.add(client)
        for client in touched:
            self.wake(client, now)
        return others

    def register(self, on_body: OnBody) -> None:
        """Handshake every client, paced at :data:`INITS_PER_S`; an INIT without an
        answer is sent afresh after :data:`INIT_RETRY_S`. Raises after
        :data:`REGISTER_TIMEOUT_S`."""
        started = time.monotonic()
        deadline = started + REGISTER_TIMEOUT_S
        while True:
            now = time.monotonic()
            waiting = [c for c in self.clients if c.session is None]
            if not waiting:
                return
            if now > deadline:
                raise RuntimeError(f"{len(waiting)} of {len(self.clients)} got no RESPONSE")
            allowed = int((now - started) * INITS_PER_S) + 1
            begun = sum(1 for c in self.clients if c.init_sent_at)
            for client in waiting:
                due = not client.init_sent_at or now - client.init_sent_at > INIT_RETRY_S
                if due and (client.init_sent_at or begun < allowed):
                    begun += not client.init_sent_at
                    client.start_handshake(now)
            self.poll(now + 1 / INITS_PER_S, on_body)

    def close(self) -> None:
        self._selector.close()
        for client in self.clients:
            client.sock.close()
