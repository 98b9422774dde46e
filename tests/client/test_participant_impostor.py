"""A legacy client takes its relay's key only from the port it asked.

Any local user could answer a key request first, from a socket of its own: the
client took that address for the relay's, pinned key or not (an impostor showing
the relay's public key, which anyone may ask for), or gave up on a pinned key's
mismatch (found by review). The "relay" and the "impostor" are plain loopback
sockets; the impostor answers first, from another port.
"""

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import open_participant
from mcrelay.protocol import legacy
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy import crypto
from support import LOOPBACK, WAIT_S, wait_until

Keys = list[rsa.RSAPrivateKey]


async def relay_after_impostor(
    relay: trio.socket.SocketType,
    impostor: trio.socket.SocketType,
    relay_key: rsa.RSAPrivateKey,
    impostor_key: rsa.RSAPrivateKey,
) -> None:
    """Each key request: the impostor's answer, then the relay's (in that order on
    loopback)."""
    while True:
        data, source = await relay.recvfrom(65535)
        if data.endswith(legacy.key_request()):
            await impostor.sendto(legacy.server_key(impostor_key.public_key()), source)
            await relay.sendto(legacy.server_key(relay_key.public_key()), source)


async def register_beside_an_impostor(
    keys: Keys, impostor_key: rsa.RSAPrivateKey, *, pinned: bool
) -> None:
    """A participant registers with a relay of keys[0] (pinned or not) while an impostor
    answers first with ``impostor_key``."""
    relay = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    impostor = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    with relay, impostor:
        await relay.bind((LOOPBACK, 0))
        await impostor.bind((LOOPBACK, 0))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_after_impostor, relay, impostor, keys[0], impostor_key)
            with trio.fail_after(WAIT_S):
                async with open_participant(
                    destination=relay.getsockname(),
                    interface=LOOPBACK,
                    key=keys[1],
                    relay_fingerprint=crypto.fingerprint(keys[0].public_key()) if pinned else None,
                ) as participant:
                    assert participant.relay_address == relay.getsockname()
                    assert participant.relay_fingerprint == crypto.fingerprint(keys[0].public_key())
                    assert participant.dropped[DropReason.NOT_FROM_RELAY] >= 1
                    # Later, what comes from elsewhere is not even decoded.
                    await impostor.sendto(b"\xff" * 3, participant.address)
                    await wait_until(lambda: participant.dropped[DropReason.NOT_FROM_RELAY] >= 2)
                    assert participant.dropped[DropReason.MALFORMED] == 0
            nursery.cancel_scope.cancel()


async def test_an_impostors_key_is_not_taken(keys: Keys) -> None:
    await register_beside_an_impostor(keys, keys[2], pinned=False)


async def test_an_impostors_other_key_does_not_end_a_pinned_client(keys: Keys) -> None:
    await register_beside_an_impostor(keys, keys[2], pinned=True)


async def test_an_impostor_showing_the_relays_own_key_is_not_taken(keys: Keys) -> None:
    await register_beside_an_impostor(keys, keys[0], pinned=True)
