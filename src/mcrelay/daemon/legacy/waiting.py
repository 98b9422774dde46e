"""Legacy registrations over the rate, waiting for it.

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
"""

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from mcrelay.core.members import Identity
from mcrelay.protocol.addresses import Address

MAX_WAITING = 1024
"""Registrations waiting at once (their keys: about 1 KB each)."""


@dataclass(slots=True)
class _Waiting:
    identity: Identity
    since: float


@dataclass(frozen=True, slots=True)
class Taken:
    """What :meth:`WaitingRegistrations.take` found: the registrations to make now, in
    the order they came, and the sources that waited too long."""

    ready: list[tuple[Address, Identity]]
    expired: list[Address]


class WaitingRegistrations:
    def __init__(self) -> None:
        self._waiting: OrderedDict[Address, _Waiting] = OrderedDict()

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, source: Address) -> bool:
        return source in self._waiting

    def add(self, source: Address, identity: Identity, now: float) -> Address | None:
        """``source``'s registration waits (a later key replaces its earlier one, which
        keeps its place); the source dropped to make room for it, if one was."""
        waiting = self._waiting.get(source)
        if waiting is not None:
            waiting.identity = identity
            return None
        self._waiting[source] = _Waiting(identity, now)
        if len(self._waiting) > MAX_WAITING:
            return self._waiting.popitem(last=False)[0]
        return None

    def discard(self, source: Address) -> bool:
        """``source`` no longer waits (it said DISCONNECT); False if it did not."""
        return self._waiting.pop(source, None) is not None

    def take(
        self,
        now: float,
        max_wait_s: float,
        allow: Callable[[Address], bool],
        room: Callable[[], bool],
    ) -> Taken:
        """Those that waited ``max_wait_s``, and the registrations ``allow`` lets through
        now, oldest first, while there is ``room`` in all; both leave."""
        expired: list[Address] = []
        while self._waiting:  # oldest first: the expired are at the front
            source, waiting = next(iter(self._waiting.items()))
            if now - waiting.since < max_wait_s:
                break
            expired.append(source)
            del self._waiting[source]
        ready: list[tuple[Address, Identity]] = []
        for source, waiting in list(self._waiting.items()):
            if not room():
                break
            if allow(source):
                ready.append((source, waiting.identity))
                del self._waiting[source]
        return Taken(ready, expired)

    def clear(self) -> list[Address]:
        """Every waiting source, forgotten (the relay stops)."""
        sources = list(self._waiting)
        self._waiting.clear()
        return sources
