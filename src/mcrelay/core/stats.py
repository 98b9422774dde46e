"""Counters of the relay (traffic, relayed messages, drops by reason) and its figures."""

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mcrelay.protocol.errors import DropReason


@dataclass(slots=True)
class RelayCounters:
    datagrams_in: int = 0
    bytes_in: int = 0
    datagrams_out: int = 0
    bytes_out: int = 0
    messages_relayed: int = 0
    copies_sent: int = 0
    dropped: Counter[DropReason] = field(default_factory=Counter)
    datagrams_in_by_profile: Counter[str] = field(default_factory=Counter)
    """Datagrams handed to each wire profile (by its name)."""
    copies_by_profile: Counter[str] = field(default_factory=Counter)
    """Copies sent to the members of each wire profile."""

    def snapshot(self) -> "RelayCounters":
        """A copy that does not move on with the relay."""
        return dataclasses.replace(
            self,
            dropped=Counter(self.dropped),
            datagrams_in_by_profile=Counter(self.datagrams_in_by_profile),
            copies_by_profile=Counter(self.copies_by_profile),
        )


@dataclass(frozen=True, slots=True)
class Statistics:
    """The relay's figures at one moment: gauges, then the counters so far (a copy:
    the record does not change as the relay goes on)."""

    clients: int
    profiles: dict[str, dict[str, int]]
    """Each profile served, by name: its ``clients``, ``datagrams_in`` and ``copies_sent``,
    the legacy profile's ``crypto_workers``, ``crypto_worker_restarts`` and
    ``registrations_waiting``, and the
    secure profile's ``handshakes_pending``, ``send_buffer_bytes`` and
    ``receive_buffer_bytes``."""
    reassembly_in_flight: int
    reassembly_bytes: int
    pending_relays: int
    """Admitted messages not yet settled."""
    leaves_pending: int
    """Removed members whose leave waits for their messages in flight."""
    send_queue: int
    bans: int
    ban_writes_failed: int
    """Writes of the bans file that failed (the bans still apply; tried again)."""
    event_subscribers: int
    counters: RelayCounters

    @property
    def dropped(self) -> dict[str, int]:
        """Every drop reason, with its count (0 included)."""
        return {reason.value: self.counters.dropped[reason] for reason in DropReason}

    def as_dict(self) -> dict[str, Any]:
        """The figures as the API serves them (``/v1/status``): flat, drops by reason."""
        counters = self.counters
        return {
            "clients": self.clients,
            "profiles": self.profiles,
            "reassembly_in_flight": self.reassembly_in_flight,
            "reassembly_bytes": self.reassembly_bytes,
            "pending_relays": self.pending_relays,
            "leaves_pending": self.leaves_pending,
            "send_queue": self.send_queue,
            "bans": self.bans,
            "ban_writes_failed": self.ban_writes_failed,
            "event_subscribers": self.event_subscribers,
            "datagrams_in": counters.datagrams_in,
            "bytes_in": counters.bytes_in,
            "datagrams_out": counters.datagrams_out,
            "bytes_out": counters.bytes_out,
            "messages_relayed": counters.messages_relayed,
            "copies_sent": counters.copies_sent,
            "dropped": self.dropped,
        }
