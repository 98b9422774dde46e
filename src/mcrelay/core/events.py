"""Relay events for operators: a bounded queue per subscriber, never slowing the relay.

Kinds: ``client_joined``, ``client_left`` (with ``reason``), ``message_relayed``
(sender, size, recipients; never the text) and ``dropped``. Drops are counted,
not published one by one: once per ``drop_interval_s`` (while there are any) one
``dropped`` event per reason and source says how many (``count``); past
``MAX_DROP_SOURCES`` pairs in an interval, drops are counted per reason only, in
events whose ``source`` is None. A subscriber whose queue is full misses events;
where the gap is, it reads an ``overflow`` event saying how many it missed.

When the relay stops in order (:meth:`EventHub.close`), every subscriber reads a last
``relay_stopping`` event, room in its queue or not, after what it had queued, and its
subscription ends: its stream ends whole, so a reader can tell an orderly stop from a
stream cut short (a daemon killed, a broken connection), which it could not (found by
review).

Each event is encoded once, by the ``encoder`` the API gives the hub, whatever
the number of subscribers.
"""

import dataclasses
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from mcrelay.protocol.addresses import Address, format_address

SUBSCRIBER_QUEUE_EVENTS = 1024
DROP_INTERVAL_S = 1.0
"""How often counted drops are published as ``dropped`` events."""
MAX_DROP_SOURCES = 256
"""(reason, source) pairs counted apart per interval; a flood from spoofed sources
beyond them is counted per reason only, so the count never grows without end."""


@dataclass(frozen=True, slots=True)
class OperatorEvent:
    id: int
    kind: str
    time: float
    """Unix time."""
    data: dict[str, Any]
    frame: bytes = b""
    """The event as the API sends it, encoded once for every subscriber (empty when the
    hub has no encoder, as for the ``overflow`` events a subscription makes itself)."""


EventEncoder = Callable[[OperatorEvent], bytes]


@dataclass(slots=True)
class _Gap:
    after: int
    """The id of the queued event the missed ones followed."""
    first: int
    """The id of the first missed event."""
    missed: int = 1


@dataclass(slots=True)
class Subscription:
    """One reader's bounded queue. Iterate it, or call :meth:`receive`; both are safe to
    cancel (a heartbeat timeout around them loses nothing)."""

    hub: "EventHub"
    send: trio.MemorySendChannel[OperatorEvent]
    receive_channel: trio.MemoryReceiveChannel[OperatorEvent]
    _last_queued: int = 0
    _gaps: deque[_Gap] = field(default_factory=deque)
    """Runs of missed events, oldest first, each after the queued event it follows."""
    _overflow_due: bool = False
    _last: OperatorEvent | None = None
    """The event read after the queue's end (``relay_stopping``), once."""

    @property
    def missed(self) -> int:
        """Events missed and not yet reported by an ``overflow`` event."""
        return sum(gap.missed for gap in self._gaps)

    def offer(self, event: OperatorEvent) -> None:
        """Queue an event, or count it missed; never waits."""
        try:
            self.send.send_nowait(event)
        except trio.WouldBlock:
            gaps = self._gaps
            if gaps and gaps[-1].after == self._last_queued:
                gaps[-1].missed += 1
            else:
                gaps.append(_Gap(self._last_queued, event.id))
        else:
            self._last_queued = event.id

    async def receive(self) -> OperatorEvent:
        """The next event; an ``overflow`` event stands where each run of events was missed."""
        if self._overflow_due:
            self._overflow_due = False
            gap = self._gaps.popleft()
            # It stands where the first missed event stood, so ids still increase.
            return OperatorEvent(gap.first, "overflow", time.time(), {"missed": gap.missed})
        try:
            event = await self.receive_channel.receive()
        except trio.EndOfChannel:
            if self._last is None:
                raise
            event, self._last = self._last, None
            return event
        if self._gaps and event.id == self._gaps[0].after:
            self._overflow_due = True
        return event

    def end(self, last: OperatorEvent) -> None:
        """Queue no more: ``last`` is read after what is queued, then the end."""
        self._last = last
        self.send.close()

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> OperatorEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class EventHub:
    def __init__(self, queue_events: int = SUBSCRIBER_QUEUE_EVENTS) -> None:
        self._queue_events = queue_events
        self._subscriptions: list[Subscription] = []
        self._next_id = 1
        self.encoder: EventEncoder | None = None
        self.drop_interval_s = DROP_INTERVAL_S
        self._drops: dict[tuple[str, Address], int] = {}
        self._drops_by_reason: Counter[str] = Counter()
        self._drops_counted = trio.Event()
        self.closed = False
        self._ended = trio.Event()
        """Set once closed and every subscription has ended."""

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def queued(self) -> list[int]:
        """Events waiting in each subscriber's queue, oldest subscriber first."""
        return [s.receive_channel.statistics().current_buffer_used for s in self._subscriptions]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Publish the counted drops once per interval, while there are any."""
        task_status.started()
        while True:
            await self._drops_counted.wait()
            await trio.sleep(self.drop_interval_s)
            self.flush_drops()

    def make(self, kind: str, data: dict[str, Any]) -> OperatorEvent:
        event = OperatorEvent(self._next_id, kind, time.time(), data)
        self._next_id += 1
        if self.encoder is not None:
            event = dataclasses.replace(event, frame=self.encoder(event))
        return event

    def publish(self, kind: str, **data: Any) -> None:
        if not self._subscriptions or self.closed:
            return
        event = self.make(kind, data)
        for subscription in self._subscriptions:
            subscription.offer(event)

    def dropped(self, reason: str, source: Address, count: int = 1) -> None:
        """Count drops for the next ``dropped`` events (only while someone subscribes)."""
        if not self._subscriptions or self.closed:
            return
        key = (reason, source)
        drops = self._drops
        if key in drops:
            drops[key] += count
        elif len(drops) < MAX_DROP_SOURCES:
            drops[key] = count
        else:
            self._drops_by_reason[reason] += count
        self._drops_counted.set()

    def flush_drops(self) -> None:
        """Publish what was counted since the last time, and start counting afresh."""
        drops, by_reason = self._drops, self._drops_by_reason
        self._drops, self._drops_by_reason = {}, Counter()
        self._drops_counted = trio.Event()
        interval_s = self.drop_interval_s
        for (reason, source), count in drops.items():
            self.publish(
                "dropped",
                reason=reason,
                source=format_address(source),
                count=count,
                interval_s=interval_s,
            )
        for reason, count in by_reason.items():
            self.publish("dropped", reason=reason, source=None, count=count, interval_s=interval_s)

    def close(self) -> None:
        """The relay stops in order: the drops counted so far are published, then every
        subscription reads ``relay_stopping`` and ends (as does one made after)."""
        if self.closed:
            return
        self.flush_drops()
        self.closed = True
        last = self.make("relay_stopping", {})
        for subscription in self._subscriptions:
            subscription.end(last)
        if not self._subscriptions:
            self._ended.set()

    async def wait_ended(self) -> None:
        """Until every subscription has ended, once closed."""
        await self._ended.wait()

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        send, receive = trio.open_memory_channel[OperatorEvent](self._queue_events)
        subscription = Subscription(self, send, receive)
        self._subscriptions.append(subscription)
        if self.closed:
            subscription.end(self.make("relay_stopping", {}))
        try:
            yield subscription
        finally:
            self._subscriptions.remove(subscription)
            send.close()
            receive.close()
            if self.closed and not self._subscriptions:
                self._ended.set()
