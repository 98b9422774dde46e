"""A secure participant whose application reads its events slowly holds the relay's
messages back instead of dropping what its channel acknowledged (a chat piped into a
slow reader showed 1,472 of 3,000 messages and exited 0: found by review)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from stub_secure_relay import LOOPBACK, ServedRelay, served_relay

import mcrelay.client.secure_events as secure_events
from mcrelay.client.participant import EVENT_QUEUE_EVENTS
from mcrelay.client.secure import SecureParticipant, open_secure_participant
from mcrelay.client.secure_events import EVENT_OVERHEAD_BYTES
from mcrelay.protocol.secure.channel import Channel
from mcrelay.protocol.secure.client_events import ChatReceived
from mcrelay.protocol.secure.keys import KeyPair
from mcrelay.protocol.secure.messages import RelayedChat, encode_message
from mcrelay.protocol.secure.origins import RELAY_ORIGIN
from protocol.secure.client_support import RELAY_KEY
from support import WAIT_S, wait_until

QUEUE_EVENTS = 8
TEXTS = [f"m{n}".encode() for n in range(100)]


@asynccontextmanager
async def connected() -> AsyncIterator[tuple[SecureParticipant, ServedRelay, Channel]]:
    """A participant connected to a stub relay; the relay, and its channel to it."""
    identity = KeyPair.generate()
    async with served_relay() as served:
        async with open_secure_participant(
            destination=served.address,
            interface=LOOPBACK,
            identity=identity,
            relay_key=RELAY_KEY.public,
        ) as participant:
            yield participant, served, served.relay.members[identity.public].session.channel


async def relay_sends(served: ServedRelay, channel: Channel, texts: list[bytes]) -> None:
    for text in texts:
        body = encode_message(RelayedChat(RELAY_ORIGIN, text))
        channel.send(body, trio.current_time(), bounded=False)
    await served._flush()


async def test_a_reader_that_falls_behind_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(secure_events, "EVENT_QUEUE_BYTES", QUEUE_EVENTS * EVENT_OVERHEAD_BYTES)
    async with connected() as (participant, served, channel):
        await relay_sends(served, channel, TEXTS)
        await wait_until(lambda: participant.connection.hold_back)
        session = participant.connection.session
        assert session is not None
        await wait_until(lambda: session.channel.refused > 0)
        texts: list[bytes] = []
        with trio.fail_after(WAIT_S):
            while len(texts) < len(TEXTS):
                event = await participant.events.receive()
                assert isinstance(event, ChatReceived)
                texts.append(event.text)
        assert texts == TEXTS
        await wait_until(lambda: channel.statistics().in_flight == 0)


async def test_events_nobody_reads_hold_nothing_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """``send`` reads no events: it closes them, and the relay's messages are taken."""
    monkeypatch.setattr(secure_events, "EVENT_QUEUE_BYTES", QUEUE_EVENTS * EVENT_OVERHEAD_BYTES)
    async with connected() as (participant, served, channel):
        participant.events.close()
        await relay_sends(served, channel, TEXTS)
        await wait_until(lambda: channel.statistics().in_flight == 0 and not channel.queued)
        assert not participant.connection.hold_back


async def test_more_events_than_the_old_bound_wait_without_holding_back() -> None:
    """The bound is in bytes, and large: past 1,024 events waiting it held back, and one
    chat whose stdout stalled held every sender of the group to its pace (found by
    review)."""
    texts = [f"m{n}".encode() for n in range(EVENT_QUEUE_EVENTS + 100)]
    async with connected() as (participant, served, channel):
        await relay_sends(served, channel, texts)
        await wait_until(lambda: channel.statistics().in_flight == 0 and not channel.queued)
        assert participant.connection.session is not None
        assert participant.connection.session.channel.refused == 0
        assert not participant.connection.hold_back
        assert participant.events.waiting_bytes >= len(texts) * EVENT_OVERHEAD_BYTES
