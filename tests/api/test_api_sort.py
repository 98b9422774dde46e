"""Sorting clients by id when the federation mixes address families and relays."""

from mcrelay.api.clients import SORT_KEYS
from mcrelay.core.members import Identity, Member


def member(host: str, port: int, relay: str | None = None, member_id: str = "") -> Member:
    identity = Identity(
        "legacy", member_id or f"{host}:{port}", "SHA256:x", None, bytes(32), {}, relay
    )
    return Member(identity, (host, port), 0.0, 0.0)


def test_ipv4_and_ipv6_members_sort_together() -> None:
    members = [
        member("fe80::1", 5, "b"),
        member("10.0.0.2", 4, "b"),
        member("::1", 3),
        member("10.0.0.1", 9),
        member("10.0.0.1", 2, "a"),
    ]
    ordered = sorted(members, key=SORT_KEYS["id"])
    assert [(m.identity.relay, m.address) for m in ordered] == [
        (None, ("10.0.0.1", 9)),
        (None, ("::1", 3)),
        ("a", ("10.0.0.1", 2)),
        ("b", ("10.0.0.2", 4)),
        ("b", ("fe80::1", 5)),
    ]


def test_members_at_one_address_sort_by_id() -> None:
    """The order is total, so that paging is well defined, even for members at one
    address (nothing in the table of other relays' members forbids it)."""
    members = [member("10.0.0.1", 4, "b", "b/k:B"), member("10.0.0.1", 4, "b", "b/k:A")]
    for given in (members, members[::-1]):
        assert [m.id for m in sorted(given, key=SORT_KEYS["id"])] == ["b/k:A", "b/k:B"]
