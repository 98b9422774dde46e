"""The messages of a legacy source whose registration waits for the rate: held until it
is made, then relayed in order; counted when it never is.

The relay answers a key request at once, whether a registration waits or not, so a page
client sends its messages then: those were dropped as ``unregistered`` (found by
review: 100 clients sending their key and a message at once, 64 messages arrived).
On the harness (``relay_harness``), with the mock clock.
"""

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.daemon.legacy import waiting
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy.events import PeerJoined
from relay_harness import Harness, harness_config, open_relay, settle

Keys = list[rsa.RSAPrivateKey]


def held_back(harness: Harness) -> int:
    return harness.relay.statistics().profiles["legacy"]["registrations_waiting"]


async def test_messages_sent_while_the_registration_waits_go_out_once_it_is_made(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(registrations_per_host_burst=3, registrations_per_host_per_s=1.0)
    async with open_relay(keys[0], config) as harness:
        (watcher,) = await harness.members(keys, 1)  # 127.0.0.1: the burst is the others'
        peers = [harness.peer(("127.0.0.2", 40000 + n), keys[2 + n % 3]) for n in range(6)]
        for n, peer in enumerate(peers):
            peer.register()
            peer.say(b"first from %d" % n, b"\x00\x00\x00\x01")
            peer.say(b"second from %d" % n, b"\x00\x00\x00\x02")
        await settle()
        assert held_back(harness) == 3
        await trio.sleep(3.5)  # one registration a second
        assert held_back(harness) == 0
        assert harness.drops() == {}
        received = watcher.take()
        for n, peer in enumerate(peers):
            own = [event for event in received if getattr(event, "sender", None) == peer.address]
            assert own == [
                MessageReceived(peer.address, b"first from %d" % n),
                MessageReceived(peer.address, b"second from %d" % n),
            ]
            # Its join goes out before its messages.
            assert received.index(PeerJoined(peer.address)) < received.index(own[0])
        # A held message goes to the members present when it is released, not its sender.
        senders = {event.sender for event in peers[3].messages()}
        assert senders == {peers[4].address, peers[5].address}


async def test_held_messages_of_a_registration_never_made_are_counted(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(
        registrations_per_host_burst=1, registrations_per_host_per_s=0.01, client_timeout_s=5.0
    )
    async with open_relay(keys[0], config) as harness:
        (watcher,) = await harness.members(keys, 1)
        gone, expires = (harness.peer(("127.0.0.1", 41000 + n), keys[2 + n]) for n in range(2))
        for peer in (gone, expires):
            peer.register()
            peer.say(b"held")
        gone.send(legacy.disconnect())
        await settle()
        assert harness.drops() == {"never_registered": 1}
        await trio.sleep(6.0)
        assert harness.drops() == {"never_registered": 2, "rate_limited": 1}
        assert watcher.messages() == []
        expires.say(b"after", b"\x00\x00\x00\x02")  # no longer waiting: unregistered
        assert harness.dropped("unregistered") == 2


async def test_a_waiting_source_holds_a_bounded_number_of_messages(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(registrations_per_host_burst=1, registrations_per_host_per_s=0.5)
    async with open_relay(keys[0], config) as harness:
        (watcher,) = await harness.members(keys, 1)
        flood = harness.peer(("127.0.0.1", 41000), keys[2])
        flood.register()
        count = waiting.MAX_HELD_PER_SOURCE + 2
        for n in range(count):
            flood.say(b"%d" % n, n.to_bytes(4, "big"))
        await settle()
        # Each message is two fragments: the two over the bound are refused as they start.
        assert harness.drops() == {"overloaded": 4}
        await trio.sleep(2.5)  # its host's next token
        assert [event.data for event in watcher.messages()] == [
            b"%d" % n for n in range(waiting.MAX_HELD_PER_SOURCE)
        ]


async def test_messages_held_when_the_relay_stops_are_counted_as_stopped(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    config = harness_config(registrations_per_host_burst=1, registrations_per_host_per_s=0.01)
    async with open_relay(keys[0], config) as harness:
        await harness.members(keys, 1)
        waiter = harness.peer(("127.0.0.1", 41000), keys[2])
        waiter.register()
        waiter.say(b"held")
        await settle()
        harness.relay.stop_receiving()
        assert harness.drops() == {"stopped": 2}  # the registration and its message
