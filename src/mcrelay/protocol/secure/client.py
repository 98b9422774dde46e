"""A secure client's connection to a relay, sans-I/O (as h11, or aioquic's
``QuicConnection``): told the time, given datagrams, it returns the datagrams to send,
its next deadline, and events for the application (:mod:`.client_events`).

The caller sends what :meth:`ClientConnection.datagrams_to_send` returns after every
call that may have changed something, hands it every datagram that arrives
(:meth:`~ClientConnection.receive_datagram`), wakes it at
:meth:`~ClientConnection.next_deadline`, and reads :meth:`~ClientConnection.next_event`
until ``None``.

How it connects. A KEY_QUERY goes out at once. Without a relay key to expect, the
handshake waits for the answer (trust on first use); with one (pinned, or known from
an earlier use), INIT goes out beside the query, and an answer with another key ends
the connection (``key_mismatch``, both keys shown), as do two answers that disagree.
A handshake is retried on the page's schedule and answers COOKIE with a fresh INIT
carrying mac2. The first DATA from the relay makes us a member (:class:`Connected`).

Afterwards it rekeys 120 s into a keypair, starts a new handshake after 30 s without
DATA from the relay, or at once after a NOTICE shutting down (a relay that restarted
answers with a new epoch: our messages not yet acknowledged go again, renumbered), and
after a NOTICE kicked, banned or replaced starts none: it acknowledges the notice and
closes a second later.

While the application cannot take more (:attr:`ClientConnection.hold_back`), the
relay's new messages are refused unacknowledged: it sends them again, and at a
message's deadline (10 s) removes the member and falls silent. A silence that began
while a message refused was not yet taken (or once one was given up, within that
deadline of the refusal) may be that removal, or the relay's end (a crash, a restart
whose NOTICE was refused): the new handshake tells which. A relay that answers it
under the epoch it had is the one that removed us: the connection closes
(``fell_behind``) instead of joining again as if nothing were lost; a relay that
restarted answers under another, and we join it. Once a message after the last one
refused is taken, the refused ones were taken too (the relay sends in order), and
nothing is held against a later silence (a silence after a brief hold-back that lost
nothing closed the connection, and so did a restart's NOTICE refused: found by review).
"""

import os
from collections import Counter, deque
from collections.abc import Callable

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.secure.channel import Role
from mcrelay.protocol.secure.channel_events import (
    MessageAbandoned,
    MessageAcknowledged,
    MessageDelivered,
)
from mcrelay.protocol.secure.client_events import (
    ClientEvent,
    Closed,
    CloseReason,
    Connected,
    NoticeReceived,
    relay_message_event_untrusted,
)
from mcrelay.protocol.secure.client_handshake import HandshakeAttempt, KeyCheck, low_order
from mcrelay.protocol.secure.data import peek_data_untrusted
from mcrelay.protocol.secure.handshake import MAX_EPOCH, tai64n
from mcrelay.protocol.secure.header import DatagramType, datagram_type_untrusted
from mcrelay.protocol.secure.keypairs import REKEY_AFTER_S, Keypair
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.member_addresses import MemberAddresses
from mcrelay.protocol.secure.messages import Chat, Disconnect, NoticeCode, encode_message
from mcrelay.protocol.secure.retries import GIVE_UP_AFTER_S, HeldCookie, RetryAction
from mcrelay.protocol.secure.rtt import MAX_RTO_S
from mcrelay.protocol.secure.sending import MESSAGE_DEADLINE_S
from mcrelay.protocol.secure.session import PENDING_LIFETIME_S, SESSION_TIMEOUT_S, Session

DISCONNECT_WAIT_S = 1.0
"""How long a client that sent DISCONNECT waits for its ACK before it closes."""
ABANDON_GRACE_S = 2 * MAX_RTO_S + 0.1
"""After DISCONNECT is acknowledged, at most this long to send the ABANDONs owed."""
NOTICE_LINGER_S = 1.0
"""After NOTICE kicked, banned or replaced: time to acknowledge it, then close."""
FINAL_NOTICES = {
    NoticeCode.KICKED: CloseReason.KICKED,
    NoticeCode.BANNED: CloseReason.BANNED,
    NoticeCode.REPLACED: CloseReason.REPLACED,
}
"""The notices after which a client starts no new handshake by itself."""
NS_PER_S = 1_000_000_000


class NotConnected(LocalProtocolError):
    """A message cannot be sent: no session yet, or the connection is ending."""


class ClientConnection:
    """One client's connection to one relay, from KEY_QUERY to :class:`Closed`."""

    def __init__(
        self,
        identity: KeyPair,
        destination: Address,
        now: float,
        wall_clock_ns: int,
        *,
        relay_key: bytes | None = None,
        epoch: int | None = None,
        timeout_s: float = SESSION_TIMEOUT_S,
        give_up_after_s: float = GIVE_UP_AFTER_S,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``destination``: the relay's address, or a multicast group (either way the
        session then follows the address the RESPONSE came from). ``wall_clock_ns``: the wall clock
        at ``now`` (``time.time_ns()``); INIT timestamps count on from it with ``now``,
        so they rise even when the wall clock steps back. ``relay_key``: the key to
        expect (pinned or known). ``epoch``: ours, drawn at random when not given.
        ``give_up_after_s``: until the first :class:`Connected`."""
        self.identity = identity
        self.destination = destination
        self.relay: Address | None = None
        """Whom we talk to: who answered our INIT. That is another address than the
        destination for a group, and may be for a relay's host of several addresses (a
        relay bound to 0.0.0.0 answers from the one its kernel picks), as legacy
        clients follow it too; a RESPONSE only the relay's key can make."""
        if relay_key is not None and low_order(relay_key):
            raise LocalProtocolError("the relay key is of low order: no relay can hold it")
        self.relay_key = relay_key
        self._expected_key = relay_key
        self.epoch = int.from_bytes(random_bytes(4), "little") if epoch is None else epoch
        if not 0 <= self.epoch <= MAX_EPOCH:
            raise LocalProtocolError(f"epoch {self.epoch} is not a u32")
        self.timeout_s = timeout_s
        self._random_bytes = random_bytes
        self._clock = (now, wall_clock_ns)
        self._last_timestamp_ns = -1
        self._cookie = HeldCookie()
        self._keys: KeyCheck | None = KeyCheck(
            relay_key, now, random_bytes, give_up_after_s=give_up_after_s
        )
        """Until connected: the KEY_QUERY and its answers."""
        self._attempt: HandshakeAttempt | None = None
        self.session: Session | None = None
        self._answered_at = now
        self.connected = False
        self.closed = False
        self._give_up_at = now + give_up_after_s
        self._ending: tuple[float, CloseReason] | None = None
        """When we close, and why: after DISCONNECT, or a final NOTICE."""
        self._disconnect_id: int | None = None
        self._disconnect_settled = False
        self._events: deque[ClientEvent] = deque()
        self._member_addresses = MemberAddresses()
        self._hold_back = False
        self._refused = 0
        self._refused_at: float | None = None
        """When the relay's latest message was refused while holding back; None once
        every one refused was taken."""
        self._given_up = 0
        """The relay's messages given up when the refusals kept began: one more since may be
        one refused, lost."""
        self.drops: Counter[DropReason] = Counter()
        """Datagrams and messages from the network that were not acted on, by reason."""
        self._out: list[tuple[bytes, Address]] = [(self._keys.query.datagram, destination)]
        if relay_key is not None:
            self._start_handshake(now)

    # The application's side.

    def next_event(self) -> ClientEvent | None:
        return self._events.popleft() if self._events else None

    @property
    def hold_back(self) -> bool:
        """Set while the application cannot take more events: the relay's messages not
        yet started are refused unacknowledged (a channel acknowledges what it delivers,
        and the relay then counts it as delivered), as the relay's channel does under its
        back-pressure. Those under way still complete: :data:`~.sending.MESSAGE_WINDOW`
        more at most."""
        return self._hold_back

    @hold_back.setter
    def hold_back(self, on: bool) -> None:
        self._hold_back = on
        if self.session is not None:
            self.session.channel.backpressure = on

    @property
    def can_send(self) -> bool:
        """Whether :meth:`send_chat` would take a message now (64 at most wait)."""
        return self._sendable and self.session is not None and self.session.channel.can_send

    @property
    def _sendable(self) -> bool:
        return self.connected and not self.closed and self._ending is None

    def send_chat(self, text: bytes, now: float) -> int:
        """Queue a CHAT; its message id, named by the :class:`MessageAcknowledged` or
        :class:`MessageAbandoned` that settles it.

        Raises :class:`NotConnected` before :class:`Connected` or once ending,
        :class:`~.sending.QueueFull` when 64 messages already wait, and
        ``LocalProtocolError`` for a text over 65,536 bytes.
        """
        self._poll(now)
        if not self._sendable or self.session is None:
            raise NotConnected("not connected to the relay")
        return self.session.channel.send(encode_message(Chat(text)), now)

    def disconnect(self, now: float) -> None:
        """Send DISCONNECT and close once it is acknowledged and the ABANDONs owed went
        out (:data:`ABANDON_GRACE_S` at most after the ACK), or 1 s after it was sent
        without an ACK."""
        self._poll(now)
        if self.closed or self._ending is not None:
            return
        self._attempt = None
        session = self.session
        if session is None or not session.channel.can_send:
            self._close(CloseReason.DISCONNECTED)
            return
        self._disconnect_id = session.channel.send(encode_message(Disconnect()), now)
        self._ending = (now + DISCONNECT_WAIT_S, CloseReason.DISCONNECTED)

    # The network's side.

    def receive_datagram(self, datagram: bytes, source: Address, now: float) -> None:
        """Act on a datagram from ``source``; what is not acted on is counted in :attr:`drops`."""
        self._poll(now)
        if self.closed:
            return
        # Before a session, from the port asked only: the relay answers from its socket,
        # bound to that port, which no other user of its host can bind while it runs.
        # (Any local user in the group saw a first use's KEY_QUERY and answered it first
        # from a port of its own: its key was trusted, and kept. Found by review.)
        expected = self.relay is None and source[1] == self.destination[1]
        if source != self.relay and not expected:
            self.drops[DropReason.NOT_FROM_RELAY] += 1
            return
        try:
            kind = datagram_type_untrusted(datagram)
            if kind is DatagramType.DATA:
                self._on_data(datagram, source, now)
            elif kind is DatagramType.RESPONSE:
                self._on_response(datagram, source, now)
            elif kind is DatagramType.COOKIE:
                self._on_cookie(datagram, now)
            elif kind is DatagramType.KEY_INFO:
                self._on_key_info(datagram, now)
            else:
                raise RemoteProtocolError(
                    f"{kind.name} is not for a client", DropReason.UNKNOWN_TYPE
                )
        except RemoteProtocolError as error:
            self.drops[error.reason] += 1
        self._collect(now)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        """Every datagram due now, and where it goes."""
        self._poll(now)
        session_out: list[tuple[bytes, Address]] = []
        if self.session is not None and not self.closed:
            session_out = self.session.datagrams(now)
            self._collect(now)  # (a NOTICE shutting down delivered here starts an INIT)
        out, self._out = self._out + session_out, []
        return out

    def handle_timer(self, now: float) -> None:
        """Act on the timers that have passed (every other method does this first)."""
        self._poll(now)

    def next_deadline(self) -> float | None:
        """When to call :meth:`datagrams_to_send` (or :meth:`handle_timer`) next."""
        if self.closed:
            return None
        times = [self._give_up_at] if not self.connected else []
        if self._ending is not None:
            times.append(self._ending[0])
        if self._keys is not None and not self._keys.answered:
            times.append(self._keys.retries.deadline)
        if self._attempt is not None:
            times.append(self._attempt.deadline)
        session = self.session
        if session is not None:
            times.append(session.next_deadline())
            if self._attempt is None and self._may_handshake:
                times.append(self._silent_since + self.timeout_s)
                times.append(session.current.created + REKEY_AFTER_S)
                if session.previous is not None:
                    times.append(session.current.created + PENDING_LIFETIME_S)
        return min(times, default=None)

    # Inside.

    @property
    def _may_handshake(self) -> bool:
        return self._ending is None and not self.closed

    @property
    def _silent_since(self) -> float:
        assert self.session is not None
        return max(self.session.last_received, self._answered_at)

    def _timestamp(self, now: float) -> bytes:
        start, wall_ns = self._clock
        ns = max(wall_ns + round((now - start) * NS_PER_S), self._last_timestamp_ns + 1)
        self._last_timestamp_ns = ns
        return tai64n(ns)

    def _start_handshake(self, now: float) -> None:
        assert self.relay_key is not None
        session = self.session
        self._attempt = HandshakeAttempt(
            self.identity,
            self.relay_key,
            self.epoch,
            now,
            cookie=self._cookie,
            timestamp=self._timestamp,
            in_use=set() if session is None else session.local_indexes(),
            random_bytes=self._random_bytes,
            # Until the first session, INITs are sent until the connect timeout (which
            # may be past the page's 90 s); then the page's 90 s for each handshake.
            give_up_after_s=GIVE_UP_AFTER_S if self.connected else self._give_up_at - now,
        )
        self._out.append((self._attempt.init, self.relay or self.destination))

    def _poll(self, now: float) -> None:
        if self.closed:
            return
        if self._ending is not None and now >= self._ending[0]:
            self._close(self._ending[1])
            return
        if not self.connected and now >= self._give_up_at:
            self._close(CloseReason.UNREACHABLE)
            return
        if self._keys is not None and self._keys.due(now):
            self._out.append((self._keys.query.datagram, self.destination))
        attempt = self._attempt
        if attempt is not None:
            action = attempt.poll(now)
            if action is RetryAction.GIVE_UP:
                self._close(CloseReason.UNREACHABLE)
                return
            if action is RetryAction.SEND_INIT:
                self._out.append((attempt.init, self.relay or self.destination))
        session = self.session
        if session is not None and self._may_handshake:
            silent = now >= self._silent_since + self.timeout_s
            if silent:
                self._check_key(now)
            # A rekey the relay has not confirmed (no DATA under it) in 15 s is one it
            # has forgotten (the page's life of an unconfirmed handshake): it refuses
            # the DATA sent under it, while its own under the old keypair kept this
            # side from falling silent, so the member timed out (found by review).
            forgotten = (
                session.previous is not None and now >= session.current.created + PENDING_LIFETIME_S
            )
            if attempt is None and (silent or forgotten or session.current.wants_rekey(now)):
                self._start_handshake(now)

    def _check_key(self, now: float) -> None:
        """Ask the relay's key again: it may have come back with another, and its INITs
        (a rekey's too, under way) would get silence; the client would give up 90 s later
        not knowing why. Once a silence or a shutdown: the relay's RESPONSE ends it."""
        if self._keys is None and self.relay_key is not None:
            self._keys = KeyCheck(self.relay_key, now, self._random_bytes)
            self._out.append((self._keys.query.datagram, self.destination))

    def _relay_shutting_down(self, now: float) -> None:
        """A new handshake at once, on the INIT schedule (1, 2, 4 s, then every 5 s; given
        up at 90 s), and the key asked beside it: a relay restarted takes the messages not
        yet acknowledged before their 10 s deadline. Waiting for 30 s of silence, as
        before, lost every line typed in the first 20 s (found by review)."""
        if not self._may_handshake:
            return
        self._check_key(now)
        if self._attempt is None:
            self._start_handshake(now)

    def _removed_while_held_back(self, session: Session, relay_epoch: int, now: float) -> bool:
        """The relay answers a handshake under the epoch it had, while a message we refused
        is not taken: past its deadline (the relay gave it up, and removed us), or after a
        silence that began within it (see the module). The keypair's rekey, due every
        120 s, came before the 30 s of silence: its answer, a new join, hid the removal
        (found by review)."""
        refused_at = self._refused_at
        if refused_at is None or relay_epoch != session.channel.peer_epoch:
            return False
        given_up = now >= refused_at + MESSAGE_DEADLINE_S
        silenced = (
            session.last_received <= refused_at + MESSAGE_DEADLINE_S
            and now >= self._silent_since + self.timeout_s
        )
        return given_up or silenced

    def _note_refusals(self, session: Session, now: float) -> None:
        """Keep when the latest of the relay's messages was refused, until every one
        refused was taken (none given up): the evidence of a removal (see the module)."""
        channel = session.channel
        if channel.refused != self._refused:
            if self._refused_at is None:
                self._given_up = channel.given_up
            self._refused, self._refused_at = channel.refused, now
        elif not channel.refusals_outstanding and channel.given_up == self._given_up:
            self._refused_at = None

    def _on_key_info(self, datagram: bytes, now: float) -> None:
        check = self._keys
        if check is None:
            raise RemoteProtocolError("KEY_INFO to no query of ours", DropReason.UNKNOWN_INDEX)
        mismatch = check.read_answer_untrusted(datagram)
        if mismatch is not None:
            self._close(
                CloseReason.KEY_MISMATCH,
                expected_key=mismatch.expected,
                found_key=mismatch.found,
                keys_disagreed=mismatch.disagreed,
            )
        elif self.relay_key is None:
            self.relay_key = check.key
            self._start_handshake(now)

    def _on_cookie(self, datagram: bytes, now: float) -> None:
        if self._attempt is None:
            raise RemoteProtocolError("COOKIE for no INIT of ours", DropReason.UNKNOWN_INDEX)
        init = self._attempt.read_cookie_untrusted(datagram, now)
        if init is not None:
            self._out.append((init, self.relay or self.destination))

    def _on_response(self, datagram: bytes, source: Address, now: float) -> None:
        if self._attempt is None:
            raise RemoteProtocolError("RESPONSE to no INIT of ours", DropReason.UNKNOWN_INDEX)
        answered = self._attempt.read_response_untrusted(datagram, now)
        self._attempt = None
        established = answered.established
        session = self.session
        if session is not None and self._removed_while_held_back(
            session, established.relay_epoch, now
        ):
            self._close(CloseReason.FELL_BEHIND)
            return
        if self.connected:
            self._keys = None  # the relay answered: a key check after silence is over
        self._answered_at = now
        keypair = Keypair.from_handshake(established.keys, established.relay_epoch, now)
        self.relay = source
        if self.session is None:
            self.session = Session(
                Role.CLIENT,
                keypair,
                source,
                now,
                timeout_s=self.timeout_s,
                initial_rtt_s=answered.round_trip_s,
                random_bytes=self._random_bytes,
            )
            self.session.channel.backpressure = self._hold_back
        else:
            self.session.install(keypair, now)

    def _on_data(self, datagram: bytes, source: Address, now: float) -> None:
        session = self.session
        header = peek_data_untrusted(datagram)
        keypair = None if session is None else session.keypair(header.receiver_index, now)
        if session is None or keypair is None:
            raise RemoteProtocolError("DATA for no keypair of ours", DropReason.UNKNOWN_INDEX)
        received = session.receive_untrusted(keypair, datagram, header.counter, source, now)
        self.drops[DropReason.UNKNOWN_TYPE] += received.unknown_frames
        self._note_refusals(session, now)
        if not self.connected:
            assert self.relay is not None
            assert self.relay_key is not None
            self.connected = True
            self._keys = None
            self._events.append(Connected(self.relay, self.relay_key, self._expected_key is None))

    def _collect(self, now: float) -> None:
        """The channel's events, as the application's."""
        if self.session is None:
            return
        channel = self.session.channel
        while not self.closed and (event := channel.next_event()) is not None:
            if isinstance(event, MessageDelivered):
                self._deliver(event.body, now)
            elif isinstance(event, MessageAcknowledged | MessageAbandoned):
                if event.message_id == self._disconnect_id:
                    self._disconnect_settled = True
                    # The ABANDONs still owed go out their 3 times first (a page relay
                    # holds DISCONNECT behind an abandoned message until it hears one):
                    # two RTOs at most.
                    self._ending = (now + ABANDON_GRACE_S, CloseReason.DISCONNECTED)
                else:
                    self._events.append(event)
        if self._disconnect_settled and not self.closed and not channel.abandons_owed:
            self._close(CloseReason.DISCONNECTED)

    def _deliver(self, body: bytes, now: float) -> None:
        try:
            event = relay_message_event_untrusted(body)
        except RemoteProtocolError as error:
            self.drops[error.reason] += 1  # the channel acknowledged it all the same
            return
        moved = self._member_addresses.follow(event)
        if moved is not None:
            self._events.append(moved)
        self._events.append(event)
        if isinstance(event, NoticeReceived):
            if event.code is NoticeCode.SHUTTING_DOWN:
                self._relay_shutting_down(now)
            final = FINAL_NOTICES.get(event.code)
            if final is not None and self._ending is None:
                self._attempt = None
                self._ending = (now + NOTICE_LINGER_S, final)

    def _close(
        self,
        reason: CloseReason,
        *,
        expected_key: bytes | None = None,
        found_key: bytes | None = None,
        keys_disagreed: bool = False,
    ) -> None:
        self.closed = True
        self._attempt = None
        self._out = []
        self._events.append(Closed(reason, expected_key, found_key, keys_disagreed))
