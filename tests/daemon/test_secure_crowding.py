"""The secure send buffers past their crowded mark (decision 54): no newcomer is let
in, and a member holding more than its share that keeps the relay waiting on its
acknowledgements is removed, so that a few slow members cannot keep newcomers out.

On the harness with the mock clock. Legacy registrations tell every secure member a
PRESENCE; a secure member acknowledges at each :meth:`SecurePeer.pump` what it read
before (at its last round).
"""

import itertools
from collections.abc import Iterator

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa
from test_secure_bounds import left

from mcrelay.daemon.secure.buffers import CROWDED, STALLED_S
from mcrelay.daemon.secure.profile import SecureProfile
from mcrelay.protocol.secure.messages import LeaveReason
from mcrelay.protocol.secure.sending import MESSAGE_DEADLINE_S
from relay_harness import Harness, client_address, harness_config, open_relay, settle
from secure_harness import HarnessLink, SecurePeer, connected

Keys = list[rsa.RSAPrivateKey]
CHURN = harness_config(
    registrations_per_host_burst=1000,
    registrations_per_host_per_s=1000.0,
    registrations_total_burst=1000,
    registrations_total_per_s=1000.0,
    max_clients_per_host=1000,
)


def registrations(harness: Harness, key: rsa.RSAPrivateKey) -> Iterator[None]:
    """Each step registers one more legacy member (a new address, the same key)."""
    for n in itertools.count(100):
        harness.peer(client_address(n), key).register()
        yield


async def told_of_200(
    harness: Harness, count: int, key: rsa.RSAPrivateKey
) -> tuple[list[SecurePeer], SecureProfile, Iterator[None]]:
    """``count`` secure members told of 200 legacy registrations (none acknowledged yet);
    the secure profile; and what registers more."""
    peers = await connected(harness, count)
    secure = harness.relay.secure
    assert secure is not None
    register = registrations(harness, key)
    for _ in range(200):
        next(register)
    await settle()
    return peers, secure, register


async def test_members_acknowledging_every_8_s_cannot_keep_newcomers_out(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """A member that acknowledged every 8 s, within every message's deadline, while
    legacy registrations went on held the buffers past three quarters of their bound,
    and every newcomer out, for as long as it kept it up (found by review). Past the
    mark, a member over its share whose oldest message waits 5 s for its ACK is
    removed (``stalled``, left unreachable); one that acknowledges within 2 s stays."""
    async with open_relay(keys[0], CHURN) as harness:
        (prompt, slow), secure, register = await told_of_200(harness, 2, keys[2])
        await prompt.pump(rounds=30)  # prompt takes its 200 PRESENCE; slow none
        secure._buffers.limit = int(secure._buffers.total / 0.8)
        newcomer = SecurePeer(HarnessLink(harness), client_address(9))
        start = trio.current_time()
        joined_after = None
        for second in range(1, 25):
            await trio.sleep_until(start + second)
            for _ in range(2):  # as many as slow takes: 16 every 8 s
                next(register)
            await prompt.pump(rounds=1)
            if second % 8 == 0:  # what it read 8 s ago, and what that let through
                await slow.pump(rounds=2)
            if await newcomer.handshake():
                joined_after = second
                break
        await slow_removed_newcomer_in(harness, prompt, slow, joined_after, 24)


async def slow_removed_newcomer_in(
    harness: Harness, prompt: SecurePeer, slow: SecurePeer, joined_after: int | None, tried_s: int
) -> None:
    """The newcomer got in soon after the buffers crowded, the slow member removed
    (``stalled``) and the prompt one told it left, unreachable."""
    assert joined_after is not None, f"the newcomer was kept out for {tried_s} s"
    assert joined_after <= STALLED_S + 2
    assert harness.relay.roster.get(slow.id) is None
    assert harness.relay.roster.get(prompt.id) is not None
    assert harness.dropped("stalled") == 1
    await prompt.pump(rounds=10)
    assert left(slow, prompt.take()) == [LeaveReason.UNREACHABLE]


@pytest.mark.parametrize(("every_s", "registered_per_s"), [(4, 2), (1, 8)])
async def test_members_acknowledging_within_5_s_whose_queues_stay_are_removed(
    keys: Keys, autojump_clock: trio.testing.MockClock, every_s: int, registered_per_s: int
) -> None:
    """A member acknowledging a window every 4 s, within the 5 s mark, while legacy
    registrations added as much as it drained, held the buffers crowded and kept a
    newcomer out for 28 s (found by review); every second, likewise, with the
    registrations faster. Its held bytes did not go down over 5 s while its window
    waited on it most of that time: removed (``stalled``), and the newcomer is in.
    A member acknowledging every 0.1 s stays however much it holds."""
    async with open_relay(keys[0], CHURN) as harness:
        (prompt, slow), secure, register = await told_of_200(harness, 2, keys[2])
        await prompt.pump(rounds=30)
        secure._buffers.limit = int(secure._buffers.total / 0.8)
        newcomer = SecurePeer(HarnessLink(harness), client_address(9))
        await slow.pump(rounds=1)  # slow on its cadence from the start
        start = trio.current_time()
        joined_after = None
        for second in range(1, 29):
            for _ in range(registered_per_s):
                next(register)
            for tenth in range(10):
                await trio.sleep_until(start + second - 1 + tenth / 10)
                await prompt.pump(rounds=1)
            await trio.sleep_until(start + second)
            if second % every_s == 0:
                await slow.pump(rounds=1)
            if await newcomer.handshake():
                joined_after = second
                break
        await slow_removed_newcomer_in(harness, prompt, slow, joined_after, 28)


async def test_prompt_members_over_their_share_stay_while_registrations_go_on(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """While the buffers are crowded, members that acknowledge every 0.1 s stay
    however long their PRESENCE has waited and although registrations add as much as
    they drain: their window seldom waits on them (a deadline of 10 s on what waits
    removed 1,435 of 1,500 honest members of a mass join)."""
    async with open_relay(keys[0], CHURN) as harness:
        (a, b), secure, register = await told_of_200(harness, 2, keys[2])
        start = trio.current_time()
        secure._buffers.limit = int(secure._buffers.total / 0.8)
        for tenth in range(1, 80):  # within the 1,000 registrations of one host
            await trio.sleep_until(start + tenth / 10)
            for _ in range(8):  # as many as a and b take at each step
                next(register)
            await a.pump(rounds=1)
            await b.pump(rounds=1)
        assert all(harness.relay.roster.get(peer.id) is not None for peer in (a, b))
        assert "stalled" not in harness.drops()
        assert "unreachable" not in harness.drops()
        share = CROWDED * secure._buffers.limit / 2
        assert secure._buffers.crowded()
        assert all(peer.copy_bytes > share for peer in secure._peers.values())


async def test_members_whose_queues_shrink_stay_and_so_do_those_under_their_share(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Members acknowledging a window every second, their queues going down (while
    crowded no newcomer adds to them; registrations add half what they drain), stay:
    so does an honest member of a mass join whose window the relay, slow, fills late,
    or whose acknowledgements it reads late. So does a member that acknowledges
    nothing but holds less than its share (it is not what keeps newcomers out): the
    relay looks at its holders only."""
    async with open_relay(keys[0], CHURN) as harness:
        (a, b, quiet), secure, register = await told_of_200(harness, 3, keys[2])
        await quiet.pump(rounds=30)  # quiet takes its 200 PRESENCE, then acknowledges nothing
        start = trio.current_time()
        secure._buffers.limit = int(secure._buffers.total / 0.9)
        for second in range(1, int(MESSAGE_DEADLINE_S)):  # quiet's messages fail at 10 s
            await trio.sleep_until(start + second)
            for _ in range(4):  # half what a and b drain a second
                next(register)
            await a.pump(rounds=1)
            await b.pump(rounds=1)
        assert all(harness.relay.roster.get(peer.id) is not None for peer in (a, b, quiet))
        assert "stalled" not in harness.drops()
        assert "unreachable" not in harness.drops()
        held = {peer.key: peer.copy_bytes for peer in secure._peers.values()}
        share = CROWDED * secure._buffers.limit / 3
        assert secure._buffers.crowded()
        assert held[a.static.public] > share
        assert held[b.static.public] > share
        assert held[quiet.static.public] < share
        oldest = secure._peers[quiet.static.public].session.channel.oldest_sent
        assert oldest is not None
        assert oldest <= trio.current_time() - STALLED_S
