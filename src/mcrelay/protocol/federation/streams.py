"""Which opened envelopes are new: order per (relay, kind), gaps, replays and restarts.

Every relay seals each kind with its own counter, from 1, within one *epoch* (one run
of the relay; a restart has a larger epoch). A receiver keeps, per relay name, the
newest epoch it has heard and the last seq per kind in it, and :meth:`Streams.check`
judges each header after the envelope was authenticated (never before: a forged header
must not move the state):

- an epoch older than the relay's newest known is **stale** (``envelope_stale``): a
  previous run's envelope, late or replayed;
- a seq not above the last of its (relay, kind) is a **replay** (``envelope_replay``);
- a seq above the last + 1 is a **gap**: the envelopes between were lost (for MSG,
  count them; for PRESENCE, presence versions were missed and the next SNAPSHOT
  mends them; for the other kinds a gap is the norm, as only some of a relay's
  SNAPSHOTs, KICKs and KICK_REPLYs are addressed to a given relay);
- a larger epoch is a **restart**: the relay's old state is void, and its new run's
  first envelope of each kind should be seq 1 (a larger one counts a gap).

Why "newer than the last" is enough, and no window as in the secure profile's DATA:
NATS delivers one publisher's messages on one subject in the order they were
published, and never twice (core NATS is at most once), so an honest envelope is
never older than one already seen on its subject. The bus and whoever can publish on
it without the cluster key cannot make an envelope (:mod:`.envelope`'s AEAD), only
replay ones they recorded; every replay is refused here, as not newer. (A relay's
SNAPSHOTs go out on two subjects, its presence subject and requesters' inboxes, whose
relative order NATS does not promise: a SNAPSHOT overtaken by a later one is refused
as a replay, and the next, 3 s later, is taken.)

A relay's run first heard has nothing to compare with: a receiver that had just started
took a recorded stream of it once, whole, up to that relay's next real envelope, every
message delivered and every kick done again (found by review). So the kinds that act,
MSG and KICK (:data:`GUARDED`), are taken only from a run :meth:`Streams.verify` has
verified: its relay answered this receiver's SNAPSHOT_REQUEST, whose nonce proves the
answer is newer than this receiver's start, with the last MSG and KICK seqs it had
sealed; only seqs above those are taken. Until then they are refused
(``envelope_unverified``), nothing remembered. PRESENCE and SNAPSHOT are not guarded:
a replayed one misstates a relay's members until its next SNAPSHOT, 3 s at most.

The memory is bounded (``max_relays`` names, the least recently heard forgotten first,
a forgotten name counting as first heard, and unverified).
"""

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum

from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.federation.envelope import Header, Kind

MAX_RELAYS = 4096
"""Relay names remembered: far past any cluster's size (docs/federation.md)."""
GUARDED = frozenset({Kind.MSG, Kind.KICK})
"""Kinds taken only from a verified run."""


class Order(Enum):
    NEXT = "next"
    """The seq just after the last of its (relay, kind), or a kind's first in an epoch
    first heard (its earlier ones were never ours to see)."""
    GAP = "gap"
    """Some seqs were skipped: :attr:`Verdict.skipped` of them."""
    NEW_RELAY = "new_relay"
    """The first envelope heard from this relay name (or from one forgotten)."""
    RESTART = "restart"
    """A larger epoch than the relay's known one: it restarted, its old state is void."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """An envelope to act on, and what came before it in its stream.

    ``skipped``: the seqs of its (relay, kind) between the last accepted and this one
    (after a restart: below this one); for MSG, envelopes lost.
    """

    order: Order
    skipped: int = 0


@dataclass(slots=True)
class _Relay:
    epoch: int
    from_start: bool
    """Whether this epoch was heard from its start (a restart seen): then each kind's
    stream began at seq 1, and its first envelope's seq tells what was missed."""
    last: dict[Kind, int] = field(default_factory=dict)
    verified: bool = False
    """Whether this run answered this receiver's nonce (:meth:`Streams.verify`)."""


class Streams:
    """The receive-side order of every relay's envelopes (sans-I/O, bounded)."""

    __slots__ = ("_max_relays", "_relays")

    def __init__(self, max_relays: int = MAX_RELAYS) -> None:
        if max_relays < 1:
            raise LocalProtocolError(f"max_relays {max_relays} is not positive")
        self._max_relays = max_relays
        self._relays: OrderedDict[str, _Relay] = OrderedDict()

    def __len__(self) -> int:
        return len(self._relays)

    def epoch(self, relay: str) -> int | None:
        """The newest epoch known of ``relay``, if it is remembered."""
        known = self._relays.get(relay)
        return None if known is None else known.epoch

    def check(self, header: Header) -> Verdict:
        """Judge an authenticated envelope's header, and remember it if it is new.

        Raises :class:`RemoteProtocolError`: ``envelope_stale`` for an epoch older
        than its relay's newest known, ``envelope_replay`` for a seq not above the
        last of its (relay, epoch, kind). Nothing is remembered of a refused one.
        """
        known = self._relays.get(header.relay)
        if header.kind in GUARDED and (
            known is None or known.epoch != header.epoch or not known.verified
        ):
            if known is not None and header.epoch < known.epoch:
                raise self._stale(header, known.epoch)
            raise RemoteProtocolError(
                f"{header.kind.name} {header.seq} of {header.relay}'s epoch {header.epoch}, "
                "not verified",
                DropReason.ENVELOPE_UNVERIFIED,
            )
        if known is None:
            self._remember(header.relay, _Relay(header.epoch, False, {header.kind: header.seq}))
            return Verdict(Order.NEW_RELAY)
        if header.epoch < known.epoch:
            raise self._stale(header, known.epoch)
        self._relays.move_to_end(header.relay)
        if header.epoch > known.epoch:
            self._relays[header.relay] = _Relay(header.epoch, True, {header.kind: header.seq})
            return Verdict(Order.RESTART, header.seq - 1)
        last = known.last.get(header.kind)
        if last is None:
            last = 0 if known.from_start else header.seq - 1
        if header.seq <= last:
            raise RemoteProtocolError(
                f"{header.kind.name} {header.seq} of {header.relay}, not after {last}",
                DropReason.ENVELOPE_REPLAY,
            )
        known.last[header.kind] = header.seq
        skipped = header.seq - last - 1
        return Verdict(Order.GAP, skipped) if skipped else Verdict(Order.NEXT)

    def verify(self, header: Header, last: dict[Kind, int]) -> None:
        """``header``'s run answered this receiver's nonce, having sealed up to ``last``
        of each kind then: its guarded kinds are taken from now on, above those seqs."""
        known = self._relays.get(header.relay)
        if known is None or known.epoch != header.epoch or known.verified:
            return  # verified already: its streams go on as they were (gaps counted)
        known.verified = True
        for kind, seq in last.items():
            known.last[kind] = max(known.last.get(kind, 0), seq)

    def verified(self, relay: str) -> bool:
        known = self._relays.get(relay)
        return known is not None and known.verified

    @staticmethod
    def _stale(header: Header, newest: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"{header.kind.name} of {header.relay}'s epoch {header.epoch}, older than {newest}",
            DropReason.ENVELOPE_STALE,
        )

    def _remember(self, relay: str, state: _Relay) -> None:
        self._relays[relay] = state
        while len(self._relays) > self._max_relays:
            self._relays.popitem(last=False)
