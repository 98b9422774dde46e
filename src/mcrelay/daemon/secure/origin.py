"""Whom a relayed message or a PRESENCE names, as the secure wire says it (origins)."""

import functools

from mcrelay.core.members import Identity
from mcrelay.protocol.addresses import ENCODED_ADDRESSES_CACHED, Address
from mcrelay.protocol.secure import origins
from mcrelay.protocol.secure.messages import relayed_chat_head

PROFILE = "secure"


def origin_of(identity: Identity | None, address: Address) -> origins.Origin:
    """A member's origin (a secure or a legacy client), or the relay's for None."""
    if identity is None:
        return origins.RELAY_ORIGIN
    return _member_origin(identity.profile == PROFILE, identity.origin_id, address)


def chat_head(identity: Identity | None, address: Address) -> bytes:
    """What a relayed CHAT from this origin holds before its text: made once per sender
    and address (as the encoded addresses are), since every message it sends needs it."""
    if identity is None:
        return _RELAY_CHAT_HEAD
    return _member_chat_head(identity.profile == PROFILE, identity.origin_id, address)


def _member_origin(secure: bool, origin_id: bytes, address: Address) -> origins.Origin:
    kind = origins.OriginKind.SECURE_CLIENT if secure else origins.OriginKind.LEGACY_CLIENT
    return origins.Origin(kind, origin_id, address)


@functools.lru_cache(maxsize=ENCODED_ADDRESSES_CACHED)
def _member_chat_head(secure: bool, origin_id: bytes, address: Address) -> bytes:
    return relayed_chat_head(_member_origin(secure, origin_id, address))


_RELAY_CHAT_HEAD = relayed_chat_head(origins.RELAY_ORIGIN)
