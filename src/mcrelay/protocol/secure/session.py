"""A secure session with one peer, from either side: its keypairs, the reliable channel
carried in DATA, keep-alive, and (on the relay) roaming. Sans-I/O and told the time.

The caller finds the keypair a DATA is for by its receiver_index (the relay keeps one
table for all its sessions; :meth:`Session.keypair` says whether an index is still one
of this session's), hands the datagram to :meth:`Session.receive_untrusted`, reads the
channel's events (:attr:`Session.channel`), and sends what :meth:`Session.datagrams`
returns after it queued a message or received, and whenever
:meth:`Session.next_deadline` has passed.

Keypairs. A client sends under its newest keypair at once and keeps the one before for
receiving until the relay's first DATA under the new one; it confirms each keypair by
sending an empty DATA at once and again (after its RTO, then at doubling intervals up
to :data:`CONFIRM_CAP_S`) until any DATA from the relay comes under it. The relay keeps
sending under its current keypair until the client's first DATA under the next one.
"""

import math
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.secure.budget import ReceiveBudget
from mcrelay.protocol.secure.channel import Channel, ChannelFrame, Role
from mcrelay.protocol.secure.frames import (
    MAX_PLAINTEXT_BYTES,
    Frames,
    PathChallenge,
    PathResponse,
    decode_frames_untrusted,
    encode_frames,
    frame_size,
)
from mcrelay.protocol.secure.keypairs import Keypair
from mcrelay.protocol.secure.paths import PathValidator

KEEPALIVE_AFTER_S = 10.0
"""Either side sends an empty DATA after this long without sending DATA."""
SESSION_TIMEOUT_S = 30.0
"""Without an authenticated DATA this long, the relay removes the member and the client
starts a new handshake (``--client-timeout``)."""
CONFIRM_CAP_S = 2.0
PENDING_LIFETIME_S = 15.0
"""An unconfirmed handshake (RESPONSE sent, no DATA yet) is forgotten after this: a
new member's (the relay's table of them), and a rekey's keypair (:meth:`Session.install`,
which outlived it until the keypair's 180 s: found by review)."""
MAX_PATH_RESPONSES = 2
"""PATH_RESPONSEs waiting to go (a challenge repeated faster than we answer is answered
once for each of the latest)."""


@dataclass(frozen=True, slots=True)
class Received:
    """What one authenticated DATA changed beyond the channel."""

    moved_from: Address | None = None
    """The relay's side: the member's validated address changed, from this one."""
    unknown_frames: int = 0


class Session:
    def __init__(
        self,
        role: Role,
        keypair: Keypair,
        address: Address,
        now: float,
        *,
        timeout_s: float = SESSION_TIMEOUT_S,
        initial_rtt_s: float | None = None,
        budget: ReceiveBudget | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``address``: the relay's, for a client; for the relay, the member's address
        as its confirmed handshake validated it."""
        self.role = role
        self.channel = Channel(
            role, peer_epoch=keypair.peer_epoch, initial_rtt_s=initial_rtt_s, budget=budget
        )
        self.current = keypair
        """The keypair this side sends under."""
        self.previous: Keypair | None = None
        """The one before, kept for receiving."""
        self.next: Keypair | None = None
        """The relay's side: a rekey's keypair, until the client's first DATA under it
        (:data:`PENDING_LIFETIME_S` at most)."""
        self._next_source: Address | None = None
        """Where the INIT of :attr:`next` came from."""
        self.address = address
        self.paths = PathValidator(address, random_bytes) if role is Role.RELAY else None
        self.timeout_s = timeout_s
        self.last_sent = float("-inf")
        self.last_received = now
        self._now = now
        """The latest time this session was told."""
        self._responses: deque[bytes] = deque(maxlen=MAX_PATH_RESPONSES)
        self._confirm_at: float | None = None
        self._confirm_interval_s = 0.0
        if role is Role.CLIENT:
            self._confirm(now)

    # Keypairs.

    def install(self, keypair: Keypair, now: float, source: Address | None = None) -> None:
        """A new handshake's keypair (a rekey): the client sends under it at once; the
        relay waits for the client's first DATA under it, and takes ``source`` (its
        INIT's) for validated when that DATA comes from there: the client got the
        RESPONSE sent there (the page; a rekey from a new address went through path
        validation instead, which could leave the relay sending to the old one: found
        by review)."""
        if self.role is Role.CLIENT:
            self.previous, self.current = self.current, keypair
            self._confirm(now)
        else:
            self.next, self._next_source = keypair, source

    def keypair(self, local_index: int, now: float) -> Keypair | None:
        """This session's usable keypair with ``local_index``, if any."""
        self._forget_refused(now)
        for keypair in (self.current, self.previous, self.next):
            if keypair is not None and keypair.local_index == local_index:
                return keypair
        return None

    def local_indexes(self) -> set[int]:
        """The indexes of the keypairs it holds (the caller's lookup table keeps these)."""
        held = (self.current, self.previous, self.next)
        return {keypair.local_index for keypair in held if keypair is not None}

    def _forget_refused(self, now: float) -> None:
        if self.previous is not None and not self.previous.usable(now):
            self.previous = None
        if self.next is not None and now >= self.next.created + PENDING_LIFETIME_S:
            self.next = None

    def _confirm(self, now: float) -> None:
        self._confirm_at = now
        self._confirm_interval_s = self.channel.rtt.rto_s

    # Datagrams in.

    def receive_untrusted(
        self, keypair: Keypair, datagram: bytes, counter: int, source: Address, now: float
    ) -> Received:
        """Act on a DATA addressed to ``keypair`` (``counter`` from its header).

        Raises :class:`RemoteProtocolError` when it is not authentic, is replayed or too
        old (see :meth:`Keypair.open_untrusted`), or when its frames are malformed: it is
        then dropped whole and is no sign of life either.
        """
        opened = keypair.open_untrusted(datagram, counter, now)
        frames = decode_frames_untrusted(opened.plaintext)
        return self.act(keypair, frames, opened.new_highest, len(datagram), source, now)

    def act(
        self,
        keypair: Keypair,
        frames: Frames,
        new_highest: bool,
        size: int,
        source: Address,
        now: float,
    ) -> Received:
        """Act on the frames of an authenticated DATA of ``size`` bytes under ``keypair``
        (what :meth:`receive_untrusted` does once it has opened and decoded one; the
        relay calls it directly for the DATA that confirms a new member's handshake)."""
        self.last_received = self._now = now
        paths = self.paths
        moved_from = None
        if keypair is self.next:
            self.previous, self.current, self.next = self.current, keypair, None
            if paths is not None and source == self._next_source:
                moved_from = paths.confirmed(source)
                self.address = paths.address
        elif keypair is self.current and self.role is Role.CLIENT:
            self.previous = None
            self._confirm_at = None
        if keypair.peer_epoch != self.channel.peer_epoch:
            self.channel.set_peer_epoch(keypair.peer_epoch, now)
        if paths is not None:
            paths.seen(source, size, new_highest)
        channel_frames: list[ChannelFrame] = []
        for frame in frames.frames:
            if isinstance(frame, PathChallenge):
                self._responses.append(frame.data)
            elif isinstance(frame, PathResponse):
                if paths is not None and (old := paths.responded(source, frame.data)) is not None:
                    moved_from, self.address = old, paths.address
            else:
                channel_frames.append(frame)
        self.channel.receive(channel_frames, now, epoch=keypair.peer_epoch)
        return Received(moved_from, frames.unknown)

    # Datagrams out.

    def datagrams(self, now: float) -> list[tuple[bytes, Address]]:
        """Every DATA due now, and where each goes: the channel's frames packed into as
        few as fit, a path challenge, a PATH_RESPONSE, a keep-alive or a confirmation."""
        self._now = max(self._now, now)
        keypair = self.current
        if not keypair.can_send(now):
            return []  # the client rekeys in time; the channel keeps its messages meanwhile
        out: list[tuple[bytes, Address]] = []
        if self.paths is not None and (due := self.paths.challenge_due(now)) is not None:
            candidate, challenge = due
            out.append((keypair.seal(encode_frames([PathChallenge(challenge)])), candidate))
        sent = 0
        while True:
            frames: list[ChannelFrame | PathResponse] = []
            room = MAX_PLAINTEXT_BYTES
            while self._responses:
                response = PathResponse(self._responses.popleft())
                frames.append(response)
                room -= frame_size(response)
            frames.extend(self.channel.frames_to_send(now, room))
            if not frames:
                break
            out.append((keypair.seal(encode_frames(frames)), self.address))
            sent += 1
            if not self.channel.more_to_send:
                break
        confirming = self._confirm_at is not None and now >= self._confirm_at
        if not sent and (confirming or now >= self.last_sent + KEEPALIVE_AFTER_S):
            out.append((keypair.seal(b""), self.address))
            sent += 1
        if confirming:
            self._confirm_at = now + self._confirm_interval_s
            self._confirm_interval_s = min(2 * self._confirm_interval_s, CONFIRM_CAP_S)
        if sent:
            self.last_sent = now
        return out

    # Time.

    def expired(self, now: float) -> bool:
        """No authenticated DATA for longer than the timeout (the relay removes the
        member; the client starts a new handshake)."""
        return now >= self.last_received + self.timeout_s

    def stay_at(self, address: Address) -> None:
        """(Relay side.) Send to ``address`` again, after a validated move the relay
        refused (another member holds the new address): the client's next DATA from
        there starts a validation again."""
        self.address = address
        if self.paths is not None:
            self.paths.address = address

    def next_deadline(self) -> float:
        """When :meth:`datagrams` next has something to send, or :meth:`expired` turns
        (``inf``: neither). Neither term stays in the past once the session was told
        that time: an expired session is the caller's to act on, and while the current
        keypair cannot send, nothing is due until :meth:`install` brings the next one."""
        # After every turn of every peer: plain comparisons, no list.
        now = self._now
        earliest = self.last_received + self.timeout_s
        if now >= earliest:  # expired
            earliest = math.inf
        if self.current.can_send(now):
            for time in (
                self.last_sent + KEEPALIVE_AFTER_S,
                self.channel.next_deadline(),
                self._confirm_at,
                None if self.paths is None else self.paths.next_deadline(),
            ):
                if time is not None and time < earliest:
                    earliest = time
        return earliest
