"""Members as envelopes carry them, and back: member records, identities, reasons."""

from mcrelay.core.members import Departure, Identity, Member
from mcrelay.core.remotes import Remote
from mcrelay.protocol.federation.bodies import KickScope, LeaveReason, MemberRecord
from mcrelay.protocol.legacy.crypto import digest_fingerprint
from mcrelay.protocol.secure import origins
from mcrelay.protocol.secure.keys import encode_key
from mcrelay.settings.profiles import SECURE


def leave_reason(reason: Departure) -> LeaveReason:
    """The wire's reason for a leave (the wire has every one, by the same name)."""
    return LeaveReason[reason.name]


def departure(reason: LeaveReason) -> Departure:
    """A remote leave's reason: UNREACHABLE for a leave the wire gave none (``NONE``)."""
    return Departure.__members__.get(reason.name, Departure.UNREACHABLE)


SCOPES = {
    None: KickScope.DEFAULT,
    "address": KickScope.ADDRESS,
    "host": KickScope.HOST,
    "key": KickScope.KEY,
}


def kind_of(identity: Identity) -> tuple[origins.OriginKind, bytes]:
    if identity.profile == SECURE:
        return origins.OriginKind.SECURE_CLIENT, identity.origin_id
    return origins.OriginKind.LEGACY_CLIENT, identity.origin_id


def record(member: Member) -> MemberRecord:
    kind, key = kind_of(member.identity)
    return MemberRecord(origins.Origin(kind, key, member.address), member.id, member.connected_at)


def identity(record: MemberRecord) -> Identity:
    """A remote member's identity as its relay describes it (not yet prefixed)."""
    key = record.origin.id
    if record.origin.kind == origins.OriginKind.SECURE_CLIENT:
        text = encode_key(key)
        return Identity(SECURE, record.member_id, text, None, key, {"key": text})
    fingerprint = digest_fingerprint(key)
    return Identity("legacy", record.member_id, fingerprint, None, key, {})


def remote(record: MemberRecord) -> Remote:
    assert record.origin.address is not None
    return Remote(identity(record), record.origin.address, record.connected_at)
