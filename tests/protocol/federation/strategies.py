"""Hypothesis strategies for federation headers and bodies (any valid one)."""

from hypothesis import strategies as st

from mcrelay.protocol.federation.bodies import (
    MAX_KICK_BAN_S,
    MAX_SNAPSHOT_MEMBERS,
    RELAY_MEMBER,
    Body,
    Kick,
    KickReply,
    KickScope,
    KickStatus,
    LeaveReason,
    MemberRecord,
    Message,
    Presence,
    PresenceEvent,
    Snapshot,
    SnapshotRequest,
)
from mcrelay.protocol.federation.envelope import ENVELOPE_VERSION, MAX_U64, Header, Kind
from mcrelay.protocol.secure.origins import Origin, OriginKind

relay_names = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
u64s = st.integers(1, MAX_U64)
headers = st.builds(
    Header, st.just(ENVELOPE_VERSION), st.sampled_from(Kind), relay_names, u64s, u64s
)

member_ids = st.text(min_size=1, max_size=60).filter(lambda t: len(t.encode("utf-8")) <= 255)
addresses = st.tuples(st.ip_addresses().map(str), st.integers(0, 0xFFFF))
times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
client_origins = st.builds(
    Origin,
    st.sampled_from([OriginKind.SECURE_CLIENT, OriginKind.LEGACY_CLIENT]),
    st.binary(min_size=32, max_size=32),
    addresses,
)
clients = st.builds(MemberRecord, client_origins, member_ids, times)
members = clients | st.just(RELAY_MEMBER)
"""Who may send a message; presence and snapshots are about clients only."""

messages = st.builds(Message, members, st.binary(max_size=300))
presences = st.one_of(
    st.builds(
        Presence,
        st.sampled_from([PresenceEvent.JOINED, PresenceEvent.MOVED]),
        st.just(LeaveReason.NONE),
        clients,
    ),
    st.builds(
        Presence,
        st.just(PresenceEvent.LEFT),
        st.sampled_from([r for r in LeaveReason if r != LeaveReason.NONE]),
        clients,
    ),
)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    parts = draw(st.integers(1, 0xFFFF))
    part = draw(st.integers(0, parts - 1))
    records = draw(st.lists(clients, max_size=5))
    count = draw(st.sampled_from([len(records), MAX_SNAPSHOT_MEMBERS]))
    largest = MemberRecord(Origin(OriginKind.LEGACY_CLIENT, bytes(32), ("::1", 1)), "x" * 255, 1.0)
    chosen = tuple(records) if count == len(records) else (largest,) * count
    return Snapshot(draw(st.integers(0, MAX_U64)), part, parts, chosen)


bans = st.none() | st.floats(min_value=1e-3, max_value=MAX_KICK_BAN_S)
kicks = st.builds(Kick, relay_names, member_ids, bans, st.sampled_from(KickScope))
kick_replies = st.builds(
    KickReply,
    u64s,
    u64s,
    st.sampled_from(KickStatus),
    st.lists(member_ids, max_size=5).map(tuple),
    st.text(max_size=100),
)
bodies: st.SearchStrategy[Body] = st.one_of(
    messages, presences, snapshots(), st.just(SnapshotRequest()), kicks, kick_replies
)
