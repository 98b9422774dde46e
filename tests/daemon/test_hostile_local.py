"""What hostile local users tried (issue 9): one-datagram stalls, taking reassembly
over from many registered sources, and crowding the registry. Each ran against the
landed relay and hurt it; each is a loopback test here.

Fake sources are addresses in 127.0.0.0/8 fed straight to ``Relay.handle_datagram``:
whatever the relay answers them goes to loopback.
"""

from pathlib import Path

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.daemon.relay import Relay
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.legacy.events import PeerJoined
from mcrelay.protocol.legacy.fragments import Fragment, encode_fragment
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from support import dropped, join, next_event, relay_config, running_relay

Keys = list[rsa.RSAPrivateKey]


def fake(n: int) -> Address:
    return (f"127.0.{1 + n // 200}.{1 + n % 200}", 40000 + n)


async def test_a_64_kb_datagram_of_empty_tlvs_is_one_drop(relay_key_file: Path) -> None:
    async with running_relay(relay_config(relay_key_file)) as relay:
        for type_ in (TlvType.KEEPALIVE, TlvType.SERVER_KEY_REQUEST, TlvType.DISCONNECT, 0x7777):
            relay.handle_datagram(encode_tlv(type_) * 16376, fake(0), trio.current_time())
        counts = relay.statistics().dropped
        assert isinstance(counts, dict)
        assert {reason: n for reason, n in counts.items() if n} == {"too_many_tlvs": 4}


def register_fakes(relay: Relay, key: rsa.RSAPrivateKey, count: int) -> list[Address]:
    sources = [fake(n) for n in range(count)]
    for source in sources:
        relay.handle_datagram(legacy.client_key(key.public_key()), source, trio.current_time())
    assert all(relay.roster.at(source) is not None for source in sources)
    return sources


async def test_a_well_behaved_sender_gets_through_while_150_sources_hold_reassembly(
    relay_key_file: Path, keys: Keys
) -> None:
    """150 registered sources each keep 8 never-completing messages in reassembly, past
    the 4 MiB cap; before, legit delivery fell to 128 of 317."""
    async with running_relay(relay_config(relay_key_file)) as relay:
        attackers = register_fakes(relay, keys[3], 150)
        async with join(relay, keys[1]) as a, join(relay, keys[2]) as b:
            while await next_event(b) != PeerPresent(a.address):
                pass
            delivered = 0
            for round_ in range(20):
                for source in attackers:
                    for msg in range(8):
                        fragment = Fragment(bytes([round_, msg, 1, 2]), 0, 2, b"\x00" * 8)
                        relay.handle_datagram(
                            encode_fragment(fragment), source, trio.current_time()
                        )
                assert (
                    relay.legacy.reassembler.buffered_bytes
                    > relay.config.max_reassembly_bytes * 0.9
                )
                text = f"legit {round_}".encode()
                await a.send(text)
                with trio.move_on_after(2):
                    while (event := await next_event(b)) != MessageReceived(a.address, text):
                        assert isinstance(event, PeerJoined | PeerPresent)
                    delivered += 1
            assert delivered >= 19  # 95 %; eviction makes it all of them
            assert dropped(relay, "reassembly_evicted") > 0
