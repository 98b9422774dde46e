"""Spoofed legacy registrations against the addresses of others (review 12): filling a
host's share of members. Each failed before its fix."""

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.addresses import Address
from relay_harness import harness_config, open_relay, settle
from secure_harness import HarnessLink, SecurePeer

Keys = list[rsa.RSAPrivateKey]


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
