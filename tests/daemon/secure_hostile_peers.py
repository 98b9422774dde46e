"""A secure peer for the hostile tests that records every datagram it sent (to replay
them)."""

from dataclasses import dataclass, field

from secure_harness import SecurePeer


@dataclass
class RecordingPeer(SecurePeer):
    """A secure client that keeps a copy of everything it sends, in order."""

    sent: list[bytes] = field(default_factory=list)

    def send(self, *datagrams: bytes) -> None:
        self.sent.extend(datagrams)
        super().send(*datagrams)
