"""Relay events for operators: a bounded queue per subscriber, never slowing the relay.

Kinds: ``client_joined``, ``client_left`` (with ``reason``), ``message_relayed``
(sender, size, recipients; never the text) and ``dropped`` (reason, source).
A subscriber whose queue is full misses events; where the gap is, it reads an
``overflow`` event saying how many it missed.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import trio

SUBSCRIBER_QUEUE_EVENTS = 1024


@dataclass(frozen=True, slots=True)
class RelayEvent:
    id: int
    kind: str
    time: float
    """Unix time."""
    data: dict[str, Any]


@dataclass(slots=True)
class Subscription:
    """One reader's bounded queue. Iterate it, or call :meth:`receive`; both are safe to
    cancel (a heartbeat timeout around them loses nothing)."""

    hub: "EventHub"
    send: trio.MemorySendChannel[RelayEvent]
    receive_channel: trio.MemoryReceiveChannel[RelayEvent]
    missed: int = 0
    _last_queued: int = 0
    _gap_after: int = 0
    _first_missed: int = 0
    _overflow_due: bool = False

    def offer(self, event: RelayEvent) -> None:
        """Queue an event, or count it missed; never waits."""
        try:
            self.send.send_nowait(event)
        except trio.WouldBlock:
            if not self.missed:
                self._gap_after, self._first_missed = self._last_queued, event.id
            self.missed += 1
        else:
            self._last_queued = event.id

    async def receive(self) -> RelayEvent:
        """The next event; an ``overflow`` event stands where events were missed."""
        if self._overflow_due:
            self._overflow_due = False
            missed, self.missed = self.missed, 0
            # It stands where the first missed event stood, so ids still increase.
            return RelayEvent(self._first_missed, "overflow", time.time(), {"missed": missed})
        event = await self.receive_channel.receive()
        if self.missed and event.id == self._gap_after:
            self._overflow_due = True
        return event

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> RelayEvent:
        return await self.receive()


class EventHub:
    def __init__(self, queue_events: int = SUBSCRIBER_QUEUE_EVENTS) -> None:
        self._queue_events = queue_events
        self._subscriptions: list[Subscription] = []
        self._next_id = 1

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def make(self, kind: str, data: dict[str, Any]) -> RelayEvent:
        event = RelayEvent(self._next_id, kind, time.time(), data)
        self._next_id += 1
        return event

    def publish(self, kind: str, **data: Any) -> None:
        if not self._subscriptions:
            return
        event = self.make(kind, data)
        for subscription in self._subscriptions:
            subscription.offer(event)

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        send, receive = trio.open_memory_channel[RelayEvent](self._queue_events)
        subscription = Subscription(self, send, receive)
        self._subscriptions.append(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.remove(subscription)
            send.close()
            receive.close()
