"""The federation's link: this relay's members and messages out as sealed envelopes, the
other relays' in.

It is the relay's :class:`~mcrelay.core.federation.Federation`: the relay tells it of
its own members' joins, leaves and moves and of each message delivered here, and it
publishes each once on the bus (:mod:`mcrelay.federation.bus`). What comes from the
bus is opened (:mod:`mcrelay.protocol.federation`), checked against its relay's
stream (gaps counted; replays and older epochs refused), and handed to the relay: a
message to deliver to the members here (never published again), presence to announce.
Every relay's lease is renewed by anything authentic it sends, its snapshot every 3 s
above all; a relay not heard for the lease has its members announced as left. A
relay's messages, kicks and members are taken once its run has answered a nonce of ours
(asked at connection, and of each relay heard anew), or once a run of it that had
answered restarted: see :mod:`mcrelay.protocol.federation.streams`.

The subjects are in :mod:`mcrelay.federation.subjects`; members as envelopes carry them,
in :mod:`mcrelay.federation.records`.
"""

import logging
import os
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field

import trio

from mcrelay.core.bans import ban_said, kick_ban_scope
from mcrelay.core.federation import Host, KickResult
from mcrelay.core.members import Departure, Member
from mcrelay.core.profile import Origin
from mcrelay.core.remotes import Change, remote_id
from mcrelay.federation import records
from mcrelay.federation.bus import Bus, BusEvent, Incoming
from mcrelay.federation.keyfile import cluster_key_fingerprint
from mcrelay.federation.subjects import EXPECTED_KINDS, Subjects
from mcrelay.logs import once_a_minute
from mcrelay.protocol.addresses import RELAY_ITSELF
from mcrelay.protocol.errors import DropReason, LocalProtocolError, RemoteProtocolError
from mcrelay.protocol.federation.bodies import (
    MAX_SNAPSHOT_MEMBERS,
    NO_NONCE,
    NONCE_BYTES,
    RELAY_MEMBER,
    Body,
    Kick,
    KickReply,
    KickStatus,
    LeaveReason,
    MemberRecord,
    Message,
    Presence,
    PresenceEvent,
    Snapshot,
    SnapshotRequest,
    decode_body_untrusted,
    encode_body,
    split_snapshot,
)
from mcrelay.protocol.federation.envelope import ENVELOPE_VERSION, Header, Kind, Opener, Sealer
from mcrelay.protocol.federation.streams import MAX_RELAYS, Order, Streams
from mcrelay.protocol.secure import origins

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S = 3.0
"""How often a relay publishes all its members: its heartbeat."""
KICK_TIMEOUT_S = 2.0
"""How long a forwarded kick waits for the member's relay to answer."""
EXPIRY_TICK_S = 0.25
"""Leases are looked at when one runs out, and at least this often."""
ANNOUNCE_CHUNK = 256
"""Changes of remote members handed to the relay at once, between checkpoints."""
TRANSIT_S = 0.05
"""A lease counts from when its relay sent the envelope, taken as this long before it
was heard (the bus, the hand-off from the NATS thread): a relay gone silent has its
members told as left within the lease of its last envelope, announcement included."""
RECEIVE_CHUNK = 64
"""Envelopes acted on between checkpoints: messages started meanwhile can go out."""
MAX_CONFLICTS_LOGGED = 64
"""Runs of a relay of our own name remembered, so that each is logged once."""
ASK_INTERVAL_S = 1.0
"""A relay whose run is not verified yet is asked (SNAPSHOT_REQUEST with a nonce) at
most this often at first, the interval doubling with each ask to MAX_ASK_INTERVAL_S."""
MAX_ASK_INTERVAL_S = 16.0
KICK_MARKS = 4  # a relay's snapshots kept to age its KICKs by (one every 3 s, answers)
NONCES_KEPT = 8
"""A relay's latest nonces kept, any of which its answer may carry (an answer held up
behind a backlog is taken as one: found by review)."""

REFUSALS_SAID = {
    DropReason.ENVELOPE_AUTH: (
        "failed authentication since the last such line: a relay with another cluster "
        "key? (this relay's key is {key}: compare the others' with 'mcrelay fingerprint "
        "KEY_FILE')"
    ),
    DropReason.ENVELOPE_VERSION: (
        "of another envelope version since the last such line: a relay of another "
        "mcrelay release? (this one speaks version {version}; every relay of a cluster "
        "must run one)"
    ),
}
"""Refusals said in the log (:meth:`Link._say_refused`), beside their counters."""

COUNTED_GAPS = {Kind.MSG, Kind.PRESENCE}
"""Streams every relay sees whole; the others are partly addressed to other relays."""


@dataclass(slots=True)
class _Asked:
    """A relay asked for a nonce's answer (or every relay, by the hello)."""

    nonces: deque[bytes] = field(default_factory=lambda: deque(maxlen=NONCES_KEPT))
    again_at: float = 0.0
    interval_s: float = ASK_INTERVAL_S


class Link:
    def __init__(
        self,
        host: Host,
        bus: Bus,
        *,
        cluster: str,
        name: str,
        key: bytes,
        epoch: int,
        servers: tuple[str, ...],
    ) -> None:
        """``epoch``: this run's start, in ns since the Unix epoch (``time.time_ns()``)."""
        self._host = host
        self._bus = bus
        self.subjects = Subjects(cluster, name)
        self.name = name
        self.epoch = epoch
        self._servers = servers
        self._sealer = Sealer(key, name, epoch)
        self._opener = Opener(key)
        self._streams = Streams()
        self._applied: dict[str, int] = {}
        """Per relay, the presence version its members here reflect."""
        self._parts: dict[str, list[Snapshot]] = {}
        """Per relay, the parts of a snapshot of several parts received so far."""
        self._kick_marks: dict[str, deque[tuple[int, int, float]]] = {}
        """Per relay, its latest snapshots' (epoch, kick_seq, when heard), to age its
        KICKs by (:meth:`_age_kicks`)."""
        self.snapshot_interval_s = SNAPSHOT_INTERVAL_S
        self._leaving = False
        self.received = 0
        self.dropped: Counter[str] = Counter()
        """Envelopes from the bus not acted on, by reason."""
        self.gaps = 0
        self.duplicates = 0
        self._conflicts: set[int] = set()
        self._refusal_logs = {reason: once_a_minute() for reason in REFUSALS_SAID}
        self._asked: OrderedDict[str, _Asked] = OrderedDict()
        """The relays (every relay: "") asked and not verified yet, the least recently
        asked first: their nonces and when to ask again. A relay's own, not one table
        for all (a bus user replaying recorded messages of 64 names that no longer run
        evicted a live relay's nonce before its answer came: found by review)."""
        self._receiving = False
        """A batch from the bus is being acted on."""
        self._key_fingerprint = cluster_key_fingerprint(key)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The bus, and this link's tasks: its receiver, its snapshots, the leases."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self._bus.run)
            nursery.start_soon(self._receive_loop)
            nursery.start_soon(self._snapshot_loop)
            nursery.start_soon(self._expiry_loop)
            task_status.started()

    # What the relay tells it (core.federation.Publisher).

    def joined(self, member: Member) -> None:
        self._presence(Presence(PresenceEvent.JOINED, LeaveReason.NONE, records.record(member)))

    def left(self, member: Member, reason: Departure) -> None:
        leave = records.leave_reason(reason)
        self._presence(Presence(PresenceEvent.LEFT, leave, records.record(member)))

    def moved(self, member: Member) -> None:
        self._presence(Presence(PresenceEvent.MOVED, LeaveReason.NONE, records.record(member)))

    def relayed(self, origin: Origin, plaintext: bytes) -> None:
        if origin.identity is None:
            record = RELAY_MEMBER
        else:
            kind, key = records.kind_of(origin.identity)
            record = MemberRecord(origins.Origin(kind, key, origin.address), origin.id, 0.0)
        try:
            body = encode_body(Message(record, plaintext))
        except LocalProtocolError as exc:
            log.warning("a message not published: %s", exc)
            self.dropped["publish_too_large"] += 1
            return
        self._publish(self.subjects.msg, Kind.MSG, body)

    def leaving(self) -> None:
        """From now on its snapshots are empty, starting with one at once: the others
        see every member of this relay leave now, not when its lease runs out."""
        self._leaving = True
        for envelope in self._snapshot():
            self._bus.publish(self.subjects.presence, envelope)

    # What operators see and do (core.federation.FederationControl).

    def status(self) -> dict[str, object]:
        counters = self._bus.counters
        dropped = Counter(self.dropped)
        dropped.update({f"publish_{reason}": n for reason, n in counters.publish_dropped.items()})
        dropped["receive_overflow"] += counters.receive_overflow
        dropped["receive_too_large"] += counters.receive_too_large
        dropped["status_message"] += counters.status_messages
        dropped["bus_malformed"] += counters.malformed
        dropped = +dropped  # the reasons counted at all
        return {
            "cluster": self.subjects.cluster,
            "relay": self.name,
            "epoch": self.epoch,
            "bus": self._bus.state,
            "servers": list(self._servers),
            "reconnects": counters.reconnects,
            "errors": counters.errors,
            "envelopes_published": counters.published,
            "envelopes_received": self.received,
            "envelopes_dropped": dict(sorted(dropped.items())),
            "gaps": self.gaps,
            "remote_clients_refused": self._host.remotes.refused,
        }

    def relays(self) -> list[dict[str, object]]:
        now = trio.current_time()
        here: dict[str, object] = {
            "name": self.name,
            "local": True,
            "epoch": self.epoch,
            "members": len(self._host.roster),
            "last_heartbeat_s": None,
            "envelopes_in": self.received,
            "envelopes_out": self._bus.counters.published,
            "gaps": self.gaps,
            "duplicates": self.duplicates,
        }
        others: list[dict[str, object]] = [
            {
                "name": relay.name,
                "local": False,
                "epoch": relay.epoch,
                "members": len(relay.members),
                "last_heartbeat_s": round(now - relay.heard_at, 3),
                "envelopes_in": relay.envelopes_in,
                "envelopes_out": None,
                "gaps": relay.gaps,
                "duplicates": relay.duplicates,
            }
            for relay in sorted(self._host.remotes.relays.values(), key=lambda r: r.name)
        ]
        return [here, *others]

    async def kick(self, member: Member, ban_s: float | None, scope: str | None) -> KickResult:
        relay = member.identity.relay
        assert relay is not None, "only another relay's member is kicked through the bus"
        if self._bus.state != "connected":
            raise ConnectionError("the federation's bus is down")
        request = Kick(relay, member.id.removeprefix(f"{relay}/"), ban_s, records.SCOPES[scope])
        header, envelope = self._sealer.seal_with_header(Kind.KICK, encode_body(request))
        answer = await self._bus.request(self.subjects.kick(relay), envelope, KICK_TIMEOUT_S)
        if answer is None:
            raise TimeoutError(f"relay {relay} did not answer")
        try:
            reply = self._kick_reply(answer, relay, header)
        except RemoteProtocolError as exc:
            self.dropped[exc.reason.value] += 1
            raise TimeoutError(f"relay {relay} gave no valid answer: {exc}") from None
        removed = [remote_id(relay, member_id) for member_id in reply.removed]
        return KickResult(removed, reply.status.name.lower(), reply.message)

    def _kick_reply(self, answer: bytes, relay: str, request: Header) -> KickReply:
        header, data = self._opener.open_untrusted(answer)
        reply = decode_body_untrusted(header.kind, data)
        if (
            not isinstance(reply, KickReply)
            or header.relay != relay
            or (reply.request_epoch, reply.request_seq) != (request.epoch, request.seq)
        ):
            raise RemoteProtocolError("not the answer to this kick", DropReason.BAD_ENVELOPE)
        return reply

    # Out.

    def _presence(self, presence: Presence) -> None:
        self._publish(self.subjects.presence, Kind.PRESENCE, encode_body(presence))

    def _publish(self, subject: str, kind: Kind, body: bytes, reply: str = "") -> None:
        """Sealed and handed to the bus; a refusal is counted by the bus (its seq is
        spent: the others count a gap)."""
        self._bus.publish(subject, self._sealer.seal(kind, body), reply)

    def _snapshot(self, nonce: bytes = NO_NONCE) -> list[bytes]:
        """Our members, sealed; an answer carries its request's ``nonce``, and every
        snapshot the last MSG and KICK seqs we sealed before it."""
        version = self._sealer.last_seq(Kind.PRESENCE)
        # By id: two snapshots of one version (an answer, the periodic one) are cut into
        # the same parts, so parts of the two can never make a wrong whole.
        held = [] if self._leaving else sorted(self._host.roster, key=lambda m: m.id)
        members = [records.record(member) for member in held]
        sealed = self._sealer.last_seq(Kind.MSG), self._sealer.last_seq(Kind.KICK)
        return [
            self._sealer.seal(Kind.SNAPSHOT, encode_body(part))
            for part in split_snapshot(version, members, nonce, *sealed)
        ]

    def _ask(self, target: str, now: float) -> None:
        """Ask ``target`` (every relay: "") for a snapshot that answers a fresh nonce:
        what verifies its run here (:meth:`Streams.check`); again only after
        ASK_INTERVAL_S, doubling to MAX_ASK_INTERVAL_S."""
        asked = self._asked.get(target)
        if asked is not None and now < asked.again_at:
            return
        if asked is None:
            asked = self._asked[target] = _Asked()
            while len(self._asked) > MAX_RELAYS:
                self._asked.popitem(last=False)
        self._asked.move_to_end(target)
        asked.again_at = now + asked.interval_s
        asked.interval_s = min(2 * asked.interval_s, MAX_ASK_INTERVAL_S)
        nonce = os.urandom(NONCE_BYTES)
        asked.nonces.append(nonce)
        request = encode_body(SnapshotRequest(nonce, target))
        self._publish(self.subjects.hello, Kind.SNAPSHOT_REQUEST, request, self.subjects.inbox)

    def _answer_in(self, header: Header, data: bytes) -> dict[Kind, int] | None:
        """If ``data`` is a SNAPSHOT that answers a nonce we asked its relay (or every
        relay), the last MSG and KICK seqs its relay had sealed then: what verifies its
        run (:meth:`Streams.check`)."""
        try:
            part = decode_body_untrusted(header.kind, data)
        except RemoteProtocolError:
            return None  # refused below, in its turn
        if not isinstance(part, Snapshot) or part.nonce == NO_NONCE:
            return None
        for target in (header.relay, ""):
            asked = self._asked.get(target)
            if asked is not None and part.nonce in asked.nonces:
                return {Kind.MSG: part.msg_seq, Kind.KICK: part.kick_seq}
        return None

    async def _snapshot_loop(self) -> None:
        while True:
            await trio.sleep(self.snapshot_interval_s)
            try:
                for envelope in self._snapshot():
                    self._bus.publish(self.subjects.presence, envelope)
            except Exception:  # a bug costs one snapshot, not the relay
                log.exception("publishing a snapshot failed")
                self.dropped[DropReason.INTERNAL_ERROR.value] += 1

    async def _expiry_loop(self) -> None:
        """Each lease looked at when it runs out (at least every EXPIRY_TICK_S)."""
        remotes = self._host.remotes
        while True:
            now = trio.current_time()
            due = remotes.next_expiry()
            # A lease past due waits while the link is behind (_expire): look again a
            # tick later, not at once (that spun the loop).
            if due is None or due <= now:
                due = now + EXPIRY_TICK_S
            await trio.sleep_until(min(due, now + EXPIRY_TICK_S))
            try:
                await self._expire(trio.current_time())
            except Exception:
                log.exception("expiring leases failed")
                self.dropped[DropReason.INTERNAL_ERROR.value] += 1

    async def _expire(self, now: float) -> None:
        remotes = self._host.remotes
        # Envelopes wait to be read (a batch under way, held up delivering messages here,
        # or more come in): a lease that ran out may have been renewed by one of them. A
        # relay's snapshots waited behind another's messages, and its members were seen
        # leaving and joining again every lease (found by review): while the link is
        # behind, a relay has twice its lease (one gone meanwhile still goes).
        behind = self._receiving or self._bus.pending()
        lease = remotes.lease_s * (2 if behind else 1)
        gone: dict[str, list[Change]] = {}
        for name in remotes.silent(now - lease + remotes.lease_s):
            # Cut off, say: what it sent meanwhile may come back recorded (a kick whose
            # requester was told it failed was done when a bus user replayed it after a
            # partition: found by review), so its run answers a nonce again first.
            self._streams.doubt(name)
        for change in remotes.expire(now - lease + remotes.lease_s):
            gone.setdefault(str(change.member.identity.relay), []).append(change)
        for name, changes in gone.items():
            log.info("relay %s not heard for %g s: its %d members left", name, lease, len(changes))
            await self._announce(name, changes)
        for name in [n for n in self._applied if n not in remotes.relays]:
            del self._applied[name]
        for name in [n for n in self._parts if n not in remotes.relays]:
            del self._parts[name]
        for name in [n for n in self._kick_marks if n not in remotes.relays]:
            del self._kick_marks[name]
        # A relay not held here (its run unverified, or gone) keeps its nonces while an
        # answer may still come: its envelopes are refused until one does.
        for name in [
            n
            for n, asked in self._asked.items()
            if n and n not in remotes.relays and now - asked.again_at > MAX_ASK_INTERVAL_S
        ]:
            del self._asked[name]

    async def _announce(self, name: str, changes: list[Change]) -> None:
        """Hand the relay its members' changes a chunk at a time, so that a large
        snapshot (or a relay gone with thousands of members) lets the rest run between."""
        for start in range(0, len(changes), ANNOUNCE_CHUNK):
            self._host.remote_changes(changes[start : start + ANNOUNCE_CHUNK], f"{name}/")
            await trio.lowlevel.checkpoint()

    # In.

    async def _receive_loop(self) -> None:
        while True:
            batch = await self._bus.receive()
            self._receiving = True
            for number, item in enumerate(batch, 1):
                if not number % RECEIVE_CHUNK:  # a burst from the bus lets the rest run
                    await trio.lowlevel.checkpoint()
                try:
                    if item is BusEvent.CONNECTED:
                        self._connected()
                    elif isinstance(item, Incoming):
                        await self._incoming(item, trio.current_time())
                except Exception:  # a bug costs one envelope (or one hello), not the relay
                    what = item.subject if isinstance(item, Incoming) else "connecting"
                    log.exception("an item from the bus (%s) broke the link", what)
                    self.dropped[DropReason.INTERNAL_ERROR.value] += 1
            self._receiving = False

    def _connected(self) -> None:
        """(Re)connected: ask every relay for its members, and tell ours."""
        log.info("federation bus connected; asking the cluster for its members")
        self._asked.pop("", None)  # a new hello at once, its answers awaited anew
        self._ask("", trio.current_time())
        for envelope in self._snapshot():
            self._bus.publish(self.subjects.presence, envelope)

    async def _incoming(self, item: Incoming, now: float) -> None:
        try:
            header, data = self._opener.open_untrusted(item.data)
        except RemoteProtocolError as exc:
            self.dropped[exc.reason.value] += 1
            log.debug("an envelope on %s refused: %s", item.subject, exc)
            self._say_refused(exc.reason, now)
            return
        if header.kind not in EXPECTED_KINDS.get(self.subjects.name(item.subject), ()):
            self.dropped["wrong_subject"] += 1
            return
        if header.relay == self.name:  # an earlier run's is stale: replayed, not a conflict
            if header.epoch > self.epoch:  # (one named alike started before: it says so)
                self._name_conflict(header)
            else:
                stale = header.epoch < self.epoch
                reason = DropReason.ENVELOPE_STALE if stale else DropReason.ENVELOPE_REPLAY
                self.dropped[reason.value] += 1
            return
        answered = None
        if header.kind is Kind.SNAPSHOT and not self._streams.trusts(header):
            answered = self._answer_in(header, data)
        elif header.kind is Kind.KICK:
            self._age_kicks(header.relay, now)
        try:
            verdict = self._streams.check(header, answered)
        except RemoteProtocolError as exc:
            self.dropped[exc.reason.value] += 1
            if exc.reason is DropReason.ENVELOPE_UNVERIFIED:
                self._ask(header.relay, now)
            if exc.reason is DropReason.ENVELOPE_REPLAY:
                self.duplicates += 1
                relay = self._host.remotes.relays.get(header.relay)
                if relay is not None:
                    relay.duplicates += 1
            return
        if answered is not None:
            self._asked.pop(header.relay, None)  # verified: its nonces are done with
        try:
            body = decode_body_untrusted(header.kind, data)
        except RemoteProtocolError as exc:
            self.dropped[exc.reason.value] += 1
            log.debug("a %s envelope of relay %s: %s", header.kind.name, header.relay, exc)
            return
        self.received += 1
        changes = self._host.remotes.heard(header.relay, header.epoch, now - TRANSIT_S)
        if verdict.order is Order.RESTART:
            self._applied.pop(header.relay, None)
            self._parts.pop(header.relay, None)
            self._kick_marks.pop(header.relay, None)
            self._asked.pop(header.relay, None)  # a new run: asked at once, no backoff
        if changes:
            await self._announce(header.relay, changes)
        if verdict.skipped and header.kind in COUNTED_GAPS:
            self.gaps += verdict.skipped
            self._host.remotes.relays[header.relay].gaps += verdict.skipped
        await self._act(header, body, item.reply, now)
        if verdict.order in (Order.NEW_RELAY, Order.RESTART) and not self._streams.verified(
            header.relay
        ):  # its messages and kicks are taken once it answers (this was not an answer)
            self._ask(header.relay, now)

    def _say_refused(self, reason: DropReason, now: float) -> None:
        """Refusals an operator must hear of, said once a minute at most each: relays
        with different cluster keys, or of two releases, hear nothing of each other, and
        these were only counters (found by review)."""
        text = REFUSALS_SAID.get(reason)
        held = None if text is None else self._refusal_logs[reason].take(now)
        if text is not None and held is not None:
            log.warning(
                "%d envelopes %s",
                held + 1,
                text.format(key=self._key_fingerprint, version=ENVELOPE_VERSION),
            )

    def _name_conflict(self, header: Header) -> None:
        """Another relay of the cluster has this relay's name: counted, logged once per
        run of it (its epoch)."""
        self.dropped["name_conflict"] += 1
        if header.epoch in self._conflicts:
            return
        if len(self._conflicts) >= MAX_CONFLICTS_LOGGED:
            self._conflicts.clear()
        self._conflicts.add(header.epoch)
        log.error(
            "another relay of cluster %s is also named %s (epoch %d): names must be unique; "
            "the other relays hear only the one started last",
            self.subjects.cluster,
            self.name,
            header.epoch,
        )

    async def _act(self, header: Header, body: Body, reply: str, now: float) -> None:
        name = header.relay
        if isinstance(body, Message):
            await self._message(name, body)
        elif isinstance(body, Presence):
            if header.seq <= self._applied.get(name, 0):
                self.dropped["presence_known"] += 1  # the applied snapshot holds it
                return
            self._applied[name] = header.seq
            await self._announce(name, self._change(name, body, now))
        elif isinstance(body, Snapshot):
            if body.part == 0:
                self._age_kicks(name, now, (header.epoch, body.kick_seq, now))
            await self._snapshot_part(name, body, now)
        elif isinstance(body, SnapshotRequest):
            if reply and body.target in ("", self.name):
                for envelope in self._snapshot(body.nonce):
                    self._bus.reply(reply, envelope)
        elif isinstance(body, Kick) and reply:
            self._bus.reply(reply, self._kicked(header, body))

    async def _message(self, name: str, message: Message) -> None:
        record = message.origin
        if record.origin.kind == origins.OriginKind.RELAY:
            origin = Origin(remote_id(name, "relay"), RELAY_ITSELF)
        else:
            member_id = remote_id(name, record.member_id)
            held = self._host.remotes.get(member_id)
            if held is not None and held.identity.origin_id == record.origin.id:
                held.messages_in += 1
                held.bytes_in += len(message.body)
                identity = held.identity
            else:  # not (or not yet) known here as this key: named as the record says
                identity = records.identity(record)
            assert record.origin.address is not None  # a client's record has one
            origin = Origin(member_id, record.origin.address, identity)
        refused = await self._host.deliver_remote(origin, message.body, f"{name}/")
        if refused is not None:
            self.dropped[refused] += 1

    def _change(self, name: str, presence: Presence, now: float) -> list[Change]:
        remotes = self._host.remotes
        record = presence.member
        if presence.event is PresenceEvent.LEFT:
            return remotes.left(name, record.member_id, records.departure(presence.reason))
        return remotes.joined(name, records.remote(record), now)

    async def _snapshot_part(self, name: str, part: Snapshot, now: float) -> None:
        # The parts wait here until the last: one snapshot may have no more than the
        # members held could fill, and all that wait, twice that (the oldest waiting
        # snapshot of another relay goes). A relay with the key once made another hold
        # up to 65,535 parts of 1,000 members, for each name it chose.
        limit = -(-self._host.remotes.max_members // MAX_SNAPSHOT_MEMBERS) + 1
        if part.parts > limit:
            self.dropped["snapshot_too_large"] += 1
            return
        if sum(map(len, self._parts.values())) >= 2 * limit:
            oldest = next((other for other in self._parts if other != name), name)
            self._parts.pop(oldest, None)
            self.dropped["snapshot_incomplete"] += 1
        parts = [] if part.part == 0 else self._parts.get(name, [])
        if parts and (parts[0].version, parts[0].parts) != (part.version, part.parts):
            parts = []
        if part.part != len(parts):  # parts come in order; a missing one spoils this one
            self._parts.pop(name, None)
            self.dropped["snapshot_incomplete"] += 1
            return
        parts.append(part)
        if len(parts) < part.parts:
            self._parts[name] = parts
            return
        self._parts.pop(name, None)
        if part.version < self._applied.get(name, 0):
            self.dropped["snapshot_overtaken"] += 1  # older than what was applied since
            return
        self._applied[name] = part.version
        members = [records.remote(record) for chunk in parts for record in chunk.members]
        await self._announce(name, self._host.remotes.snapshot(name, members, now))

    def _age_kicks(self, name: str, now: float, mark: tuple[int, int, float] | None = None) -> None:
        """A KICK its relay had sealed by a snapshot heard KICK_TIMEOUT_S ago is past its
        requester's wait, which was told it failed: refused (``envelope_replay``), never
        done late (a bus user replayed one after a partition, and the member was kicked
        and banned: found by review). ``mark``: a snapshot just heard."""
        marks = self._kick_marks.get(name)
        if marks is None:
            if mark is None:
                return
            marks = self._kick_marks[name] = deque(maxlen=KICK_MARKS)
        while marks and now - marks[0][2] >= KICK_TIMEOUT_S:
            epoch, kick_seq, _ = marks.popleft()
            self._streams.raise_floor(name, epoch, Kind.KICK, kick_seq)
        if mark is not None:
            marks.append(mark)

    def _kicked(self, header: Header, kick: Kick) -> bytes:
        """Do what another relay's operator asked; the sealed answer."""
        status, removed, message = KickStatus.REMOVED, [], ""
        if kick.target != self.name:
            status, message = KickStatus.REFUSED, f"this relay is {self.name}"
        elif (member := self._host.roster.get(kick.member_id)) is None:
            status, message = KickStatus.NOT_FOUND, f"no client {kick.member_id}"
        else:
            scope = {v: k for k, v in records.SCOPES.items()}[kick.scope]
            try:
                removed = [m.id for m in self._host.kick(kick.member_id, kick.ban_s, scope=scope)]
            except ValueError as exc:
                status, message = KickStatus.REFUSED, str(exc)
            else:
                said = ban_said(kick.ban_s, kick_ban_scope(scope, member.identity.profile))
                log.info("kicked %s at relay %s's request%s", kick.member_id, header.relay, said)
        reply = KickReply(header.epoch, header.seq, status, tuple(removed), message)
        return self._sealer.seal(Kind.KICK_REPLY, encode_body(reply))
