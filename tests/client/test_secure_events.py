"""The queue of a secure participant's events: bounded in bytes (the texts, and a charge
per event), so that a slow reader holds the relay's messages back only once a lot waits."""

import sys

import pytest

import mcrelay.client.secure_events as secure_events
from mcrelay.client.secure_events import (
    EVENT_OVERHEAD_BYTES,
    ChatGivenUp,
    EventQueue,
    event_bytes,
)
from mcrelay.protocol.secure.client_events import ChatReceived, NoticeReceived, PresenceChanged
from mcrelay.protocol.secure.messages import LeaveReason, NoticeCode, PresenceEvent
from mcrelay.protocol.secure.origins import RELAY_ORIGIN


def chat(size: int) -> ChatReceived:
    return ChatReceived(RELAY_ORIGIN, b"x" * size)


def test_an_event_costs_its_text_and_a_charge_of_its_own() -> None:
    assert event_bytes(chat(1000)) == EVENT_OVERHEAD_BYTES + 1000
    assert event_bytes(ChatGivenUp(b"abc")) == EVENT_OVERHEAD_BYTES + 3
    joined = PresenceChanged(PresenceEvent.JOINED, RELAY_ORIGIN, LeaveReason.NONE)
    assert event_bytes(joined) == EVENT_OVERHEAD_BYTES


def test_a_notice_costs_what_its_text_can_take_in_memory() -> None:
    """A notice's text is a str: one astral character makes each character 4 bytes, and
    a relay's 1,000-byte notices of invalid UTF-8 (each byte made U+FFFD) beside an emoji
    took 2.7 times their charge (found by review)."""
    text = (b"\xf0\x9f\x98\x80" + b"\xff" * 996).decode("utf-8", errors="replace")
    notice = NoticeReceived(NoticeCode.KICKED, text)
    assert sys.getsizeof(text) <= event_bytes(notice)


def test_large_texts_fill_it_by_their_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secure_events, "EVENT_QUEUE_BYTES", 4 * 65_536)
    queue = EventQueue()
    for _ in range(3):
        queue.put(chat(65_536))
    assert not queue.full
    queue.put(chat(65_536))
    assert queue.full


def test_events_of_no_text_are_bounded_in_number(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secure_events, "EVENT_QUEUE_BYTES", 100 * EVENT_OVERHEAD_BYTES)
    queue = EventQueue()
    for _ in range(99):
        queue.put(chat(0))
    assert not queue.full
    queue.put(chat(0))
    assert queue.full


async def test_what_the_application_takes_makes_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secure_events, "EVENT_QUEUE_BYTES", 2 * EVENT_OVERHEAD_BYTES)
    queue = EventQueue()
    queue.put(chat(10))
    queue.put(chat(20))
    assert queue.full
    assert await queue.receive() == chat(10)
    assert queue.waiting_bytes == event_bytes(chat(20)) < queue.limit_bytes
    queue.end()
    assert [event async for event in queue] == [chat(20)]
    assert queue.waiting_bytes == 0


def test_closed_by_its_reader_it_discards_and_is_never_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(secure_events, "EVENT_QUEUE_BYTES", EVENT_OVERHEAD_BYTES)
    queue = EventQueue()
    queue.close()
    for _ in range(10):
        queue.put(chat(100))
    assert not queue.full


def test_the_default_bound_holds_a_busy_room_s_nine_minutes() -> None:
    """100 lines a second of 100 bytes for 9 minutes wait without holding back."""
    queue = EventQueue()
    for _ in range(54_000):
        queue.put(chat(100))
    assert not queue.full
