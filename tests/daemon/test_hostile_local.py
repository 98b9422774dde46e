"""What hostile local users tried (issue 9): one-datagram stalls and taking reassembly
over from many registered sources (crowding the registry: ``test_relay_members``).
Each ran against the landed relay and hurt it; each is a test on the harness here.
"""

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.legacy.events import PeerLeft, ServerKey
from mcrelay.protocol.legacy.fragments import Fragment, encode_fragment
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from relay_harness import Harness, client_address, open_relay, settle

Keys = list[rsa.RSAPrivateKey]


def fake(n: int) -> Address:
    return (f"127.0.{1 + n // 200}.{1 + n % 200}", 40000 + n)


async def test_a_64_kb_datagram_of_empty_tlvs_acts_once_and_counts_in_one_drop(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """16,376 empty TLVs: one unknown_type drop of 16,376; a stranger's keep-alives,
    key requests and DISCONNECTs act (and are counted) once, its key request answered."""
    async with open_relay(keys[0]) as harness:
        for type_ in (TlvType.KEEPALIVE, TlvType.SERVER_KEY_REQUEST, TlvType.DISCONNECT, 0x7777):
            harness.relay.handle_datagram(encode_tlv(type_) * 16376, fake(0), trio.current_time())
        await settle()
        assert harness.drops() == {"unregistered": 2, "unknown_type": 16376}
        assert len(harness.sock.sent) == 1


async def test_a_strangers_datagram_of_fragments_is_counted_unread_until_its_key(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """5,458 fragments in one datagram from a source not registered cost the relay 12
    to 26 ms decoding each, to drop each: they are counted unread, in one drop; a key
    in the datagram registers it, and its fragments after the key are read."""
    async with open_relay(keys[0]) as harness:
        piece = encode_fragment(Fragment(b"\x00\x00\x00\x01", 0, 2, b""))
        harness.relay.handle_datagram(piece * 5458, fake(0), trio.current_time())
        await settle()
        assert harness.drops() == {"unregistered": 5458}
        reassembler = harness.relay.legacy.reassembler if harness.relay.legacy else None
        assert reassembler is not None
        assert reassembler.in_flight == 0
        peer = harness.peer(client_address(1), keys[1])
        peer.send(piece * 3 + legacy.client_key(keys[1].public_key()) + piece)
        await settle()
        assert peer.registered()
        assert harness.drops() == {"unregistered": 5461}
        assert reassembler.in_flight == 1


async def test_a_key_and_a_key_request_beside_unknown_types_register_and_are_answered(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Reproductions of the conformance review: more than four TLVs dropped all."""
    async with open_relay(keys[0]) as harness:
        peer = harness.peer(client_address(1), keys[1])
        peer.send(
            legacy.client_key(keys[1].public_key())
            + legacy.key_request()
            + encode_tlv(0x7001) * 2
            + encode_tlv(0x7002, b"later")
        )
        await settle()
        assert peer.registered()
        assert peer.take() == [ServerKey(legacy.server_key(keys[0].public_key())[4:])]
        assert harness.drops() == {"unknown_type": 3}


async def test_a_disconnect_followed_by_keep_alives_removes_the_client(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a, b = await harness.members(keys, 2)
        b.send(legacy.disconnect() + legacy.keepalive() * 4)
        await settle()
        assert not b.registered()
        assert a.take() == [PeerLeft(b.address)]
        assert harness.drops() == {"unregistered": 1}  # the keep-alives after it, as one


async def test_a_datagram_of_five_keep_alives_keeps_a_client_alive(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], client_timeout_s=30.0) as harness:
        (peer,) = await harness.members(keys, 1)
        start = trio.current_time()
        for tick in range(1, 10):
            await trio.sleep_until(start + 10.0 * tick)
            peer.send(legacy.keepalive() * 5)
        await trio.sleep_until(start + 100.0)
        await settle()
        assert peer.registered()
        assert harness.drops() == {}


def register_fakes(harness: Harness, key: rsa.RSAPrivateKey, count: int) -> list[Address]:
    sources = [fake(n) for n in range(count)]
    for source in sources:
        harness.peer(source, key).register()
    assert all(harness.relay.roster.at(source) is not None for source in sources)
    return sources


async def test_a_well_behaved_sender_gets_through_while_150_sources_hold_reassembly(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """150 registered sources each keep 8 never-completing messages in reassembly, past
    the 4 MiB cap; before, legit delivery fell to 128 of 317. Eviction makes it all."""
    async with open_relay(keys[0]) as harness:
        relay = harness.relay
        attackers = register_fakes(harness, keys[3], 150)
        a, b = harness.peer(client_address(1), keys[1]), harness.peer(client_address(2), keys[2])
        a.register()
        b.register()
        await settle()
        b.take()
        for round_ in range(20):
            for source in attackers:
                for msg in range(8):
                    fragment = Fragment(bytes([round_, msg, 1, 2]), 0, 2, b"\x00" * 8)
                    relay.handle_datagram(encode_fragment(fragment), source, trio.current_time())
            assert relay.statistics().reassembly_bytes > relay.config.max_reassembly_bytes * 0.9
            text = f"legit {round_}".encode()
            a.say(text, round_.to_bytes(4, "big"))
            await settle()
            assert b.messages() == [MessageReceived(a.address, text)]
            await trio.sleep(0.1)
        assert harness.dropped("reassembly_evicted") > 0
        assert relay.statistics().reassembly_bytes <= relay.config.max_reassembly_bytes
