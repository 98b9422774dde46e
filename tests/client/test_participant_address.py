"""The address a participant says it has is the one the relay and its peers see."""

from pathlib import Path
from socket import IP_MULTICAST_IF, IPPROTO_IP, inet_aton

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import Participant
from mcrelay.protocol.legacy.events import PeerJoined
from support import LOOPBACK, WAIT_S, join, next_event, relay_config, running_relay


async def test_a_wildcard_socket_says_the_address_peers_see(
    relay_key_file: Path, keys: list[rsa.RSAPrivateKey]
) -> None:
    # As 'mcrelay send --relay 127.0.0.1' without --interface: bound to 0.0.0.0, sending
    # unicast to the relay (multicast stays pinned to loopback all the same).
    async with running_relay(relay_config(relay_key_file)) as relay:
        async with join(relay, keys[1]) as peer:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            with sock:
                await sock.bind(("0.0.0.0", 0))
                sock.setsockopt(IPPROTO_IP, IP_MULTICAST_IF, inet_aton(LOOPBACK))
                participant = Participant(sock, (LOOPBACK, relay.address[1]), keys[2])
                assert participant.address[0] == "0.0.0.0"
                with trio.fail_after(WAIT_S):
                    await participant.register(retry_interval_s=0.2)
                assert participant.address == (LOOPBACK, sock.getsockname()[1])
                assert await next_event(peer) == PeerJoined(participant.address)
