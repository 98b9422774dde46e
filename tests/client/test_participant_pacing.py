"""A legacy participant paces its fragments: a burst, then a steady rate, so that a relay
reading nothing while it decrypts a message does not lose the next one's fragments."""

from itertools import pairwise
from typing import cast

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import Participant
from mcrelay.client.participant import PACE_BURST_FRAGMENTS, PACE_FRAGMENTS_PER_S
from mcrelay.protocol.addresses import Address
from support import LOOPBACK

RELAY: Address = (LOOPBACK, 5007)
LARGEST_MESSAGE = "é" * 16384
"""32,768 bytes: 176 fragments."""


class RecordingSocket:
    """Stands in for the participant's socket: records when each datagram left."""

    def __init__(self) -> None:
        self.sent_at: list[float] = []

    def getsockname(self) -> Address:
        return (LOOPBACK, 40001)

    async def sendto(self, data: bytes, address: Address) -> int:
        assert address == RELAY
        self.sent_at.append(trio.current_time())
        return len(data)


def participant(sock: RecordingSocket, keys: list[rsa.RSAPrivateKey]) -> Participant:
    sender = Participant(cast(trio.socket.SocketType, sock), RELAY, keys[1])
    sender.relay_key = keys[0].public_key()
    return sender


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in pairwise(times)]


async def test_a_burst_goes_at_once_then_the_rest_at_the_pace(
    autojump_clock: trio.testing.MockClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    sock = RecordingSocket()
    sender = participant(sock, keys)
    start = trio.current_time()
    await sender.send(LARGEST_MESSAGE)
    assert len(sock.sent_at) == 176
    assert sock.sent_at[:PACE_BURST_FRAGMENTS] == [start] * PACE_BURST_FRAGMENTS
    paced = gaps(sock.sent_at[PACE_BURST_FRAGMENTS - 1 :])
    assert paced == pytest.approx([1 / PACE_FRAGMENTS_PER_S] * len(paced))


async def test_the_pace_holds_across_messages_and_a_pause_earns_the_burst_again(
    autojump_clock: trio.testing.MockClock, keys: list[rsa.RSAPrivateKey]
) -> None:
    sock = RecordingSocket()
    sender = participant(sock, keys)
    await sender.send(LARGEST_MESSAGE)
    await sender.send("short")  # two fragments, still behind the first message's debt
    assert gaps(sock.sent_at[-3:]) == pytest.approx([1 / PACE_FRAGMENTS_PER_S] * 2)
    await trio.sleep(2 * PACE_BURST_FRAGMENTS / PACE_FRAGMENTS_PER_S)
    resumed = trio.current_time()
    await sender.send(LARGEST_MESSAGE)
    assert sock.sent_at[-176 : -176 + PACE_BURST_FRAGMENTS] == [resumed] * PACE_BURST_FRAGMENTS
