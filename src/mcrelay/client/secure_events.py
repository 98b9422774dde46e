"""What a secure participant hands its application, and the queue they wait in.

Every message the channel delivers it has acknowledged, so the relay counts it as
delivered: it must reach the application, and waits here until the application (a
chat's output) takes it. The queue is bounded in bytes, not in events: past
:data:`EVENT_QUEUE_BYTES` the participant holds the relay's messages back, and the
relay's back-pressure then holds up every sender of the group (the page's problem 8,
docs/protocol.md). So the bound is large: a reader stalled for tens of seconds at chat
rates never reaches it (it was 1,024 events, and a chat whose stdout stalled 25 s held a
sender of 2,500 lines to its pace, 8 of them lost: found by review); only a reader
stuck for long, or a flood, does.
"""

import math
from dataclasses import dataclass

import trio

from mcrelay.protocol.secure.client_events import (
    ChatReceived,
    MemberMoved,
    NoticeReceived,
    PresenceChanged,
)


@dataclass(frozen=True, slots=True)
class ChatGivenUp:
    """A chat of ours that the relay never acknowledged: given up at its deadline (10 s
    after it first went out), with the ABANDON the page asks for."""

    text: bytes


SecureEvent = ChatReceived | PresenceChanged | MemberMoved | NoticeReceived | ChatGivenUp
"""What the application reads from :attr:`SecureParticipant.events`."""

EVENT_QUEUE_BYTES = 32 * 1024 * 1024
"""The charge of the events waiting, past which the relay's messages are held back:
512 of the largest messages (64 KiB), about 54,000 lines of 100 bytes (9 minutes of a
busy room at 100 lines a second), 65,536 events of no text; half of what a relay keeps
for all its members' queues by default (``--max-send-queue-bytes``, 64 MiB)."""
EVENT_OVERHEAD_BYTES = 512
"""Charged per event beside its text, so that events of no text are bounded in number
too: an event of a line from another member costs 320 bytes of Python objects and its
text (measured with tracemalloc, 100,000 events in a Trio memory channel), rounded up
for the allocator's slack."""


def event_bytes(event: SecureEvent) -> int:
    """What an event is charged against :data:`EVENT_QUEUE_BYTES`: a notice's text as
    the 4 bytes a character that one astral character makes every character of a str
    (a relay's notices of 1,000 bytes, mostly invalid UTF-8 made U+FFFD beside one
    emoji, took 2.7 times their charge: found by review)."""
    if isinstance(event, NoticeReceived):
        return EVENT_OVERHEAD_BYTES + 4 * len(event.text)
    text = event.text if isinstance(event, ChatReceived | ChatGivenUp) else b""
    return EVENT_OVERHEAD_BYTES + len(text)


class EventQueue:
    """The events waiting for the application, charged by :func:`event_bytes`.

    The application reads it as a Trio receive channel (:meth:`receive`, ``async for``)
    or closes it to read none (``send``: every event is then discarded, and nothing
    held back)."""

    def __init__(self) -> None:
        self._in, self._out = trio.open_memory_channel[SecureEvent](math.inf)
        self.limit_bytes = EVENT_QUEUE_BYTES
        self.waiting_bytes = 0
        """The charge of the events put and not yet taken."""

    @property
    def full(self) -> bool:
        """The application has this much to take: hold the relay's messages back."""
        return self.waiting_bytes >= self.limit_bytes

    def put(self, event: SecureEvent) -> None:
        try:
            self._in.send_nowait(event)
        except trio.BrokenResourceError:
            return  # the application reads none
        self.waiting_bytes += event_bytes(event)

    def end(self) -> None:
        """No more events: the application takes what is left, then its reading ends."""
        self._in.close()

    def close(self) -> None:
        """The application reads no events (see the class)."""
        self._out.close()
        self.waiting_bytes = 0

    async def receive(self) -> SecureEvent:
        event = await self._out.receive()
        self.waiting_bytes -= event_bytes(event)
        return event

    def __aiter__(self) -> "EventQueue":
        return self

    async def __anext__(self) -> SecureEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
