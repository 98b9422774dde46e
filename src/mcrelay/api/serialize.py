"""JSON shapes of the API: clients, bans, errors and timestamps."""

from datetime import UTC, datetime
from typing import Any

from mcrelay.daemon.bans import Ban
from mcrelay.daemon.registry import Client
from mcrelay.protocol.addresses import format_address


def rfc3339(unix_time: float) -> str:
    """UTC, millisecond precision, ``Z`` suffix."""
    stamp = datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def client_json(client: Client, now: float, wall_now: float) -> dict[str, Any]:
    """``now`` is the relay's monotonic clock; ``wall_now`` the Unix time of the same moment."""
    idle_s = max(0.0, now - client.last_seen)
    host, port = client.address
    return {
        "id": format_address(client.address),
        "host": host,
        "port": port,
        "fingerprint": client.fingerprint,
        "key_bits": client.key_bits,
        "connected_at": rfc3339(client.connected_at),
        "last_seen": rfc3339(wall_now - idle_s),
        "idle_s": round(idle_s, 3),
        "messages_in": client.messages_in,
        "messages_out": client.messages_out,
        "bytes_in": client.bytes_in,
        "bytes_out": client.bytes_out,
    }


def ban_json(ban: Ban, now: float) -> dict[str, Any]:
    return {
        "id": ban.id,
        "scope": ban.scope,
        "until": rfc3339(ban.until_wall),
        "remaining_s": round(max(0.0, ban.until - now), 3),
    }


def error_json(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}
