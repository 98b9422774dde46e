"""The daemon's events (``GET /v1/events``) as lines for people, for ``mcrelay events``.

A field this module does not know (a newer daemon's) is still shown, as ``name=value``,
and a line never holds a control character.
"""

from collections.abc import Callable
from typing import Any

from mcrelay.cli.text import printable
from mcrelay.protocol.addresses import RELAY_ITSELF, format_address

Fields = dict[str, Any]


def describe_event(event: Fields) -> str:
    fields = {k: v for k, v in event.items() if k not in ("id", "event", "time")}
    kind = str(event.get("event"))
    describe = DESCRIBERS.get(kind)
    text = describe(fields) if describe is not None else kind
    rest = ", ".join(f"{name}={_value(value)}" for name, value in fields.items())
    return printable(f"{event.get('time')} {text}" + (f" ({rest})" if rest else ""))


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _clients(count: Any) -> str:
    return f"{count} client" if count == 1 else f"{count} clients"


def _joined(fields: Fields) -> str:
    client, key = fields.pop("client", "?"), fields.pop("fingerprint", "?")
    if fields.pop("rekeyed", False):
        return f"{client} changed its key to {key}"
    return f"{client} joined, key {key}"


def _left(fields: Fields) -> str:
    return f"{fields.pop('client', '?')} left: {fields.pop('reason', '?')}"


def _relayed(fields: Fields) -> str:
    sender = fields.pop("sender", "?")
    who = "the relay" if sender == format_address(RELAY_ITSELF) else sender
    size, recipients = fields.pop("size", "?"), fields.pop("recipients", "?")
    return f"{who} sent {size} bytes to {_clients(recipients)}"


def _dropped(fields: Fields) -> str:
    reason, source = fields.pop("reason", "?"), fields.pop("source", None)
    count, interval_s = fields.pop("count", None), fields.pop("interval_s", None)
    what = "dropped" if count is None else f"dropped {count}"
    where = f" from {source}" if source else ""
    during = f" in {interval_s:g} s" if isinstance(interval_s, int | float) else ""
    return f"{what}{where}{during}: {reason}"


def _overflow(fields: Fields) -> str:
    return f"missed {fields.pop('missed', '?')} events: this stream was read too slowly"


DESCRIBERS: dict[str, Callable[[Fields], str]] = {
    "client_joined": _joined,
    "client_left": _left,
    "message_relayed": _relayed,
    "dropped": _dropped,
    "overflow": _overflow,
    "relay_stopping": lambda _fields: "the relay is stopping: no more events",
}
