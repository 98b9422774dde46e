"""The relay: one receive loop, a task per message, RSA in worker threads, a send task.

The receive loop reads the socket until it would block, decoding and dispatching
each datagram synchronously. A message's life is a task in the ``messages``
nursery, started when its first fragment arrives (or, for a message of one
fragment, when it completes): it waits for the message to complete under a cancel
scope at the reassembly deadline, hands the decryption and sealing to the crypto
workers (``workers.py``, ``sealing.py``) and awaits them, waits for its sender's
earlier messages so that each sender's messages go out in the order they completed,
seals afresh once for recipients that re-keyed meanwhile, sends, and settles its
bookkeeping in ``finally``. Whether a message may go on is decided before it costs
anything (admission: dropped and counted as ``overloaded``), so the number of tasks
is bounded by the reassembly byte cap and ``max_pending_relays``.

Everything sent leaves in the order it was decided: a copy is sent at once, without
blocking, when nothing waits; otherwise, and for every notice (one per client for
each join and leave, so thousands at once), it waits in one queue that the send task
drains a batch per turn, so the loop keeps receiving. Notices and copies have
separate bounds in that queue. When a bound is reached the datagram or message is
dropped and counted, never queued without end.
"""

import logging
import socket
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.bans import BanList
from mcrelay.daemon.events import EventHub
from mcrelay.daemon.ratelimit import AnswerLimiter
from mcrelay.daemon.registry import Client, ClientRegistry, Registration, RegistryFull
from mcrelay.daemon.sealing import (
    SEAL_INLINE_MAX,
    Sealed,
    is_chat,
    open_and_seal,
    seal_batch,
    split,
)
from mcrelay.daemon.stats import RelayCounters
from mcrelay.daemon.workers import CryptoWorkers
from mcrelay.protocol import crypto, legacy
from mcrelay.protocol.addresses import RELAY_ITSELF, Address, format_address
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.events import (
    ClientKey,
    DisconnectRequest,
    FragmentReceived,
    Ignored,
    Keepalive,
    KeyRequest,
)
from mcrelay.protocol.reassembly import Complete, MessageKey, Pending, Reassembler, Rejected
from mcrelay.settings.config import RelayConfig

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES = 65535
CLEANUP_INTERVAL_S = 1.0
RECEIVE_TICK_S = 0.5
"""The receive loop turns at least this often, idle or not (the watchdog looks at it)."""
RECEIVE_BATCH_DATAGRAMS = 64
SEND_BATCH_DATAGRAMS = 256
"""Datagrams handled per turn of the receive loop, and of the send task, before they yield."""
MAX_RELAYS_PER_CLIENT = 32
"""Messages of one client between completion and fan-out; the rest are ``overloaded``."""
MAX_POSTS_IN_FLIGHT = 1
"""Operator messages being sealed at once; another is refused (:class:`Overloaded`)."""
POST_RETRY_AFTER_S = 1.0


class Overloaded(Exception):
    """The relay cannot take this message now; ``retry_after_s`` says when to try again."""

    def __init__(self, message: str, retry_after_s: float = POST_RETRY_AFTER_S) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(slots=True, eq=False)
class _Message:
    """A message from its first fragment until its copies are out (or it is dropped)."""

    sender: Client
    completed: trio.Event = field(default_factory=trio.Event)
    """Set when the message is complete, or ended in reassembly (then ``turn`` is None)."""
    payload: bytes = b""
    turn: "_Turn | None" = None
    """Its place in its sender's line, taken when it completed and was admitted."""


@dataclass(slots=True, eq=False)
class _Turn:
    """A message's place in its sender's line: it goes out after ``previous`` is set."""

    previous: trio.Event | None
    done: trio.Event = field(default_factory=trio.Event)

    async def wait_previous(self) -> None:
        if self.previous is not None and not self.previous.is_set():
            await self.previous.wait()


class Relay:
    def __init__(
        self,
        config: RelayConfig,
        sock: socket.socket,
        key: rsa.RSAPrivateKey,
        *,
        workers: CryptoWorkers | None = None,
    ):
        """``sock`` is the bound, non-blocking relay socket; ``workers`` run the RSA work.
        Every setting reaches the relay's parts through :meth:`reconfigure`."""
        self._sock = sock
        self._key = key
        self.address: Address = sock.getsockname()[:2]
        public_key = key.public_key()
        self.fingerprint = crypto.fingerprint(public_key)
        self._server_key = legacy.server_key(public_key)
        self.registry = ClientRegistry()
        self.reassembler = Reassembler(timeout_s=config.reassembly_timeout_s)
        self._answers = AnswerLimiter()
        self._registrations = AnswerLimiter()
        self.counters = RelayCounters()
        self.bans = BanList()
        self.events = EventHub()
        self._workers = workers if workers is not None else CryptoWorkers()
        # One queue, so a leave notice never overtakes the leaver's last copies; notices
        # and copies are bounded apart, so a burst of either cannot crowd out the other.
        self._outgoing: deque[tuple[bytes, Address, bool]] = deque()
        self._queued: Counter[bool] = Counter()
        """Datagrams in ``_outgoing``: notices under True, copies under False."""
        self._backlog_added = trio.Event()
        self._backlog_sent = trio.Event()
        self._leaving: dict[Address, Client] = {}
        self._reassembling: dict[MessageKey, _Message] = {}
        self._latest: dict[Address, trio.Event] = {}
        """Per sender, the event its latest admitted message sets once it has settled."""
        self._pending_relays = 0
        self._posts_in_flight = 0
        self._messages: trio.Nursery | None = None
        self._receiving = trio.CancelScope()
        self.drained = trio.Event()
        """Set once receiving has stopped and every message has settled and gone out."""
        self.last_turn = 0.0
        """When the receive loop last went round (Trio's clock)."""
        self._handlers: dict[type[Any], Callable[[Any, Address, float], None]] = {
            KeyRequest: self._on_key_request,
            ClientKey: self._on_client_key,
            FragmentReceived: self._on_fragment,
            DisconnectRequest: self._on_disconnect,
            Keepalive: self._on_keepalive,
            Ignored: self._on_ignored,
        }
        self.reconfigure(config)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The relay's tasks; after :meth:`stop_receiving`, :attr:`drained` is set once the
        ``messages`` nursery has closed and the send queue is empty (then it idles)."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._workers.run)
            nursery.start_soon(self._send_loop)
            nursery.start_soon(self._cleanup_loop)
            async with trio.open_nursery() as messages:
                self._messages = messages
                messages.start_soon(self._receive_loop)
                task_status.started()
            self._messages = None
            while self._outgoing:
                self._backlog_sent = trio.Event()
                await self._backlog_sent.wait()
            self.drained.set()

    def statistics(self) -> dict[str, object]:
        return {
            "clients": len(self.registry),
            "reassembly_in_flight": self.reassembler.in_flight,
            "reassembly_bytes": self.reassembler.buffered_bytes,
            "pending_relays": self._pending_relays,
            "send_queue": len(self._outgoing),
            "bans": len(self.bans.active(trio.current_time())),
            "event_subscribers": self.events.subscribers,
            **self.counters.snapshot(),
        }

    def reconfigure(self, config: RelayConfig) -> None:
        """Apply the settings that can change while running (the caller keeps the rest);
        at start, every setting."""
        self.config = config
        public_key = self._key.public_key()
        self.registry.configure(
            max_clients=config.max_clients, max_clients_per_host=config.max_clients_per_host
        )
        self.reassembler.timeout_s = config.reassembly_timeout_s
        self.reassembler.max_fragments = legacy.max_fragments(public_key, config.max_message_bytes)
        self.reassembler.max_messages_per_source = config.max_messages_per_source
        self.reassembler.max_total_bytes = config.max_reassembly_bytes
        self._answers.configure(
            per_source_burst=config.key_answers_per_source_burst,
            per_source_per_s=config.key_answers_per_source_per_s,
            total_burst=config.key_answers_total_burst,
            total_per_s=config.key_answers_total_per_s,
        )
        self._registrations.configure(
            per_source_burst=config.registrations_per_host_burst,
            per_source_per_s=config.registrations_per_host_per_s,
            total_burst=config.registrations_total_burst,
            total_per_s=config.registrations_total_per_s,
        )
        self._workers.resize(config.crypto_workers)

    def stop_receiving(self) -> None:
        """Take no more datagrams; what is already in flight goes on."""
        self._receiving.cancel()

    @property
    def stopping(self) -> bool:
        return self._receiving.cancel_called

    def remove(self, address: Address, reason: str) -> Client | None:
        """Remove a client and tell every other client it left."""
        client = self.registry.remove(address)
        if client is not None:
            self._client_left(client, reason)
        return client

    def kick(
        self, address: Address, ban_s: float | None = None, *, host: bool = False
    ) -> list[Client]:
        """An operator's removal; return the clients removed.

        With ``ban_s`` the address is also ignored that long; with ``host`` as well, the
        ban covers its whole host (every port) and every client of that host goes too."""
        if ban_s is not None:
            self.bans.ban(address[0] if host else address, ban_s, trio.current_time())
        chosen = [c.address for c in self.registry if c.address[0] == address[0]] if host else []
        removed = [self.remove(a, "kick") for a in dict.fromkeys([address, *chosen])]
        return [client for client in removed if client is not None]

    async def post(self, plaintext: bytes, recipients: list[Client]) -> int:
        """Send a message from the relay itself (sender 0.0.0.0:0); return the copies sent.

        Admitted as a client's message is (it counts against ``max_pending_relays``),
        one at a time; otherwise :class:`Overloaded` is raised and ``overloaded`` counted.
        It is a task in the ``messages`` nursery, ordered after the relay's earlier
        posts, so a stop waits for it. Its sealing goes to the workers a few recipients
        per job, at most one job per worker queued at once, so clients' messages are
        sealed in between: a large post delays them by a job's time, not the post's."""
        messages = self._messages
        if messages is None or self.stopping:
            raise Overloaded("the relay is stopping")
        if (
            self._pending_relays >= self.config.max_pending_relays
            or self._posts_in_flight >= MAX_POSTS_IN_FLIGHT
        ):
            self._drop(DropReason.OVERLOADED, RELAY_ITSELF)
            raise Overloaded("the relay is busy sealing other messages; try again shortly")
        copies: list[int] = []
        turn = self._enter_line(RELAY_ITSELF)
        self._posts_in_flight += 1
        messages.start_soon(self._post, plaintext, recipients, copies, turn)
        await turn.done.wait()
        return copies[0] if copies else 0

    async def _post(
        self, plaintext: bytes, recipients: list[Client], copies: list[int], turn: _Turn
    ) -> None:
        try:
            keys = [client.key for client in recipients]
            sealed: list[Sealed] = [DropReason.INTERNAL_ERROR] * len(keys)
            starts = iter(range(0, len(keys), SEAL_INLINE_MAX))

            async def seal_batches() -> None:
                for start in starts:
                    batch = keys[start : start + SEAL_INLINE_MAX]
                    work = partial(seal_batch, RELAY_ITSELF, plaintext, batch)
                    sealed[start : start + len(batch)] = await self._workers.call(work)

            async with trio.open_nursery() as nursery:
                for _ in range(min(self._workers.count, len(keys))):
                    nursery.start_soon(seal_batches)
            await turn.wait_previous()
            copies.append(self._deliver(RELAY_ITSELF, len(plaintext), recipients, sealed))
        except Exception:
            log.exception("posting a message failed")
            self._drop(DropReason.INTERNAL_ERROR, RELAY_ITSELF)
        finally:
            self._posts_in_flight -= 1
            self._leave_line(RELAY_ITSELF, turn)

    # The receive path: synchronous from the socket to the crypto workers.

    async def _receive_loop(self) -> None:
        with self._receiving:
            while True:
                self.last_turn = trio.current_time()
                with trio.move_on_after(RECEIVE_TICK_S):
                    await trio.lowlevel.wait_readable(self._sock)
                    self._receive_batch()

    def _receive_batch(self) -> None:
        for _ in range(RECEIVE_BATCH_DATAGRAMS):
            try:
                data, source = self._sock.recvfrom(MAX_DATAGRAM_BYTES)
            except BlockingIOError:
                return
            except OSError as exc:
                log.warning("receive failed: %s", exc)
                return
            self.handle_datagram(data, (source[0], source[1]), trio.current_time())

    def handle_datagram(self, data: bytes, source: Address, now: float) -> None:
        self.counters.datagrams_in += 1
        self.counters.bytes_in += len(data)
        if self.bans and self.bans.is_banned(source, now):
            self._drop(DropReason.BANNED, source)
            return
        try:
            events = legacy.decode_client_datagram_untrusted(data)
        except RemoteProtocolError as exc:
            self._drop(exc.reason, source, exc)
            return
        client = self.registry.get(source)
        if client is not None:
            self.registry.touch(source, now)
            client.bytes_in += len(data)
        for event in events:
            self._handlers[type(event)](event, source, now)

    def _on_key_request(self, _event: KeyRequest, source: Address, now: float) -> None:
        if self._answers.allow(source, now):
            self._notify(self._server_key, source)
        else:
            self._drop(DropReason.RATE_LIMITED, source)

    def _on_client_key(self, event: ClientKey, source: Address, now: float) -> None:
        try:
            key = crypto.load_public_key_untrusted(event.pem)
            if not self.registry.holds(source, key) and not self._registrations.allow(
                (source[0], 0), now
            ):
                self._drop(DropReason.RATE_LIMITED, source, "registration")
                return
            outcome = self.registry.register(source, key, now)
        except RemoteProtocolError as exc:
            log.info("refused key from %s: %s", format_address(source), exc)
            self._drop(exc.reason, source, exc)
            return
        except RegistryFull as exc:
            self._drop(DropReason.REGISTRY_FULL, source, exc)
            return
        if outcome is Registration.REFRESHED:
            return
        log.info(
            "client %s %s",
            format_address(source),
            "joined" if outcome is Registration.NEW else "re-keyed",
        )
        self.events.publish(
            "client_joined",
            client=format_address(source),
            fingerprint=crypto.fingerprint(key),
            rekeyed=outcome is Registration.REKEYED,
        )
        earlier = self._leaving.pop(source, None)
        if earlier is not None:
            # The address left with messages in flight and is back: say it left first.
            self._announce_left(source, earlier.left_reason or "disconnect")
            earlier.left_reason = None
        client = self.registry.get(source)
        assert client is not None
        others = self.registry.others(source)
        self._broadcast(client.joined_notice, [other.address for other in others])
        if outcome is Registration.NEW:
            for other in others:
                if not self._notify(other.joined_notice, source):
                    break

    def _on_fragment(self, event: FragmentReceived, source: Address, now: float) -> None:
        # Only a registered source's fragment can complete a message, so a message's
        # sender is always registered at completion (the spec's "source gone" check).
        sender = self.registry.get(source)
        if sender is None:
            self._drop(DropReason.UNREGISTERED, source)
            return
        key = (source, event.fragment.msg_id)
        if self.reassembler.starts(key, now) and not self._admit(sender):
            # Refused before it costs anything: no reassembly, no task.
            return
        added = self.reassembler.add(source, event.fragment, now)
        for ended, reason in added.dropped:
            self._drop(reason, ended[0])
            self._end_reassembly(ended)
        if isinstance(added, Rejected):
            self._drop(added.reason, source)
            if added.ended:
                self._end_reassembly(key)
        elif isinstance(added, Pending):
            if added.new:
                self._start_message(key, _Message(sender), added.deadline)
        else:
            self._complete(key, sender, added)

    def _on_disconnect(self, _event: DisconnectRequest, source: Address, _now: float) -> None:
        if self.remove(source, "disconnect") is None:
            self._drop(DropReason.UNREGISTERED, source)

    def _on_keepalive(self, _event: Keepalive, source: Address, _now: float) -> None:
        if source not in self.registry:
            self._drop(DropReason.UNREGISTERED, source)

    def _on_ignored(self, event: Ignored, source: Address, _now: float) -> None:
        self._drop(DropReason.UNKNOWN_TYPE, source, f"TLV type {event.type}")

    # A message's life: a task in the messages nursery, from its first fragment on.

    def _start_message(self, key: MessageKey, message: _Message, deadline: float) -> None:
        assert self._messages is not None, "fragments are received only while receiving"
        self._reassembling[key] = message
        self._messages.start_soon(self._message, message, deadline)

    def _complete(self, key: MessageKey, sender: Client, complete: Complete) -> None:
        """Admit a message as it completes: it takes its place in its sender's line now,
        so that its sender's messages go out in the order they completed, and a leave
        announced meanwhile waits for it."""
        message = self._reassembling.pop(key, None)
        if message is None:  # one fragment: complete at once, its task has nothing to wait for
            message = _Message(sender)
            assert self._messages is not None, "fragments are received only while receiving"
            self._messages.start_soon(self._message, message, trio.current_time())
        if self._admit(sender):
            sender.messages_in += 1
            sender.relays_in_flight += 1
            message.payload, message.turn = complete.payload, self._enter_line(sender.address)
        message.completed.set()

    def _end_reassembly(self, key: MessageKey) -> None:
        """The reassembler dropped the message (counted there): its task ends."""
        message = self._reassembling.pop(key, None)
        if message is not None:
            message.completed.set()

    async def _message(self, message: _Message, deadline: float) -> None:
        with trio.move_on_at(deadline):
            await message.completed.wait()
        if message.turn is not None:
            await self._relay(message.sender, message.payload, message.turn)
        elif not message.completed.is_set():  # its deadline passed
            for late in self.reassembler.expire(trio.current_time()):
                self._drop(DropReason.REASSEMBLY_TIMEOUT, late[0])
                self._end_reassembly(late)

    def _admit(self, sender: Client) -> bool:
        """Is there room for one more of its messages in the crypto stage? Asked when a
        message would start and again when it completes; a refusal is ``overloaded``."""
        if (
            self._pending_relays >= self.config.max_pending_relays
            or sender.relays_in_flight >= MAX_RELAYS_PER_CLIENT
        ):
            self._drop(DropReason.OVERLOADED, sender.address)
            return False
        return True

    def _enter_line(self, source: Address) -> _Turn:
        """A new message of ``source``: it counts as pending and takes its place in line."""
        self._pending_relays += 1
        turn = _Turn(self._latest.get(source))
        self._latest[source] = turn.done
        return turn

    def _leave_line(self, source: Address, turn: _Turn) -> None:
        self._pending_relays -= 1
        turn.done.set()
        if self._latest.get(source) is turn.done:
            del self._latest[source]

    async def _relay(self, sender: Client, payload: bytes, turn: _Turn) -> None:
        """Open and seal in the workers, wait for the sender's earlier messages, re-seal
        once for whoever re-keyed meanwhile, send; settle whatever happens."""
        source = sender.address
        try:
            # Who gets it is decided now, so that a small fan-out seals in the same job
            # as the decryption: one hand-off per message, not one per step.
            recipients = self.registry.others(source)
            keys = [client.key for client in recipients]
            failure: RemoteProtocolError | None = None
            plaintext, sealed = b"", None
            try:
                work = partial(
                    open_and_seal, self._key, payload, self.config.max_message_bytes, source, keys
                )
                plaintext, sealed = await self._workers.call(work)
                if sealed is None and is_chat(plaintext, self.config.max_message_bytes):
                    sealed = await self._seal(source, plaintext, keys)
            except RemoteProtocolError as exc:
                failure = exc
            await turn.wait_previous()
            if failure is not None:
                self._drop(failure.reason, source, failure)
                return
            if sealed is not None:
                # Recipients re-keyed while it was being sealed: seal their copies afresh,
                # once (re-keys can be spoofed; they must not hold the line).
                rekeyed = [i for i, c in enumerate(recipients) if c.key is not keys[i]]
                if rekeyed:
                    again = await self._seal(
                        source, plaintext, [recipients[i].key for i in rekeyed]
                    )
                    for index, copy in zip(rekeyed, again, strict=True):
                        sealed[index] = copy
            self._finish(sender, plaintext, recipients, sealed)
        except Exception:
            # A bug must cost one message, never the daemon: count it, log it, go on.
            log.exception("relaying a message from %s failed", format_address(source))
            self._drop(DropReason.INTERNAL_ERROR, source)
        finally:
            self._leave_line(source, turn)
            sender.relays_in_flight -= 1
            if sender.left_reason is not None and not sender.relays_in_flight:
                self._leaving.pop(source, None)
                reason, sender.left_reason = sender.left_reason, None
                self._announce_left(source, reason)

    async def _seal(
        self, source: Address, plaintext: bytes, keys: Sequence[rsa.RSAPublicKey]
    ) -> list[Sealed]:
        """One copy per key, sealed by the workers, a job per worker."""
        parts = split(range(len(keys)), max(1, min(len(keys), self._workers.count)))
        sealed: list[Sealed] = [DropReason.INTERNAL_ERROR] * len(keys)

        async def seal_part(part: list[int]) -> None:
            work = partial(seal_batch, source, plaintext, [keys[i] for i in part])
            for index, copy in zip(part, await self._workers.call(work), strict=True):
                sealed[index] = copy

        async with trio.open_nursery() as nursery:
            for part in parts:
                nursery.start_soon(seal_part, part)
        return sealed

    def _finish(
        self,
        sender: Client,
        plaintext: bytes,
        recipients: list[Client],
        sealed: list[Sealed] | None,
    ) -> None:
        source = sender.address
        current = self.registry.get(source) is sender
        if len(plaintext) > self.config.max_message_bytes:
            self._drop(DropReason.TOO_LARGE, source)
        elif plaintext == legacy.CONNECT_WORD:
            if current:
                self.registry.touch(source, trio.current_time())
        elif plaintext == legacy.DISCONNECT_WORD:
            if current:
                self.remove(source, "disconnect")
        else:
            assert sealed is not None
            self._deliver(source, len(plaintext), recipients, sealed)

    def _deliver(
        self, sender: Address, size: int, recipients: list[Client], sealed: list[Sealed]
    ) -> int:
        """Send each recipient's datagram (or count why it has none); return the copies."""
        copies = 0
        for client, datagram in zip(recipients, sealed, strict=True):
            if isinstance(datagram, DropReason):
                self._drop(datagram, client.address)
            elif self._send(datagram, client.address):
                client.messages_out += 1
                client.bytes_out += len(datagram)
                copies += 1
        self.counters.messages_relayed += 1
        self.counters.copies_sent += copies
        self.events.publish(
            "message_relayed", sender=format_address(sender), size=size, recipients=copies
        )
        return copies

    # Sending and housekeeping.

    def _notify(self, datagram: bytes, address: Address) -> bool:
        """Queue a notice for the send task; when its bound is reached, drop and count it.

        Notices are not sent from here: a join or leave makes one per client, and
        thousands of sends in a row would keep the loop from receiving."""
        return self._queue(datagram, address, notice=True)

    def _broadcast(self, datagram: bytes, addresses: list[Address]) -> None:
        for sent, address in enumerate(addresses):
            if not self._notify(datagram, address):
                self.counters.dropped[DropReason.SEND_QUEUE_FULL] += len(addresses) - sent - 1
                return

    def _send(self, datagram: bytes, address: Address) -> bool:
        """Send a copy now if nothing waits, else queue it; False if dropped."""
        if not self._outgoing:
            sent = self._sendto(datagram, address)
            if sent is not None:
                return sent
        return self._queue(datagram, address, notice=False)

    def _queue(self, datagram: bytes, address: Address, *, notice: bool) -> bool:
        """Leave a datagram to the send task; False (dropped, counted) past its bound."""
        if self._queued[notice] >= self.config.send_queue_datagrams:
            self._drop(DropReason.SEND_QUEUE_FULL, address)
            return False
        self._queued[notice] += 1
        self._outgoing.append((datagram, address, notice))
        self._backlog_added.set()
        return True

    def _sendto(self, datagram: bytes, address: Address) -> bool | None:
        """Send now: True when sent, False when refused (counted), None when it would block."""
        try:
            self._sock.sendto(datagram, address)
        except BlockingIOError:
            return None
        except OSError as exc:
            self._drop(DropReason.SEND_FAILED, address, exc)
            return False
        self.counters.datagrams_out += 1
        self.counters.bytes_out += len(datagram)
        return True

    async def _send_loop(self) -> None:
        while True:
            if not self._outgoing:
                self._backlog_added = trio.Event()
                await self._backlog_added.wait()
            await trio.lowlevel.wait_writable(self._sock)
            self._send_queued()

    def _send_queued(self) -> None:
        for _ in range(SEND_BATCH_DATAGRAMS):
            if not self._outgoing:
                self._backlog_sent.set()
                return
            datagram, address, notice = self._outgoing[0]
            if self._sendto(datagram, address) is None:
                return
            self._outgoing.popleft()
            self._queued[notice] -= 1

    async def _cleanup_loop(self) -> None:
        while True:
            await trio.sleep(min(CLEANUP_INTERVAL_S, self.config.client_timeout_s / 4))
            now = trio.current_time()
            for client in self.registry.expire(now, self.config.client_timeout_s):
                self._client_left(client, "timeout")

    def _client_left(self, client: Client, reason: str) -> None:
        """Announce a removal, after the client's messages in flight have gone out."""
        if client.relays_in_flight:
            client.left_reason = reason
            self._leaving[client.address] = client
        else:
            self._announce_left(client.address, reason)

    def _announce_left(self, address: Address, reason: str) -> None:
        log.info("client %s left (%s)", format_address(address), reason)
        self.events.publish("client_left", client=format_address(address), reason=reason)
        self._broadcast(legacy.peer_left(address), [other.address for other in self.registry])

    def _drop(self, reason: DropReason, source: Address, detail: object = None) -> None:
        self.counters.dropped[reason] += 1
        self.events.dropped(reason.value, source)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dropped %s from %s: %s", reason, format_address(source), detail or "")
