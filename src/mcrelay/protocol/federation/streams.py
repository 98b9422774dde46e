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
message delivered and every kick done again (found by review), and a recorded SNAPSHOT
or PRESENCE misstated its members. So the kinds that act or tell (:data:`GUARDED`) are
taken only from a *verified* run, one that answered this receiver's SNAPSHOT_REQUEST:
the answer carries the request's nonce, which proves it newer than this receiver's
start, and the last MSG and KICK seqs its relay had sealed, above which they are taken
(:meth:`Streams.check` is given them with the answer). Until then they are refused
(``envelope_unverified``), nothing remembered. A new run of a verified run is verified
from its start: the older one answered after this receiver started, so the new one
began later still, and nothing of it can be older than this receiver (a relay that
restarted lost its first round trip of messages at every other relay: found by review).

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
GUARDED = frozenset({Kind.MSG, Kind.KICK, Kind.PRESENCE, Kind.SNAPSHOT})
"""Kinds taken only from a verified run: all but a SNAPSHOT_REQUEST (answering one is
how a run gets verified) and a KICK_REPLY (it answers a KICK of this run's own)."""


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
    """Whether this run answered this receiver's nonce, or is a new run of one that had."""


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

    def check(self, header: Header, answered: dict[Kind, int] | None = None) -> Verdict:
        """Judge an authenticated envelope's header, and remember it if it is new.

        ``answered``: the envelope answers this receiver's nonce (a SNAPSHOT that
        carries one), and its relay had sealed up to these seqs of each kind then: its
        run is verified, and those kinds are taken above them. Raises
        :class:`RemoteProtocolError`: ``envelope_stale`` for an epoch older than its
        relay's newest known, ``envelope_unverified`` for a :data:`GUARDED` kind of a
        run not verified, ``envelope_replay`` for a seq not above the last of its
        (relay, epoch, kind). Nothing is remembered of a refused one.
        """
        known = self._relays.get(header.relay)
        if known is not None and header.epoch < known.epoch:
            raise self._stale(header, known.epoch)
        if known is None or header.epoch > known.epoch:
            carried = known is not None and known.verified
            self._refuse_unverified(header, carried or answered is not None)
            state = _Relay(header.epoch, carried, verified=carried)
            order = Order.NEW_RELAY if known is None else Order.RESTART
        else:
            state, order = known, Order.NEXT
            self._refuse_unverified(header, known.verified or answered is not None)
        seen, from_start, verifying = state.last, state.from_start, False
        if answered is not None and not state.verified:
            # Verified by this answer: its guarded streams were not heard before it, so
            # each is taken from its next envelope (above the seqs sealed by then).
            seen, from_start, verifying = dict(state.last), False, True
            for kind, seq in answered.items():
                seen[kind] = max(seen.get(kind, 0), seq)
        last = seen.get(header.kind)
        if last is None:
            last = 0 if from_start else header.seq - 1
        if header.seq <= last:
            raise RemoteProtocolError(
                f"{header.kind.name} {header.seq} of {header.relay}, not after {last}",
                DropReason.ENVELOPE_REPLAY,
            )
        if verifying:
            state.verified, state.from_start, state.last = True, False, seen
        state.last[header.kind] = header.seq
        skipped = header.seq - last - 1
        self._remember(header.relay, state)
        if order is not Order.NEXT:
            return Verdict(order, skipped)
        return Verdict(Order.GAP, skipped) if skipped else Verdict(Order.NEXT)

    def trusts(self, header: Header) -> bool:
        """Whether ``header``'s run is verified (or a new run of a verified one)."""
        known = self._relays.get(header.relay)
        return known is not None and known.verified and header.epoch >= known.epoch

    def doubt(self, relay: str) -> None:
        """``relay`` was not heard for its lease (cut off, say): what it sent meanwhile
        may come back recorded, so its run is verified again before anything it sends is
        taken (the answer's seqs then bound what is), and a restart of it is asked too."""
        known = self._relays.get(relay)
        if known is not None:
            known.verified = False

    def raise_floor(self, relay: str, epoch: int, kind: Kind, seq: int) -> None:
        """Take nothing of ``kind`` from ``relay``'s run ``epoch`` at ``seq`` or below."""
        known = self._relays.get(relay)
        if known is not None and known.epoch == epoch:
            known.last[kind] = max(known.last.get(kind, 0), seq)

    def verified(self, relay: str) -> bool:
        known = self._relays.get(relay)
        return known is not None and known.verified

    @staticmethod
    def _refuse_unverified(header: Header, verified: bool) -> None:
        if header.kind in GUARDED and not verified:
            raise RemoteProtocolError(
                f"{header.kind.name} {header.seq} of {header.relay}'s epoch {header.epoch}, "
                "not verified",
                DropReason.ENVELOPE_UNVERIFIED,
            )

    @staticmethod
    def _stale(header: Header, newest: int) -> RemoteProtocolError:
        return RemoteProtocolError(
            f"{header.kind.name} of {header.relay}'s epoch {header.epoch}, older than {newest}",
            DropReason.ENVELOPE_STALE,
        )

    def _remember(self, relay: str, state: _Relay) -> None:
        self._relays[relay] = state
        self._relays.move_to_end(relay)
        while len(self._relays) > self._max_relays:
            self._relays.popitem(last=False)
