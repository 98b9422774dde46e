"""A secure participant: a :class:`ClientConnection` on a UDP socket, in Trio.

One task reads the socket, one wakes the connection at its deadlines; both, and the
application's calls, send what the connection has to send right after. The
connection gets Trio's clock as ``now`` (so tests run it on ``autojump_clock``) and
the wall clock once, for its INIT timestamps.

Every message the channel delivers it has acknowledged: the relay counts it as
delivered, so it must reach the application. While :data:`~.secure_events.EVENT_QUEUE_BYTES`
of events wait for a slow reader (a full pipe, a terminal paused with Ctrl-S), the
connection holds back (:attr:`ClientConnection.hold_back`): the relay's new messages go
unacknowledged, and the relay's own rules apply (it sends them again, and removes a
member that takes none within a message's deadline: the connection then closes,
``fell_behind``). The socket is still read meanwhile, so acknowledgements and
keep-alives go on. (The queue was bounded, and what came past it was dropped and
counted, acknowledged all the same: a chat piped into a slow reader showed 1,472 of
3,000 messages and exited 0, found by review.) The messages under way when it began
to hold back still complete: at most the window's more events, so the queue stays
bounded.
"""

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from mcrelay.client.participant import RelayKeyMismatch, RelayUnreachable
from mcrelay.client.secure_events import ChatGivenUp, EventQueue, SecureEvent
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.secure.channel_events import MessageAbandoned, MessageAcknowledged
from mcrelay.protocol.secure.client import (
    ABANDON_GRACE_S,
    DISCONNECT_WAIT_S,
    ClientConnection,
    NotConnected,
)
from mcrelay.protocol.secure.client_events import Closed, CloseReason, Connected
from mcrelay.protocol.secure.keys import KeyPair, encode_key
from mcrelay.protocol.secure.retries import GIVE_UP_AFTER_S
from mcrelay.protocol.secure.session import SESSION_TIMEOUT_S
from mcrelay.sockets import MAX_DATAGRAM_BYTES, MULTICAST_TTL, open_client_socket

log = logging.getLogger(__name__)


DISCONNECT_MARGIN_S = 0.5
"""Beyond the connection's own waits after DISCONNECT."""
DISCONNECT_LIMIT_S = DISCONNECT_WAIT_S + ABANDON_GRACE_S + DISCONNECT_MARGIN_S
"""The longest a session's goodbye may take: the connection closes by itself (at the
ACK of DISCONNECT, after the ABANDONs it owes, or at its deadlines); this bounds a bug's
wait. (It was 1.5 s, and cut the owed ABANDONs short: found by review.)"""


class RelayKeyChanged(RelayKeyMismatch):
    """KEY_QUERY showed a relay key other than the one pinned or known (exits 5)."""

    def __init__(self, relay: str, expected: bytes, found: bytes) -> None:
        super().__init__(
            f"relay {relay} answered with key {encode_key(found)}, not the expected "
            f"{encode_key(expected)}: refusing to connect (if the relay's key was changed on "
            "purpose, pin the new one with --relay-key or remove its line from the "
            "known-relays file)"
        )
        self.expected, self.found = expected, found


class RelayKeysDisagree(RelayKeyMismatch):
    """With no key pinned or known, two answers to one KEY_QUERY gave different keys
    (exits 5): which is the relay's is unknown, so neither is trusted."""

    def __init__(self, relay: str, first: bytes, second: bytes) -> None:
        super().__init__(
            f"relay {relay} answered one key query with two different keys, "
            f"{encode_key(first)} and {encode_key(second)}: refusing to connect (someone "
            "may be answering in its place; pin its key with --relay-key)"
        )
        self.first, self.second = first, second


def key_mismatch(relay: str, closed: Closed) -> RelayKeyMismatch:
    """What a session closed ``KEY_MISMATCH`` raises."""
    assert closed.expected_key is not None
    assert closed.found_key is not None
    if closed.keys_disagreed:
        return RelayKeysDisagree(relay, closed.expected_key, closed.found_key)
    return RelayKeyChanged(relay, closed.expected_key, closed.found_key)


class SessionEnded(Exception):
    """The relay ended our session (kicked, banned, replaced) or fell silent for good."""

    def __init__(self, reason: CloseReason) -> None:
        texts = {
            CloseReason.KICKED: "the relay kicked this client",
            CloseReason.BANNED: "the relay banned this client",
            CloseReason.REPLACED: "another client with this identity key took its place",
            CloseReason.FELL_BEHIND: "the relay removed this client as unreachable while it "
            "held back the relay's messages, its output not read fast enough: those messages "
            "are lost",
        }
        super().__init__(texts.get(reason, f"the session ended ({reason.value})"))
        self.reason = reason


class SecureParticipant:
    def __init__(self, sock: trio.socket.SocketType, connection: ClientConnection) -> None:
        self._sock = sock
        self.connection = connection
        self.dropped: Counter[DropReason] = Counter()
        """What the network sent that was not acted on, beyond the connection's own drops."""
        self.connected: Connected | None = None
        self.closed: Closed | None = None
        self.sent = 0
        """Chats sent."""
        self.pending: dict[int, bytes] = {}
        """The chats sent and neither acknowledged nor given up yet, by message id: at
        most the channel's window and queue (it kept every message's fate, one entry per
        message for the session's life)."""
        self.given_up = 0
        """Chats given up (each also an event)."""
        self._changed = trio.Event()
        self.events = EventQueue()
        """Close it to discard every event (``send`` shows none): else, full, it puts the
        channel under back-pressure (see the module)."""

    @property
    def identity(self) -> KeyPair:
        return self.connection.identity

    def _now(self) -> float:
        return trio.current_time()

    async def flush(self) -> None:
        """Send what the connection has due, and take its events."""
        for data, to in self.connection.datagrams_to_send(self._now()):
            try:
                await self._sock.sendto(data, to)
            except OSError as exc:
                log.debug("cannot send to %s: %s", format_address(to), exc)
                self.dropped[DropReason.SEND_FAILED] += 1
        self._take_events()
        self._changed.set()
        self._changed = trio.Event()

    def _hold_back(self) -> None:
        """Take no new message from the relay while the application has this much to read
        (looked at before each datagram is read, the only time it counts: the relay's
        next retransmission finds the room a reader made)."""
        self.connection.hold_back = self.events.full

    def _take_events(self) -> None:
        while (event := self.connection.next_event()) is not None:
            if isinstance(event, Connected):
                self.connected = event
            elif isinstance(event, Closed):
                self.closed = event
                self.events.end()
            elif isinstance(event, MessageAcknowledged):
                self.pending.pop(event.message_id, None)
            elif isinstance(event, MessageAbandoned):
                if (text := self.pending.pop(event.message_id, None)) is not None:
                    self.given_up += 1
                    self._emit(ChatGivenUp(text))
            else:
                self._emit(event)

    def _emit(self, event: SecureEvent) -> None:
        self.events.put(event)

    async def _wait_change(self, deadline: float = float("inf")) -> None:
        """Until the next :meth:`flush`, or ``deadline`` (every waiter is woken)."""
        with trio.move_on_at(deadline):
            await self._changed.wait()

    async def wait_until(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` holds, looked at after every change, or the connection closed."""
        while not done() and self.closed is None:
            await self._wait_change()

    async def receive_loop(self) -> None:
        while self.closed is None:
            data, source = await self._sock.recvfrom(MAX_DATAGRAM_BYTES)
            self._hold_back()  # the room the application made since
            self.connection.receive_datagram(data, (source[0], source[1]), self._now())
            await self.flush()

    async def timer_loop(self) -> None:
        while (deadline := self.connection.next_deadline()) is not None:
            if deadline > self._now():
                await self._wait_change(deadline)
            else:  # flush may not yield: a deadline in the past must not starve receiving
                await trio.lowlevel.checkpoint()
            self.connection.handle_timer(self._now())
            await self.flush()

    async def send(self, text: bytes) -> int:
        """Queue a CHAT, waiting while 64 already wait; its message id (see :attr:`pending`).
        Raises what :func:`ended_error` says once the session has ended."""
        await self.wait_until(lambda: self.connection.can_send)
        if self.closed is None:
            try:
                message_id = self.connection.send_chat(text, self._now())
            except NotConnected:
                self._take_events()  # it may have closed at this very time: why
                if self.closed is None:
                    raise
            else:
                self.sent += 1
                self.pending[message_id] = text
                await self.flush()
                return message_id
        raise ended_error(self.closed, self.connection.destination)

    async def disconnect(self) -> None:
        """DISCONNECT, then wait until the connection closes: at the relay's ACK and the
        ABANDONs still owed, or its own deadlines (:data:`DISCONNECT_LIMIT_S` at most)."""
        self.connection.disconnect(self._now())
        await self.flush()
        await self.wait_until(lambda: False)


@asynccontextmanager
async def open_secure_participant(
    *,
    destination: Address,
    interface: str,
    identity: KeyPair,
    ttl: int = MULTICAST_TTL,
    relay_key: bytes | None = None,
    connect_timeout_s: float = GIVE_UP_AFTER_S,
    session_timeout_s: float = SESSION_TIMEOUT_S,
) -> AsyncIterator[SecureParticipant]:
    """Connect to a relay, run the session while the block runs, then DISCONNECT.

    Raises :class:`RelayUnreachable`, :class:`RelayKeyChanged` or
    :class:`RelayKeysDisagree` before the block runs when connecting fails.
    """
    sock = await open_client_socket(interface=interface, ttl=ttl)
    with sock:
        connection = ClientConnection(
            identity,
            destination,
            trio.current_time(),
            time.time_ns(),
            relay_key=relay_key,
            timeout_s=session_timeout_s,
            give_up_after_s=connect_timeout_s,
        )
        participant = SecureParticipant(sock, connection)
        # The socket's and the timers' tasks are shielded, and ended here, after the
        # goodbye: a goodbye made under a cancellation from outside heard nothing, and
        # waited DISCONNECT_LIMIT_S for an ACK its cancelled tasks could not read.
        loops = trio.CancelScope(shield=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, participant, loops)
            try:
                await participant.flush()
                await participant.wait_until(lambda: participant.connected is not None)
                closed = participant.closed
                if closed is not None:
                    answered = connection.session is not None
                    _raise_for(closed, destination, connect_timeout_s, answered=answered)
                try:
                    yield participant
                finally:
                    with trio.CancelScope(shield=True):
                        with trio.move_on_after(DISCONNECT_LIMIT_S):
                            await participant.disconnect()
            finally:
                loops.cancel()
                participant.events.end()  # a reader takes what is left, then ends


async def _run(participant: SecureParticipant, scope: trio.CancelScope) -> None:
    with scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(participant.receive_loop)
            nursery.start_soon(participant.timer_loop)


def ended_error(closed: Closed, destination: Address) -> Exception:
    """What a session that ended (or was lost) after connecting raises."""
    if closed.reason is CloseReason.UNREACHABLE:
        return RelayUnreachable("the relay stopped answering")
    if closed.reason is CloseReason.KEY_MISMATCH:  # it came back with another key
        return key_mismatch(format_address(destination), closed)
    return SessionEnded(closed.reason)


def _raise_for(closed: Closed, destination: Address, timeout_s: float, *, answered: bool) -> None:
    """Why connecting failed; ``answered``: a relay answered a handshake (it then did not
    take our DATA: it limits joins, or is full)."""
    where = format_address(destination)
    if closed.reason is CloseReason.KEY_MISMATCH:
        raise key_mismatch(where, closed)
    if closed.reason is CloseReason.UNREACHABLE:
        if answered:
            raise RelayUnreachable(
                f"the secure relay at {where} answered but did not take this client as a "
                f"member within {timeout_s:g} s (it limits joins, or is full: its log and "
                "counters say which)"
            )
        raise RelayUnreachable(f"no secure relay answered at {where} within {timeout_s:g} s")
    raise SessionEnded(closed.reason)
