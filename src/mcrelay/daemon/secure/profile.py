"""The secure profile in the relay: handshakes, sessions and reliable messages.

Datagrams whose first byte is 0x4D come here (:meth:`SecureProfile.datagram_untrusted`).
INIT is screened (mac1, cookies under load, per-IP limits), read (Noise IK), checked
against the authorized keys, the key bans and the timestamp table, and answered with a
RESPONSE; the handshake waits (at most 15 s, at most 4,096 of them) for the client's
first DATA, which makes the client a member: registered in the roster, told who is
there, announced to the others. DATA is opened by its keypair's session; a complete
CHAT is admitted into the relay's pipeline as any message is, and its copies for
secure members are reliable messages in their channels. What the sessions send, and
when, is their business: after each datagram in or message out, and at the time each
asks for (:class:`~mcrelay.daemon.secure.peers.Timers`).
"""

import logging
import os
from collections.abc import Callable, Sequence

import trio

from mcrelay.core.members import AddressInUse, Departure, Identity, Member, RosterFull
from mcrelay.core.opened import Opened, Sealed
from mcrelay.core.profile import Origin, Services
from mcrelay.daemon.secure.backpressure import Backpressure
from mcrelay.daemon.secure.buffers import SendBuffers
from mcrelay.daemon.secure.origin import PROFILE, chat_head
from mcrelay.daemon.secure.peers import (
    COALESCE_S,
    TIMER_GRANULARITY_S,
    Details,
    Peer,
    Pending,
    PendingHandshakes,
    Timers,
)
from mcrelay.daemon.secure.presence import presence_of
from mcrelay.daemon.secure.telling import Telling
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.secure.admission import (
    MAX_UNCONFIRMED_HANDSHAKES,
    Admit,
    HandshakeGate,
    Reply,
    TimestampTable,
)
from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import (
    MessageAcknowledged,
    MessageDelivered,
    MessageFailed,
)
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.frames import decode_frames_untrusted
from mcrelay.protocol.secure.handshake import Responder, fresh_index
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.keys import KeyPair, client_id, encode_key
from mcrelay.protocol.secure.messages import (
    MAX_CHAT_BYTES,
    Chat,
    Notice,
    NoticeCode,
    Presence,
    PresenceEvent,
    decode_client_message_untrusted,
    encode_message,
)
from mcrelay.protocol.secure.sending import MESSAGE_WINDOW, QUEUE_LIMIT
from mcrelay.protocol.secure.session import PENDING_LIFETIME_S, Session
from mcrelay.settings.config import RelayConfig

log = logging.getLogger(__name__)

DATA_TYPE = bytes([DatagramType.DATA])

FAREWELL_WAIT_S = 2.0
"""A kicked or banned member stays until its NOTICE is acknowledged, or this long."""
MAX_COPIES = MESSAGE_WINDOW + QUEUE_LIMIT
"""Copies outstanding towards one member past which its queue overflows, beside the
messages the pipeline held when back-pressure began (``max_pending_relays``): past
both, it is removed (``unreachable``)."""
FAREWELLS = {
    Departure.KICK: (NoticeCode.KICKED, b"kicked"),
    Departure.BAN: (NoticeCode.BANNED, b"banned"),
}


def _key(member: Member) -> bytes:
    """A secure member's static public key (its identity's key, set in :meth:`_confirm`)."""
    key = member.identity.key
    assert key is not None, "a member of this relay"
    return key


async def _ready(opened: Opened) -> Opened:
    return opened


class SecureProfile:
    name = PROFILE
    max_message_bytes = MAX_CHAT_BYTES

    def __init__(
        self,
        services: Services,
        static: KeyPair,
        *,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """Call :meth:`configure` before use: its limits are settings."""
        self._services = services
        self._random_bytes = random_bytes
        self.public_key = encode_key(static.public)
        self._responder = Responder(static)
        self._gate = HandshakeGate(static.public, random_bytes=random_bytes)
        self._timestamps = TimestampTable(held=self._holds)
        self._budget = ReceiveBudget()
        self._timers = Timers()
        self._peers: dict[bytes, Peer] = {}
        self._indexes: dict[int, Peer | Pending] = {}
        self._pending = PendingHandshakes(self._indexes)
        self._backpressure = Backpressure(self._budget)
        self._buffers = SendBuffers(self._unreachable)
        self._telling = Telling(self._held, self._send_own)
        self._timeout_s = 30.0
        self._max_copies = MAX_COPIES
        self.authorized: frozenset[bytes] | None = None
        """The keys that may be members (None: any)."""

    def configure(self, config: RelayConfig) -> None:
        """Apply the settings this profile reads (at start, and on every reload): a
        member whose key is no longer authorized is removed (``kick``, with its NOTICE)."""
        self._timeout_s = config.client_timeout_s
        self._buffers.limit = config.max_send_queue_bytes
        self._max_copies = MAX_COPIES + config.max_pending_relays
        self._gate.cookies_always = config.cookies == "always"
        keys = config.authorized_key_list
        self.authorized = None if keys is None else frozenset(entry.key for entry in keys)
        if self.authorized is not None:
            if not self.authorized:  # an empty or half-written file, say: said, not silent
                log.warning("the authorized keys list no key: no secure client may be a member")
            for key in [key for key in self._pending if key not in self.authorized]:
                self._pending.forget(key)
        removed = 0
        for peer in list(self._peers.values()):
            peer.session.timeout_s = config.client_timeout_s
            if self.authorized is not None and peer.key not in self.authorized:
                member = peer.member
                if member is not None:
                    log.info("client %s is no longer authorized", member.id)
                    self.farewell(member, Departure.KICK)
                    removed += 1
        if removed:
            log.warning("%d secure members removed: their keys are no longer authorized", removed)

    def figures(self) -> dict[str, int]:
        """What the API shows of this profile beyond its members and traffic."""
        return {
            "handshakes_pending": len(self._pending),
            "send_buffer_bytes": self._buffers.total,
            "receive_buffer_bytes": self._budget.total,
        }

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The sessions' timers, and the unconfirmed handshakes' lifetime."""
        task_status.started()
        while True:
            await self._timers.wait(min(self._pending.next_expiry(), self._buffers.next_sweep()))
            now = trio.current_time()
            self._pending.expire(now)
            self._buffers.keep_within(self._peers.values())
            self._buffers.relieve(self._peers.values(), now)
            for peer in self._timers.due(now):
                self._turn_safely(peer, now)

    # Datagrams in.

    def datagram_untrusted(self, data: bytes, source: Address, now: float) -> None:
        try:
            if data[1:2] == DATA_TYPE:  # most datagrams: its header is checked as it is read
                self._on_data(data, source, now)
                return
            kind = datagram_type_untrusted(data)
            if kind is DatagramType.INIT:
                self._on_init(data, source, now)
            elif kind is DatagramType.KEY_QUERY:
                answer = self._gate.answer_key_query(data, now)
                if isinstance(answer, Reply):
                    self._services.notify(answer.datagram, source)
                else:
                    self._services.drop(answer.reason, source)
            else:  # RESPONSE, COOKIE, KEY_INFO: the relay never asks for them
                self._services.drop(DropReason.UNKNOWN_TYPE, source, kind.name)
        except RemoteProtocolError as exc:
            self._services.drop(exc.reason, source, exc)

    def _on_init(self, data: bytes, source: Address, now: float) -> None:
        services = self._services
        verdict = self._gate.screen_init(data, source, now, waiting=0)
        if isinstance(verdict, Reply):  # under load, no valid mac2: a COOKIE, nothing more
            services.notify(verdict.datagram, source)
            services.drop(verdict.reason or DropReason.COOKIE_REQUIRED, source)
            return
        if not isinstance(verdict, Admit):
            services.drop(verdict.reason, source)
            return
        init = self._responder.read_init_untrusted(data)
        key = init.client_static
        refused = self._refusal(key, now)
        if refused is not None:
            services.drop(refused, source, client_id(key))
            return
        newcomer = services.roster.get(client_id(key)) is None
        if newcomer and not services.roster.has_room(PROFILE, source[0]):
            services.drop(DropReason.REGISTRY_FULL, source, client_id(key))
            return
        peer = self._peers.get(key)
        rekey = peer is not None and peer.client_epoch == init.epoch and not peer.closed
        if not rekey and self._buffers.crowded():  # told of every member: later (a new
            services.drop(DropReason.OVERLOADED, source, "send buffers")  # session too)
            return
        stale = self._timestamps.advance(key, init.timestamp)
        if stale is not None:
            services.drop(stale, source)
            return
        if not rekey:
            self._pending.forget(key)
            if len(self._pending) >= MAX_UNCONFIRMED_HANDSHAKES:
                services.drop(DropReason.REGISTRY_FULL, source, "unconfirmed handshakes")
                return
        relay_epoch = peer.relay_epoch if rekey and peer is not None else self._epoch()
        local_index = fresh_index(self._indexes, self._random_bytes)
        response = init.respond(
            ephemeral_private=self._random_bytes(32), sender_index=local_index, epoch=relay_epoch
        )
        keypair = Keypair.from_handshake(response.keys, init.epoch, now)
        if rekey and peer is not None:
            peer.session.install(keypair, now, source)
            peer.hold_indexes(self._indexes)
        else:
            pending = Pending(key, keypair, init.epoch, relay_epoch, source, now)
            self._pending.add(local_index, pending)
            self._timers.wake_by(now + PENDING_LIFETIME_S)
        services.notify(response.datagram, source)

    def _on_data(self, data: bytes, source: Address, now: float) -> None:
        header = peek_data_untrusted(data)
        owner = self._indexes.get(header.receiver_index)
        if owner is None:
            raise RemoteProtocolError("DATA for no keypair", DropReason.UNKNOWN_INDEX)
        if isinstance(owner, Pending):
            self._confirm(owner, data, header.counter, source, now)
            return
        keypair = owner.session.keypair(header.receiver_index, now)
        if keypair is None:
            del self._indexes[header.receiver_index]
            raise RemoteProtocolError("DATA for a forgotten keypair", DropReason.UNKNOWN_INDEX)
        member = owner.member
        # A sender the pipeline has no room for starts no new message (its channel
        # would acknowledge one the relay then drops): its client sends it again later.
        owner.session.channel.backpressure = member is not None and not self._services.has_room(
            member
        )
        received = owner.session.receive_untrusted(keypair, data, header.counter, source, now)
        if member is not None:
            self._services.roster.touch(member, now)
            member.bytes_in += len(data)
            if received.moved_from is not None:
                self._move(owner, member)
        if received.unknown_frames:
            self._services.drop(DropReason.UNKNOWN_TYPE, source, "frames", received.unknown_frames)
        self._turn(owner, now)

    def _confirm(
        self, pending: Pending, data: bytes, counter: int, source: Address, now: float
    ) -> None:
        """The client's first DATA under a new handshake: it becomes a member (or, with
        a new epoch, replaces the member of its key)."""
        opened = pending.keypair.open_untrusted(data, counter, now)
        frames = decode_frames_untrusted(opened.plaintext)
        # The key may have been banned or taken out of the authorized keys since its
        # INIT was answered: it does not become a member through that handshake.
        refused = self._refusal(pending.key, now)
        if refused is not None:
            self._pending.forget(pending.key)
            raise RemoteProtocolError("a key refused since its INIT", refused)
        # Another secure member's address is not taken, a legacy one's is (Services.
        # take_address): the handshake is kept, and the client's DATA that comes again
        # gets in once that member has left. The legacy one gives way only once the
        # join is allowed (rate, room): it was removed for a join then refused.
        member_id = client_id(pending.key)
        try:
            self._services.take_address(PROFILE, member_id, pending.address, only_check=True)
        except AddressInUse as exc:
            raise RemoteProtocolError(str(exc), DropReason.ADDRESS_IN_USE) from None
        # A join (or a replacement) tells every member: no faster than legacy
        # registrations, from the host that proved it got the RESPONSE (a spoofer
        # cannot spend a victim's share). The client sends its DATA again later.
        if not self._services.registrations[PROFILE].allow((pending.address[0], 0), now):
            raise RemoteProtocolError("a join over the registration rate", DropReason.RATE_LIMITED)
        roster = self._services.roster
        if roster.get(member_id) is None and not roster.has_room(PROFILE, pending.address[0]):
            raise RemoteProtocolError("no room for a newcomer", DropReason.REGISTRY_FULL)
        try:
            self._services.take_address(PROFILE, member_id, pending.address)
        except AddressInUse as exc:  # a legacy member displaced, whose leave waits
            raise RemoteProtocolError(str(exc), DropReason.ADDRESS_IN_USE) from None
        self._pending.forget(pending.key)
        session = Session(
            Role.RELAY,
            pending.keypair,
            pending.address,
            now,
            timeout_s=self._timeout_s,
            initial_rtt_s=now - pending.created,
            budget=self._budget,
            random_bytes=self._random_bytes,
        )
        earlier = self._peers.get(pending.key)
        peer = Peer(pending.key, session, pending.client_epoch, pending.relay_epoch)
        peer.hold_indexes(self._indexes)
        if earlier is not None and earlier.leaving is not None:
            self._part(earlier)  # a new session does not outlive a kick: it joins anew
        self._peers[pending.key] = peer
        if earlier is not None and earlier.member is not None and not earlier.closed:
            self._replace(earlier, peer, now)
        else:
            key, encoded = pending.key, encode_key(pending.key)
            identity = Identity(PROFILE, client_id(key), encoded, key, key, Details(peer, encoded))
            try:  # (the address was made free above)
                self._services.register(identity, pending.address, now)
            except RosterFull as exc:
                self._close(peer)
                self._services.drop(DropReason.REGISTRY_FULL, source, exc)
                return
        session.act(pending.keypair, frames, opened.new_highest, len(data), source, now)
        member = peer.member
        # Its first DATA is a sign of life (a replacement's too), if registering did not
        # remove it again (its queue of presence full, say).
        if member is not None and self._services.roster.get(member.id) is member:
            self._services.roster.touch(member, now)
            member.bytes_in += len(data)
        self._turn(peer, now)

    def _move(self, peer: Peer, member: Member) -> None:
        """The roster follows a member's session to its new address, unless another
        member holds it (counted): then the session goes back to the roster's address,
        and the client's next DATA from the new one validates it again (the roster kept
        the old address for good, found by review)."""
        try:
            self._services.move(member, peer.session.address)
        except AddressInUse as exc:
            self._services.drop(DropReason.ADDRESS_IN_USE, peer.session.address, exc)
            peer.session.stay_at(member.address)

    def _refusal(self, key: bytes, now: float) -> DropReason | None:
        """Why this key may not be a member now (not authorized, banned), if it may not."""
        if self.authorized is not None and key not in self.authorized:
            return DropReason.UNAUTHORIZED
        if self._services.key_banned(client_id(key), now):
            return DropReason.BANNED
        return None

    def _replace(self, earlier: Peer, peer: Peer, now: float) -> None:
        """A new client epoch under a member's key: the old session is told (best effort)
        and closed, what was in flight to it dropped and counted; no leave, no join."""
        member = earlier.member
        assert member is not None
        notice = Notice(NoticeCode.REPLACED, b"replaced by a new session")
        earlier.session.channel.send(encode_message(notice), now, bounded=False)
        self._flush(earlier, now)
        self._close(earlier, DropReason.REPLACED)
        peer.member = member
        details = member.identity.details
        assert isinstance(details, Details)
        details.peer = peer
        self._move(peer, member)
        present = [*self._services.roster.others(member), *self._services.remotes]
        self.announce_present(member, present)
        # Through the budget of presence lines: one key may replace its session as fast
        # as registrations go, a line each (found by review).
        self._services.log_presence(
            "client %s replaced its session (epoch %d)", member.id, peer.client_epoch
        )

    # A peer's turn: what its session sends now, and what its channel says.

    def _turn_safely(self, peer: Peer, now: float) -> None:
        """A timer's turn: a bug in one session costs that member, not the relay."""
        try:
            self._turn(peer, now)
        except Exception:
            log.exception("the session of %s failed", client_id(peer.key))
            self._services.drop(DropReason.INTERNAL_ERROR, peer.session.address)
            member = peer.member
            self._close(peer)
            if member is not None:
                self._leave(peer, member, Departure.UNREACHABLE)

    def _turn(self, peer: Peer, now: float) -> None:
        if peer.closed:
            return
        if peer.closing_at is not None and now >= peer.closing_at:
            self._part(peer)
            return
        peer.session.channel.poll(now)  # its timers first: what they settle is read now
        self._read_events(peer, now)
        self._telling.pass_waiting(peer, now, everything=False)
        for reason, count in peer.session.channel.take_drops().items():
            self._services.drop(reason, peer.session.address, "channel", count)
        if not peer.closed:
            self._flush(peer, now)
            due = peer.session.next_deadline()
            if peer.closing_at is not None:  # its farewell's end too (found by review)
                due = min(due, peer.closing_at)
            self._timers.schedule(peer, max(due, now + TIMER_GRANULARITY_S))

    def _flush(self, peer: Peer, now: float) -> None:
        for datagram, address in peer.session.datagrams(now):
            self._services.send(datagram, address)
            peer.flushed_at = now

    def _soon(self, peer: Peer, now: float) -> None:
        """A turn for what was queued for ``peer``: now, or, when DATA went to it less
        than :data:`COALESCE_S` ago, then (what is queued meanwhile goes together)."""
        self._timers.schedule(peer, max(now, peer.flushed_at + COALESCE_S))

    def _read_events(self, peer: Peer, now: float) -> None:
        channel = peer.session.channel
        while not peer.closed and (event := channel.next_event()) is not None:
            match event:  # the most frequent first: a copy acknowledged
                case MessageAcknowledged(message_id):
                    self._settled(peer, message_id)
                    if message_id == peer.farewell:
                        self._part(peer)
                case MessageDelivered(body):
                    self._delivered(peer, body)
                case MessageFailed(message_id, reason):
                    self._settled(peer, message_id)
                    self._services.drop(reason, peer.session.address)
                    if peer.member is not None:
                        self._leave(peer, peer.member, Departure.UNREACHABLE)
        self._backpressure.update(peer)

    def _delivered(self, peer: Peer, body: bytes) -> None:
        member = peer.member
        address = peer.session.address
        if member is None:
            self._services.drop(DropReason.UNREGISTERED, address)
            return
        try:
            message = decode_client_message_untrusted(body)
        except RemoteProtocolError as exc:  # acknowledged already: dropped and counted
            self._services.drop(exc.reason, address, exc)
            return
        if not isinstance(message, Chat):  # DISCONNECT (a kicked member leaves kicked)
            self._leave(peer, member, Departure.DISCONNECT)
            return
        admitted = self._services.admit(
            member, lambda _: _ready(Opened(message.text)), acknowledged=True
        )
        if admitted is not None:
            self._services.start_message(admitted.run)

    def _settled(self, peer: Peer, message_id: int) -> None:
        size = peer.copies.pop(message_id, None)
        if size is None:
            size = peer.own.pop(message_id, None)
        if size is not None:
            self._buffers.hold(peer, -size)

    # Copies and notices out.

    async def seal(
        self, origin: Origin, plaintext: bytes, recipients: Sequence[Member]
    ) -> list[Sealed]:
        """The same body for every secure recipient: the channels carry it."""
        if len(plaintext) > MAX_CHAT_BYTES:
            return [DropReason.TOO_LARGE] * len(recipients)
        return [chat_head(origin.identity, origin.address) + plaintext] * len(recipients)

    def deliver(self, member: Member, copy: bytes) -> bool:
        peer = self._peers.get(_key(member))
        if peer is None or peer.closed or peer.closing_at is not None:
            self._services.drop(DropReason.UNREGISTERED, member.address)
            return False
        if len(peer.copies) >= self._max_copies:
            self._services.drop(DropReason.UNREACHABLE, member.address, "queue full")
            self._services.remove(member.id, Departure.UNREACHABLE)
            return False
        now = trio.current_time()
        if peer.presence:  # a sender's join before its words
            self._telling.pass_waiting(peer, now, everything=True)
        if not self._buffers.keep_within(self._peers.values(), len(copy), peer):
            return False  # removed to make room, or by what passing PRESENCE took
        self._queue(peer, copy, peer.copies, now)
        self._backpressure.update(peer)
        return True

    def _queue(self, peer: Peer, body: bytes, held: dict[int, int], now: float) -> None:
        """Send ``body`` in ``peer``'s channel, held in ``held`` (its copies, or the
        relay's own messages) and in the send buffers' bytes until acknowledged."""
        message_id = peer.session.channel.send(body, now, bounded=False)
        held[message_id] = len(body)
        self._held(peer, len(body), now)
        self._soon(peer, now)

    def _unreachable(self, peer: Peer, counted: DropReason) -> None:
        assert peer.member is not None, "only members are removed"
        self._services.drop(counted, peer.session.address, "send buffer")
        self._leave(peer, peer.member, Departure.UNREACHABLE)

    def _leave(self, peer: Peer, member: Member, reason: Departure) -> None:
        """``peer``'s ``member`` leaves, for ``reason`` or the one it is leaving for."""
        self._services.remove(member.id, peer.leaving or reason)

    def _held(self, peer: Peer, change: int, now: float) -> None:
        """Past the bound, the heaviest go when the profile's loop wakes, never from
        within an announcement (a newcomer removed there went on being registered);
        past the crowded mark, the loop looks at the members then too."""
        past = self._buffers.hold(peer, change)
        if change > 0:
            self._timers.wake_by(now if past else self._buffers.next_sweep())

    def _send_own(self, peer: Peer | None, message: Presence | Notice, now: float) -> None:
        """A message of the relay's own to a member. They take no part in back-pressure
        (a newcomer gets one per member), but PRESENCE waits in the peer's
        :class:`~mcrelay.daemon.secure.presence.PresenceQueue` for room, and their bytes
        count in the bound of all send buffers."""
        if peer is None or peer.closed:
            return
        self._queue(peer, encode_message(message), peer.own, now)

    def announce_joined(self, member: Member, recipients: Sequence[Member]) -> None:
        self._announce(member, recipients, presence_of(PresenceEvent.JOINED, member))

    def announce_rekeyed(self, member: Member, old: Identity, recipients: Sequence[Member]) -> None:
        """A legacy member's new key is a new origin id: the old one leaves (a client
        keeping its roster by origin id keeps no ghost), the new one joins."""
        left = presence_of(PresenceEvent.LEFT, member, Departure.DISCONNECT, identity=old)
        self._announce(member, recipients, left, presence_of(PresenceEvent.JOINED, member))

    def _announce(self, member: Member, recipients: Sequence[Member], *told: Presence) -> None:
        now = trio.current_time()
        for recipient in recipients:
            for presence in told:
                self._telling.tell(self._peers.get(_key(recipient)), member, presence, now)

    def announce_present(self, newcomer: Member, present: Sequence[Member]) -> None:
        peer = self._peers.get(_key(newcomer))
        if peer is None:
            return
        peer.member = newcomer
        now = trio.current_time()
        for member in present:
            self._telling.tell(peer, member, member, now)  # already present, as it is when told

    def announce_left(
        self, member: Member, recipients: Sequence[Member], reason: Departure
    ) -> None:
        self._announce(member, recipients, presence_of(PresenceEvent.LEFT, member, reason))

    def announce_moved(self, member: Member, old: Address, recipients: Sequence[Member]) -> None:
        """Nothing: a secure member learns another's new address from the origin of its
        next message (the page has no PRESENCE for a move)."""

    def farewell(self, member: Member, reason: Departure) -> bool:
        """A kick or ban: NOTICE "kicked" or "banned" now; the member stays until it is
        acknowledged, or :data:`FAREWELL_WAIT_S`, then leaves with ``reason`` (:meth:`_part`).
        Told once: a second kick meanwhile sends nothing more."""
        peer = self._peers.get(_key(member))
        notice = FAREWELLS.get(reason)
        if peer is None or peer.member is not member or notice is None:
            return False
        if reason is Departure.BAN:
            self._pending.forget(peer.key)  # a handshake answered before the ban
        if peer.leaving is not None:  # told already; a ban still makes it leave banned
            peer.leaving = Departure.BAN if reason is Departure.BAN else peer.leaving
            return True
        now = trio.current_time()
        peer.leaving = reason
        peer.farewell = peer.session.channel.send(
            encode_message(Notice(*notice)), now, bounded=False
        )
        peer.closing_at = now + FAREWELL_WAIT_S
        self._turn(peer, now)
        return True

    def _part(self, peer: Peer) -> None:
        """A kicked or banned member's farewell is acknowledged, or its time is up."""
        if peer.member is not None and peer.leaving is not None:  # set by farewell()
            self._services.remove(peer.member.id, peer.leaving)
        self._close(peer)

    def removed(self, member: Member, reason: Departure) -> None:
        """Close its session (what is due first: the ACK of a DISCONNECT)."""
        peer = self._peers.get(_key(member))
        if peer is None or peer.member is not member:
            return
        if reason is Departure.BAN:
            self._pending.forget(peer.key)
        self._flush(peer, trio.current_time())
        self._close(peer)

    def stop_receiving(self) -> None:
        """Tell every member the relay is going (best effort: one try, no ACK awaited)."""
        now = trio.current_time()
        notice = Notice(NoticeCode.SHUTTING_DOWN, b"the relay is shutting down")
        for peer in [peer for peer in self._peers.values() if peer.leaving is None]:
            self._send_own(peer, notice, now)  # (nothing after a kicked member's farewell)

    # Bookkeeping.

    def _close(self, peer: Peer, reason: DropReason = DropReason.UNREGISTERED) -> None:
        """Close ``peer``'s session: what was in flight to it is dropped, counted as
        ``reason`` (``replaced`` only when a new session took its place: every close
        counted so, a kick or a timeout too, found by review)."""
        if peer.closed:
            return
        peer.closed = True
        if self._peers.get(peer.key) is peer:
            del self._peers[peer.key]
        for index in peer.indexes:
            if self._indexes.get(index) is peer:
                del self._indexes[index]
        statistics = peer.session.channel.statistics()
        lost = statistics.in_flight + statistics.queued
        if lost:
            self._services.drop(reason, peer.session.address, "closed", lost)
        self._buffers.release(peer)
        peer.copies.clear()
        peer.own.clear()
        peer.presence.clear(self._telling.subjects)
        self._backpressure.forget(peer)
        peer.session.channel.close()
        # Its member's identity holds it (for the API): a cycle, freed only by a full
        # collection, minutes apart or never on an idle relay, with every copy it held
        # (found by review).
        peer.member = None

    def _holds(self, key: bytes) -> bool:
        """Is this key a member's, or a pending handshake's (its timestamp is kept)?"""
        return key in self._peers or key in self._pending

    def _epoch(self) -> int:
        return int.from_bytes(self._random_bytes(4), "little")
