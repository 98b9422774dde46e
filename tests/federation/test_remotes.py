"""Remote members on leases (core.remotes): joins, leaves, snapshots, restarts, expiry."""

from hypothesis import given
from hypothesis import strategies as st

from mcrelay.core.members import Departure, Identity
from mcrelay.core.profile import RELAY_ORIGIN, turn_host
from mcrelay.core.remotes import Remote, Remotes, relay_of


def remote(n: int, *, key: str = "a", port: int | None = None) -> Remote:
    address = ("10.0.0.1", 4000 + n if port is None else port)
    identity = Identity("legacy", f"10.0.0.1:{4000 + n}", f"SHA256:{key}{n}", None, bytes(32))
    return Remote(identity, address, 1.0)


def events(changes: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(change.event, change.member.id) for change in changes]


def test_a_join_is_held_under_the_relay_name() -> None:
    remotes = Remotes()
    assert remotes.heard("b", 1, 0.0) == []
    assert events(remotes.joined("b", remote(1), 0.0)) == [("joined", "b/10.0.0.1:4001")]
    member = remotes.get("b/10.0.0.1:4001")
    assert member is not None
    assert member.identity.relay == "b"
    assert member.identity.key is None
    assert remotes.joined("b", remote(1), 1.0) == []  # the same again: nothing to say


def test_a_move_and_a_rekey_are_told() -> None:
    remotes = Remotes()
    remotes.heard("b", 1, 0.0)
    remotes.joined("b", remote(1), 0.0)
    moved = remotes.joined("b", remote(1, port=5000), 1.0)
    assert [(c.event, c.old) for c in moved] == [("moved", ("10.0.0.1", 4001))]
    rekeyed = remotes.joined("b", remote(1, key="z", port=5000), 1.0)
    assert events(rekeyed) == [("joined", "b/10.0.0.1:4001")]
    # Its earlier key goes with it: secure members are told that origin left.
    assert rekeyed[0].rekeyed_from is not None
    assert rekeyed[0].rekeyed_from.key_id == "SHA256:a1"
    assert rekeyed[0].member.identity.key_id == "SHA256:z1"


def test_a_leave_of_an_unknown_member_says_nothing() -> None:
    remotes = Remotes()
    remotes.heard("b", 1, 0.0)
    remotes.joined("b", remote(1), 0.0)
    assert [(c.event, c.reason) for c in remotes.left("b", "10.0.0.1:4001", Departure.KICK)] == [
        ("left", "kick")
    ]
    assert remotes.left("b", "10.0.0.1:4001", Departure.KICK) == []
    assert len(remotes) == 0


def test_a_snapshot_replaces_what_was_known() -> None:
    remotes = Remotes()
    remotes.heard("b", 1, 0.0)
    remotes.joined("b", remote(1), 0.0)
    remotes.joined("b", remote(2), 0.0)
    changes = remotes.snapshot("b", [remote(2), remote(3)], 1.0)
    assert events(changes) == [("left", "b/10.0.0.1:4001"), ("joined", "b/10.0.0.1:4003")]
    assert changes[0].reason == "timeout"
    assert sorted(m.id for m in remotes) == ["b/10.0.0.1:4002", "b/10.0.0.1:4003"]


def test_a_silent_relay_leaves_with_all_its_members_after_the_lease() -> None:
    remotes = Remotes(lease_s=10.0)
    remotes.heard("b", 1, 0.0)
    remotes.joined("b", remote(1), 0.0)
    remotes.heard("c", 1, 5.0)
    remotes.joined("c", remote(2), 5.0)
    assert remotes.next_expiry() == 10.0
    assert remotes.expire(9.99) == []
    changes = remotes.expire(10.0)
    assert [(c.event, c.member.id, c.reason) for c in changes] == [
        ("left", "b/10.0.0.1:4001", "timeout")
    ]
    assert list(remotes.relays) == ["c"]
    assert remotes.next_expiry() == 15.0


def test_a_restarted_relay_loses_its_members_first() -> None:
    remotes = Remotes()
    remotes.heard("b", 1, 0.0)
    remotes.joined("b", remote(1), 0.0)
    assert events(remotes.heard("b", 2, 1.0)) == [("left", "b/10.0.0.1:4001")]
    assert remotes.relays["b"].epoch == 2
    assert len(remotes) == 0


def test_remote_members_are_bounded() -> None:
    remotes = Remotes(max_members=2)
    remotes.heard("b", 1, 0.0)
    remotes.snapshot("b", [remote(n) for n in range(5)], 0.0)
    assert len(remotes) == 2
    assert remotes.refused == 3


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["join", "leave", "snapshot", "restart", "expire"]),
            st.sampled_from(["b", "c"]),
            st.integers(0, 5),
        ),
        max_size=60,
    )
)
def test_the_index_and_the_relays_agree_whatever_happens(steps: list[tuple[str, str, int]]) -> None:
    remotes = Remotes(lease_s=3.0)
    epochs = {"b": 1, "c": 1}
    for now, (step, name, n) in enumerate(steps):
        if step == "expire":
            remotes.expire(float(now))
            continue
        if step == "restart":
            epochs[name] += 1
        remotes.heard(name, epochs[name], float(now))
        if step == "join":
            remotes.joined(name, remote(n), float(now))
        elif step == "leave":
            remotes.left(name, f"10.0.0.1:{4000 + n}", Departure.DISCONNECT)
        elif step == "snapshot":
            remotes.snapshot(name, [remote(i) for i in range(n)], float(now))
        held = {m.id for relay in remotes.relays.values() for m in relay.members.values()}
        assert held == {m.id for m in remotes}


def test_a_senders_crypto_turns_are_its_hosts_this_relays_or_its_relays() -> None:
    """The workers' turns (daemon.fairqueue) go by host: a member's IP address here, the
    relay's own posts, another relay (its members and posts, whatever hosts it names)."""
    assert relay_of("b/10.0.0.1:4001") == "b"
    assert relay_of("10.0.0.1:4001") is None
    assert turn_host("10.0.0.1:4001", ("10.0.0.1", 4001)) == "10.0.0.1"
    assert turn_host("k:AAAA", ("10.0.0.2", 4001)) == "10.0.0.2"
    assert turn_host(RELAY_ORIGIN.id, RELAY_ORIGIN.address) == "relay"
    assert turn_host("b/10.0.0.1:4001", ("10.0.0.1", 4001)) == "b/"
    assert turn_host("b/relay", RELAY_ORIGIN.address) == "b/"
