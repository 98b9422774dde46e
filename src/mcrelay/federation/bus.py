"""The bus: a NATS connection for Trio code, through a thread of nats-py's own.

No Trio-native NATS client exists; nats-py runs on an asyncio loop in its own thread
(:mod:`mcrelay.federation.natsthread`), and the two sides meet at two bounded deques
with one wake-up per batch each way. From Trio, :meth:`Bus.publish` never blocks: an
envelope that cannot go out now (the bus is down, the queue is full, it is too large)
is refused and counted, never buffered; :meth:`Bus.receive` returns what came in since
the last call, with a :class:`BusEvent` at each change of the connection. The relay
runs on with the bus down; :meth:`Bus.run` keeps (re)connecting until cancelled.
"""

import logging
from collections import Counter
from collections.abc import Sequence

import trio

from mcrelay.federation.bridge import (
    PUBLISH_DROP_REASONS,
    Bridge,
    BusCounters,
    BusEvent,
    BusOptions,
    Incoming,
    Publish,
    Request,
)
from mcrelay.federation.natsthread import CLOSE_TIMEOUT_S, NatsThread

__all__ = ["Bus", "BusCounters", "BusEvent", "BusOptions", "Incoming"]

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = CLOSE_TIMEOUT_S + 1.5
"""How long :meth:`Bus.run`, cancelled, waits for the NATS thread to end."""
REQUEST_GRACE_S = 0.5
"""How much longer than its own timeout a request waits for the NATS thread's answer."""


class Bus:
    """One connection to a NATS cluster, subscribed to ``subjects`` (on every connect).

    One task calls :meth:`receive`; any task may publish, request or reply.
    """

    def __init__(self, options: BusOptions, subjects: Sequence[str]) -> None:
        self.options = options
        self._subjects = tuple(subjects)
        self._bridge = Bridge(options.queue_limit, options.queue_limit_bytes)
        self._dropped: Counter[str] = Counter(dict.fromkeys(PUBLISH_DROP_REASONS, 0))
        self._in_ready = trio.Event()
        self._nats: NatsThread | None = None
        self._ran = False

    @property
    def state(self) -> str:
        """``connecting`` (never connected yet), ``connected``, ``disconnected``, ``closed``."""
        return self._bridge.state

    @property
    def counters(self) -> BusCounters:
        bridge = self._bridge
        return BusCounters(
            published=bridge.published,
            received=bridge.received,
            publish_dropped=self._dropped + bridge.dropped,
            receive_overflow=bridge.receive_overflow,
            receive_too_large=bridge.receive_too_large,
            status_messages=bridge.status_messages,
            malformed=bridge.malformed,
            reconnects=bridge.reconnects,
            disconnects=bridge.disconnects,
            errors=bridge.errors,
        )

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Starts the NATS thread and reports started at once, connected or not; on
        cancellation, closes the connection and ends the thread within about a second."""
        if self._ran:
            raise RuntimeError("a Bus runs once")
        self._ran = True
        token = trio.lowlevel.current_trio_token()
        ended = trio.Event()
        nats = NatsThread(self.options, self._subjects, self._bridge, token, self._woken, ended.set)
        nats.start()
        self._nats = nats
        task_status.started()
        try:
            await ended.wait()
            log.error("the NATS thread ended by itself: the bus is closed")
        finally:
            self._nats = None
            nats.stop()
            with trio.CancelScope(shield=True):
                with trio.move_on_after(STOP_TIMEOUT_S):
                    await ended.wait()
                if ended.is_set():
                    nats.thread.join()
                else:
                    log.error("the NATS thread did not end within %s s", STOP_TIMEOUT_S)
            self._bridge.state = "closed"

    def publish(self, subject: str, data: bytes, reply: str = "") -> bool:
        """Queues one message for the server; False (and counted) if it cannot go now."""
        reason = self._refusal(len(data))
        if reason is not None:
            self._dropped[reason] += 1
            return False
        self._queue(Publish(subject, data, reply))
        return True

    def reply(self, subject: str, data: bytes) -> bool:
        """Answers an :class:`Incoming`'s ``reply`` subject."""
        return self.publish(subject, data)

    async def request(self, subject: str, data: bytes, timeout_s: float) -> bytes | None:
        """The first reply, or None: on timeout, when no one listens, when the bus is down."""
        await trio.lowlevel.checkpoint()
        if self._refusal(len(data)) is not None:
            return None
        answered = trio.Event()
        replies: list[bytes | None] = []

        def answer(reply: bytes | None) -> None:
            replies.append(reply)
            answered.set()

        self._queue(Request(subject, data, timeout_s, answer))
        with trio.move_on_after(timeout_s + REQUEST_GRACE_S):
            await answered.wait()
        return replies[0] if replies else None

    async def receive(self) -> list[Incoming | BusEvent]:
        """Waits for what came in since the last call (at most ``queue_limit`` messages,
        and the events among them, in order)."""
        await trio.lowlevel.checkpoint()
        incoming = self._bridge.incoming
        while not incoming:
            self._in_ready = trio.Event()
            await self._in_ready.wait()
        taken = [incoming.popleft() for _ in range(len(incoming))]
        self._bridge.taken_bytes += sum(len(item.data) for item in taken if type(item) is Incoming)
        return taken

    def pending(self) -> bool:
        """Whether messages have come in that :meth:`receive` has not taken yet."""
        return bool(self._bridge.incoming)

    def _refusal(self, size: int) -> str | None:
        bridge = self._bridge
        if self._nats is None or bridge.state != "connected":
            return "disconnected"
        if size > bridge.max_payload:
            return "too_large"
        if len(bridge.outgoing) >= bridge.queue_limit:
            return "queue_full"
        return None

    def _queue(self, item: Publish | Request) -> None:
        bridge = self._bridge
        bridge.outgoing.append(item)
        if not bridge.out_wake_pending and self._nats is not None:
            bridge.out_wake_pending = True
            self._nats.wake()

    def _woken(self) -> None:
        self._bridge.in_wake_pending = False
        self._in_ready.set()
