"""A relay and real participants in one Trio run, on loopback.

The few tests where the sockets are the point: real participants join over
multicast and talk through the relay, a burst of the largest message through the
kernel's buffers, the participant's own checks (the relay's key, the relay's
address, no relay at all) and its re-registration. The relay's own behaviour is
tested on the harness (``test_relay_messages``, ``test_relay_members``,
``test_relay_sending``), with the mock clock.
"""

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import (
    MessageReceived,
    ParticipantEvent,
    PeerPresent,
    RelayKeyMismatch,
    RelayUnreachable,
    open_participant,
)
from mcrelay.core.members import Departure
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import format_address
from mcrelay.protocol.errors import DropReason, LocalProtocolError
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from support import (
    GROUP,
    LOOPBACK,
    events_until,
    join,
    next_event,
    relay_config,
    running_relay,
    wait_until,
)

Keys = list[rsa.RSAPrivateKey]
LONG_TEXT = ("Größe ✓ 日本語 " * 2000)[: legacy.MAX_MESSAGE_BYTES // 4]


def is_message(text: str) -> Callable[[ParticipantEvent], bool]:
    return lambda event: isinstance(event, MessageReceived) and event.text == text


async def test_three_clients_join_talk_and_leave(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a:
            async with join(relay, keys[2]) as b:
                assert await next_event(a) == PeerJoined(b.address)
                assert await next_event(b) == PeerPresent(a.address)
                async with join(relay, keys[3]) as c:
                    assert await next_event(a) == PeerJoined(c.address)
                    assert await next_event(b) == PeerJoined(c.address)
                    roster = {await next_event(c), await next_event(c)}
                    assert roster == {PeerPresent(a.address), PeerPresent(b.address)}
                    assert a.relay_fingerprint == relay.fingerprint

                    await a.send("short")
                    await a.send(LONG_TEXT)
                    for peer in (b, c):
                        assert await next_event(peer) == MessageReceived(a.address, b"short")
                        assert await next_event(peer) == MessageReceived(
                            a.address, LONG_TEXT.encode()
                        )
                    # Nothing came back to the sender: the next thing A sees is B's marker.
                    await b.send("marker")
                    assert await next_event(a) == MessageReceived(b.address, b"marker")
                    assert await next_event(c) == MessageReceived(b.address, b"marker")
                assert await next_event(a) == PeerLeft(c.address)
                assert await next_event(b) == PeerLeft(c.address)
            assert await next_event(a) == PeerLeft(b.address)
        await wait_until(lambda: len(relay.roster) == 0)
        counters = relay.statistics().counters
        assert (counters.messages_relayed, counters.copies_sent) == (3, 6)


async def test_largest_message_sent_as_one_burst_arrives(relay_key_file: Path, keys: Keys) -> None:
    largest = random.Random(7).randbytes(legacy.MAX_MESSAGE_BYTES)
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            assert await next_event(b) == PeerPresent(a.address)
            await a.send(largest)
            assert await next_event(b) == MessageReceived(a.address, largest)


async def test_pinned_fingerprint(relay_key_file: Path, keys: Keys) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        with pytest.raises(RelayKeyMismatch):
            async with join(
                relay, keys[1], relay_fingerprint="SHA256:" + "A" * 43, register_timeout_s=0.5
            ):
                pass  # pragma: no cover
        assert len(relay.roster) == 0
        async with join(relay, keys[1], relay_fingerprint=relay.fingerprint) as a:
            assert a.relay_fingerprint == relay.fingerprint


async def test_no_relay_is_unreachable(keys: Keys, autojump_clock: trio.testing.MockClock) -> None:
    sock = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
    with sock:
        await sock.bind((LOOPBACK, 0))
        unused_port = sock.getsockname()[1]
        with pytest.raises(RelayUnreachable):
            async with open_participant(
                destination=(GROUP, unused_port),
                interface=LOOPBACK,
                key=keys[1],
                register_timeout_s=0.3,
                retry_interval_s=0.1,
            ):
                pass  # pragma: no cover


async def test_datagrams_from_others_than_the_relay_are_ignored(
    relay_key_file: Path, keys: Keys
) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            spoof = trio.socket.socket(type=trio.socket.SOCK_DGRAM)
            with spoof:
                await spoof.sendto(legacy.peer_left(b.address), a.address)
            await b.send("real")
            assert await events_until(a, is_message("real")) == [
                MessageReceived(b.address, b"real")
            ]
            assert a.dropped[DropReason.NOT_FROM_RELAY] == 1


async def test_the_participant_refuses_control_words_and_re_registers_when_forgotten(
    relay_key_file: Path, keys: Keys
) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1], keepalive_interval_s=0.05) as a:
            for word in ("DISCONNECT", "CONNECT"):
                with pytest.raises(LocalProtocolError):
                    await a.send(word)
            relay.roster.remove(format_address(a.address), Departure.TIMEOUT)  # as after a restart
            await wait_until(lambda: relay.roster.at(a.address) is not None)
