"""What a secure member is still to be told of the others: one PRESENCE a subject."""

from mcrelay.core.members import Identity, Member
from mcrelay.daemon.secure.presence import PresenceQueue, Subjects, presence_of
from mcrelay.protocol.secure.messages import LeaveReason, Presence, PresenceEvent
from mcrelay.protocol.secure.origins import Origin, OriginKind

A = Origin(OriginKind.SECURE_CLIENT, bytes(32), ("127.0.0.1", 1))
A_REKEYED = Origin(OriginKind.SECURE_CLIENT, bytes(31) + b"\x01", ("127.0.0.1", 1))
JOINED = Presence(PresenceEvent.JOINED, A)
REJOINED = Presence(PresenceEvent.JOINED, A_REKEYED)
LEFT = Presence(PresenceEvent.LEFT, A, LeaveReason.DISCONNECT)
IDENTITY = Identity("secure", "k:AA", "fp", bytes(32), bytes(32))


class Told:
    """One member's queue, with the relay's numbering of subjects."""

    def __init__(self, subjects: Subjects | None = None) -> None:
        self.subjects = Subjects() if subjects is None else subjects
        self.queue = PresenceQueue()

    def add(self, subject: str, news: Presence | Member) -> None:
        self.queue.add(subject, news, self.subjects)

    def taken(self) -> list[Presence]:
        out = []
        while self.queue:
            out.append(self.queue.take(self.subjects))
        return out


def test_a_join_and_leave_never_told_cancel_out() -> None:
    queue = Told()
    queue.add("a", JOINED)
    queue.add("a", LEFT)
    assert queue.taken() == []


def test_the_latest_presence_of_a_subject_replaces_the_waiting_one() -> None:
    queue = Told()
    queue.add("a", JOINED)
    queue.add("b", Presence(PresenceEvent.ALREADY_PRESENT, A))
    queue.add("a", REJOINED)  # a re-key: its place stays, its news is the latest
    assert queue.taken() == [REJOINED, Presence(PresenceEvent.ALREADY_PRESENT, A)]


def test_a_subject_told_of_is_told_of_its_leave_even_after_a_rekey() -> None:
    """A re-key is a leave of the old key, then a join of the new (the relay tells a
    subject's news in order): nothing is kept of what was told."""
    queue = Told()
    queue.add("a", JOINED)
    assert queue.taken() == [JOINED]
    queue.add("a", LEFT)
    queue.add("a", REJOINED)
    queue.add("a", LEFT)  # the rejoin never told: one leave stands for both
    assert queue.taken() == [LEFT]


def test_a_leave_waiting_is_kept_before_a_rejoin() -> None:
    """Its reason is news (a kick, say): the rejoin once replaced it (found by review)."""
    queue = Told()
    queue.add("a", JOINED)
    assert queue.taken() == [JOINED]
    queue.add("a", LEFT)
    queue.add("a", REJOINED)
    assert queue.taken() == [LEFT, REJOINED]
    queue.add("a", LEFT)
    queue.add("a", JOINED)
    queue.add("a", LEFT)  # the rejoin never told: one leave stands for both
    assert queue.taken() == [LEFT]


def test_a_newcomer_told_of_a_rekey_still_hears_already_present() -> None:
    queue = Told()
    queue.add("a", Presence(PresenceEvent.ALREADY_PRESENT, A))
    queue.add("a", REJOINED)
    assert queue.taken() == [Presence(PresenceEvent.ALREADY_PRESENT, A_REKEYED)]


def test_a_newcomer_is_told_of_a_member_as_it_is_when_told() -> None:
    """One PRESENCE made for each member for each newcomer was n^2 objects in a mass
    join (found by review): the member waits, its PRESENCE is made as it is taken."""
    member = Member(IDENTITY, ("127.0.0.1", 1), 0.0, 0.0)
    queue = Told()
    queue.add("a", member)
    queue.add("b", JOINED)
    member.address = ("127.0.0.1", 2)
    queue.add("a", Presence(PresenceEvent.LEFT, A, LeaveReason.DISCONNECT))  # a re-key
    queue.add("a", member)
    assert queue.taken() == [JOINED, presence_of(PresenceEvent.ALREADY_PRESENT, member)]
    queue = Told()
    queue.add("a", member)
    queue.add("a", REJOINED)  # still news of a newcomer: already present
    (told,) = queue.taken()
    assert told.event is PresenceEvent.ALREADY_PRESENT
    assert told.origin.address == ("127.0.0.1", 2)


def test_a_leave_of_one_never_told_of_is_not_told() -> None:
    """A legacy member's leave waited for its message to go out; a secure member that
    joined meanwhile was not told it was there, yet was told it left (found by review:
    what was told is kept again, a bit a subject)."""
    queue = Told()
    queue.add("a", LEFT)
    assert queue.taken() == []


def test_a_join_told_already_is_not_told_again_and_its_leave_is() -> None:
    """A remote member told as already present to a newcomer, then its join announced
    late: the second join waited, its leave cancelled both, and the member kept it
    for good (found by review)."""
    queue = Told()
    queue.add("a", Presence(PresenceEvent.ALREADY_PRESENT, A))
    assert queue.taken() == [Presence(PresenceEvent.ALREADY_PRESENT, A)]
    queue.add("a", JOINED)
    assert queue.taken() == []
    queue.add("b", JOINED)
    queue.add("a", LEFT)
    assert queue.taken() == [JOINED, LEFT]


def test_subjects_are_numbered_while_some_member_was_told_of_them() -> None:
    subjects = Subjects()
    one, two = Told(subjects), Told(subjects)
    for queue in (one, two):
        queue.add("a", JOINED)
        queue.add("b", JOINED)
        queue.taken()
    assert len(subjects) == 2
    one.add("a", LEFT)
    one.taken()
    two.queue.clear(subjects)  # its session closed
    assert len(subjects) == 1  # b, which one still holds
    one.add("c", JOINED)
    one.taken()
    assert len(subjects) == 2
    assert one.queue._known == bytearray([0b11])  # c took a's number again
