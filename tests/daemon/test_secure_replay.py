"""Replayed secure datagrams and spoofed legacy control: nothing is accepted twice,
nothing speaks for a secure member, and every refusal is counted.

On the harness with the mock clock; secure clients are the sans-I/O parts driven by
hand (:mod:`secure_harness`), one of them recording everything it sends.
"""

from collections import Counter

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from secure_hostile_peers import RecordingPeer

from mcrelay.client import MessageReceived
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from mcrelay.protocol.secure.messages import Chat, RelayedChat, encode_message
from relay_harness import Harness, client_address, open_relay, settle
from secure_harness import HarnessLink, SecurePeer, connected

Keys = list[rsa.RSAPrivateKey]
REPLAY_REASONS = {"stale_timestamp", "replayed", "counter_too_old", "unknown_index"}
"""What the page's rules make of a datagram seen before: an INIT whose timestamp is not
greater, a DATA whose counter the window holds (or has passed), a DATA for a keypair
the relay no longer has."""


def chats(peer: SecurePeer) -> list[bytes]:
    return [m.text for m in peer.take() if isinstance(m, RelayedChat)]


async def quiet(*peers: SecurePeer) -> None:
    """Past the 10 ms ACK coalescing, everyone's ACKs exchanged."""
    for _ in range(2):
        await trio.sleep(0.05)
        for peer in peers:
            await peer.pump()


def replay(harness: Harness, datagrams: list[bytes], source: tuple[str, int]) -> Counter[str]:
    """Feed ``datagrams`` again from ``source``; the drops they caused, by reason."""
    before = Counter(harness.drops())
    for data in datagrams:
        harness.relay.handle_datagram(data, source, trio.current_time())
    return Counter(harness.drops()) - before


async def test_every_datagram_a_member_sent_replayed_is_refused_and_counted(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a = RecordingPeer(HarnessLink(harness), client_address(0))
        b = SecurePeer(HarnessLink(harness), client_address(1))
        await a.connect()
        await b.connect()
        texts = [b"m%d" % n for n in range(5)]
        for text in texts:
            await a.say(text)
        assert await a.handshake()  # a rekey: a second INIT, DATA under both keypairs
        await a.say(b"after the rekey")
        await a.say(b"x" * 3000)  # three fragments
        await quiet(a, b)
        assert chats(b) == [*texts, b"after the rekey", b"x" * 3000]
        inits = sum(1 for data in a.sent if data[1] == 1)
        assert inits == 2
        assert len(a.sent) > 10
        relay = harness.relay
        copies = relay.statistics().profiles["secure"]["copies_sent"]

        for source in (a.address, client_address(7)):  # as it came, and from elsewhere
            drops = replay(harness, a.sent, source)
            await settle()
            assert sum(drops.values()) == len(a.sent), drops
            assert set(drops) <= REPLAY_REASONS, drops
            assert drops["stale_timestamp"] == inits
            await quiet(a, b)
            assert chats(b) == []
            assert relay.statistics().profiles["secure"]["copies_sent"] == copies
            assert len(relay.roster) == 2
            assert relay.secure is not None
            assert relay.statistics().profiles["secure"]["handshakes_pending"] == 0
        assert harness.sent_to(client_address(7)) == []  # no path challenge for a replay

        await a.say(b"still here")
        await quiet(a, b)
        assert chats(b) == [b"still here"]


async def test_a_departed_members_datagrams_replayed_bring_nothing_back(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a = RecordingPeer(HarnessLink(harness), client_address(0))
        b = SecurePeer(HarnessLink(harness), client_address(1))
        await a.connect()
        await b.connect()
        await a.say(b"before leaving")
        await a.leave()
        await quiet(a, b)
        assert harness.relay.roster.get(a.id) is None
        b.take()

        drops = replay(harness, a.sent, a.address)
        await settle()
        assert sum(drops.values()) == len(a.sent), drops
        assert drops["stale_timestamp"] == 1  # the INIT: no new handshake
        assert drops["unknown_index"] == len(a.sent) - 1  # its keypair is gone
        await quiet(b)
        assert b.take() == []
        assert harness.relay.roster.get(a.id) is None
        assert harness.relay.secure is not None
        assert harness.relay.statistics().profiles["secure"]["handshakes_pending"] == 0


async def test_spoofed_legacy_control_from_a_secure_members_address_has_no_effect(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        (old,) = await harness.members(keys, 1)
        s = SecurePeer(HarnessLink(harness), client_address(5))
        await s.connect()
        await settle()
        s.take()
        assert old.take() == [PeerJoined(s.address)]
        spoofed = [
            legacy.disconnect(),
            legacy.keepalive(),
            legacy.client_key(keys[2].public_key()),  # a legacy registration in its place
            legacy.keepalive() + legacy.disconnect(),
            *legacy.message_datagrams(keys[0].public_key(), legacy.DISCONNECT_WORD, b"\xd0\0\0\1"),
            *old.message(b"in its name", b"\x00\x00\x00\x09"),
        ]
        sent = len(harness.sock.sent)
        s.send(*spoofed)
        await settle()
        assert harness.drops() == {"secure_address": len(spoofed)}
        assert len(harness.sock.sent) == sent  # no answer, no notice to anyone
        member = harness.relay.roster.get(s.id)
        assert member is not None
        assert member.identity.profile == "secure"
        assert len(harness.relay.roster) == 2

        # It is still a member, and chats.
        await s.say(b"still me")
        await settle()
        assert old.take() == [MessageReceived(s.address, b"still me")]
        await s.leave()
        await settle()
        assert old.take() == [PeerLeft(s.address)]


async def test_a_datagram_raced_from_a_spoofed_address_moves_nothing(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """An on-path attacker re-sends a member's DATA from its own address before the
    original arrives: the relay acts on it once, challenges the new address within 3x
    the bytes it got from it, and goes on sending to the validated one."""
    async with open_relay(keys[0]) as harness:
        a, b = await connected(harness, 2)
        await quiet(a, b)
        assert a.session is not None
        attacker = ("10.6.6.6", 6666)
        a.session.channel.send(encode_message(Chat(b"raced")), trio.current_time())
        raced = [data for data, _ in a.session.datagrams(trio.current_time())]
        for data in raced:
            harness.relay.handle_datagram(data, attacker, trio.current_time())
        drops = replay(harness, raced, a.address)  # the originals, second: replays
        assert drops == Counter({"replayed": len(raced)})
        for _ in range(10):  # challenges are due every 200 ms, within the limit
            await trio.sleep(0.2)
            await a.pump()
            await b.pump()
        assert chats(b) == [b"raced"]
        to_attacker = harness.sent_to(attacker)
        assert to_attacker  # it was challenged...
        assert sum(map(len, to_attacker)) <= 3 * sum(map(len, raced))  # ...within 3x
        member = harness.relay.roster.get(a.id)
        assert member is not None
        assert member.address == a.address
        await b.say(b"to a, where it is")
        await a.pump()
        assert chats(a) == [b"to a, where it is"]
        assert len(harness.sent_to(attacker)) == len(to_attacker)
