"""What the Trio thread and the NATS thread share: the options, the items each way,
the bounded deques and the counters of the thread that writes them.

Every field of :class:`Bridge` is written by one thread only (said beside it) and read
by both; ``deque.append`` and ``popleft`` are atomic, and a counter never gains a key
after construction, so the Trio side can read a snapshot without a lock.
"""

import importlib.util
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

PUBLISH_DROP_REASONS = ("disconnected", "queue_full", "too_large", "error")
"""Why an envelope was not published: the bus was down; the queue to the NATS thread
was full; it was larger than the server's max_payload; nats-py refused it."""

DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024
"""NATS's default max_payload; the server's own figure replaces it on connect."""


@dataclass(frozen=True, slots=True)
class BusOptions:
    servers: tuple[str, ...]
    """nats:// (or tls://) URLs of the cluster's servers; nats-py adds those a server
    advertises."""
    name: str
    """The connection's name, shown by the server's monitoring (the relay's name)."""
    credentials: Path | None = None
    """A NATS .creds file (user JWT and nkey seed)."""
    nkey_file: Path | None = None
    """A file holding an nkey seed (ignored when ``credentials`` is given)."""
    tls_ca: Path | None = None
    """The CA that signs the servers' certificates; else the system's."""
    queue_limit: int = 8192
    """Items each way between the threads; past it an envelope is dropped and counted."""
    queue_limit_bytes: int = 64 * 1024 * 1024
    """The bytes of the messages waiting for the Trio side; past it, likewise."""
    max_message_bytes: int = 1024 * 1024
    """A message larger is dropped as it comes (a server's max_payload may be larger)."""
    reconnect_wait_s: float = 0.25
    connect_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not self.servers:
            raise ValueError("a bus needs at least one server")
        if not self.name:
            raise ValueError("a bus needs a connection name")
        if self.queue_limit < 1:
            raise ValueError(f"queue_limit must be at least 1, not {self.queue_limit}")
        if not 0 < self.max_message_bytes <= self.queue_limit_bytes:
            raise ValueError("max_message_bytes must be positive and within queue_limit_bytes")
        if not (self.reconnect_wait_s > 0 and self.connect_timeout_s > 0):
            raise ValueError("reconnect_wait_s and connect_timeout_s must be positive")
        if (self.credentials or self.nkey_file) and importlib.util.find_spec("nkeys") is None:
            raise ValueError(
                "NATS credentials and nkey files need the nkeys package: install mcrelay[nats-auth]"
            )


@dataclass(frozen=True, slots=True)
class Incoming:
    subject: str
    data: bytes
    reply: str
    """The subject to answer on (``Bus.reply``), or empty."""


class BusEvent(Enum):
    CONNECTED = "connected"
    """After every (re)connect, once the subscriptions are in place at the server."""
    DISCONNECTED = "disconnected"


@dataclass(frozen=True, slots=True)
class BusCounters:
    published: int
    """Envelopes handed to the server's connection."""
    received: int
    """Messages queued for the Trio side."""
    publish_dropped: Counter[str]
    """Envelopes not published, by reason (:data:`PUBLISH_DROP_REASONS`)."""
    receive_overflow: int
    """Messages dropped because the queue to the Trio side was full (items or bytes)."""
    receive_too_large: int
    """Messages dropped as they came for being over ``max_message_bytes``."""
    status_messages: int
    """Messages with headers (the server's status, 503 no responders: never an envelope),
    not passed on."""
    malformed: int
    """Messages nats-py could not read (a header block cut short, a status line or a
    reply subject that is not UTF-8), skipped."""
    reconnects: int
    """Connections made after the first."""
    disconnects: int
    errors: int
    """Errors nats-py reported or raised in the NATS thread (each logged)."""


@dataclass(frozen=True, slots=True)
class Publish:
    subject: str
    data: bytes
    reply: str


@dataclass(frozen=True, slots=True)
class Request:
    subject: str
    data: bytes
    timeout_s: float
    answer: Callable[[bytes | None], None]
    """Called on the Trio thread with the reply, or None."""


class Bridge:
    def __init__(self, queue_limit: int, queue_limit_bytes: int) -> None:
        self.queue_limit = queue_limit
        self.queue_limit_bytes = queue_limit_bytes
        self.outgoing: deque[Publish | Request] = deque()
        """Trio appends, the NATS thread pops."""
        self.incoming: deque[Incoming | BusEvent] = deque()
        """The NATS thread appends, Trio pops."""
        self.out_wake_pending = False
        """Set by Trio when it schedules the NATS thread's wake-up, cleared by that wake-up."""
        self.in_wake_pending = False
        """Set by the NATS thread when it schedules Trio's wake-up, cleared by that wake-up."""
        self.taken_bytes = 0
        """Written by Trio: the bytes of the messages it took from ``incoming``."""
        # Written by the NATS thread:
        self.state = "connecting"
        self.max_payload = DEFAULT_MAX_PAYLOAD_BYTES
        self.published = 0
        self.received = 0
        self.received_bytes = 0
        """The bytes of the messages queued for Trio so far; less ``taken_bytes``, the
        bytes waiting."""
        self.receive_overflow = 0
        self.receive_too_large = 0
        self.status_messages = 0
        self.malformed = 0
        self.reconnects = 0
        self.disconnects = 0
        self.errors = 0
        self.dropped: Counter[str] = Counter(dict.fromkeys(PUBLISH_DROP_REASONS, 0))
