"""JSON shapes of the API: clients, bans, errors and timestamps."""

import time
from datetime import UTC, datetime
from typing import Any

from mcrelay.core.bans import Ban
from mcrelay.core.members import Member


def rfc3339(unix_time: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix."""
    stamp = datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def client_json(
    member: Member, now: float, wall_now: float, relay: str | None = None
) -> dict[str, Any]:
    """``now`` is the relay's monotonic clock; ``wall_now`` the Unix time of the same
    moment; ``relay`` this relay's name in its federation (None when it does not
    federate), shown for its own members."""
    idle_s = max(0.0, now - member.last_seen)
    host, port = member.address
    identity = member.identity
    return {
        "id": member.id,
        "profile": identity.profile,
        "host": host,
        "port": port,
        "fingerprint": identity.key_id,
        **identity.details,
        "connected_at": rfc3339(member.connected_at),
        "last_seen": rfc3339(wall_now - idle_s),
        "idle_s": round(idle_s, 3),
        "messages_in": member.messages_in,
        "messages_out": member.messages_out,
        "bytes_in": member.bytes_in,
        "bytes_out": member.bytes_out,
        "relay": member.identity.relay or relay,
    }


def ban_json(ban: Ban, now: float) -> dict[str, Any]:
    return {
        "id": ban.id,
        "scope": ban.scope,
        "until": rfc3339(ban.until_wall(now, time.time())),
        "remaining_s": round(max(0.0, ban.until - now), 3),
    }


def error_json(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}
