"""The relay's side of federation (no bus here): what it tells its publisher, and how
other relays' members and messages reach its own members."""

from dataclasses import dataclass, field

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client import MessageReceived
from mcrelay.core.federation import KickResult
from mcrelay.core.members import Departure, Identity, Member
from mcrelay.core.profile import Origin
from mcrelay.core.remotes import Remote
from mcrelay.daemon import messages
from mcrelay.daemon.messages import REMOTE_SHARE_OF_PENDING
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from relay_harness import client_address, open_relay, settle
from secure_harness import connected

Keys = list[rsa.RSAPrivateKey]
FAR: tuple[str, int] = ("10.9.0.7", 4100)


@dataclass
class Recorder:
    said: list[tuple[str, object]] = field(default_factory=list)

    def joined(self, member: Member) -> None:
        self.said.append(("joined", member.id))

    def left(self, member: Member, reason: str) -> None:
        self.said.append(("left", (member.id, reason)))

    def moved(self, member: Member) -> None:
        self.said.append(("moved", member.id))

    def relayed(self, origin: Origin, plaintext: bytes) -> None:
        self.said.append(("relayed", (origin.id, plaintext)))

    def leaving(self) -> None:
        self.said.append(("leaving", None))

    def status(self) -> dict[str, object]:
        return {}

    def relays(self) -> list[dict[str, object]]:
        return []

    async def kick(self, member: Member, ban_s: float | None, scope: str | None) -> KickResult:
        raise TimeoutError


def far_member() -> Remote:
    identity = Identity("legacy", "10.9.0.7:4100", "SHA256:x", None, bytes(32))
    return Remote(identity, FAR, 1.0)


async def test_local_joins_messages_and_leaves_are_told_to_the_publisher(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        recorder = Recorder()
        harness.relay.federation = recorder
        a, b = await harness.members(keys, 2)
        a.say(b"hello")
        await settle()
        assert [m.data for m in b.messages()] == [b"hello"]
        harness.relay.remove("127.0.0.1:40001", Departure.KICK)
        await settle()
    assert recorder.said == [
        ("joined", "127.0.0.1:40000"),
        ("joined", "127.0.0.1:40001"),
        ("relayed", ("127.0.0.1:40000", b"hello")),
        ("left", ("127.0.0.1:40001", "kick")),
    ]


async def test_remote_members_are_announced_and_shown_to_newcomers(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        relay = harness.relay
        (a,) = await harness.members(keys, 1)
        relay.remote_changes(relay.remotes.heard("b", 1, trio.current_time()), "b/")
        relay.remote_changes(relay.remotes.joined("b", far_member(), trio.current_time()), "b/")
        await settle()
        assert a.take() == [PeerJoined(FAR)]
        c = harness.peer(client_address(2), keys[2])
        c.register()
        await settle()
        assert PeerJoined(FAR) in c.take()
        relay.remote_changes(relay.remotes.expire(trio.current_time() + 11), "b/")
        await settle()
        assert a.take() == [PeerJoined(c.address), PeerLeft(FAR)]


async def test_a_remote_message_reaches_every_member_and_goes_no_further(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0]) as harness:
        recorder = Recorder()
        harness.relay.federation = recorder
        a, b = await harness.members(keys, 2)
        origin = Origin("b/10.9.0.7:4100", FAR, far_member().identity)
        assert await harness.relay.deliver_remote(origin, b"from afar", "b/") is None
        await settle()
        assert a.messages() == b.messages() == [MessageReceived(FAR, b"from afar")]
        assert [said for said in recorder.said if said[0] == "relayed"] == []


async def test_remote_messages_wait_in_order_for_their_share_and_then_the_link_waits(
    keys: Keys, autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(messages, "REMOTE_BACKLOG", 2)
    async with open_relay(keys[0], max_pending_relays=8) as harness:
        (a,) = await harness.members(keys, 1)
        origin = Origin("b/relay", ("0.0.0.0", 0))
        harness.workers.hold()
        fed: list[int] = []

        async def link() -> None:  # as the link does: one after the other
            for n in range(10):
                assert await harness.relay.deliver_remote(origin, b"%d" % n, "b/") is None
                fed.append(n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(link)
            await settle()
            share = int(8 * REMOTE_SHARE_OF_PENDING)
            assert harness.relay.messages.pending == share
            assert len(fed) == share + 2  # in flight, then two waiting; the link waits
            harness.workers.release()
        await settle()
        assert [m.data for m in a.messages()] == [b"%d" % n for n in range(10)]
        assert harness.relay.messages.pending == 0


async def test_queued_remote_messages_end_with_a_stop_and_free_their_line(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], max_pending_relays=2) as harness:
        relay = harness.relay
        await harness.members(keys, 1)
        origin = Origin("b/relay", ("0.0.0.0", 0))
        harness.workers.hold()
        for n in range(2):
            assert await relay.deliver_remote(origin, b"%d" % n, "b/") is None
        await settle()
        relay.stop_receiving()
        assert harness.dropped("stopped") == 1  # the one not started
        assert await relay.deliver_remote(origin, b"late", "b/") == "stopped"
        harness.workers.release()
        await settle()
        assert relay.messages.pending == 0


async def test_a_remote_leave_is_told_after_its_messages_even_queued_ones(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_relay(keys[0], max_pending_relays=2) as harness:  # one in flight
        relay = harness.relay
        (a,) = await harness.members(keys, 1)
        relay.remote_changes(relay.remotes.heard("b", 1, trio.current_time()), "b/")
        relay.remote_changes(relay.remotes.joined("b", far_member(), trio.current_time()), "b/")
        await settle()
        a.take()
        harness.workers.hold()
        origin = Origin("b/10.9.0.7:4100", FAR, far_member().identity)
        assert await relay.deliver_remote(origin, b"in flight", "b/") is None
        assert await relay.deliver_remote(origin, b"queued", "b/") is None
        relay.remote_changes(relay.remotes.expire(trio.current_time() + 11), "b/")
        await settle()
        assert a.take() == []
        harness.workers.release()
        await settle()
        assert a.take() == [
            MessageReceived(FAR, b"in flight"),
            MessageReceived(FAR, b"queued"),
            PeerLeft(FAR),
        ]


async def test_a_remote_message_larger_than_its_profile_allows_here_is_refused(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """``max_message_bytes`` is the legacy profile's: a secure member's message of more,
    which reached its own relay's members, was refused by every other relay (found by
    review)."""
    async with open_relay(keys[0], max_message_bytes=100) as harness:
        relay = harness.relay
        post = Origin("b/relay", ("0.0.0.0", 0))
        assert await relay.deliver_remote(post, bytes(101), "b/") == "too_large"
        legacy = Identity("legacy", "10.9.0.1:4100", "SHA256:1", None, bytes(32))
        origin = Origin("b/10.9.0.1:4100", ("10.9.0.1", 4100), legacy)
        assert await relay.deliver_remote(origin, bytes(101), "b/") == "too_large"
        secure = Identity("secure", "k:AAAA", "k:AAAA", bytes(32), bytes(32))
        origin = Origin("b/k:AAAA", ("10.9.0.2", 4100), secure)
        assert await relay.deliver_remote(origin, bytes(101), "b/") is None
        assert await relay.deliver_remote(origin, bytes(65537), "b/") == "too_large"


def many_remotes(count: int) -> list[Remote]:
    return [
        Remote(
            Identity("legacy", f"10.9.0.{n}:4100", f"SHA256:{n}", None, bytes(32)),
            (f"10.9.0.{n}", 4100),
            1.0,
        )
        for n in range(count)
    ]


async def test_secure_members_stay_with_many_remote_members_and_their_churn(
    keys: Keys, autojump_clock: trio.testing.MockClock
) -> None:
    """Each remote member is one PRESENCE more to a secure member, and a relay of the
    federation restarting is all of them leaving and joining again at once."""
    async with open_relay(keys[0]) as harness:
        relay = harness.relay
        now = trio.current_time()
        relay.remote_changes(relay.remotes.heard("b", 1, now), "b/")
        relay.remote_changes(relay.remotes.snapshot("b", many_remotes(200), now), "b/")
        (member,) = await connected(harness, 1)
        await member.pump()  # the 200 already present, acknowledged
        relay.remote_changes(relay.remotes.heard("b", 2, now), "b/")  # b restarted
        relay.remote_changes(relay.remotes.snapshot("b", many_remotes(200), now), "b/")
        await settle()
        assert relay.roster.get(member.id) is not None
        assert harness.drops() == {}
