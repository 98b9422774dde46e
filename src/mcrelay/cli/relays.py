"""The federation as lines for people: ``mcrelay relays`` (``GET /v1/relays``) and the
``federation:`` line of ``mcrelay status``. Text from the API is made printable: a relay
name reached this relay over the bus."""

from typing import Any

from mcrelay.cli.text import printable

Fields = dict[str, Any]
RELAYS_HEADER = ["NAME", "LOCAL", "MEMBERS", "HEARTBEAT_S", "IN", "OUT", "GAPS"]


def describe_federation(federation: Fields) -> str:
    """Its cluster, this relay's name and the bus's state: one line."""
    servers = ", ".join(str(server) for server in federation.get("servers", []))
    reconnects = federation.get("reconnects", 0)
    text = (
        f"cluster {federation['cluster']}, relay {federation['relay']}, "
        f"bus {federation['bus']}"
        + (f" ({servers})" if servers else "")
        + (f", {reconnects} reconnect" + ("" if reconnects == 1 else "s"))
    )
    return printable(text)


def relays_rows(relays: list[Fields]) -> list[list[str]]:
    """One row of ``RELAYS_HEADER`` per relay, in the API's order; the local one marked."""
    return [
        [
            printable(str(relay["name"])),
            "yes" if relay["local"] else "no",
            _count(relay["members"]),
            _seconds(relay["last_heartbeat_s"]),
            _count(relay["envelopes_in"]),
            _count(relay["envelopes_out"]),
            _count(relay["gaps"]),
        ]
        for relay in relays
    ]


def _count(value: int | None) -> str:
    """``-`` where the API has no count (``envelopes_out`` is this relay's alone)."""
    return "-" if value is None else str(value)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"
