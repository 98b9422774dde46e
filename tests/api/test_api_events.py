"""``GET /v1/events`` (Server-Sent Events) and the event hub behind it."""

import inspect
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from api_support import (
    EventStream,
    SseFrame,
    api_daemon,
    client_id,
    event_stream,
    parse_time,
)
from cryptography.hazmat.primitives.asymmetric import rsa

import mcrelay.api.events
from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.core.events import SUBSCRIBER_QUEUE_EVENTS, EventHub, OperatorEvent, Subscription
from mcrelay.daemon.relay import Relay
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import PeerJoined
from support import WAIT_S, dropped, join, next_event, raw_peer, wait_until

Keys = list[rsa.RSAPrivateKey]
MALFORMED = b"\x00"
UNKNOWN_TYPE = bytes.fromhex("00630000")


def has_dropped(relay: Relay, malformed: int) -> bool:
    return dropped(relay, "malformed") == malformed


def check_frame(frame: SseFrame) -> None:
    """The frame's fields agree with its JSON data, and it has a time."""
    data = frame.data
    assert data["id"] == frame.id
    assert data["event"] == frame.event
    parse_time(data["time"])


def check_ids_increase(frames: list[SseFrame]) -> None:
    ids = [frame.id for frame in frames]
    assert ids == sorted(set(ids)), ids


async def collect(stream: EventStream, count: int) -> list[SseFrame]:
    frames = [await stream.next_event() for _ in range(count)]
    for frame in frames:
        check_frame(frame)
    check_ids_increase(frames)
    return frames


async def test_join_message_and_leave(relay_key_file: Path, keys: Keys) -> None:
    secret = "the launch code is 0000-TOP-SECRET"
    async with api_daemon(relay_key_file) as api, event_stream(api.http) as stream:
        assert stream.response.headers["cache-control"] == "no-cache"
        async with join(api.relay, keys[1]) as a:
            async with join(api.relay, keys[2]) as b:
                assert await next_event(a) == PeerJoined(b.address)
                assert await next_event(b) == PeerPresent(a.address)
                await a.send(secret)
                assert await next_event(b) == MessageReceived(a.address, secret.encode())
        frames = await collect(stream, 5)
        assert [frame.event for frame in frames] == [
            "client_joined",
            "client_joined",
            "message_relayed",
            "client_left",
            "client_left",
        ]
        joined_a, joined_b, relayed, left_b, left_a = (frame.data for frame in frames)
        assert joined_a["client"] == client_id(a.address)
        assert joined_a["fingerprint"] == crypto.fingerprint(keys[1].public_key())
        assert joined_a["rekeyed"] is False
        assert joined_b["client"] == client_id(b.address)
        assert {k: relayed[k] for k in ("sender", "client", "size", "recipients")} == {
            "sender": client_id(a.address),
            "client": client_id(a.address),
            "size": len(secret.encode()),
            "recipients": 1,
        }
        assert set(relayed) == {"id", "event", "time", "sender", "client", "size", "recipients"}
        assert "SECRET" not in frames[2].raw
        assert secret not in frames[2].raw
        assert left_b == {**left_b, "client": client_id(b.address), "reason": "disconnect"}
        assert left_a == {**left_a, "client": client_id(a.address), "reason": "disconnect"}


async def test_joined_event_carries_the_key_fingerprint(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api, event_stream(api.http) as stream:
        async with raw_peer(api.relay, keys[3]) as raw:
            await raw.register()
            joined = await stream.next_of("client_joined")
            check_frame(joined)
            client = api.relay.roster.at(raw.address)
            assert client is not None
            assert joined.data["client"] == client_id(raw.address)
            assert joined.data["fingerprint"] == client.identity.key_id
            assert joined.data["rekeyed"] is False
            await raw.send(legacy.client_key(keys[4].public_key()))
            rekeyed = await stream.next_of("client_joined")
            assert rekeyed.data["rekeyed"] is True
            assert rekeyed.id > joined.id


async def test_posted_message_event_has_the_relay_as_sender(
    relay_key_file: Path, keys: Keys
) -> None:
    text = "from the operator, not for the log"
    async with api_daemon(relay_key_file) as api, join(api.relay, keys[1]) as a:
        async with event_stream(api.http) as stream:
            response = await api.http.post("/v1/messages", json={"text": text})
            assert response.json() == {"recipients": 1}
            (frame,) = await collect(stream, 1)
            assert frame.event == "message_relayed"
            assert frame.data["sender"] == "0.0.0.0:0"
            assert frame.data["size"] == len(text)
            assert frame.data["recipients"] == 1
            assert text not in frame.raw
            assert "operator" not in frame.raw
        assert await next_event(a) == MessageReceived(("0.0.0.0", 0), text.encode())


async def test_kick_and_ban_events(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api, event_stream(api.http) as stream:
        async with raw_peer(api.relay, keys[1]) as raw:
            await raw.register()
            ident = client_id(raw.address)
            response = await api.http.delete(f"/v1/clients/{ident}", params={"ban_s": "30"})
            assert response.status_code == 200
            await raw.send(legacy.key_request())
            joined, left, banned = await collect(stream, 3)
            assert (joined.event, joined.data["client"]) == ("client_joined", ident)
            assert left.event == "client_left"
            assert (left.data["client"], left.data["reason"]) == (ident, "ban")
            assert banned.event == "dropped"
            assert (banned.data["reason"], banned.data["source"]) == ("banned", ident)


async def test_timeout_event(relay_key_file: Path, keys: Keys) -> None:
    config = {"client_timeout_s": 0.5}
    async with api_daemon(relay_key_file, **config) as api, event_stream(api.http) as stream:
        async with raw_peer(api.relay, keys[1]) as silent:
            await silent.register()  # and then says nothing more
            joined, left = await collect(stream, 2)
            assert joined.event == "client_joined"
            assert left.event == "client_left"
            assert left.data["client"] == client_id(silent.address)
            assert left.data["reason"] == "timeout"
            assert api.relay.roster.at(silent.address) is None


async def collect_drops(stream: EventStream, total: int) -> list[SseFrame]:
    """``dropped`` events until their counts add up to ``total`` (an interval may end
    between two datagrams, so one drop's count may come in two events)."""
    frames: list[SseFrame] = []
    while sum(frame.data["count"] for frame in frames) < total:
        frame = await stream.next_of("dropped")
        check_frame(frame)
        frames.append(frame)
    check_ids_increase(frames)
    return frames


def drop_counts(frames: list[SseFrame]) -> dict[tuple[str, str | None], int]:
    counts: dict[tuple[str, str | None], int] = {}
    for frame in frames:
        key = (frame.data["reason"], frame.data["source"])
        counts[key] = counts.get(key, 0) + frame.data["count"]
    return counts


async def test_dropped_events_count_drops_by_reason_and_source(
    relay_key_file: Path, keys: Keys
) -> None:
    async with api_daemon(relay_key_file) as api, event_stream(api.http) as stream:
        async with raw_peer(api.relay, keys[1]) as raw:
            await raw.send(MALFORMED, MALFORMED, MALFORMED, UNKNOWN_TYPE, legacy.keepalive())
            frames = await collect_drops(stream, 5)
            source = client_id(raw.address)
            assert drop_counts(frames) == {
                ("malformed", source): 3,
                ("unknown_type", source): 1,
                ("unregistered", source): 1,
            }
            for frame in frames:
                assert set(frame.data) == {
                    "id",
                    "event",
                    "time",
                    "reason",
                    "source",
                    "count",
                    "interval_s",
                }
                assert frame.data["interval_s"] == api.relay.events.drop_interval_s
            assert dropped(api.relay, "malformed") == 3


async def test_every_stream_gets_every_event_and_closing_unsubscribes(
    relay_key_file: Path, keys: Keys
) -> None:
    async with api_daemon(relay_key_file) as api:
        assert api.relay.events.subscribers == 0
        async with event_stream(api.http) as first, event_stream(api.http) as second:
            assert api.relay.events.subscribers == 2
            assert api.relay.statistics().event_subscribers == 2
            async with raw_peer(api.relay, keys[1]) as raw:
                await raw.send(MALFORMED, MALFORMED)
                seen_first = await collect_drops(first, 2)
                seen_second = await collect_drops(second, 2)
            assert [f.raw for f in seen_first] == [f.raw for f in seen_second]
        await wait_until(lambda: api.relay.events.subscribers == 0)


async def test_ids_keep_increasing_across_streams(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api, raw_peer(api.relay, keys[1]) as raw:
        last = 0
        for _ in range(3):
            async with event_stream(api.http) as stream:
                await raw.send(MALFORMED, MALFORMED)
                frames = await collect_drops(stream, 2)
            assert frames[0].id > last
            last = frames[-1].id
            await wait_until(lambda: api.relay.events.subscribers == 0)


async def test_a_stream_opens_with_a_comment_and_no_events(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api, event_stream(api.http) as stream:
        assert api.relay.events.subscribers == 1
        assert stream.response.headers["cache-control"] == "no-cache"
        with trio.move_on_after(0.005):
            await stream.next_frame()
            raise AssertionError("an event with nothing happening")  # pragma: no cover


async def test_the_stream_survives_heartbeats(
    relay_key_file: Path, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mcrelay.api.events, "HEARTBEAT_S", 0.01)
    async with api_daemon(relay_key_file) as api, event_stream(api.http) as stream:
        heartbeat = await stream.next_frame()
        assert heartbeat.comments == ["heartbeat"]
        async with raw_peer(api.relay, keys[1]) as raw:
            await raw.send(MALFORMED)
            frame = await stream.next_event()
        assert frame.event == "dropped"


# The hub itself: a bounded queue per subscriber, and publish never waits.


def test_publish_without_subscribers_is_a_no_op() -> None:
    assert not inspect.iscoroutinefunction(EventHub.publish)  # the relay never awaits it
    hub = EventHub(queue_events=2)
    for n in range(10):
        hub.publish("dropped", n=n)
    assert hub.subscribers == 0


@asynccontextmanager
async def reading(subscription: Subscription) -> AsyncIterator[AsyncIterator[OperatorEvent]]:
    """The subscription's events; closed on exit if they come from an async generator
    (Trio warns of generators left for the garbage collector)."""
    events: AsyncIterator[OperatorEvent] = aiter(subscription)
    try:
        yield events
    finally:
        if isinstance(events, AsyncGenerator):
            await events.aclose()


async def take(events: AsyncIterator[OperatorEvent], count: int) -> list[OperatorEvent]:
    taken: list[OperatorEvent] = []
    with trio.fail_after(WAIT_S):
        for _ in range(count):
            taken.append(await anext(events))
    return taken


async def test_a_full_queue_loses_events_and_counts_them() -> None:
    hub = EventHub(queue_events=2)
    with hub.subscribe() as subscription:
        for n in range(5):
            hub.publish("dropped", n=n)  # synchronous: returns at once with the queue full
        async with reading(subscription) as events:
            got = await take(events, 3)
            kinds = sorted(event.kind for event in got)
            assert kinds == ["dropped", "dropped", "overflow"]
            assert [e.data for e in got if e.kind == "dropped"] == [{"n": 0}, {"n": 1}]
            assert [e.data for e in got if e.kind == "overflow"] == [{"missed": 3}]
            # The queue has room again: the next events arrive, with no overflow.
            hub.publish("dropped", n=5)
            (after,) = await take(events, 1)
            assert (after.kind, after.data) == ("dropped", {"n": 5})
    assert hub.subscribers == 0


async def test_overflow_comes_after_the_queued_events() -> None:
    hub = EventHub(queue_events=2)
    with hub.subscribe() as subscription:
        for n in range(5):
            hub.publish("dropped", n=n)
        async with reading(subscription) as events:
            got = await take(events, 3)
        assert [(e.kind, e.data) for e in got] == [
            ("dropped", {"n": 0}),
            ("dropped", {"n": 1}),
            ("overflow", {"missed": 3}),
        ]
        ids = [e.id for e in got]
        assert ids == sorted(set(ids))


async def test_other_subscribers_are_not_affected_by_a_slow_one() -> None:
    hub = EventHub(queue_events=2)
    with hub.subscribe() as slow, hub.subscribe() as fast:
        async with reading(fast) as fast_events:
            for n in range(5):
                hub.publish("dropped", n=n)
                (event,) = await take(fast_events, 1)
                assert (event.kind, event.data) == ("dropped", {"n": n})
        async with reading(slow) as slow_events:
            got = await take(slow_events, 3)
        assert sorted((e.kind, str(e.data)) for e in got) == [
            ("dropped", "{'n': 0}"),
            ("dropped", "{'n': 1}"),
            ("overflow", "{'missed': 3}"),
        ]


async def test_a_subscriber_that_never_reads_does_not_stall_the_relay(
    relay_key_file: Path, keys: Keys
) -> None:
    extra = 50
    async with api_daemon(relay_key_file) as api:
        relay = api.relay
        async with join(relay, keys[1]) as a, raw_peer(relay, keys[2]) as raw:
            with relay.events.subscribe() as stalled:
                for n in range(SUBSCRIBER_QUEUE_EVENTS + extra):
                    relay.events.publish("client_left", client=f"10.0.0.1:{n}", reason="timeout")
                await raw.send(MALFORMED)
                await wait_until(lambda: has_dropped(relay, 1))
                # The relay went on: the API answers, and a message still goes out.
                response = await api.http.post("/v1/messages", json={"text": "still here"})
                assert response.json() == {"recipients": 1}
                assert await next_event(a) == MessageReceived(("0.0.0.0", 0), b"still here")
                async with reading(stalled) as events:
                    got = await take(events, SUBSCRIBER_QUEUE_EVENTS + 1)
                assert sum(e.kind == "client_left" for e in got) == SUBSCRIBER_QUEUE_EVENTS
                (overflow,) = [e for e in got if e.kind == "overflow"]
                # The 50 left over, and what came after them: the message and the drop.
                assert overflow.data["missed"] >= extra + 1
            assert relay.events.subscribers == 0


async def test_head_of_the_event_stream_does_not_hang_the_connection(
    relay_key_file: Path,
) -> None:
    async with api_daemon(relay_key_file) as api:
        head = await api.http.head("/v1/events")
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("text/event-stream")
        # Hung for good when the bug is there; a second is generous for a health check.
        healthz = await api.http.get("/healthz", timeout=1.0)
        assert healthz.status_code == 200
        await wait_until(lambda: api.relay.events.subscribers == 0)


async def test_overflow_ids_keep_increasing_across_a_second_gap() -> None:
    hub = EventHub(queue_events=3)
    with hub.subscribe() as subscription:
        for n in range(5):  # ids 1-3 queued, 4-5 missed
            hub.publish("dropped", n=n)
        first = await subscription.receive()
        hub.publish("dropped", n=5)  # id 6 queued
        for n in range(6, 8):  # ids 7-8 missed too
            hub.publish("dropped", n=n)
        rest = [await subscription.receive() for _ in range(5)]
        ids = [first.id, *(event.id for event in rest)]
        # Each gap stands where it was: after 3 (4-5 missed), and after 6 (7-8 missed).
        assert [(event.kind, event.data.get("missed")) for event in rest] == [
            ("dropped", None),
            ("dropped", None),
            ("overflow", 2),
            ("dropped", None),
            ("overflow", 2),
        ]
        assert ids == [1, 2, 3, 4, 6, 7]


async def test_closing_the_hub_ends_each_subscription_after_a_last_event() -> None:
    """An orderly stop ends the streams whole (a daemon killed was not told apart from
    one that stopped: found by review); the last event comes room or not."""
    hub = EventHub(queue_events=2)
    with hub.subscribe() as full, hub.subscribe() as idle:
        for n in range(3):
            hub.publish("dropped", n=n)
        hub.close()
        hub.publish("dropped", n=9)  # closed: nothing more
        got = [event.kind async for event in full]
        assert got == ["dropped", "dropped", "overflow", "relay_stopping"]
        assert [event.kind async for event in idle] == [
            "dropped",
            "dropped",
            "overflow",
            "relay_stopping",
        ]
        with hub.subscribe() as late:  # one made after: told at once
            assert [event.kind async for event in late] == ["relay_stopping"]
    with trio.fail_after(1):
        await hub.wait_ended()
