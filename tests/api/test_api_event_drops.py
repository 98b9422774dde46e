"""Drops reach ``/v1/events`` counted per reason and source, and each event is encoded once."""

import struct
from collections import Counter
from pathlib import Path

import trio
import trio.testing

from mcrelay.api.events import encode_frame
from mcrelay.core.events import MAX_DROP_SOURCES, EventHub, OperatorEvent, Subscription
from mcrelay.daemon.relay import Relay
from support import relay_config, running_daemon

HOSTILE = struct.pack("!HH", 99, 0) * 16376
"""A 64 KB datagram of TLVs of an unknown type: 16,376 drops, unless the relay bounds
the TLVs of a datagram."""


def queued(subscription: Subscription) -> list[OperatorEvent]:
    events = []
    while True:
        try:
            events.append(subscription.receive_channel.receive_nowait())
        except trio.WouldBlock:
            return events


async def test_drops_are_published_once_per_interval_with_their_count(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = EventHub()
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        with hub.subscribe() as subscription:
            for _ in range(1000):
                hub.dropped("malformed", ("10.0.0.1", 5000))
            hub.dropped("unknown_type", ("10.0.0.1", 5000))
            hub.dropped("malformed", ("10.0.0.2", 5000))
            await trio.sleep(hub.drop_interval_s / 2)
            assert queued(subscription) == []  # nothing yet: the interval runs
            await trio.sleep(hub.drop_interval_s)
            events = queued(subscription)
            assert [event.kind for event in events] == ["dropped"] * 3
            assert [event.data for event in events] == [
                {
                    "reason": "malformed",
                    "source": "10.0.0.1:5000",
                    "count": 1000,
                    "interval_s": 1.0,
                },
                {
                    "reason": "unknown_type",
                    "source": "10.0.0.1:5000",
                    "count": 1,
                    "interval_s": 1.0,
                },
                {"reason": "malformed", "source": "10.0.0.2:5000", "count": 1, "interval_s": 1.0},
            ]
            # Counting starts afresh, and a quiet interval publishes nothing.
            await trio.sleep(10 * hub.drop_interval_s)
            assert queued(subscription) == []
            hub.dropped("banned", ("10.0.0.3", 1))
            await trio.sleep(2 * hub.drop_interval_s)
            (event,) = queued(subscription)
            assert event.data["count"] == 1
        nursery.cancel_scope.cancel()


def test_past_the_bound_drops_are_counted_per_reason_only() -> None:
    hub = EventHub()
    with hub.subscribe() as subscription:
        # A flood from spoofed sources: the counts stay bounded whatever their number.
        for port in range(MAX_DROP_SOURCES + 5000):
            hub.dropped("malformed", ("10.0.0.1", port))
        hub.dropped("unknown_type", ("10.0.0.9", 1))
        hub.dropped("malformed", ("10.0.0.1", 0))  # a source already counted apart
        hub.flush_drops()
        events = queued(subscription)
    by_source = [event.data for event in events if event.data["source"] is not None]
    by_reason = [event.data for event in events if event.data["source"] is None]
    assert len(by_source) == MAX_DROP_SOURCES
    assert by_source[0] == {
        "reason": "malformed",
        "source": "10.0.0.1:0",
        "count": 2,
        "interval_s": hub.drop_interval_s,
    }
    assert by_reason == [
        {"reason": "malformed", "source": None, "count": 5000, "interval_s": hub.drop_interval_s},
        {"reason": "unknown_type", "source": None, "count": 1, "interval_s": hub.drop_interval_s},
    ]


def test_without_subscribers_nothing_is_counted() -> None:
    hub = EventHub()
    for port in range(100):
        hub.dropped("malformed", ("10.0.0.1", port))
    with hub.subscribe() as subscription:
        hub.flush_drops()
        assert queued(subscription) == []


def test_each_event_is_encoded_once_whatever_the_subscribers() -> None:
    encoded: list[int] = []

    def encoder(event: OperatorEvent) -> bytes:
        encoded.append(event.id)
        return encode_frame(event)

    hub = EventHub()
    hub.encoder = encoder
    with hub.subscribe() as first, hub.subscribe() as second, hub.subscribe() as third:
        hub.publish("client_left", client="10.0.0.1:5000", reason="timeout")
        events = [queued(subscription) for subscription in (first, second, third)]
    assert len(encoded) == 1
    (event,) = events[0]
    assert events == [[event]] * 3
    assert event.frame == encode_frame(event)
    assert event.frame.startswith(f"id: {event.id}\nevent: client_left\ndata: ".encode())


def drop_counts(relay: Relay) -> Counter[str]:
    counts = relay.statistics().dropped
    assert isinstance(counts, dict)
    return Counter(counts)


async def test_a_datagram_of_thousands_of_drops_makes_one_event(relay_key_file: Path) -> None:
    async with running_daemon(relay_config(relay_key_file)) as daemon:
        relay = daemon.relay
        with relay.events.subscribe() as subscription:
            before = drop_counts(relay)
            relay.handle_datagram(HOSTILE, ("10.0.0.1", 5000), trio.current_time())
            drops = drop_counts(relay) - before
            assert drops
            assert queued(subscription) == []  # counted, not yet published
            relay.events.flush_drops()
            events = queued(subscription)
    # One event per reason (however the relay counts such a datagram), with its count.
    assert [event.data for event in events] == [
        {
            "reason": reason,
            "source": "10.0.0.1:5000",
            "count": count,
            "interval_s": relay.events.drop_interval_s,
        }
        for reason, count in drops.items()
    ]
