"""A legacy relay that comes back with a new key: the client says so, not silence.

The "relay" is a plain socket on loopback answering key requests with the keys it is
told; the client keeps alive every 20 ms, so its key check comes within 0.12 s, and
waits 0.1 s for the answers.
"""

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import Participant, open_participant
from mcrelay.client.participant import KEY_CHECK_ROUNDS, RelayKeyChanged
from mcrelay.protocol import legacy
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy import crypto
from support import LOOPBACK, WAIT_S, wait_until

Keys = list[rsa.RSAPrivateKey]
KEEPALIVE_S = 0.02
ANSWER_S = 0.1


async def answer(
    relay: trio.socket.SocketType, keys: list[list[rsa.RSAPrivateKey]], checks: list[int]
) -> None:
    """The n-th key check (a key request beside a keep-alive) is answered with each key
    of ``keys[n]`` (two: a spoofer answers too), every later one as the last; a key
    request to register, as the first. ``checks[0]`` counts the key checks."""
    while True:
        data, source = await relay.recvfrom(65535)
        if data.endswith(legacy.key_request()):
            answers = keys[min(checks[0], len(keys) - 1)]
            checks[0] += data.startswith(legacy.keepalive())
            for key in answers:
                await relay.sendto(legacy.server_key(key.public_key()), source)


async def checked(checks: list[int], count: int) -> None:
    """Until ``count`` key checks were answered, and a little longer (the answer read):
    whatever the load, not a fixed time."""
    await wait_until(lambda: checks[0] >= count)
    await trio.sleep(4 * KEEPALIVE_S)


async def restart_with_a_new_key(
    keys: Keys,
    fingerprint: str | None,
    checks: list[int] | None = None,
    answers: list[list[rsa.RSAPrivateKey]] | None = None,
) -> Participant:
    """Register with a relay of keys[0], whose first key check is answered with it, the
    next ones by keys[2] (or, one list per check, by ``answers``, the last for every
    later check); the participant. ``checks[0]`` counts the key checks answered."""
    served = [[keys[0]], *(answers or [[keys[2]]])]
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
                    participant.key_check_answer_s = ANSWER_S
                    # The first check answered with the same key: nothing.
                    await checked(checks, len(served) + KEY_CHECK_ROUNDS)
            nursery.cancel_scope.cancel()
    return participant


async def test_a_relay_back_with_a_new_key_ends_the_client(keys: Keys) -> None:
    """It went on sending what the relay could no longer read, all lost, in silence
    (found by review: the seed relay makes a new key at every start)."""
    checks = [0]
    with pytest.raises(ExceptionGroup) as info:
        await restart_with_a_new_key(keys, None, checks)
    assert info.group_contains(RelayKeyChanged, match="3 key checks with key", depth=None)
    assert checks[0] >= 1 + KEY_CHECK_ROUNDS  # the same key answered one before: nothing


async def test_a_spoofed_answer_beside_the_relays_ends_nothing(keys: Keys) -> None:
    """Another key answering with ours: someone else's answer, counted."""
    participant = await restart_with_a_new_key(keys, None, answers=[[keys[2], keys[0]]])
    assert participant.dropped[DropReason.BAD_KEY] >= KEY_CHECK_ROUNDS


async def test_another_key_in_fewer_checks_than_it_takes_ends_nothing(keys: Keys) -> None:
    """One answer from the relay's (spoofable) address, while a spoofer spent the relay's
    answers to us (requests from our address), ended the client (found by review)."""
    one_short = [[keys[2]]] * (KEY_CHECK_ROUNDS - 1) + [[keys[0]]]
    participant = await restart_with_a_new_key(keys, None, answers=one_short)
    assert participant.dropped[DropReason.BAD_KEY] >= KEY_CHECK_ROUNDS - 1


async def test_two_other_keys_end_nothing(keys: Keys) -> None:
    """Answers that disagree are not one relay's new key."""
    other = crypto.generate_private_key()
    participant = await restart_with_a_new_key(keys, None, answers=[[keys[2], other]])
    assert participant.dropped[DropReason.BAD_KEY] >= 2 * KEY_CHECK_ROUNDS


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
            nursery.start_soon(answer, relay, [[keys[0]]], [0])
            with trio.fail_after(WAIT_S):
                async with open_participant(
                    destination=relay.getsockname(), interface=LOOPBACK, key=keys[1]
                ) as participant:  # keep-alives every 10 s: no check within this test
                    await trio.sleep(1.2)  # past the roster's end
                    await relay.sendto(legacy.server_key(keys[2].public_key()), participant.address)
                    await trio.sleep(0.2)
                    assert participant.dropped[DropReason.UNKNOWN_TYPE] == 1
            nursery.cancel_scope.cancel()
