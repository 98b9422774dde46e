"""What the API's views reach: the relay, the settings and the readiness flag."""

from dataclasses import dataclass, field

from quart import current_app

from mcrelay.daemon.relay import Relay

EXTENSION = "mcrelay"


@dataclass
class ApiContext:
    relay: Relay
    token: str | None = None
    started_at: float = 0.0
    """Unix time the daemon started."""
    started_monotonic: float = 0.0
    ready: bool = False
    open_paths: frozenset[str] = field(default=frozenset({"/healthz", "/readyz"}))


def api_context() -> ApiContext:
    context: ApiContext = current_app.extensions[EXTENSION]
    return context
