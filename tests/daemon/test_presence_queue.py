"""What a secure member is still to be told of the others: one PRESENCE a subject."""

from mcrelay.core.members import Identity, Member
from mcrelay.daemon.secure.presence import PresenceQueue, presence_of
from mcrelay.protocol.secure.messages import LeaveReason, Presence, PresenceEvent
from mcrelay.protocol.secure.origins import Origin, OriginKind

A = Origin(OriginKind.SECURE_CLIENT, bytes(32), ("127.0.0.1", 1))
A_REKEYED = Origin(OriginKind.SECURE_CLIENT, bytes(31) + b"\x01", ("127.0.0.1", 1))
JOINED = Presence(PresenceEvent.JOINED, A)
REJOINED = Presence(PresenceEvent.JOINED, A_REKEYED)
LEFT = Presence(PresenceEvent.LEFT, A, LeaveReason.DISCONNECT)
IDENTITY = Identity("secure", "k:AA", "fp", bytes(32), bytes(32))


def taken(queue: PresenceQueue) -> list[Presence]:
    out = []
    while queue:
        out.append(queue.take())
    return out


def test_a_join_and_leave_never_told_cancel_out() -> None:
    queue = PresenceQueue()
    queue.add("a", JOINED)
    queue.add("a", LEFT)
    assert taken(queue) == []


def test_the_latest_presence_of_a_subject_replaces_the_waiting_one() -> None:
    queue = PresenceQueue()
    queue.add("a", JOINED)
    queue.add("b", Presence(PresenceEvent.ALREADY_PRESENT, A))
    queue.add("a", REJOINED)  # a re-key: its place stays, its news is the latest
    assert taken(queue) == [REJOINED, Presence(PresenceEvent.ALREADY_PRESENT, A)]


def test_a_subject_told_of_is_told_of_its_leave_even_after_a_rekey() -> None:
    """A re-key is a leave of the old key, then a join of the new (the relay tells a
    subject's news in order): nothing is kept of what was told."""
    queue = PresenceQueue()
    queue.add("a", JOINED)
    assert taken(queue) == [JOINED]
    queue.add("a", LEFT)
    queue.add("a", REJOINED)
    queue.add("a", LEFT)  # the rejoin never told: one leave stands for both
    assert taken(queue) == [LEFT]


def test_a_leave_waiting_is_kept_before_a_rejoin() -> None:
    """Its reason is news (a kick, say): the rejoin once replaced it (found by review)."""
    queue = PresenceQueue()
    queue.add("a", JOINED)
    assert taken(queue) == [JOINED]
    queue.add("a", LEFT)
    queue.add("a", REJOINED)
    assert taken(queue) == [LEFT, REJOINED]
    queue.add("a", LEFT)
    queue.add("a", JOINED)
    queue.add("a", LEFT)  # the rejoin never told: one leave stands for both
    assert taken(queue) == [LEFT]


def test_a_newcomer_told_of_a_rekey_still_hears_already_present() -> None:
    queue = PresenceQueue()
    queue.add("a", Presence(PresenceEvent.ALREADY_PRESENT, A))
    queue.add("a", REJOINED)
    assert taken(queue) == [Presence(PresenceEvent.ALREADY_PRESENT, A_REKEYED)]


def test_a_newcomer_is_told_of_a_member_as_it_is_when_told() -> None:
    """One PRESENCE made for each member for each newcomer was n^2 objects in a mass
    join (found by review): the member waits, its PRESENCE is made as it is taken."""
    member = Member(IDENTITY, ("127.0.0.1", 1), 0.0, 0.0)
    queue = PresenceQueue()
    queue.add("a", member)
    queue.add("b", JOINED)
    member.address = ("127.0.0.1", 2)
    queue.add("a", Presence(PresenceEvent.LEFT, A, LeaveReason.DISCONNECT))  # a re-key
    queue.add("a", member)
    assert taken(queue) == [JOINED, presence_of(PresenceEvent.ALREADY_PRESENT, member)]
    queue.add("a", member)
    queue.add("a", REJOINED)  # still news of a newcomer: already present
    (told,) = taken(queue)
    assert told.event is PresenceEvent.ALREADY_PRESENT
    assert told.origin.address == ("127.0.0.1", 2)
