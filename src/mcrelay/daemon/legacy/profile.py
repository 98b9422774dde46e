"""The legacy profile in the relay: its datagrams, reassembly, key answers and RSA work.

Each datagram is decoded (``mcrelay.protocol.legacy``) and its TLVs handled in order.
A message's task starts with its first fragment: it waits for the rest under a cancel
scope at the reassembly deadline; once complete and admitted it runs the relay's
pipeline (``mcrelay.daemon.messages``), with this profile's opener: the relay key
decrypts the payload and, for a small fan-out, the same worker job seals the copies.
"""

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.core.members import AddressInUse, Departure, Identity, Member, RosterFull
from mcrelay.core.opened import Opened, Sealed
from mcrelay.core.profile import Admitted, Origin, Services, turn_host
from mcrelay.core.ratelimit import SourceLimiter
from mcrelay.daemon.legacy.sealing import (
    SEAL_INLINE_MAX,
    KeyStore,
    OpenJob,
    Recipient,
    SealJob,
    chunks,
    relay_key_der,
    seal_batches,
)
from mcrelay.daemon.legacy.waiting import Waiting, WaitingRegistrations
from mcrelay.daemon.workers import CryptoWorkers, Running
from mcrelay.logs import once_a_minute
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import (
    ClientKey,
    DisconnectRequest,
    FragmentReceived,
    FragmentsUnread,
    Ignored,
    Keepalive,
    KeyRequest,
)
from mcrelay.protocol.reassembly import Complete, MessageKey, Pending, Reassembler, Rejected
from mcrelay.settings.config import RelayConfig

log = logging.getLogger(__name__)

PROFILE = "legacy"
WAITING_RETRY_S = 0.05
"""How often the registrations waiting for the rate try again."""


@dataclass(slots=True, eq=False)
class _Message:
    """A message from its first fragment until it is complete (or dropped)."""

    completed: trio.Event = field(default_factory=trio.Event)
    """Set when the message is complete, or ended in reassembly (then ``admitted`` is None)."""
    admitted: Admitted | None = None
    """Its life after admission, taken when it completed."""


def _recipient(member: Member) -> Recipient:
    """A legacy member's RSA key as a worker's job carries it (see :func:`identity`)."""
    key = member.identity.key
    bits = member.identity.details["key_bits"]
    assert key is not None, "a member of this relay"
    assert isinstance(bits, int), "its key's size, as identity() gave it"
    return Recipient(member.identity.origin_id, key, bits)


def identity(key: rsa.RSAPublicKey, address: Address) -> Identity:
    """A legacy member: its address is its id; its RSA key (DER: the workers load it)
    seals its copies."""
    der = crypto.key_der(key)
    origin_id = crypto.der_digest(der)
    fingerprint = crypto.digest_fingerprint(origin_id)
    details = {"fingerprint": fingerprint, "key_bits": key.key_size}
    return Identity(PROFILE, format_address(address), fingerprint, der, origin_id, details)


def _last_accepted_key(
    event: ClientKey,
) -> tuple[rsa.RSAPublicKey | None, int, RemoteProtocolError | None]:
    """The last key of the run the relay accepts (None if none is), how many after it
    were refused, and the first refusal of those (the last in the datagram)."""
    refused = 0
    error: RemoteProtocolError | None = None
    shortest, longest = crypto.MIN_PEM_BYTES, crypto.MAX_PEM_BYTES
    for pem in event.newest_first():
        # Past the first refusal, a value of a length no key has is refused unparsed: a
        # run then costs a parse per 446 bytes of datagram at most.
        if error is None or shortest <= len(pem) <= longest:
            try:
                return crypto.wire_public_key_untrusted(pem), refused, error
            except RemoteProtocolError as exc:
                error = error or exc
        refused += 1
    return None, refused, error


class LegacyProfile:
    name = PROFILE

    def __init__(self, services: Services, key: rsa.RSAPrivateKey, workers: CryptoWorkers) -> None:
        """Call :meth:`configure` before use: its limits are settings."""
        self._services = services
        self._key = key
        self._workers = workers
        workers.install(KeyStore.from_der, relay_key_der(key))
        public_key = key.public_key()
        self.fingerprint = crypto.fingerprint(public_key)
        self._server_key = legacy.server_key(public_key)
        self.max_message_bytes = legacy.MAX_MESSAGE_BYTES
        self.reassembler = Reassembler()
        self._answers = SourceLimiter()
        self._reassembling: dict[MessageKey, _Message] = {}
        self._waiting = WaitingRegistrations()
        self._registration_waits = trio.Event()
        self._client_timeout_s = 30.0
        self._refused_log = once_a_minute()
        self._handlers: dict[type[Any], Callable[[Any, Address, Member | None, float], None]] = {
            KeyRequest: self._on_key_request,
            ClientKey: self._on_client_key,
            FragmentReceived: self._on_fragment,
            FragmentsUnread: self._on_unread,
            DisconnectRequest: self._on_disconnect,
            Keepalive: self._on_keepalive,
            Ignored: self._on_ignored,
        }

    def configure(self, config: RelayConfig) -> None:
        """Apply the settings this profile reads (at start, and on every reload)."""
        self.max_message_bytes = config.max_message_bytes
        self._client_timeout_s = config.client_timeout_s
        reassembler = self.reassembler
        reassembler.timeout_s = config.reassembly_timeout_s
        reassembler.max_fragments = legacy.max_fragments(
            self._key.public_key(), config.max_message_bytes
        )
        reassembler.max_messages_per_source = config.max_messages_per_source
        reassembler.max_total_bytes = config.max_reassembly_bytes
        # Answers to key requests: a small request earns a large answer.
        self._answers.configure(
            per_source_burst=config.key_answers_per_source_burst,
            per_source_per_s=config.key_answers_per_source_per_s,
            total_burst=config.key_answers_total_burst,
            total_per_s=config.key_answers_total_per_s,
        )

    def figures(self) -> dict[str, int]:
        """What the API shows of this profile beyond its members and traffic: its RSA
        worker processes up now, how many were started again after one ended, and the
        registrations waiting for the rate limits."""
        return {
            "crypto_workers": self._workers.up,
            "crypto_worker_restarts": self._workers.restarts,
            "registrations_waiting": len(self._waiting),
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The registrations waiting for the rate (a message's task is started by its
        first fragment)."""
        task_status.started()
        while True:
            await self._registration_waits.wait()
            while self._waiting:
                await trio.sleep(WAITING_RETRY_S)
                self._register_waiting(trio.current_time())
            self._registration_waits = trio.Event()

    def deliver(self, member: Member, copy: bytes) -> bool:
        return self._services.send(copy, member.address)

    def farewell(self, member: Member, reason: Departure) -> bool:
        """No: the legacy protocol has no way to tell a member it is removed."""
        return False

    def removed(self, member: Member, reason: Departure) -> None:
        """Nothing to close: a legacy member's state is its roster entry, and a re-key
        of its that waits for the rate (gone, kicked, banned: not made later)."""
        self._drop_held(member.address, self._waiting.discard(member.address))

    # Datagrams in.

    def datagram_untrusted(self, data: bytes, source: Address, now: float) -> None:
        roster = self._services.roster
        member = roster.at(source)
        ours = member if member is not None and member.identity.profile == PROFILE else None
        if ours is not None and self._refused_at_once(data, ours, now):
            return
        # No member here (or a secure one) and no registration waiting: its fragments
        # before a key are dropped on arrival, so not read.
        unregistered = ours is None and source not in self._waiting
        try:
            events = legacy.decode_client_datagram_untrusted(data, unregistered=unregistered)
        except RemoteProtocolError as exc:
            self._services.drop(exc.reason, source, exc)
            return
        if member is not None and ours is None:
            # A secure member's address: legacy TLVs from it (a spoofed DISCONNECT, say)
            # cannot speak for it.
            self._services.drop(DropReason.SECURE_ADDRESS, source)
            return
        if member is not None:
            roster.touch(member, now)
            member.bytes_in += len(data)
        # One key request a datagram at most (the decoder's): four of them earned four
        # answers, 16 bytes 1,820 (review).
        for event in events:
            self._handlers[type(event)](event, source, member, now)
            # Each TLV acts on the roster as the TLVs before it left it (a DISCONNECT
            # then a FRAGMENT: the fragment's source is gone).
            member = roster.at(source)

    def _refused_at_once(self, data: bytes, member: Member, now: float) -> bool:
        """Drop a member's lone FRAGMENT whose fate is known before it is decoded: one of
        a message that ended (refused, completed, invalidated), or one that would start a
        message while its sender has no room. Counted as the whole path counts it; past
        saturation these are most datagrams, and decoding them took the time the relay
        needs for the messages it can relay."""
        msg_id = legacy.lone_fragment_msg_id(data)
        if msg_id is None:
            return False
        key = (member.address, msg_id)
        if not self.reassembler.starts(key, now):
            reason = self.reassembler.ended(key, now)
            if reason is None:  # a fragment of a message in reassembly
                return False
            self._services.drop(reason, member.address)
        elif not self._refused_for_room(key, member, now):
            return False
        self._services.roster.touch(member, now)
        member.bytes_in += len(data)
        return True

    def _refused_for_room(self, key: MessageKey, sender: Member | None, now: float) -> bool:
        """Refuse the message a fragment would start if its sender has no room (counted
        ``overloaded``), before it costs anything: no buffer, no task, and its other
        fragments refused too until the deadline it would have had. A sender whose
        registration waits (None) has room while it may hold one more message."""
        if sender is not None:
            if self._services.room_for(sender):
                return False
        elif self._waiting.may_hold(key[0]):
            return False
        else:
            self._services.drop(DropReason.OVERLOADED, key[0])
        self.reassembler.refuse(key, now)
        return True

    def _on_key_request(
        self, _event: KeyRequest, source: Address, _: Member | None, now: float
    ) -> None:
        """The page: "on 7 the relay answers", under the answer rates alone, whether a
        registration of the source waits or not (a request beside a waiting one was held
        until it was made, and so were the client's retries: a page client waited for
        its answer up to a client timeout, or for ever; found by review)."""
        if self._answers.allow(source, now):
            self._services.notify(self._server_key, source)
        else:
            self._services.drop(DropReason.RATE_LIMITED, source)

    def _on_client_key(
        self, event: ClientKey, source: Address, _: Member | None, now: float
    ) -> None:
        """Acting on each key of the run in turn would leave the source registered with
        the last one accepted: that one acts, each after it is refused, and those before
        it are not read (they would only re-key it on the way: review)."""
        services = self._services
        key, refused, error = _last_accepted_key(event)
        if error is not None:
            services.drop(error.reason, source, error, refused)
            self._log_refused_key(source, error, refused, now)
        if key is None:
            return
        claimed = identity(key, source)
        if services.roster.holds(claimed):  # a refresh: never limited
            self._waiting.discard(source)  # the key it sends last is the one it has
            services.register(claimed, source, now)
        elif self._waiting or not self._services.registrations[PROFILE].allow((source[0], 0), now):
            # Behind those waiting (oldest first), or over the rate: it waits too.
            pushed_out = self._waiting.add(source, claimed, now)
            if pushed_out is not None:
                dropped, waiting = pushed_out
                services.drop(DropReason.RATE_LIMITED, dropped, "registration waited")
                self._drop_held(dropped, waiting)
            self._registration_waits.set()
        else:
            self._register(source, claimed, now)

    def _register(self, source: Address, claimed: Identity, now: float) -> bool:
        """Register (or re-key) ``source``; False (counted) if the roster refused it."""
        try:
            self._services.register(claimed, source, now)
        except RosterFull as exc:
            self._services.drop(DropReason.REGISTRY_FULL, source, exc)
        except AddressInUse as exc:  # a secure member's (one that came while this waited)
            self._services.drop(DropReason.SECURE_ADDRESS, source, exc)
        else:
            return True
        return False

    def _register_waiting(self, now: float) -> None:
        """The waiting registrations the rates allow now (see waiting.py)."""
        limiter = self._services.registrations[PROFILE]
        refused: set[str] = set()  # hosts out of tokens: asked once a pass

        def allow(source: Address) -> bool:
            if source[0] in refused:
                return False
            if limiter.allow((source[0], 0), now):
                return True
            refused.add(source[0])
            return False

        taken = self._waiting.take(
            now, self._client_timeout_s, allow, lambda: limiter.total_room(now)
        )
        for source, waiting in taken.expired:
            self._services.drop(DropReason.RATE_LIMITED, source, "registration waited")
            self._drop_held(source, waiting)
        for source, waiting in taken.ready:
            if self._services.address_banned(source, now):  # since it came
                self._services.drop(DropReason.BANNED, source)
            elif self._register(source, waiting.identity, now):
                member = self._services.roster.at(source)
                assert member is not None, "just registered"
                for payload in waiting.held:  # after its roster, in the order they completed
                    self._admit(member, payload, None)
                continue
            self._drop_held(source, waiting)

    def _drop_held(
        self,
        source: Address,
        waiting: Waiting | None,
        reason: DropReason = DropReason.NEVER_REGISTERED,
    ) -> None:
        """The messages held for a registration that will not be made, each counted."""
        if waiting is not None:
            for _ in waiting.held:
                self._services.drop(reason, source)

    def _log_refused_key(
        self, source: Address, exc: RemoteProtocolError, count: int, now: float
    ) -> None:
        """The page logs a refused key; sources are spoofable, so one line a minute at
        most, with how many were refused since the last (all are counted, ``bad_key``)."""
        held = self._refused_log.take(now, count)
        if held is not None:
            log.info(
                "refused key from %s: %s (%d refused since the last such line)",
                format_address(source),
                exc,
                held + count,
            )

    def _on_fragment(
        self, event: FragmentReceived, source: Address, sender: Member | None, now: float
    ) -> None:
        # Only a registered source's fragment can complete a message, or one whose
        # registration waits (its message is then held until it is made): so a message's
        # sender is registered when it is admitted (the spec's "source gone" check).
        services = self._services
        if sender is None and source not in self._waiting:
            services.drop(DropReason.UNREGISTERED, source)
            return
        key = (source, event.fragment.msg_id)
        if self.reassembler.starts(key, now) and self._refused_for_room(key, sender, now):
            return
        added = self.reassembler.add(source, event.fragment, now)
        for ended, reason in added.dropped:
            services.drop(reason, ended[0])
            self._end(ended)
        if isinstance(added, Rejected):
            services.drop(added.reason, source)
            if added.ended:
                self._end(key)
        elif isinstance(added, Pending):
            if added.new:
                message = self._reassembling[key] = _Message()
                services.start_message(partial(self._message, message, added.deadline))
        else:
            self._complete(key, sender, added)

    def _on_disconnect(
        self, _event: DisconnectRequest, source: Address, member: Member | None, _now: float
    ) -> None:
        waiting = self._waiting.discard(source)
        self._drop_held(source, waiting)
        if waiting is not None and member is None:
            return  # its registration (or re-key) was still waiting: it is not made
        if member is None or self._services.remove(member.id, Departure.DISCONNECT) is None:
            self._services.drop(DropReason.UNREGISTERED, source)

    def _on_keepalive(
        self, _event: Keepalive, source: Address, member: Member | None, _now: float
    ) -> None:
        if member is None:
            self._services.drop(DropReason.UNREGISTERED, source)

    def _on_unread(
        self, event: FragmentsUnread, source: Address, _: Member | None, _now: float
    ) -> None:
        self._services.drop(DropReason.UNREGISTERED, source, "fragments", event.count)

    def _on_ignored(self, event: Ignored, source: Address, _: Member | None, _now: float) -> None:
        self._services.drop(
            DropReason.UNKNOWN_TYPE,
            source,
            f"TLV type {event.type} (of {event.count})",
            event.count,
        )

    def stop_receiving(self) -> None:
        """Messages still in reassembly cannot complete: they end now, each counted, as
        do the registrations still waiting."""
        for source, waiting in self._waiting.clear():
            self._services.drop(DropReason.STOPPED, source)
            self._drop_held(source, waiting, DropReason.STOPPED)
        for key in self.reassembler.clear():
            self._services.drop(DropReason.STOPPED, key[0])
            self._end(key)

    # A message's task, from its first fragment.

    def _complete(self, key: MessageKey, sender: Member | None, complete: Complete) -> None:
        """Admit a message as it completes: it takes its place in its sender's line now.
        A sender whose registration waits (None) has it held until it is made."""
        if sender is None:
            self._end(key)
            if not self._waiting.hold(key[0], complete.payload):
                self._services.drop(DropReason.OVERLOADED, key[0])
            return
        self._admit(sender, complete.payload, self._reassembling.pop(key, None))

    def _admit(self, sender: Member, payload: bytes, message: _Message | None) -> None:
        if message is None:  # one fragment, or held: its task has nothing to wait for
            message = _Message()
            self._services.start_message(partial(self._message, message, trio.current_time()))
        message.admitted = self._services.admit(sender, partial(self._open, sender, payload))
        message.completed.set()

    def _end(self, key: MessageKey) -> None:
        """The reassembler dropped the message (counted there): its task ends."""
        message = self._reassembling.pop(key, None)
        if message is not None:
            message.completed.set()

    async def _message(self, message: _Message, deadline: float) -> None:
        try:
            if not message.completed.is_set():  # its last fragments usually came meanwhile
                with trio.move_on_at(deadline):
                    await message.completed.wait()
        except BaseException:  # cancelled (a stop), perhaps just as it was admitted
            if message.admitted is not None:
                message.admitted.abandon()
            raise
        if message.admitted is not None:
            await message.admitted.run()
        elif not message.completed.is_set():  # its deadline passed
            for late in self.reassembler.expire(trio.current_time()):
                self._services.drop(DropReason.REASSEMBLY_TIMEOUT, late[0])
                self._end(late)

    def _open(self, sender: Member, payload: bytes, recipients: list[Member]) -> Awaitable[Opened]:
        """Decrypt in a worker, starting now, sealing there too when the recipients are few
        and all legacy; the result is awaited by the message's task."""
        sealed_here = len(recipients) <= SEAL_INLINE_MAX and all(
            member.identity.profile == PROFILE for member in recipients
        )
        keys = tuple(_recipient(member) for member in recipients) if sealed_here else None
        work = OpenJob(payload, self.max_message_bytes, sender.address, keys)
        return self._workers.start(work, turn_host(sender.id, sender.address), sender.id)

    # Copies and notices out.

    async def seal(
        self, origin: Origin, plaintext: bytes, recipients: Sequence[Member]
    ) -> list[Sealed]:
        """One copy per recipient, sealed by the workers a few recipients per job (fewer
        the longer the message and the larger their keys: SEAL_JOB_COST), in turns by
        the origin's host (``turn_host``), with at most one job per worker queued at
        once: so other messages are sealed in between, and a large fan-out delays them
        by a job's time, not by its whole. (No task per job: the jobs are queued in turn
        and their results awaited in order.)"""
        keys = [_recipient(member) for member in recipients]
        host = turn_host(origin.id, origin.address)
        sealed: list[Sealed] = []
        queued: deque[Running[list[Sealed]]] = deque()
        for batch in seal_batches(chunks(len(plaintext)), keys):
            if len(queued) == self._workers.count:
                sealed.extend(await queued.popleft())
            work = SealJob(origin.address, plaintext, batch)
            queued.append(self._workers.start(work, host, origin.id))
        while queued:
            sealed.extend(await queued.popleft())
        return sealed

    def announce_joined(self, member: Member, recipients: Sequence[Member]) -> None:
        self._broadcast(legacy.peer_joined(member.address), recipients)

    def announce_rekeyed(self, member: Member, old: Identity, recipients: Sequence[Member]) -> None:
        """The page: a re-key "is announced again" (11; legacy clients know no keys)."""
        self.announce_joined(member, recipients)

    def announce_present(self, newcomer: Member, present: Sequence[Member]) -> None:
        to = newcomer.address
        self._services.notify_all([(legacy.peer_joined(member.address), to) for member in present])

    def announce_left(
        self, member: Member, recipients: Sequence[Member], reason: Departure
    ) -> None:
        self._broadcast(legacy.peer_left(member.address), recipients)

    def announce_moved(self, member: Member, old: Address, recipients: Sequence[Member]) -> None:
        """A member that roams is, to a legacy member, one address leaving and another
        joining (the page's "Between profiles")."""
        self._broadcast(legacy.peer_left(old), recipients)
        self._broadcast(legacy.peer_joined(member.address), recipients)

    def _broadcast(self, datagram: bytes, recipients: Sequence[Member]) -> None:
        self._services.notify_all([(datagram, member.address) for member in recipients])
