"""Several CLIENT_PUBLIC_KEYs in one datagram: the relay ends where acting on every TLV
in order would (the page: "on 4 the relay registers").

Only the last key of a datagram acted, at its place: a refused last key left a valid
one before it unused, and fragments between two keys of a new source were dropped as
unregistered (found by review). Keys in a row now act as the last one accepted.
"""

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from mcrelay.client import MessageReceived
from mcrelay.protocol import legacy
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import PeerJoined, ServerKey
from mcrelay.protocol.legacy.tlv import TlvType, encode_tlv
from relay_harness import client_address, open_relay, settle

BAD = encode_tlv(TlvType.CLIENT_PUBLIC_KEY, b"not a key")


def key_id(key: rsa.RSAPrivateKey) -> str:
    return crypto.fingerprint(key.public_key())


async def test_a_valid_key_then_a_refused_one_registers_the_source(
    keys: list[rsa.RSAPrivateKey], autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        (watcher,) = await harness.members(keys, 1)
        newcomer = harness.peer(client_address(5), keys[2])
        newcomer.send(legacy.client_key(keys[2].public_key()) + BAD)
        await settle()
        assert newcomer.registered()
        assert watcher.take() == [PeerJoined(newcomer.address)]
        assert harness.drops() == {"bad_key": 1}


async def test_disconnect_new_key_refused_key_leaves_the_member_with_the_new_key(
    keys: list[rsa.RSAPrivateKey], autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        _, member = await harness.members(keys, 2)
        member.send(legacy.disconnect() + legacy.client_key(keys[3].public_key()) + BAD)
        await settle()
        registered = harness.relay.roster.at(member.address)
        assert registered is not None
        assert registered.identity.key_id == key_id(keys[3])


async def test_a_new_key_then_a_refused_one_rekeys_the_member(
    keys: list[rsa.RSAPrivateKey], autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        watcher, member = await harness.members(keys, 2)
        member.send(legacy.client_key(keys[3].public_key()) + BAD + BAD)
        await settle()
        registered = harness.relay.roster.at(member.address)
        assert registered is not None
        assert registered.identity.key_id == key_id(keys[3])
        assert watcher.take() == [PeerJoined(member.address)]  # the re-key, announced
        assert harness.drops() == {"bad_key": 2}


async def test_fragments_between_two_keys_of_a_new_source_are_relayed(
    keys: list[rsa.RSAPrivateKey], autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        (watcher,) = await harness.members(keys, 1)
        newcomer = harness.peer(client_address(5), keys[2])
        key = legacy.client_key(keys[2].public_key())
        newcomer.send(key + b"".join(newcomer.message(b"hello")) + key)
        await settle()
        assert watcher.take() == [
            PeerJoined(newcomer.address),
            MessageReceived(newcomer.address, b"hello"),
        ]


async def test_keys_in_a_row_act_once_and_cost_a_parse_per_key_size_at_most(
    keys: list[rsa.RSAPrivateKey],
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The keys before the last accepted one are not read: a member's B, C, A is no
    re-key of A (the two on the way are not made, nor announced). Refused keys are each
    parsed, except those of a length no key has: 16,376 empty keys cost one parse, and a
    datagram of refused keys of a 2048-bit key's length 143."""
    parsed: list[bytes] = []
    parse = crypto.wire_public_key_untrusted

    def counted(value: bytes) -> rsa.RSAPublicKey:
        parsed.append(value)
        return parse(value)

    async with open_relay(keys[0]) as harness:
        watcher, member = await harness.members(keys, 2)
        monkeypatch.setattr(crypto, "wire_public_key_untrusted", counted)
        member.send(
            b"".join(legacy.client_key(k.public_key()) for k in (keys[3], keys[4], keys[2]))
        )
        await settle()
        assert (watcher.take(), len(parsed)) == ([], 1)
        parsed.clear()
        member.send(encode_tlv(TlvType.CLIENT_PUBLIC_KEY) * 16376)
        await settle()
        assert (len(parsed), harness.drops()) == (1, {"bad_key": 16376})
        parsed.clear()
        pem = crypto.public_key_to_pem(keys[3].public_key())
        refused = encode_tlv(TlvType.CLIENT_PUBLIC_KEY, pem.replace(b"M", b"-", 1))
        member.send(refused * (legacy.MAX_UDP_PAYLOAD // len(refused)))
        await settle()
        assert len(parsed) == legacy.MAX_UDP_PAYLOAD // len(refused) == 143
        registered = harness.relay.roster.at(member.address)
        assert registered is not None
        assert registered.identity.key_id == key_id(keys[2])


# Random datagrams against acting on every TLV in order (a model of it: the subject's
# key, or none, after each TLV; a fragment counts while it has one).

PIECES = ["F0", "F1", "G0", "G1", "A", "B", "X", "R", "D", "K", "U"]
"""Fragments of two messages (F, G), the subject's keys A and B, a refused key X, a key
request, DISCONNECT, KEEPALIVE and an unknown type."""


def in_order(tokens: list[str], registered: bool) -> tuple[str | None, list[bytes], bool]:
    """The subject's key at the end, the messages relayed, and whether it was answered."""
    key = "A" if registered else None
    got: dict[str, set[str]] = {"F": set(), "G": set()}
    relayed: list[bytes] = []
    for token in tokens:
        if token in ("A", "B"):
            key = token
        elif token == "D":
            key = None
        elif token[0] in got and key is not None:
            got[token[0]].add(token)
            text = TEXTS[token[0]]
            if len(got[token[0]]) == 2 and text not in relayed:
                relayed.append(text)
    return key, relayed, "R" in tokens


TEXTS = {"F": b"hello", "G": b"second"}


async def relay_outcome(
    keys: list[rsa.RSAPrivateKey], tokens: list[str], registered: bool
) -> tuple[str | None, list[bytes], bool]:
    async with open_relay(keys[0]) as harness:
        (watcher,) = await harness.members(keys, 1)
        subject = harness.peer(client_address(1), keys[2])
        if registered:
            subject.register()
        await settle()
        watcher.take()
        subject.take_raw()
        fragments = {
            f"{name}{n}": datagram
            for name, msg_id in (("F", b"\0\0\0\1"), ("G", b"\0\0\0\2"))
            for n, datagram in enumerate(subject.message(TEXTS[name], msg_id))
        }
        pieces = {
            **fragments,
            "A": legacy.client_key(keys[2].public_key()),
            "B": legacy.client_key(keys[3].public_key()),
            "X": BAD,
            "R": legacy.key_request(),
            "D": legacy.disconnect(),
            "K": legacy.keepalive(),
            "U": encode_tlv(0x7777),
        }
        subject.send(b"".join(pieces[token] for token in tokens))
        await settle()
        await trio.sleep(1.0)  # the messages' crypto and sends
        member = harness.relay.roster.at(subject.address)
        names = {key_id(keys[2]): "A", key_id(keys[3]): "B"}
        key = None if member is None else names[member.identity.key_id]
        relayed = [message.data for message in watcher.messages()]
        answered = any(isinstance(event, ServerKey) for event in subject.take_raw())
        return key, relayed, answered


@settings(max_examples=150, deadline=None)
@given(tokens=st.lists(st.sampled_from(PIECES), min_size=1, max_size=7), registered=st.booleans())
def test_a_datagram_ends_where_acting_on_each_tlv_in_order_would(
    keys: list[rsa.RSAPrivateKey], tokens: list[str], registered: bool
) -> None:
    """The subject's key (or none), the messages relayed and the key answer, for random
    datagrams of fragments, keys (a refused one too), 7, 8, 9 and an unknown type."""
    got = trio.run(
        relay_outcome, keys, tokens, registered, clock=trio.testing.MockClock(autojump_threshold=0)
    )
    assert got == in_order(tokens, registered)
