"""What the API's views reach: the relay, the settings, the readiness flag, the API's counts."""

import weakref
from dataclasses import dataclass, field
from typing import Any

from quart import current_app

from mcrelay.api.audit import AdminLog
from mcrelay.api.connections import Connections
from mcrelay.core.control import Control

EXTENSION = "mcrelay"


@dataclass
class ApiContext:
    relay: Control
    token: str | None = None
    started_at: float = 0.0
    """Unix time the daemon started."""
    started_monotonic: float = 0.0
    ready: bool = False
    open_paths: frozenset[str] = field(default=frozenset({"/healthz", "/readyz"}))
    connections: Connections = field(default_factory=Connections)
    subscribers_refused: int = 0
    streams_starting: "weakref.WeakSet[Any]" = field(default_factory=weakref.WeakSet)
    """Event streams answered but not yet subscribed: they count against the cap."""
    admin_log: AdminLog = field(default_factory=AdminLog)

    def statistics(self) -> dict[str, int]:
        return {
            "api_connections": len(self.connections),
            "api_connections_refused": self.connections.refused,
            "api_accept_errors": self.connections.accept_errors,
            "api_event_subscribers_refused": self.subscribers_refused,
        }


def api_context() -> ApiContext:
    context: ApiContext = current_app.extensions[EXTENSION]
    return context
