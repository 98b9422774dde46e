"""A participant: registers with a relay, sends and receives messages, keeps alive.

Registration asks for the relay's key first (retrying every second), checks its
fingerprint when one is pinned, and only then sends our own key, so a pinned
client never registers with the wrong relay. The answer is taken only from the
port asked (the page: the relay answers from its socket, bound to that port, on
whichever of its host's addresses its routing picks, so not always the address
asked): while the relay runs, no other user of its host can bind that port. (Any
local user answered first from a socket of its own, became the relay, and made a
pinned client give up: found by review.) Someone on another host can still answer
from that port: the legacy profile authenticates no one. After that, datagrams are
accepted only from the address that answered, and others are dropped before they
are decoded.

A relayed message whose ciphertext we have just received is a copy the network
duplicated (RSA-OAEP is randomized: the relay never seals the same bytes twice),
so it is dropped as ``duplicate_message`` before any decryption.

Right after our key, the relay sends one CLIENT_CONNECTED per client already there
(the roster), then a CLIENT_CONNECTED for each client that joins later: the same
TLV. To tell them apart, our key goes in one datagram with a SERVER_KEY_REQUEST.
The relay handles a datagram's TLVs in order and sends in the order it decides, so
its answer, a SERVER_PUBLIC_KEY, comes right after the roster: what arrives before
it is ``PeerPresent``, what comes after is ``PeerJoined``. Should the answer not
come (rate limited, lost), the roster ends ``ROSTER_WAIT_S`` after registering. A
registration that waits for the relay's rate has its answer at once and its roster
when it is made: those clients show as joined.
"""

import hashlib
import itertools
import logging
import secrets
import socket
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.core.ratelimit import TokenBucket
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import (
    ClientBound,
    PeerJoined,
    PeerLeft,
    RelayedMessage,
    ServerKey,
)
from mcrelay.protocol.legacy.fragments import MSG_ID_BYTES
from mcrelay.sockets import MAX_DATAGRAM_BYTES, MULTICAST_TTL, open_client_socket

log = logging.getLogger(__name__)

KEEPALIVE_INTERVAL_S = 10.0
REGISTER_TIMEOUT_S = 5.0
KEY_RETRY_INTERVAL_S = 1.0
ROSTER_WAIT_S = 1.0
"""The roster's end at the latest, should the relay's answer that marks it not come."""
GOODBYE_TIMEOUT_S = 1.0
EVENT_QUEUE_EVENTS = 1024
KEY_CHECK_KEEPALIVES = 6
"""One keep-alive in this many asks the relay's key too (once a minute by default: a
relay answers at most 100 key requests a second in all)."""
KEY_CHECK_ANSWER_S = 2.0
"""How long the answers to a key check are awaited (all of them: ours ends it at once);
a key from the relay's address at any other time is no answer, and is counted
(``unknown_type``)."""
KEY_CHECK_ROUNDS = 3
"""A changed key is believed when this many key checks in a row were answered with one
other key and never with ours: one answer from the relay's (spoofable) address, while
a spoofer kept the relay's answers away (its per-address limit spent by requests from
our address), ended the client (found by review)."""
WILDCARD = "0.0.0.0"
DUPLICATE_MEMORY_MESSAGES = 1024
"""Digests of the latest relayed ciphertexts kept to spot network duplicates (32 bytes each)."""
PACE_BURST_FRAGMENTS = 64
PACE_FRAGMENTS_PER_S = 2000.0
"""Fragments go out at once up to this burst (about 20 KB, which any receive buffer
holds), then at this rate: a relay that decrypts a message as it completes, in its one
receive thread, reads nothing meanwhile (176 blocks of 2048 bits take it about 40 ms),
and fragments sent back to back would overflow its kernel's default buffer (208 KiB)."""


class RegistrationError(Exception):
    """Registration with the relay failed."""


class RelayUnreachable(RegistrationError):
    """No relay answered the key request in time."""


class RelayKeyMismatch(RegistrationError):
    """Only relays whose key does not match the pinned fingerprint answered."""


class RelayKeyChanged(RelayKeyMismatch):
    """The relay answered a key check with another key than the one we registered with."""


@dataclass(frozen=True, slots=True)
class MessageReceived:
    sender: Address
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True, slots=True)
class PeerPresent:
    """A client that was registered before us (the relay lists them as we register)."""

    peer: Address


ParticipantEvent = MessageReceived | PeerPresent | PeerJoined | PeerLeft


class RecentDigests:
    """The last ``size`` digests added; the oldest is forgotten first."""

    def __init__(self, size: int) -> None:
        self._order: deque[bytes] = deque()
        self._members: set[bytes] = set()
        self._size = size

    def add(self, digest: bytes) -> bool:
        """Remember ``digest``; False if it is already remembered."""
        if digest in self._members:
            return False
        if len(self._order) == self._size:
            self._members.discard(self._order.popleft())
        self._order.append(digest)
        self._members.add(digest)
        return True


@dataclass(slots=True, eq=False)
class _KeyCheck:
    """One key check: until when its answers count, its round, and what they were."""

    until: float
    round: int
    """1 for a check of the schedule; more while one other key answers each time."""
    suspected: str | None = None
    """The other key that answered every round before (never ours)."""
    ours: bool = False
    others: set[str] = field(default_factory=set)

    def other_key(self) -> str | None:
        """The one other key every round so far answered with, never with ours."""
        if self.ours or len(self.others) != 1:
            return None
        (found,) = self.others
        return found if self.suspected in (None, found) else None


class Participant:
    def __init__(
        self,
        sock: trio.socket.SocketType,
        destination: Address,
        key: rsa.RSAPrivateKey,
        *,
        relay_fingerprint: str | None = None,
        keepalive_interval_s: float = KEEPALIVE_INTERVAL_S,
    ) -> None:
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.address: Address = (host, port)
        """Our address as the relay and the peers see it (once registered)."""
        self.destination = destination
        self._key = key
        self.pinned_fingerprint = relay_fingerprint
        self.keepalive_interval_s = keepalive_interval_s
        self.relay_address: Address | None = None
        self.relay_key: rsa.RSAPublicKey | None = None
        self._refused_key: str | None = None
        """Why the last key a relay answered with was refused, if one was."""
        self._key_check: _KeyCheck | None = None
        """The key check whose answers are awaited now, if one is."""
        self.key_check_answer_s = KEY_CHECK_ANSWER_S
        self.dropped: Counter[DropReason] = Counter()
        self._roster_until: float | None = None
        """While the roster comes: when it ends at the latest (trio time)."""
        self._recent = RecentDigests(DUPLICATE_MEMORY_MESSAGES)
        self._pace = TokenBucket(
            PACE_BURST_FRAGMENTS, PACE_FRAGMENTS_PER_S, PACE_BURST_FRAGMENTS, trio.current_time()
        )
        self._events_in, self.events = trio.open_memory_channel[ParticipantEvent](
            EVENT_QUEUE_EVENTS
        )

    @property
    def relay_fingerprint(self) -> str:
        assert self.relay_key is not None, "not registered"
        return crypto.fingerprint(self.relay_key)

    async def register(
        self,
        *,
        timeout_s: float = REGISTER_TIMEOUT_S,
        retry_interval_s: float = KEY_RETRY_INTERVAL_S,
    ) -> None:
        mismatched: set[str] = set()
        with trio.move_on_after(timeout_s):
            # After a request that only relays with another key answered, every relay
            # that answers has: the mismatch is certain, no need to wait out the timeout.
            while self.relay_key is None and not mismatched:
                await self._sock.sendto(legacy.key_request(), self.destination)
                with trio.move_on_after(retry_interval_s):
                    await self._wait_relay_key(mismatched)
        if self.relay_key is None:
            if mismatched:
                raise RelayKeyMismatch(
                    f"relay key {', '.join(sorted(mismatched))} does not match "
                    f"the pinned {self.pinned_fingerprint}"
                )
            where = format_address(self.destination)
            if self._refused_key is not None:  # an answer, but no key a client may use
                raise RelayUnreachable(
                    f"no relay answered at {where} with a usable key within {timeout_s:g} s "
                    f"({self._refused_key}; the client takes RSA keys of 2048 to 4096 bits)"
                )
            raise RelayUnreachable(f"no relay answered at {where} within {timeout_s:g} s")
        # The key request beside our key marks the end of the roster (see the module's doc).
        registration = legacy.client_key(self._key.public_key()) + legacy.key_request()
        await self._sock.sendto(registration, self.destination)
        self._roster_until = trio.current_time() + ROSTER_WAIT_S
        if self.address[0] == WILDCARD and self.relay_address is not None:
            self.address = _source_toward(self.relay_address, self.address[1])

    async def send(self, message: bytes | str) -> None:
        """Encrypt for the relay, fragment and send, paced (raises ``LocalProtocolError`` if
        too long)."""
        assert self.relay_key is not None, "not registered"
        plaintext = message.encode("utf-8") if isinstance(message, str) else message
        if plaintext in (legacy.CONNECT_WORD, legacy.DISCONNECT_WORD):
            raise LocalProtocolError(
                f"{plaintext.decode()!r} alone is a control word in this protocol, not chat text"
            )
        datagrams = await trio.to_thread.run_sync(
            legacy.message_datagrams, self.relay_key, plaintext, secrets.token_bytes(MSG_ID_BYTES)
        )
        for datagram in datagrams:
            await trio.sleep(self._pace.reserve(trio.current_time()))
            await self._sock.sendto(datagram, self.destination)

    async def disconnect(self) -> None:
        await self._send_control(legacy.disconnect())

    async def _send_control(self, datagram: bytes) -> None:
        """A keep-alive or the goodbye: one that cannot go (no route for a moment, say) is
        lost as a datagram on the way would be, and counted; it ended the client with a
        traceback (found by review)."""
        try:
            await self._sock.sendto(datagram, self.destination)
        except OSError as exc:
            log.debug("cannot send to %s: %s", format_address(self.destination), exc)
            self.dropped[DropReason.SEND_FAILED] += 1

    async def _receive_untrusted(
        self, expected: Callable[[Address], bool]
    ) -> tuple[Address, list[ClientBound]]:
        """The next decodable datagram from a source ``expected`` takes, and its events;
        others are counted and skipped (those from elsewhere before any decoding)."""
        while True:
            data, (host, port, *_) = await self._sock.recvfrom(MAX_DATAGRAM_BYTES)
            source = (host, port)
            if not expected(source):
                self.dropped[DropReason.NOT_FROM_RELAY] += 1
                continue
            try:
                return source, legacy.decode_relay_datagram_untrusted(data)
            except RemoteProtocolError as exc:
                self.dropped[exc.reason] += 1

    def _may_be_relay(self, source: Address) -> bool:
        """Where a relay asked at :attr:`destination` answers from (see the module)."""
        return source[1] == self.destination[1]

    def _from_relay(self, source: Address) -> bool:
        return source == self.relay_address

    async def _wait_relay_key(self, mismatched: set[str]) -> None:
        while True:
            source, events = await self._receive_untrusted(self._may_be_relay)
            for event in events:
                if not isinstance(event, ServerKey):
                    self.dropped[DropReason.UNKNOWN_TYPE] += 1
                    continue
                try:
                    key = crypto.wire_public_key_untrusted(event.pem)
                except RemoteProtocolError as exc:
                    self.dropped[exc.reason] += 1
                    self._refused_key = f"{format_address(source)} answered with {exc}"
                    continue
                found = crypto.fingerprint(key)
                if self.pinned_fingerprint is not None and found != self.pinned_fingerprint:
                    # Not a warning: the caller reports the mismatch once, as an error.
                    log.info("relay at %s has key %s: refused", format_address(source), found)
                    mismatched.add(found)
                    continue
                self.relay_key, self.relay_address = key, source
                return

    async def receive_loop(self) -> None:
        while True:
            _, events = await self._receive_untrusted(self._from_relay)
            for event in events:
                await self._dispatch(event)

    async def _dispatch(self, event: ClientBound) -> None:
        if isinstance(event, RelayedMessage):
            if not self._recent.add(hashlib.sha256(event.ciphertext).digest()):
                self.dropped[DropReason.DUPLICATE_MESSAGE] += 1
                return
            try:
                data = await trio.to_thread.run_sync(
                    crypto.decrypt_concatenated_untrusted, self._key, event.ciphertext
                )
            except RemoteProtocolError as exc:
                self.dropped[exc.reason] += 1
                return
            self._emit(MessageReceived(event.sender, data))
        elif isinstance(event, PeerJoined):
            self._emit(PeerPresent(event.peer) if self._in_roster() else event)
        elif isinstance(event, PeerLeft):
            self._emit(event)
        elif isinstance(event, ServerKey):
            if self._in_roster():
                self._roster_until = None  # the answer sent after the roster
            else:
                self._check_relay_key(event)
        else:
            self.dropped[DropReason.UNKNOWN_TYPE] += 1

    def _check_relay_key(self, event: ServerKey) -> None:
        """An answer to the key request sent beside some keep-alives: a relay that
        restarted with a new key cannot read what we send it any more."""
        assert self.relay_key is not None
        check = self._key_check
        if check is None or trio.current_time() > check.until:
            # Asked for by no one: one datagram from the relay's (spoofable) address
            # must not end the client.
            self.dropped[DropReason.UNKNOWN_TYPE] += 1
            return
        try:
            key = crypto.wire_public_key_untrusted(event.pem)
        except RemoteProtocolError as exc:
            self.dropped[exc.reason] += 1
            return
        found = crypto.fingerprint(key)
        if found == crypto.fingerprint(self.relay_key):
            check.ours = True
            return
        # Not (yet) the relay's: with --relay-fingerprint, never; else someone else's
        # answer unless every round says the same (see _key_check_due).
        self.dropped[DropReason.BAD_KEY] += 1
        if self.pinned_fingerprint is None:
            check.others.add(found)

    def _in_roster(self) -> bool:
        if self._roster_until is not None and trio.current_time() >= self._roster_until:
            self._roster_until = None
        return self._roster_until is not None

    @property
    def events_dropped(self) -> int:
        """Events the application was too slow to take (the queue holds
        :data:`EVENT_QUEUE_EVENTS`): the legacy profile has no acknowledgements to hold
        messages back with, so they are dropped here, counted, and said by the chat."""
        return self.dropped[DropReason.OVERLOADED]

    def _emit(self, event: ParticipantEvent) -> None:
        try:
            self._events_in.send_nowait(event)
        except trio.WouldBlock:
            self.dropped[DropReason.OVERLOADED] += 1

    async def keepalive_loop(self) -> None:
        """KEEPALIVE with our key beside it: a registered client is only refreshed, and
        one the relay forgot (a restart, a lost datagram, a timeout) registers again.
        Every :data:`KEY_CHECK_KEEPALIVES`-th also asks the relay's key: a relay that came
        back with a new one could not read a word we send (see _check_relay_key)."""
        ping = legacy.keepalive() + legacy.client_key(self._key.public_key())
        # A phase of its own, so that clients started together do not all ask at once.
        phase = secrets.randbelow(KEY_CHECK_KEEPALIVES)
        for count in itertools.count(1):
            await trio.sleep(self.keepalive_interval_s)
            if self._key_check_due(scheduled=count % KEY_CHECK_KEEPALIVES == phase):
                await self._send_control(ping + legacy.key_request())
            else:
                await self._send_control(ping)

    def _key_check_due(self, *, scheduled: bool) -> bool:
        """Whether this keep-alive asks the relay's key: a ``scheduled`` check, or the
        next round of one that only one other key answered. Raises
        :class:`RelayKeyChanged` when KEY_CHECK_ROUNDS rounds in a row were answered with
        one other key and never with ours; ours, no answer, or answers that disagree end
        the check (the schedule's next one asks again)."""
        now = trio.current_time()
        check = self._key_check
        if check is not None:
            if now <= check.until and not check.ours:
                return False  # its answers are still awaited
            self._key_check = None
            suspected = check.other_key()
            if suspected is not None:
                if check.round == KEY_CHECK_ROUNDS:
                    raise RelayKeyChanged(
                        f"the relay at {format_address(self.destination)} answered "
                        f"{KEY_CHECK_ROUNDS} key checks with key {suspected}, not "
                        f"{self.relay_fingerprint}, the one this client registered with: it "
                        "restarted with a new key, or someone able to send from its address "
                        "answers in its place (the legacy profile cannot tell them apart). "
                        "Check the key on the relay's host (mcrelay fingerprint KEY_FILE), "
                        "then start again with --relay-fingerprint"
                    )
                self._key_check = _KeyCheck(
                    now + self.key_check_answer_s, check.round + 1, suspected
                )
                return True
        if scheduled:
            self._key_check = _KeyCheck(now + self.key_check_answer_s, 1)
        return scheduled


def _source_toward(remote: Address, port: int) -> Address:
    """The source address the system gives a datagram to ``remote`` from a socket bound
    to the wildcard: what the relay saw, and the peers see. (Connecting a UDP socket
    only looks up the route; it sends nothing.)"""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(remote)
        host: str = probe.getsockname()[0]
    return (host, port)


@asynccontextmanager
async def open_participant(
    *,
    destination: Address,
    interface: str,
    ttl: int = MULTICAST_TTL,
    key: rsa.RSAPrivateKey | None = None,
    relay_fingerprint: str | None = None,
    keepalive_interval_s: float = KEEPALIVE_INTERVAL_S,
    register_timeout_s: float = REGISTER_TIMEOUT_S,
    retry_interval_s: float = KEY_RETRY_INTERVAL_S,
) -> AsyncIterator[Participant]:
    """Register with a relay, keep alive and receive while the block runs; then disconnect.

    Raises :class:`RelayUnreachable` or :class:`RelayKeyMismatch` before the block
    runs when registration fails.
    """
    if key is None:
        key = await trio.to_thread.run_sync(crypto.generate_private_key)
    sock = await open_client_socket(interface=interface, ttl=ttl)
    with sock:
        participant = Participant(
            sock,
            destination,
            key,
            relay_fingerprint=relay_fingerprint,
            keepalive_interval_s=keepalive_interval_s,
        )
        await participant.register(timeout_s=register_timeout_s, retry_interval_s=retry_interval_s)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(participant.receive_loop)
            nursery.start_soon(participant.keepalive_loop)
            try:
                yield participant
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(GOODBYE_TIMEOUT_S):
                    await participant.disconnect()
                nursery.cancel_scope.cancel()
        participant._events_in.close()  # a reader takes what is left, then ends
