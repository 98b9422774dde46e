"""Legacy registrations over the rate, waiting for it, and the messages of their sources.

The page says "on 4 the relay registers": a client sends its key once and is never
told of a refusal, so a registration dropped for the rate was a client that thought
itself registered and was not, for good (a page client does not send its key again;
ours does, beside every keep-alive). Registrations stay rate limited, since each tells
every member: one over the rate waits here instead, oldest first, and is made as its
host and the total earn room again; a newcomer waits behind those waiting. It
waits a client timeout at most; at most :data:`MAX_WAITING` wait (past that the
oldest is dropped). A source's new key replaces the one it has waiting, keeping
its place; its DISCONNECT, or its removal as a member, takes it out; a ban placed
meanwhile keeps it out.

Its key request was answered at once (the page's "on 7 the relay answers"), so its
client sends messages: those that complete while it waits are held with it, and go
to the pipeline once it is made, in the order they completed. A flood of
registrations must not buy a flood of held messages: a source holds at most
:data:`MAX_HELD_PER_SOURCE`, all together at most :data:`MAX_HELD_BYTES` of
payload, and one host at most half of that.
"""

from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from mcrelay.core.members import Identity
from mcrelay.protocol.addresses import Address

MAX_WAITING = 1024
"""Registrations waiting at once (their keys: about 1 KB each)."""
MAX_HELD_PER_SOURCE = 8
"""Messages one waiting source may hold (as many as it may have in reassembly)."""
MAX_HELD_BYTES = 4 * 1024 * 1024
"""Payload bytes held for all waiting sources together (one host: half of it)."""


@dataclass(slots=True)
class Waiting:
    """A registration waiting for the rate."""

    identity: Identity
    since: float
    held: list[bytes] = field(default_factory=list)
    """Payloads of its source's messages that completed meanwhile, oldest first."""


@dataclass(frozen=True, slots=True)
class Taken:
    """What :meth:`WaitingRegistrations.take` found: the registrations to make now, in
    the order they came, and those that waited too long."""

    ready: list[tuple[Address, Waiting]]
    expired: list[tuple[Address, Waiting]]


class WaitingRegistrations:
    def __init__(self) -> None:
        self._waiting: OrderedDict[Address, Waiting] = OrderedDict()
        self._held_bytes = 0
        self._held_per_host: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, source: Address) -> bool:
        return source in self._waiting

    def add(
        self, source: Address, identity: Identity, now: float
    ) -> tuple[Address, Waiting] | None:
        """``source``'s registration waits (a later key replaces its earlier one, which
        keeps its place and its held messages); the one dropped to make room for it, if
        one was."""
        waiting = self._waiting.get(source)
        if waiting is not None:
            waiting.identity = identity
            return None
        self._waiting[source] = Waiting(identity, now)
        if len(self._waiting) > MAX_WAITING:
            oldest = next(iter(self._waiting))
            return oldest, self._remove(oldest)
        return None

    def may_hold(self, source: Address) -> bool:
        """Could one more message of ``source`` (whose registration waits) be held? Asked
        before its first fragment is buffered."""
        waiting = self._waiting.get(source)
        return (
            waiting is not None
            and len(waiting.held) < MAX_HELD_PER_SOURCE
            and self._held_bytes < MAX_HELD_BYTES
            and self._held_per_host[source[0]] < MAX_HELD_BYTES // 2
        )

    def hold(self, source: Address, payload: bytes) -> bool:
        """Hold a complete message of ``source`` until its registration is made; False
        (nothing held) past the bounds."""
        host = source[0]
        if (
            not self.may_hold(source)
            or self._held_bytes + len(payload) > MAX_HELD_BYTES
            or self._held_per_host[host] + len(payload) > MAX_HELD_BYTES // 2
        ):
            return False
        self._waiting[source].held.append(payload)
        self._held_bytes += len(payload)
        self._held_per_host[host] += len(payload)
        return True

    def discard(self, source: Address) -> Waiting | None:
        """``source`` no longer waits (it said DISCONNECT, say); what waited, if any."""
        if source not in self._waiting:
            return None
        return self._remove(source)

    def take(
        self,
        now: float,
        max_wait_s: float,
        allow: Callable[[Address], bool],
        room: Callable[[], bool],
    ) -> Taken:
        """Those that waited ``max_wait_s``, and the registrations ``allow`` lets through
        now, oldest first, while there is ``room`` in all; both leave."""
        expired: list[tuple[Address, Waiting]] = []
        while self._waiting:  # oldest first: the expired are at the front
            source, waiting = next(iter(self._waiting.items()))
            if now - waiting.since < max_wait_s:
                break
            expired.append((source, self._remove(source)))
        ready: list[tuple[Address, Waiting]] = []
        for source in list(self._waiting):
            if not room():
                break
            if allow(source):
                ready.append((source, self._remove(source)))
        return Taken(ready, expired)

    def clear(self) -> list[tuple[Address, Waiting]]:
        """Every waiting source, forgotten (the relay stops)."""
        return [(source, self._remove(source)) for source in list(self._waiting)]

    def _remove(self, source: Address) -> Waiting:
        waiting = self._waiting.pop(source)
        size = sum(len(payload) for payload in waiting.held)
        self._held_bytes -= size
        self._held_per_host[source[0]] -= size
        if self._held_per_host[source[0]] <= 0:
            del self._held_per_host[source[0]]
        return waiting
