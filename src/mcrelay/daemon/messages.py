"""A message's life after admission, whatever its profile: the relay's pipeline.

A message is admitted when it completes (or, for an operator's post, when it is
asked for): it counts against ``max_pending_relays`` and takes its place in its
sender's line at once, so each sender's messages go out in the order they were
admitted. Its life, run by its task in the relay's ``messages`` nursery: the
profile opens it (decrypting, and sealing on the way when it can), each recipient's
profile seals the copies still missing, it waits for its sender's earlier message,
seals afresh once for recipients that re-keyed meanwhile, sends, and settles in
``finally`` whatever happened. Whether there is room is asked before the work (a
refusal is ``overloaded``), so the tasks are bounded.
"""

import logging
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import trio

from mcrelay.core.control import Overloaded
from mcrelay.core.events import EventHub
from mcrelay.core.members import Departure, Identity, Left, Member, Roster
from mcrelay.core.opened import Opened, Sealed
from mcrelay.core.profile import RELAY_ORIGIN, Opener, Origin, Profile
from mcrelay.core.stats import RelayCounters
from mcrelay.daemon.workers import WorkerLost
from mcrelay.protocol.addresses import Address, format_address
from mcrelay.protocol.errors import DropReason, RemoteProtocolError

log = logging.getLogger(__name__)

MAX_RELAYS_PER_CLIENT = 128
"""Messages of one member between admission and fan-out; more are ``overloaded``. A
legacy client has no flow control and may send a burst: 32 lost 68 of 100 sent back
to back; a member may hold its host's share of the default 256."""
HOST_SHARE_OF_PENDING = 0.5
"""The share of ``max_pending_relays`` the members of one host may hold together, so
one host's members cannot take every place (other hosts keep the rest)."""
MAX_POSTS_IN_FLIGHT = 1
"""Operator messages being sealed at once; another is refused (:class:`Overloaded`)."""
REMOTE_SHARE_OF_PENDING = 0.5
"""The share of ``max_pending_relays`` that messages from other relays of a federation
may hold in flight together."""
REMOTE_BACKLOG = 1024
"""Messages from other relays waiting in order for room (they come from the bus in
bursts); when that many wait, the link waits too, and what comes meanwhile waits in
the bus's queue, bounded and counted there."""


class Drop(Protocol):
    """Count a drop (the relay's :meth:`~mcrelay.core.profile.Services.drop`)."""

    def __call__(
        self, reason: DropReason, source: Address, detail: object = None, count: int = 1
    ) -> None: ...


@dataclass(slots=True, eq=False)
class _Admitted:
    _run: Callable[[], Awaitable[None]]
    _settle: Callable[[], None]
    _settled: bool = False

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            self.abandon()

    def abandon(self) -> None:
        if not self._settled:
            self._settled = True
            self._settle()


@dataclass(slots=True, eq=False)
class _Turn:
    """A message's place in its sender's line: it goes out after ``previous`` is set."""

    previous: trio.Event | None
    done: trio.Event = field(default_factory=trio.Event)

    async def wait_previous(self) -> None:
        if self.previous is not None and not self.previous.is_set():
            await self.previous.wait()


@dataclass(frozen=True, slots=True)
class _Remote:
    """A message from another relay, in its line, not yet started."""

    line: str
    turn: _Turn
    origin: Origin
    plaintext: bytes


class Messages:
    def __init__(
        self,
        *,
        roster: Roster,
        counters: RelayCounters,
        events: EventHub,
        profiles: Mapping[str, Profile],
        drop: Drop,
        left: Callable[[Left], None],
        remove: Callable[[str, Departure], object],
        max_message_bytes: Callable[[Member], int],
        max_pending: Callable[[], int],
        forward: Callable[[Origin, bytes], None],
        start: Callable[[Callable[[], Awaitable[None]]], None],
    ) -> None:
        """``forward`` is told each message of this relay's members (and each operator's
        post that is to go further) once it was delivered here: the federation's hook."""
        self._roster = roster
        self._counters = counters
        self._events = events
        self._profiles = profiles
        self._drop = drop
        self._left = left
        self._remove = remove
        self._max_message_bytes = max_message_bytes
        self._max_pending = max_pending
        self._forward = forward
        self._start = start
        self.pending = 0
        """Admitted messages not yet settled."""
        self._pending_per_host: Counter[str] = Counter()
        self._posts_in_flight = 0
        self._remote_pending = 0
        """Remote messages started and not yet settled."""
        self._remote_queue: deque[_Remote] = deque()
        """Remote messages in their lines, waiting for room."""
        self._remote_wake = trio.Event()
        self._backlog_room = trio.Event()
        self._remote_closed = False
        self._latest: dict[str, trio.Event] = {}
        """Per sender, the event its latest admitted message sets once it has settled."""

    def has_room(self, sender: Member) -> bool:
        """Could a message of ``sender`` be admitted now (nothing counted)?"""
        max_pending = self._max_pending()
        return not (
            self.pending >= max_pending
            or sender.messages_in_flight >= MAX_RELAYS_PER_CLIENT
            or self._pending_per_host[sender.address[0]]
            >= max(1, int(max_pending * HOST_SHARE_OF_PENDING))
        )

    def room_for(self, sender: Member) -> bool:
        if not self.has_room(sender):
            self._drop(DropReason.OVERLOADED, sender.address)
            return False
        return True

    def admit(
        self, sender: Member, opener: Opener, *, acknowledged: bool = False
    ) -> "_Admitted | None":
        if not acknowledged and not self.room_for(sender):
            return None
        self._roster.message_started(sender)
        host = sender.address[0]
        self._pending_per_host[host] += 1
        turn = self._enter_line(sender.id)
        # Who gets it is decided now, and its opening starts now (a small fan-out is
        # sealed in the job that opens it: one hand-off per message, not one per step).
        recipients = self._roster.others(sender)
        identities = [member.identity for member in recipients]
        try:
            opening = opener(recipients)
        except Exception:
            log.exception("opening a message from %s failed", format_address(sender.address))
            self._drop(DropReason.INTERNAL_ERROR, sender.address)
            self._settle(sender, host, turn)
            return None

        run = partial(self._relay, sender, turn, recipients, identities, opening)
        return _Admitted(run, partial(self._settle, sender, host, turn))

    def _settle(self, sender: Member, host: str, turn: _Turn) -> None:
        self._pending_per_host[host] -= 1
        if not self._pending_per_host[host]:
            del self._pending_per_host[host]
        self._leave_line(sender.id, turn)
        left = self._roster.message_settled(sender)
        if left is not None:
            self._left(left)

    def admit_post(self) -> _Turn:
        """Admit an operator's message, or raise :class:`Overloaded` (counted)."""
        if self.pending >= self._max_pending() or self._posts_in_flight >= MAX_POSTS_IN_FLIGHT:
            self._drop(DropReason.OVERLOADED, RELAY_ORIGIN.address)
            raise Overloaded("the relay is busy sealing other messages; try again shortly")
        self._posts_in_flight += 1
        return self._enter_line(RELAY_ORIGIN.id)

    async def post(
        self, turn: _Turn, plaintext: bytes, recipients: list[Member], *, forward: bool
    ) -> int:
        """An admitted operator's message: sealed a few recipients per worker job, so
        members' messages are sealed in between; returns the copies sent. ``forward``:
        it goes on to the federation too."""
        try:
            copies = await self._send(RELAY_ORIGIN, turn, plaintext, recipients)
            if forward:
                self._forward(RELAY_ORIGIN, plaintext)
            return copies
        finally:
            self._posts_in_flight -= 1
            self._leave_line(RELAY_ORIGIN.id, turn)

    async def queue_remote(self, line: str, origin: Origin, plaintext: bytes) -> bool:
        """A message from another relay takes its place in ``line`` (that relay's: its
        messages go out in the order they came) and waits for room in turn (its
        recipients are the members here when it starts); once fewer than REMOTE_BACKLOG
        wait (the caller, the link, waits meanwhile: back-pressure to the bus); False
        when the relay stopped (and queues no more)."""
        while len(self._remote_queue) >= REMOTE_BACKLOG and not self._remote_closed:
            self._backlog_room = trio.Event()
            await self._backlog_room.wait()
        if self._remote_closed:
            return False
        turn = _Turn(self._latest.get(line))
        self._latest[line] = turn.done
        self._remote_queue.append(_Remote(line, turn, origin, plaintext))
        self._remote_wake.set()
        return True

    async def feed_remote(self) -> None:
        """Start the queued remote messages, in the order they came, as there is room:
        at most half of ``max_pending_relays`` in flight (they count in ``pending``, and
        this relay's members are refused only past the whole of it). It runs in the
        ``messages`` nursery, whose tasks it starts, until the relay stops receiving (in
        the nursery around it, it could start one into that nursery as it closed)."""
        while not self._remote_closed:
            while self._remote_queue and self._remote_pending < self._remote_limit():
                remote = self._remote_queue.popleft()
                self._backlog_room.set()
                self._remote_pending += 1
                self.pending += 1
                self._start(partial(self._remote, remote))
            self._remote_wake = trio.Event()
            await self._remote_wake.wait()

    def drop_queued_remote(self) -> list[Origin]:
        """The relay stops: the remote messages not started will not be (their origins,
        to count), and no more are queued."""
        dropped = [remote.origin for remote in self._remote_queue]
        for remote in self._remote_queue:
            self._end_turn(remote.line, remote.turn)
        self._remote_queue.clear()
        self._remote_closed = True
        self._backlog_room.set()
        self._remote_wake.set()
        return dropped

    def after_line(self, line: str, action: Callable[[], None]) -> None:
        """Do ``action`` once the messages of ``line`` so far are out, queued ones too (a
        remote member's leave is told after its last messages, as a local member's is);
        now if none is in flight; never counted as a message."""
        previous = self._latest.get(line)
        if previous is None or previous.is_set():
            action()
            return
        turn = _Turn(previous)
        self._latest[line] = turn.done

        async def in_turn() -> None:
            try:
                await turn.wait_previous()
                action()
            except Exception:  # a bug costs this announcement, not the relay
                log.exception("telling a change of line %s failed", line)
                self._drop(DropReason.INTERNAL_ERROR, RELAY_ORIGIN.address)
            finally:
                self._end_turn(line, turn)

        self._start(in_turn)

    async def _remote(self, remote: "_Remote") -> None:
        """A started message from another relay, to this relay's members (never on)."""
        try:
            recipients = list(self._roster)
            await self._send(remote.origin, remote.turn, remote.plaintext, recipients)
        finally:
            self._remote_pending -= 1
            self.pending -= 1
            self._end_turn(remote.line, remote.turn)
            self._remote_wake.set()

    def _remote_limit(self) -> int:
        return max(1, int(self._max_pending() * REMOTE_SHARE_OF_PENDING))

    def _end_turn(self, line: str, turn: _Turn) -> None:
        turn.done.set()
        if self._latest.get(line) is turn.done:
            del self._latest[line]

    async def _send(
        self, origin: Origin, turn: _Turn, plaintext: bytes, recipients: list[Member]
    ) -> int:
        """A post's or another relay's message: sealed, in its turn, sealed again once for
        whoever re-keyed meanwhile (as a member's message is), sent; the copies sent."""
        identities = [member.identity for member in recipients]
        try:
            sealed = await self._seal(origin, plaintext, recipients)
            await turn.wait_previous()
            await self._reseal_rekeyed(origin, plaintext, recipients, identities, sealed)
            return self._deliver(origin, len(plaintext), recipients, sealed)
        except WorkerLost:  # logged once by the pool, for all its jobs
            self._drop(DropReason.INTERNAL_ERROR, origin.address)
            return 0
        except Exception:
            log.exception("sending a message from %s failed", origin.id)
            self._drop(DropReason.INTERNAL_ERROR, origin.address)
            return 0

    def _enter_line(self, sender_id: str) -> _Turn:
        self.pending += 1
        turn = _Turn(self._latest.get(sender_id))
        self._latest[sender_id] = turn.done
        return turn

    def _leave_line(self, sender_id: str, turn: _Turn) -> None:
        self.pending -= 1
        self._end_turn(sender_id, turn)

    async def _relay(
        self,
        sender: Member,
        turn: _Turn,
        recipients: list[Member],
        identities: list[Identity],
        opening: Awaitable[Opened],
    ) -> None:
        """Opened (and sealed), wait for the sender's earlier messages, re-seal once for
        whoever re-keyed meanwhile, send. A bug costs this message, never the relay."""
        origin = Origin(sender.id, sender.address, sender.identity)
        try:
            failure: RemoteProtocolError | None = None
            opened = Opened(b"")
            try:
                opened = await opening
                if opened.sealed is None and self._relayed(sender, opened):
                    opened = Opened(
                        opened.plaintext, await self._seal(origin, opened.plaintext, recipients)
                    )
            except RemoteProtocolError as exc:
                failure = exc
            await turn.wait_previous()
            if failure is not None:
                self._drop(failure.reason, sender.address, failure)
            elif len(opened.plaintext) > self._max_message_bytes(sender):
                self._drop(DropReason.TOO_LARGE, sender.address)
            elif opened.control is not None:
                self._control(sender, opened.control)
            else:
                assert opened.sealed is not None
                await self._reseal_rekeyed(
                    origin, opened.plaintext, recipients, identities, opened.sealed
                )
                self._deliver(origin, len(opened.plaintext), recipients, opened.sealed)
                self._forward(origin, opened.plaintext)
        except WorkerLost:  # logged once by the pool, for all its jobs
            self._drop(DropReason.INTERNAL_ERROR, sender.address)
        except Exception:
            log.exception("relaying a message from %s failed", format_address(sender.address))
            self._drop(DropReason.INTERNAL_ERROR, sender.address)

    def _relayed(self, sender: Member, opened: Opened) -> bool:
        return opened.control is None and len(opened.plaintext) <= self._max_message_bytes(sender)

    def _control(self, sender: Member, control: str) -> None:
        """The sender's in-band request, if it is still the member it was."""
        if self._roster.get(sender.id) is not sender:
            return
        if control == "refresh":
            self._roster.touch(sender, trio.current_time())
        else:
            self._remove(sender.id, Departure.DISCONNECT)

    async def _reseal_rekeyed(
        self,
        origin: Origin,
        plaintext: bytes,
        recipients: list[Member],
        identities: list[Identity],
        sealed: list[Sealed],
    ) -> None:
        """Recipients re-keyed while it was being sealed: seal their copies afresh, once
        (re-keys can be spoofed; they must not hold the line)."""
        rekeyed = [i for i, member in enumerate(recipients) if member.identity is not identities[i]]
        if rekeyed:
            again = await self._seal(origin, plaintext, [recipients[i] for i in rekeyed])
            for index, copy in zip(rekeyed, again, strict=True):
                sealed[index] = copy

    async def _seal(
        self, origin: Origin, plaintext: bytes, recipients: Sequence[Member]
    ) -> list[Sealed]:
        """Each recipient's copy, sealed by its own profile."""
        profiles = {member.identity.profile for member in recipients}
        if len(profiles) == 1:  # most messages: every recipient is of one profile
            return await self._profiles[profiles.pop()].seal(origin, plaintext, recipients)
        by_profile: defaultdict[str, list[int]] = defaultdict(list)
        for index, member in enumerate(recipients):
            by_profile[member.identity.profile].append(index)
        sealed: list[Sealed] = [DropReason.INTERNAL_ERROR] * len(recipients)
        for name, indexes in by_profile.items():
            copies = await self._profiles[name].seal(
                origin, plaintext, [recipients[i] for i in indexes]
            )
            for index, copy in zip(indexes, copies, strict=True):
                sealed[index] = copy
        return sealed

    def _deliver(
        self, origin: Origin, size: int, recipients: list[Member], sealed: list[Sealed]
    ) -> int:
        """Send each recipient's copy (or count why it has none); return the copies."""
        copies = 0
        for member, copy in zip(recipients, sealed, strict=True):
            if isinstance(copy, DropReason):
                self._drop(copy, member.address)
            elif self._profiles[member.identity.profile].deliver(member, copy):
                member.messages_out += 1
                member.bytes_out += len(copy)
                self._counters.copies_by_profile[member.identity.profile] += 1
                copies += 1
        self._counters.messages_relayed += 1
        self._counters.copies_sent += copies
        if self._events.subscribers:  # its fields are not worth making for no one
            self._events.publish(
                "message_relayed",
                sender=format_address(origin.address),
                client=origin.id,
                size=size,
                recipients=copies,
            )
        return copies
