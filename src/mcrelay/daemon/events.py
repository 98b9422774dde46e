"""Relay events for operators: a bounded queue per subscriber, never slowing the relay.

Kinds: ``client_joined``, ``client_left`` (with ``reason``), ``message_relayed``
(sender, size, recipients; never the text) and ``dropped`` (reason, source).
A subscriber whose queue is full misses events; the next event it reads is an
``overflow`` event saying how many it missed.
"""

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    send: trio.MemorySendChannel[RelayEvent]
    receive: trio.MemoryReceiveChannel[RelayEvent]
    missed: int = 0
    hub: "EventHub | None" = field(default=None, repr=False)

    async def __aiter__(self) -> AsyncIterator[RelayEvent]:
        async for event in self.receive:
            yield event
            if self.missed and self.hub is not None:
                missed, self.missed = self.missed, 0
                yield self.hub.make("overflow", {"missed": missed})


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
            try:
                subscription.send.send_nowait(event)
            except trio.WouldBlock:
                subscription.missed += 1

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        send, receive = trio.open_memory_channel[RelayEvent](self._queue_events)
        subscription = Subscription(send, receive, hub=self)
        self._subscriptions.append(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.remove(subscription)
            send.close()
            receive.close()
