"""A relayed datagram that the network duplicated is delivered once.

The "relay" here is a plain socket on loopback that answers the key request
and then sends hand-made RELAYED_MESSAGE datagrams, so the test controls the
exact bytes: the same datagram twice (a network duplicate), then the same text
sealed again (a new message that happens to repeat the text), then another.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import Participant, open_participant
from mcrelay.client import participant as participant_module
from mcrelay.client.participant import MessageReceived
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason
from support import LOOPBACK, WAIT_S, next_event

SENDER: Address = ("127.0.0.1", 40001)


async def answer_key_requests(relay: trio.socket.SocketType, key: rsa.RSAPrivateKey) -> None:
    """Play the relay's part of registration: every key request gets our key."""
    while True:
        data, source = await relay.recvfrom(65535)
        if data == legacy.key_request():
            await relay.sendto(legacy.server_key(key.public_key()), source)


@asynccontextmanager
async def fake_relay_and_participant(
    relay_key: rsa.RSAPrivateKey, participant_key: rsa.RSAPrivateKey
) -> AsyncIterator[tuple[trio.socket.SocketType, Participant]]:
    relay = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with relay:
        await relay.bind((LOOPBACK, 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_key_requests, relay, relay_key)
            with trio.fail_after(WAIT_S):
                async with open_participant(
                    destination=relay.getsockname(),
                    interface=LOOPBACK,
                    key=participant_key,
                    retry_interval_s=0.2,
                ) as participant:
                    yield relay, participant
            nursery.cancel_scope.cancel()


async def next_message(participant: Participant) -> MessageReceived:
    event = await next_event(participant)
    assert isinstance(event, MessageReceived), event
    return event


async def test_a_duplicated_relayed_datagram_is_delivered_once(
    keys: list[rsa.RSAPrivateKey],
) -> None:
    relay_key, participant_key = keys[0], keys[1]
    async with fake_relay_and_participant(relay_key, participant_key) as (relay, participant):
        public = participant_key.public_key()
        datagram = legacy.relayed_message(public, SENDER, b"hello")
        resealed = legacy.relayed_message(public, SENDER, b"hello")
        end = legacy.relayed_message(public, SENDER, b"end")
        assert resealed != datagram  # RSA-OAEP is randomized
        for data in (datagram, datagram, resealed, end):
            await relay.sendto(data, participant.address)

        received = [(await next_message(participant)).data for _ in range(3)]
        assert received == [b"hello", b"hello", b"end"]
        assert participant.dropped[DropReason.DUPLICATE_MESSAGE] == 1


async def test_duplicate_memory_is_bounded(
    keys: list[rsa.RSAPrivateKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = 3
    monkeypatch.setattr(participant_module, "DUPLICATE_MEMORY_MESSAGES", memory)
    relay_key, participant_key = keys[0], keys[1]
    async with fake_relay_and_participant(relay_key, participant_key) as (relay, participant):
        public = participant_key.public_key()
        first = legacy.relayed_message(public, SENDER, b"first")
        await relay.sendto(first, participant.address)
        assert (await next_message(participant)).data == b"first"
        for number in range(memory):
            text = b"%d" % number
            await relay.sendto(legacy.relayed_message(public, SENDER, text), participant.address)
            assert (await next_message(participant)).data == text
        # The first digest has been forgotten: a copy this late is delivered again.
        await relay.sendto(first, participant.address)
        assert (await next_message(participant)).data == b"first"
        assert participant.dropped[DropReason.DUPLICATE_MESSAGE] == 0


async def test_a_relay_whose_key_the_client_refuses_is_said_so() -> None:
    """It was 'no relay answered', though one did, with a key of 1,024 bits (found by
    review)."""
    weak = rsa.generate_private_key(65537, 1024)
    relay = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with relay:
        await relay.bind((LOOPBACK, 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer_key_requests, relay, weak)
            with pytest.raises(participant_module.RelayUnreachable, match="RSA key of 1024 bits"):
                async with open_participant(
                    destination=relay.getsockname(),
                    interface=LOOPBACK,
                    retry_interval_s=0.1,
                    register_timeout_s=0.35,
                ):
                    pass
            nursery.cancel_scope.cancel()
