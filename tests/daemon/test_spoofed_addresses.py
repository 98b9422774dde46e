"""Spoofed legacy registrations against the addresses of others (review 12): at a secure
client's address, filling a host's share of members, and at the relay's own address.
Each failed before its fix. Decision 60's other half (a secure member's address is not
taken by another key) is in ``test_secure_review``."""

import dataclasses

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from relay_harness import RELAY_ADDRESS, client_address, harness_config, open_relay, settle
from secure_harness import HarnessLink, SecurePeer, connected

Keys = list[rsa.RSAPrivateKey]


async def test_a_spoofed_legacy_registration_gives_way_to_the_secure_client_there(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """One spoofed key at a secure client's address, before it came back (the relay
    restarted, say), kept it out for good, silently (``address_in_use``): the legacy
    registration proved nothing; the client proves it receives there."""
    async with open_relay(keys[0]) as harness:
        (observer,) = await harness.members(keys, 1)
        victim = client_address(5)
        spoofer = harness.peer(victim, keys[2])
        spoofer.register()
        await settle()
        s = SecurePeer(HarnessLink(harness), victim)
        s.link.received(victim)  # from now on (the ghost's notices are not its)
        await s.connect()
        roster = harness.relay.roster
        member = roster.get(s.id)
        assert member is not None
        assert roster.at(victim) is member
        assert len(roster) == 2
        await settle()
        assert observer.take() == [PeerJoined(victim), PeerLeft(victim), PeerJoined(victim)]
        assert harness.drops() == {"displaced": 1}
        spoofer.register()  # and again: one address, one member
        assert roster.at(victim) is member
        assert harness.drops() == {"displaced": 1, "secure_address": 1}


async def test_a_legacy_member_gives_way_only_to_a_join_that_is_allowed(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """The legacy member was displaced before the secure join was checked against the
    registration rate: the join refused, it was gone all the same, and every member was
    told a leave for nothing (found by review). It stays until the join is allowed."""
    config = harness_config(registrations_per_host_burst=1, registrations_per_host_per_s=0.01)
    async with open_relay(keys[0], config) as harness:
        await connected(harness, 1)  # the secure join its host may make now
        address = client_address(5)
        legacy = harness.peer(address, keys[1])
        legacy.register()  # (the legacy profile's own budget)
        await settle()
        newcomer = SecurePeer(HarnessLink(harness), address)
        newcomer.link.received(address)  # (what the legacy member is sent is not its)
        assert await newcomer.handshake()
        await newcomer.pump(rounds=2)  # its confirming DATA, over the rate
        await settle()
        assert harness.drops() == {"rate_limited": 1}
        assert legacy.registered()
        assert harness.relay.roster.get(newcomer.id) is None


async def test_a_secure_member_that_roams_to_a_legacy_members_address_takes_it(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """A path validation proves the new address as a handshake does."""
    async with open_relay(keys[0]) as harness:
        (holder,) = await harness.members(keys, 1)
        roamer = SecurePeer(HarnessLink(harness), client_address(7))
        await roamer.connect()
        roamer.address = holder.address
        await roamer.say(b"from a legacy member's address")
        await roamer.pump()
        roster = harness.relay.roster
        member = roster.get(roamer.id)
        assert member is not None
        assert member.address == holder.address
        assert roster.at(holder.address) is member
        assert len(roster) == 1
        assert harness.drops() == {"displaced": 1}


async def test_a_displaced_member_with_a_message_in_flight_leaves_before_the_newcomer_joins(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """A leave waits for the leaver's messages; the address waits for its leave: a legacy
    member is never told the newcomer joined, then that its address left."""
    async with open_relay(keys[0]) as harness:
        observer, holder = await harness.members(keys, 2)
        harness.workers.hold()
        holder.say(b"last words")
        await settle()
        s = SecurePeer(HarnessLink(harness), holder.address)
        s.link.received(holder.address)  # from now on
        await s.connect()
        roster = harness.relay.roster
        assert roster.get(s.id) is None
        assert harness.drops() == {"displaced": 1, "address_in_use": 1}
        harness.workers.release()
        await settle()
        await trio.sleep(1.0)  # its DATA comes again: the handshake was kept for it
        await s.pump()
        assert roster.at(holder.address) is roster.get(s.id) is not None
        await settle()
        assert observer.take() == [
            MessageReceived(holder.address, b"last words"),
            PeerLeft(holder.address),
            PeerJoined(holder.address),
        ]


async def test_legacy_registrations_of_a_host_keep_no_secure_client_of_it_out(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Spoofed legacy registrations filled a host's share of members, which both profiles
    shared: a secure client of that host got ``registry_full``. Each profile's members of
    a host are held to the share on their own."""
    config = harness_config(max_clients_per_host=2, registrations_per_host_burst=10)
    host = "127.0.0.7"

    def at(port: int) -> Address:
        return (host, port)

    async with open_relay(keys[0], config) as harness:
        for port in range(3):
            harness.peer(at(30000 + port), keys[1]).register()
        await settle()
        assert harness.drops() == {"registry_full": 1}  # the legacy share: 2
        secure = [SecurePeer(HarnessLink(harness), at(40000 + port)) for port in range(3)]
        for peer in secure[:2]:
            await peer.connect()
        assert not await secure[2].handshake()  # the secure share: 2
        assert harness.drops() == {"registry_full": 2}
        roster = harness.relay.roster
        assert all(roster.get(peer.id) is not None for peer in secure[:2])
        assert len(roster) == 4


async def test_nothing_from_the_relays_own_address_is_taken(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """One spoofed key from the relay's own address made it a legacy member of itself,
    kept alive by every copy it sent itself: from its port, the loopback addresses and
    the addresses it was given are its own."""
    config = dataclasses.replace(harness_config(), interface="10.9.8.7")
    async with open_relay(keys[0], config) as harness:
        port = RELAY_ADDRESS[1]
        own = [RELAY_ADDRESS, ("127.0.0.2", port), ("10.9.8.7", port)]
        for source in own:
            harness.peer(source, keys[1]).register()
            harness.relay.handle_datagram(
                SecurePeer(HarnessLink(harness), source).initiator().datagram,
                source,
                trio.current_time(),
            )
        await settle()
        assert len(harness.relay.roster) == 0
        assert harness.sock.sent == []
        assert harness.drops() == {"own_address": 2 * len(own)}
        others = [("127.0.0.2", port + 1), ("10.9.8.7", 40000), ("10.9.8.6", port)]
        for source in others:
            harness.peer(source, keys[1]).register()
        await settle()
        assert len(harness.relay.roster) == len(others)
        assert harness.drops() == {"own_address": 2 * len(own)}


async def test_legacy_registrations_from_many_hosts_keep_no_secure_client_out(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Spoofed legacy registrations from many addresses filled ``--max-clients``, which
    both profiles shared: every secure newcomer got ``registry_full``. Each profile's
    members are held to it on their own."""
    config = harness_config(max_clients=3, max_clients_per_host=1)
    async with open_relay(keys[0], config) as harness:
        for host in range(4):
            harness.peer((f"127.0.0.{10 + host}", 30000), keys[1]).register()
        await settle()
        assert harness.drops() == {"registry_full": 1}  # the legacy members: 3
        secure = [SecurePeer(HarnessLink(harness), (f"127.0.1.{n}", 40000)) for n in range(4)]
        for peer in secure[:3]:
            await peer.connect()
        assert not await secure[3].handshake()  # the secure members: 3
        assert harness.drops() == {"registry_full": 2}
        assert len(harness.relay.roster) == 6
