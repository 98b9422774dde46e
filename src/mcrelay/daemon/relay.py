"""The relay: one receive loop, a task per message in reassembly, crypto off the loop.

The receive loop decodes and dispatches each datagram synchronously and never
waits on crypto: a completed message goes to its own task, which decrypts and
re-encrypts in worker threads under a ``CapacityLimiter``. Everything the relay
sends goes through one bounded outbox drained by the send task. When a bound is
reached the datagram or message is dropped and counted, never queued without end.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.bans import BanList
from mcrelay.daemon.config import RelayConfig
from mcrelay.daemon.events import EventHub
from mcrelay.daemon.ratelimit import AnswerLimiter
from mcrelay.daemon.registry import Client, ClientRegistry, Registration, RegistryFull
from mcrelay.daemon.stats import RelayCounters
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
from mcrelay.protocol.reassembly import Complete, MessageKey, Reassembler, Rejected

log = logging.getLogger(__name__)

MAX_DATAGRAM_BYTES = 65535
CLEANUP_INTERVAL_S = 1.0
RECEIVE_TICK_S = 0.5
"""The receive loop turns at least this often, idle or not (the watchdog looks at it)."""
MAX_RELAYS_PER_CLIENT = 32
"""Messages of one client between completion and fan-out; the rest are ``overloaded``."""


@dataclass(slots=True)
class _Waiting:
    """A message in reassembly, as its task sees it."""

    done: trio.Event = field(default_factory=trio.Event)
    admitted: tuple[Client, bytes, "_Turn"] | None = None


@dataclass(slots=True)
class _Turn:
    """A sender's messages fan out in the order they completed, though they decrypt in parallel."""

    previous: trio.Event | None
    done: trio.Event = field(default_factory=trio.Event)


class Relay:
    def __init__(self, config: RelayConfig, sock: trio.socket.SocketType, key: rsa.RSAPrivateKey):
        self.config = config
        self._sock = sock
        self._key = key
        self.address: Address = sock.getsockname()[:2]
        public_key = key.public_key()
        self.fingerprint = crypto.fingerprint(public_key)
        self._server_key = legacy.server_key(public_key)
        self.registry = ClientRegistry(
            max_clients=config.max_clients, max_clients_per_host=config.max_clients_per_host
        )
        self.reassembler = Reassembler(
            timeout_s=config.reassembly_timeout_s,
            max_fragments=legacy.max_fragments(public_key, config.max_message_bytes),
            max_messages_per_source=config.max_messages_per_source,
            max_total_bytes=config.max_reassembly_bytes,
        )
        self._answers = AnswerLimiter(
            per_source_burst=config.key_answers_per_source_burst,
            per_source_per_s=config.key_answers_per_source_per_s,
            total_burst=config.key_answers_total_burst,
            total_per_s=config.key_answers_total_per_s,
        )
        self.counters = RelayCounters()
        self.bans = BanList()
        self.events = EventHub()
        self._crypto = trio.CapacityLimiter(config.crypto_workers)
        # Notices (joins, leaves, key answers) have their own queue, sent first-come beside
        # relayed messages, so a burst of messages cannot crowd presence out.
        self._notices, self._notices_drain = trio.open_memory_channel[tuple[bytes, Address]](
            config.send_queue_datagrams
        )
        self._outbox, self._outbox_drain = trio.open_memory_channel[tuple[bytes, Address]](
            config.send_queue_datagrams
        )
        self._registrations = AnswerLimiter(
            per_source_burst=config.registrations_per_host_burst,
            per_source_per_s=config.registrations_per_host_per_s,
            total_burst=config.registrations_total_burst,
            total_per_s=config.registrations_total_per_s,
        )
        self._leaving: dict[Address, Client] = {}
        self._sends_in_flight = 0
        self._waiting: dict[MessageKey, _Waiting] = {}
        self._last_turn: dict[Address, _Turn] = {}
        self._pending_relays = 0
        self._nursery: trio.Nursery | None = None
        self._receiving = trio.CancelScope()
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

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._send_loop, self._notices_drain)
            nursery.start_soon(self._send_loop, self._outbox_drain)
            nursery.start_soon(self._cleanup_loop)
            nursery.start_soon(self._receive_loop)
            task_status.started()

    def statistics(self) -> dict[str, object]:
        return {
            "clients": len(self.registry),
            "reassembly_in_flight": self.reassembler.in_flight,
            "reassembly_bytes": self.reassembler.buffered_bytes,
            "pending_relays": self._pending_relays,
            "send_queue": self._outbox.statistics().current_buffer_used
            + self._notices.statistics().current_buffer_used,
            "bans": len(self.bans.active(trio.current_time())),
            "event_subscribers": self.events.subscribers,
            **self.counters.snapshot(),
        }

    def reconfigure(self, config: RelayConfig) -> None:
        """Apply the settings that can change while running (the caller keeps the rest)."""
        self.config = config
        public_key = self._key.public_key()
        self.registry.max_clients = config.max_clients
        self.registry.max_clients_per_host = config.max_clients_per_host
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
        self._crypto.total_tokens = config.crypto_workers

    def stop_receiving(self) -> None:
        """Take no more datagrams; what is already in flight goes on."""
        self._receiving.cancel()

    @property
    def stopping(self) -> bool:
        return self._receiving.cancel_called

    def idle(self) -> bool:
        """Nothing completed is waiting for crypto or fan-out, and nothing waits to be sent."""
        queued = self._outbox.statistics().current_buffer_used
        notices = self._notices.statistics().current_buffer_used
        return not (self._pending_relays or queued or notices or self._sends_in_flight)

    def remove(self, address: Address, reason: str) -> Client | None:
        """Remove a client and tell every other client it left."""
        client = self.registry.remove(address)
        if client is not None:
            self._client_left(client, reason)
        return client

    def kick(self, address: Address, ban_s: float | None = None) -> Client | None:
        """An operator's removal; with ``ban_s``, the address is also ignored that long."""
        if ban_s is not None:
            self.bans.ban(address, ban_s, trio.current_time())
        return self.remove(address, "kick")

    async def post(self, plaintext: bytes, recipients: list[Client]) -> int:
        """Send a message from the relay itself (sender 0.0.0.0:0)."""
        return await self.fan_out(RELAY_ITSELF, plaintext, recipients)

    async def fan_out(self, sender: Address, plaintext: bytes, recipients: list[Client]) -> int:
        """Encrypt ``plaintext`` for each recipient and queue it; return the copies queued."""
        keys = [client.key for client in recipients]
        workers = max(1, min(len(keys), self.config.crypto_workers))
        batches = [keys[i::workers] for i in range(workers)]
        sealed_batches: list[list[Sealed]] = [[] for _ in batches]

        async def seal(index: int) -> None:
            sealed_batches[index] = await trio.to_thread.run_sync(
                seal_batch, sender, plaintext, batches[index], limiter=self._crypto
            )

        if keys:
            async with trio.open_nursery() as nursery:
                for index in range(len(batches)):
                    nursery.start_soon(seal, index)
        # Undo the round-robin split, so each sealed datagram meets its recipient again.
        sealed: list[Sealed] = [b""] * len(keys)
        for index, batch in enumerate(sealed_batches):
            sealed[index::workers] = batch
        return await self._deliver(sender, len(plaintext), recipients, sealed)

    async def _deliver(
        self, sender: Address, size: int, recipients: list[Client], sealed: list["Sealed"]
    ) -> int:
        """Queue each recipient's datagram (or count why it has none); return the copies."""
        copies = 0
        for client, datagram in zip(recipients, sealed, strict=True):
            if isinstance(datagram, DropReason):
                self._drop(datagram, client.address)
                continue
            await self._outbox.send((datagram, client.address))
            client.messages_out += 1
            client.bytes_out += len(datagram)
            copies += 1
        self.counters.messages_relayed += 1
        self.counters.copies_sent += copies
        self.events.publish(
            "message_relayed", sender=format_address(sender), size=size, recipients=copies
        )
        return copies

    # The receive path: synchronous from here down to the per-message tasks.

    async def _receive_loop(self) -> None:
        with self._receiving:
            while True:
                self.last_turn = trio.current_time()
                with trio.move_on_after(RECEIVE_TICK_S):
                    try:
                        data, source = await self._sock.recvfrom(MAX_DATAGRAM_BYTES)
                    except OSError as exc:
                        log.warning("receive failed: %s", exc)
                        continue
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
        self._expire_reassembly(now)
        outcome = self.reassembler.add(source, event.fragment, now)
        if isinstance(outcome, Rejected):
            self._drop(outcome.reason, source)
            if outcome.ended:
                self._wake((source, event.fragment.msg_id))
        elif isinstance(outcome, Complete):
            self._on_complete(outcome, sender)
        elif outcome.new:
            waiting = self._waiting[outcome.key] = _Waiting()
            self._spawn(self._reassemble, outcome.key, outcome.deadline, waiting)

    def _on_complete(self, outcome: Complete, sender: Client) -> None:
        waiting = self._waiting.pop(outcome.key, None)
        admitted = self._admit(sender)
        if waiting is None:
            if admitted is not None:
                self._spawn(self._relay, *admitted, outcome.payload)
            return
        if admitted is not None:
            waiting.admitted = (admitted[0], outcome.payload, admitted[1])
        waiting.done.set()

    def _on_disconnect(self, _event: DisconnectRequest, source: Address, _now: float) -> None:
        if self.remove(source, "disconnect") is None:
            self._drop(DropReason.UNREGISTERED, source)

    def _on_keepalive(self, _event: Keepalive, source: Address, _now: float) -> None:
        if source not in self.registry:
            self._drop(DropReason.UNREGISTERED, source)

    def _on_ignored(self, event: Ignored, source: Address, _now: float) -> None:
        self._drop(DropReason.UNKNOWN_TYPE, source, f"TLV type {event.type}")

    def _wake(self, key: MessageKey) -> None:
        """End the wait of a message's task: its message completed, failed or timed out."""
        waiting = self._waiting.pop(key, None)
        if waiting is not None:
            waiting.done.set()

    def _admit(self, client: Client) -> tuple[Client, "_Turn"] | None:
        """Admit a completed message to the crypto stage, or drop it as overloaded."""
        source = client.address
        if (
            self._pending_relays >= self.config.max_pending_relays
            or client.relays_in_flight >= MAX_RELAYS_PER_CLIENT
        ):
            self._drop(DropReason.OVERLOADED, source)
            return None
        client.messages_in += 1
        client.relays_in_flight += 1
        self._pending_relays += 1
        previous = self._last_turn.get(source)
        turn = self._last_turn[source] = _Turn(previous.done if previous else None)
        return client, turn

    def _expire_reassembly(self, now: float) -> None:
        for key in self.reassembler.expire(now):
            self._drop(DropReason.REASSEMBLY_TIMEOUT, key[0])
            self._wake(key)

    # Per-message tasks.

    async def _reassemble(self, key: MessageKey, deadline: float, waiting: _Waiting) -> None:
        with trio.move_on_at(deadline):
            await waiting.done.wait()
        if waiting.admitted is None:
            # The task owns its deadline: whatever expire() saw, its message ends here.
            if self._waiting.get(key) is waiting:
                del self._waiting[key]
            if self.reassembler.discard(key):
                self._drop(DropReason.REASSEMBLY_TIMEOUT, key[0])
            self._expire_reassembly(trio.current_time())
            return
        sender, payload, turn = waiting.admitted
        await self._relay(sender, turn, payload)

    async def _relay(self, sender: Client, turn: _Turn, payload: bytes) -> None:
        """Decrypt, handle the legacy control words, fan out. Admitted by ``_admit``."""
        source = sender.address
        # Who gets it is decided now, so that a small fan-out seals in the same worker
        # call as the decryption: one thread hand-off per message, not one per step.
        recipients = self.registry.others(source)
        keys = [client.key for client in recipients]
        try:
            try:
                plaintext, sealed = await trio.to_thread.run_sync(
                    open_and_seal,
                    self._key,
                    payload,
                    self.config.max_message_bytes,
                    source,
                    keys,
                    limiter=self._crypto,
                )
            except RemoteProtocolError as exc:
                self._drop(exc.reason, source, exc)
                return
            if turn.previous is not None:
                await turn.previous.wait()
            current = self.registry.get(source) is sender
            if len(plaintext) > self.config.max_message_bytes:
                self._drop(DropReason.TOO_LARGE, source)
            elif plaintext == legacy.CONNECT_WORD:
                if current:
                    self.registry.touch(source, trio.current_time())
            elif plaintext == legacy.DISCONNECT_WORD:
                if current:
                    self.remove(source, "disconnect")
            elif sealed is None or any(
                client.key is not key for client, key in zip(recipients, keys, strict=True)
            ):
                # Too many to seal inline, or someone re-keyed meanwhile: seal afresh.
                await self.fan_out(source, plaintext, recipients)
            else:
                await self._deliver(source, len(plaintext), recipients, sealed)
        except Exception:
            # A bug must cost one message, never the daemon: count it, log it, go on.
            log.exception("relaying a message from %s failed", format_address(source))
            self._drop(DropReason.INTERNAL_ERROR, source)
        finally:
            turn.done.set()
            if self._last_turn.get(source) is turn:
                del self._last_turn[source]
            self._pending_relays -= 1
            sender.relays_in_flight -= 1
            if sender.left_reason is not None and not sender.relays_in_flight:
                self._leaving.pop(source, None)
                self._announce_left(source, sender.left_reason)
                sender.left_reason = None

    # Sending and housekeeping.

    def _notify(self, datagram: bytes, address: Address) -> bool:
        """Queue a notice; when the queue is full, drop and count it, and say so."""
        try:
            self._notices.send_nowait((datagram, address))
        except trio.WouldBlock:
            self._drop(DropReason.SEND_QUEUE_FULL, address)
            return False
        return True

    def _broadcast(self, datagram: bytes, addresses: list[Address]) -> None:
        for sent, address in enumerate(addresses):
            if not self._notify(datagram, address):
                self.counters.dropped[DropReason.SEND_QUEUE_FULL] += len(addresses) - sent - 1
                return

    async def _send_loop(self, drain: trio.MemoryReceiveChannel[tuple[bytes, Address]]) -> None:
        async for datagram, address in drain:
            self._sends_in_flight += 1
            try:
                await self._sock.sendto(datagram, address)
            except OSError as exc:
                self._drop(DropReason.SEND_FAILED, address, exc)
            else:
                self.counters.datagrams_out += 1
                self.counters.bytes_out += len(datagram)
            finally:
                self._sends_in_flight -= 1

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

    def _spawn(self, fn: Callable[..., Any], *args: Any) -> None:
        assert self._nursery is not None, "Relay.run() is not running"
        self._nursery.start_soon(fn, *args)

    def _drop(self, reason: DropReason, source: Address, detail: object = None) -> None:
        self.counters.dropped[reason] += 1
        if self.events.subscribers:
            self.events.publish("dropped", reason=reason.value, source=format_address(source))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("dropped %s from %s: %s", reason, format_address(source), detail or "")


Sealed = bytes | DropReason
"""A recipient's relayed datagram, or why it has none."""
SEAL_INLINE_MAX = 8
"""Recipients sealed in the decrypting worker call; more are spread over the workers."""


def open_and_seal(
    relay_key: rsa.RSAPrivateKey,
    payload: bytes,
    max_message_bytes: int,
    sender: Address,
    keys: list[rsa.RSAPublicKey],
) -> tuple[bytes, list[Sealed] | None]:
    """Runs in a worker thread: decrypt, and seal for a few recipients while at it.

    The seals are ``None`` when the message is a control word, too large, or goes to
    more recipients than one call should seal."""
    plaintext = legacy.decrypt_payload_untrusted(relay_key, payload, max_message_bytes)
    if (
        len(plaintext) > max_message_bytes
        or plaintext in (legacy.CONNECT_WORD, legacy.DISCONNECT_WORD)
        or len(keys) > SEAL_INLINE_MAX
    ):
        return plaintext, None
    return plaintext, seal_batch(sender, plaintext, keys)


def seal_batch(sender: Address, plaintext: bytes, keys: list[rsa.RSAPublicKey]) -> list[Sealed]:
    """Runs in a worker thread: one relayed datagram per key, or why there is none."""
    return [_seal(key, sender, plaintext) for key in keys]


def _seal(key: rsa.RSAPublicKey, sender: Address, plaintext: bytes) -> Sealed:
    if legacy.relayed_size(key, sender, len(plaintext)) > legacy.MAX_UDP_PAYLOAD:
        return DropReason.DATAGRAM_TOO_LARGE
    try:
        return legacy.relayed_message(key, sender, plaintext)
    except ValueError:
        return DropReason.ENCRYPT_FAILED
