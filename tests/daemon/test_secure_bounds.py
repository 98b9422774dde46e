"""The secure profile's bounds hold against clients that never finish or never read:
unconfirmed handshakes (4,096, 15 s), a member's queue (removed unreachable), all send
buffers together (``max_send_queue_bytes``), and back-pressure before removal.

On the harness with the mock clock; secure clients are the sans-I/O parts driven by
hand. A member that "never reads" is one the test never pumps.
"""

from collections.abc import Sequence

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.daemon.secure import profile
from mcrelay.daemon.secure.peers import Details
from mcrelay.protocol.secure.admission import MAX_UNCONFIRMED_HANDSHAKES
from mcrelay.protocol.secure.messages import (
    MAX_CHAT_BYTES,
    LeaveReason,
    Presence,
    PresenceEvent,
    RelayedChat,
)
from mcrelay.protocol.secure.sending import MESSAGE_WINDOW, QUEUE_LIMIT
from mcrelay.protocol.secure.session import PENDING_LIFETIME_S
from relay_harness import Harness, client_address, open_relay, settle
from secure_harness import HarnessLink, SecurePeer, connected

Keys = list[rsa.RSAPrivateKey]
CAP = 8
"""The unconfirmed-handshake cap for the test (the page's is 4,096: checked below)."""


def secure_figures(harness: Harness) -> dict[str, int]:
    return harness.relay.statistics().profiles["secure"]


def left(peer: SecurePeer, messages: Sequence[object]) -> list[LeaveReason]:
    return [
        m.reason
        for m in messages
        if isinstance(m, Presence)
        and m.event is PresenceEvent.LEFT
        and m.origin.id == peer.static.public
    ]


async def test_unconfirmed_handshakes_are_capped_and_forgotten_after_15_s(
    keys: Keys, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (MAX_UNCONFIRMED_HANDSHAKES, PENDING_LIFETIME_S) == (4096, 15.0)
    monkeypatch.setattr(profile, "MAX_UNCONFIRMED_HANDSHAKES", CAP)
    async with open_relay(keys[0]) as harness:
        member = SecurePeer(HarnessLink(harness), client_address(0))
        await member.connect()
        waiting = [SecurePeer(HarnessLink(harness), client_address(1 + n)) for n in range(CAP)]
        for peer in waiting:
            assert await peer.handshake()  # RESPONSE, and never the DATA that confirms it
        assert secure_figures(harness)["handshakes_pending"] == CAP

        late = SecurePeer(HarnessLink(harness), client_address(100))
        assert not await late.handshake()  # no RESPONSE past the cap
        assert late.others == []
        assert harness.drops() == {"registry_full": 1}
        assert await member.handshake()  # a member's rekey is not held back by the cap
        await member.pump()
        assert secure_figures(harness)["handshakes_pending"] == CAP

        await trio.sleep(14.0)
        await member.pump()
        assert secure_figures(harness)["handshakes_pending"] == CAP
        await trio.sleep(1.5)
        await settle()
        assert secure_figures(harness)["handshakes_pending"] == 0
        waiting[0].flush()  # its first DATA, too late: the keypair is forgotten
        assert harness.drops()["unknown_index"] >= 1
        assert harness.relay.roster.get(waiting[0].id) is None
        await late.connect()  # room again
        assert len(harness.relay.roster) == 2


async def test_a_member_whose_queue_overflows_is_removed_unreachable(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], max_pending_relays=8) as harness:
        a = SecurePeer(HarnessLink(harness), client_address(0))
        b = SecurePeer(HarnessLink(harness), client_address(1))
        await a.connect()
        await b.connect()  # and never reads again
        await a.pump()
        a.take()
        relay = harness.relay
        stuck = relay.roster.get(b.id)
        assert stuck is not None
        # Its queue, and what the pipeline may hold when back-pressure begins.
        bound = MESSAGE_WINDOW + QUEUE_LIMIT + relay.config.max_pending_relays
        for n in range(bound):  # the relay's own messages start whatever back-pressure says
            assert await relay.post(b"post %d" % n, [stuck]) == 1
        assert relay.roster.get(b.id) is not None
        assert await relay.post(b"one too many", [stuck]) == 0
        assert relay.roster.get(b.id) is None
        await a.pump()
        assert left(b, a.take()) == [LeaveReason.UNREACHABLE]
        assert harness.drops()["unreachable"] == 1
        await trio.sleep(0.05)
        await a.pump()  # a acknowledges b's leave (the relay's own messages count too)
        assert secure_figures(harness)["send_buffer_bytes"] == 0


async def test_all_send_buffers_together_stay_within_the_bound(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    bound = 131072
    async with open_relay(keys[0], max_send_queue_bytes=bound) as harness:
        a, b, c = (SecurePeer(HarnessLink(harness), client_address(n)) for n in range(3))
        for peer in (a, b, c):
            await peer.connect()  # b and c never read again
        await a.pump()
        a.take()
        big = b"x" * MAX_CHAT_BYTES  # a copy of 65,589 bytes: two do not fit in 128 KiB
        await a.say(big)  # b's copy fits; c's would not: b holds the most, b goes
        assert harness.relay.roster.get(b.id) is None
        assert harness.relay.roster.get(c.id) is not None
        assert secure_figures(harness)["send_buffer_bytes"] <= bound
        await trio.sleep(0.05)
        await a.pump()
        await a.say(big)  # c would hold two: c holds the most, c goes
        assert harness.relay.roster.get(c.id) is None
        await trio.sleep(0.05)
        await a.pump()  # a acknowledges the leaves (the relay's own messages count too)
        assert secure_figures(harness)["send_buffer_bytes"] == 0
        await trio.sleep(0.05)
        await a.pump()
        messages = a.take()
        assert left(b, messages) == [LeaveReason.UNREACHABLE]
        assert left(c, messages) == [LeaveReason.UNREACHABLE]
        assert harness.drops()["unreachable"] == 2


async def test_backpressure_refuses_new_messages_until_the_slow_member_catches_up(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a = SecurePeer(HarnessLink(harness), client_address(0))
        b = SecurePeer(HarnessLink(harness), client_address(1))
        await a.connect()
        await b.connect()  # b reads nothing for a while
        await a.pump()
        half_full = MESSAGE_WINDOW + QUEUE_LIMIT // 2
        texts = [b"m%d" % n for n in range(half_full + 3)]
        for text in texts:
            await a.say(text)
            await trio.sleep(0.02)  # the relay's ACK
            await a.pump()
        assert secure_figures(harness)["copies_sent"] == half_full
        assert harness.drops()["backpressure"] >= 1
        assert harness.relay.roster.get(b.id) is not None

        for _ in range(20):  # b catches up; a's channel offers the rest again
            await trio.sleep(0.1)
            await b.pump()
            await a.pump()
        assert [m.text for m in b.take() if isinstance(m, RelayedChat)] == texts
        assert secure_figures(harness)["copies_sent"] == len(texts)
        assert len(harness.relay.roster) == 2


async def test_under_backpressure_a_whole_disconnect_still_goes_through(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        a, b, c = (SecurePeer(HarnessLink(harness), client_address(n)) for n in range(3))
        for peer in (a, b, c):
            await peer.connect()  # b reads nothing from here on
        await a.pump()
        for n in range(MESSAGE_WINDOW + QUEUE_LIMIT // 2):
            await a.say(b"m%d" % n)
            await trio.sleep(0.02)
            await a.pump()
        await c.pump()
        c.take()
        await a.say(b"refused for now")
        assert harness.drops()["backpressure"] >= 1
        await c.leave()
        await trio.sleep(0.02)
        await c.pump()
        assert harness.relay.roster.get(c.id) is None
        await a.pump()
        assert left(c, a.take()) == [LeaveReason.DISCONNECT]


async def test_rekeys_without_data_do_not_grow_the_relays_index_table(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Each INIT of a member's rekey gets a fresh index; one whose keypair the session
    no longer holds (a later rekey replaced it before any DATA) is forgotten."""
    async with open_relay(keys[0]) as harness:
        a, b = await connected(harness, 2)
        member = harness.relay.roster.get(a.id)
        assert member is not None
        details = member.identity.details
        assert isinstance(details, Details)
        for _ in range(50):
            assert await a.handshake()  # and no DATA under it
        assert len(details.peer.indexes) <= 3  # current, previous, next
        await a.pump()
        await a.say(b"under the latest keys")
        await trio.sleep(0.05)
        await b.pump()
        assert [m.text for m in b.take() if isinstance(m, RelayedChat)] == [
            b"under the latest keys"
        ]
        assert len(details.peer.indexes) <= 3
