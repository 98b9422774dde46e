"""Counters of the relay: traffic, relayed messages and drops by reason."""

from collections import Counter
from dataclasses import dataclass, field

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

    def snapshot(self) -> dict[str, object]:
        return {
            "datagrams_in": self.datagrams_in,
            "bytes_in": self.bytes_in,
            "datagrams_out": self.datagrams_out,
            "bytes_out": self.bytes_out,
            "messages_relayed": self.messages_relayed,
            "copies_sent": self.copies_sent,
            "dropped": {reason.value: self.dropped[reason] for reason in DropReason},
        }
