"""The relay's settings, their defaults and their limits."""

import os
from dataclasses import dataclass, field
from pathlib import Path

from mcrelay.protocol.legacy import MAX_MESSAGE_BYTES
from mcrelay.settings.address import ApiAddress, parse_api_address

DEFAULT_GROUP = "224.1.1.1"
DEFAULT_PORT = 5007
DEFAULT_INTERFACE = "0.0.0.0"
CLIENT_TIMEOUT_S = 30.0
REASSEMBLY_TIMEOUT_S = 5.0
MAX_MESSAGES_PER_SOURCE = 8
MAX_REASSEMBLY_BYTES = 4 * 1024 * 1024
MAX_CLIENTS = 4096
MAX_CLIENTS_PER_HOST = 256
"""Registered clients from one IP address (each is a port); more are refused as full."""
MAX_PENDING_RELAYS = 256
SEND_QUEUE_DATAGRAMS = 16384
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
MAX_RECEIVE_BUFFER_BYTES = 2**31 - 1
KEY_ANSWERS_PER_SOURCE_BURST = 5
KEY_ANSWERS_PER_SOURCE_PER_S = 1.0
KEY_ANSWERS_TOTAL_BURST = 200
KEY_ANSWERS_TOTAL_PER_S = 100.0
REGISTRATIONS_PER_HOST_BURST = 20
REGISTRATIONS_PER_HOST_PER_S = 5.0
REGISTRATIONS_TOTAL_BURST = 200
REGISTRATIONS_TOTAL_PER_S = 100.0
API_MAX_CONNECTIONS = 128
"""Open API connections at most; more are refused at once (a 503, then closed)."""
API_MAX_EVENT_SUBSCRIBERS = 64
"""Open ``/v1/events`` streams at most; more get a 503. Each holds a connection."""
KEY_FILE_NAME = "relay-key.pem"


class ConfigValueError(ValueError):
    """A setting's value is out of its range; ``field`` names the setting."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def default_key_file(environ: dict[str, str] | None = None) -> Path:
    """``$STATE_DIRECTORY`` (systemd), else ``$XDG_STATE_HOME/mcrelay``, else ``~/.local/state``."""
    env = os.environ if environ is None else environ
    state_directories = [d for d in env.get("STATE_DIRECTORY", "").split(":") if d]
    if state_directories:
        # systemd may pass several directories separated by colons; the first is ours.
        return Path(state_directories[0]) / KEY_FILE_NAME
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]) / "mcrelay" / KEY_FILE_NAME
    return Path.home() / ".local" / "state" / "mcrelay" / KEY_FILE_NAME


def default_crypto_workers() -> int:
    return len(os.sched_getaffinity(0)) or 1


@dataclass(frozen=True, slots=True)
class RelayConfig:
    group: str = DEFAULT_GROUP
    port: int = DEFAULT_PORT
    interface: str = DEFAULT_INTERFACE
    key_file: Path = field(default_factory=default_key_file)
    client_timeout_s: float = CLIENT_TIMEOUT_S
    reassembly_timeout_s: float = REASSEMBLY_TIMEOUT_S
    max_message_bytes: int = MAX_MESSAGE_BYTES
    crypto_workers: int = field(default_factory=default_crypto_workers)
    max_messages_per_source: int = MAX_MESSAGES_PER_SOURCE
    max_reassembly_bytes: int = MAX_REASSEMBLY_BYTES
    max_clients: int = MAX_CLIENTS
    max_clients_per_host: int = MAX_CLIENTS_PER_HOST
    max_pending_relays: int = MAX_PENDING_RELAYS
    send_queue_datagrams: int = SEND_QUEUE_DATAGRAMS
    receive_buffer_bytes: int = RECEIVE_BUFFER_BYTES
    key_answers_per_source_burst: int = KEY_ANSWERS_PER_SOURCE_BURST
    key_answers_per_source_per_s: float = KEY_ANSWERS_PER_SOURCE_PER_S
    key_answers_total_burst: int = KEY_ANSWERS_TOTAL_BURST
    key_answers_total_per_s: float = KEY_ANSWERS_TOTAL_PER_S
    registrations_per_host_burst: int = REGISTRATIONS_PER_HOST_BURST
    registrations_per_host_per_s: float = REGISTRATIONS_PER_HOST_PER_S
    registrations_total_burst: int = REGISTRATIONS_TOTAL_BURST
    registrations_total_per_s: float = REGISTRATIONS_TOTAL_PER_S
    """New registrations and re-keys (each tells every client), per host and in total."""
    api: str = "off"
    """Where the control API listens: ``host:port``, ``unix:/path`` or ``off``."""
    api_tcp_without_token: bool = False
    """Allow a loopback TCP API with no token (every local user may then administer)."""
    api_token: str | None = None
    """When set, every API request but the health checks needs it as a bearer token."""
    api_token_file: Path | None = None
    """Where ``api_token`` was read from (a reload reads it again)."""
    api_max_connections: int = API_MAX_CONNECTIONS
    api_max_event_subscribers: int = API_MAX_EVENT_SUBSCRIBERS
    log_level: str = "info"
    log_format: str = "auto"

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("port", 0 <= self.port <= 0xFFFF, "must be 0 to 65535"),
            ("client_timeout_s", self.client_timeout_s > 0, "must be above 0 seconds"),
            ("reassembly_timeout_s", self.reassembly_timeout_s > 0, "must be above 0 seconds"),
            (
                "max_message_bytes",
                1 <= self.max_message_bytes <= MAX_MESSAGE_BYTES,
                f"must be 1 to {MAX_MESSAGE_BYTES} (the legacy profile's largest)",
            ),
            ("crypto_workers", self.crypto_workers >= 1, "must be at least 1"),
            ("max_messages_per_source", self.max_messages_per_source >= 1, "must be at least 1"),
            ("max_reassembly_bytes", self.max_reassembly_bytes >= 65536, "must be at least 65536"),
            ("max_clients", self.max_clients >= 1, "must be at least 1"),
            ("max_clients_per_host", self.max_clients_per_host >= 1, "must be at least 1"),
            ("max_pending_relays", self.max_pending_relays >= 1, "must be at least 1"),
            ("send_queue_datagrams", self.send_queue_datagrams >= 1, "must be at least 1"),
            (
                "receive_buffer_bytes",
                65536 <= self.receive_buffer_bytes <= MAX_RECEIVE_BUFFER_BYTES,
                f"must be 65536 to {MAX_RECEIVE_BUFFER_BYTES} bytes",
            ),
            (
                "key_answers_per_source_burst",
                self.key_answers_per_source_burst >= 1,
                "must be at least 1",
            ),
            ("key_answers_total_burst", self.key_answers_total_burst >= 1, "must be at least 1"),
            (
                "key_answers_per_source_per_s",
                self.key_answers_per_source_per_s > 0,
                "must be above 0",
            ),
            ("key_answers_total_per_s", self.key_answers_total_per_s > 0, "must be above 0"),
            (
                "registrations_per_host_burst",
                self.registrations_per_host_burst >= 1,
                "must be at least 1",
            ),
            (
                "registrations_per_host_per_s",
                self.registrations_per_host_per_s > 0,
                "must be above 0",
            ),
            (
                "registrations_total_burst",
                self.registrations_total_burst >= 1,
                "must be at least 1",
            ),
            ("registrations_total_per_s", self.registrations_total_per_s > 0, "must be above 0"),
            ("api_max_connections", self.api_max_connections >= 2, "must be at least 2"),
            (
                "api_max_event_subscribers",
                1 <= self.api_max_event_subscribers < self.api_max_connections,
                "must be at least 1 and below api_max_connections "
                "(each stream holds a connection; the others are for requests)",
            ),
        ]
        for name, ok, message in checks:
            if not ok:
                raise ConfigValueError(name, f"{name.replace('_', ' ')} {message}")
        api = parse_api_address(self.api)
        if api is None or api.path is not None or self.api_token:
            return
        if not api.is_loopback:
            raise ConfigValueError(
                "api",
                f"refusing to serve the control API on {api} without a token: "
                "give --api-token-file, or use a unix:/path socket",
            )
        if not self.api_tcp_without_token:
            raise ConfigValueError(
                "api",
                f"refusing to serve the control API on {api} without a token: every local "
                "user could administer the relay. Give --api-token-file, use a unix:/path "
                "socket (the default), or say --api-tcp-without-token if that is intended",
            )

    @property
    def api_address(self) -> ApiAddress | None:
        return parse_api_address(self.api)
