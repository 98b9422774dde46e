"""A legacy relay that comes back with a new key: the client says so, not silence.

The "relay" is a plain socket on loopback answering key requests with the key it is
told; the client keeps alive every 20 ms, so its key check comes within 0.12 s.
"""

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import Participant, open_participant
from mcrelay.client.participant import RelayKeyChanged
from mcrelay.protocol import legacy
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy import crypto
from support import LOOPBACK, WAIT_S, wait_until

Keys = list[rsa.RSAPrivateKey]
KEEPALIVE_S = 0.02


async def answer(
    relay: trio.socket.SocketType, keys: list[rsa.RSAPrivateKey], checks: list[int]
) -> None:
    """Every key request gets the last of ``keys`` (the test appends one to 'restart');
    ``checks`` counts the key checks (a key request beside a keep-alive)."""
    while True:
        data, source = await relay.recvfrom(65535)
        if data.endswith(legacy.key_request()):
            checks[0] += data.startswith(legacy.keepalive())
            await relay.sendto(legacy.server_key(keys[-1].public_key()), source)


async def checked(checks: list[int], count: int) -> None:
    """Until ``count`` key checks were answered, and a little longer (the answer read):
    whatever the load, not a fixed time."""
    await wait_until(lambda: checks[0] >= count)
    await trio.sleep(4 * KEEPALIVE_S)


async def restart_with_a_new_key(
    keys: Keys, fingerprint: str | None, checks: list[int] | None = None
) -> Participant:
    """Register with a relay of keys[0], which comes back with keys[2]; the participant.
    ``checks[0]`` counts the key checks answered, with either key."""
    served = [keys[0]]
    checks = [0] if checks is None else checks
    relay = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with relay:
        await relay.bind((LOOPBACK, 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer, relay, served, checks)
            with trio.fail_after(WAIT_S):
                async with open_participant(
                    destination=relay.getsockname(),
                    interface=LOOPBACK,
                    key=keys[1],
                    relay_fingerprint=fingerprint,
                    keepalive_interval_s=KEEPALIVE_S,
                ) as participant:
                    await checked(checks, 1)  # the same key: nothing
                    served.append(keys[2])
                    await checked(checks, checks[0] + 1)  # another key
            nursery.cancel_scope.cancel()
    return participant


async def test_a_relay_back_with_a_new_key_ends_the_client(keys: Keys) -> None:
    """It went on sending what the relay could no longer read, all lost, in silence
    (found by review: the seed relay makes a new key at every start)."""
    checks = [0]
    with pytest.raises(ExceptionGroup) as info:
        await restart_with_a_new_key(keys, None, checks)
    assert info.group_contains(RelayKeyChanged, match="now has key", depth=None)
    assert checks[0] >= 2  # the same key answered a check before, and did not end it


async def test_a_pinned_client_counts_another_key_and_goes_on(keys: Keys) -> None:
    """Its relay is the pinned key's: another key answering is someone else's."""
    participant = await restart_with_a_new_key(keys, crypto.fingerprint(keys[0].public_key()))
    assert participant.dropped[DropReason.BAD_KEY] >= 1


async def test_a_key_nobody_asked_for_ends_nothing(keys: Keys) -> None:
    """One SERVER_PUBLIC_KEY from the relay's (spoofable) address, outside a key check,
    ended every unpinned client (found by review)."""
    relay = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with relay:
        await relay.bind((LOOPBACK, 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer, relay, [keys[0]], [0])
            with trio.fail_after(WAIT_S):
                async with open_participant(
                    destination=relay.getsockname(), interface=LOOPBACK, key=keys[1]
                ) as participant:  # keep-alives every 10 s: no check within this test
                    await trio.sleep(1.2)  # past the roster's end
                    await relay.sendto(legacy.server_key(keys[2].public_key()), participant.address)
                    await trio.sleep(0.2)
                    assert participant.dropped[DropReason.UNKNOWN_TYPE] == 1
            nursery.cancel_scope.cancel()
