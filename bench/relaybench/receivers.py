"""A receiver process: many sockets sharing one key, counting relayed copies.

Copies are counted from their TLV types alone. A time-bounded sample (at most
``sample_per_s`` a second in the process) is decrypted, only its first block,
to read the message's stamp: the sample is its sequence number and when it came
(the harness takes the send time from the sender: ``time.monotonic()`` is the
same clock in every process on Linux). So the receivers cost little CPU, and
leave the two cores to the daemon.
"""

import selectors
import time
from collections import Counter
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.legacy import crypto
from relaybench import sockets, wire
from relaybench.procfs import raise_nofile

BUCKET_S = 0.1
"""Copies are counted per 100 ms of arrival, so rates can be read over any window."""
SELECT_TIMEOUT_S = 0.1


@dataclass(frozen=True)
class ReceiverSpec:
    sockets: int
    host: str
    relay: tuple[str, int]
    key_pem: bytes
    """The private key every receiver of the process registers with (one key: they are many)."""
    relay_key_pem: bytes
    """The relay's public key, pinned: an answer with another key is an error."""
    sample_per_s: float
    """Decrypted samples a second, at most; 0 decrypts none."""
    receive_buffer_bytes: int = 4 * 1024 * 1024


@dataclass
class Tally:
    step: int = 0
    copies: int = 0
    other: int = 0
    """Datagrams that are not relayed messages: joins, leaves, key answers."""
    buckets: Counter[int] = field(default_factory=Counter)
    samples: list[tuple[int, float]] = field(default_factory=list)
    """Sampled copies of this step's messages: (seq, arrival time)."""
    late_samples: int = 0
    """Sampled copies of a message sent in an earlier step."""
    bad_samples: int = 0

    def report(self) -> dict[str, Any]:
        return {
            "copies": self.copies,
            "other": self.other,
            "buckets": dict(self.buckets),
            "samples": self.samples,
            "late_samples": self.late_samples,
            "bad_samples": self.bad_samples,
        }


def main(conn: Connection, spec: ReceiverSpec) -> None:
    raise_nofile(spec.sockets + 256)
    key = crypto.load_private_key_pem(spec.key_pem)
    block_bytes = crypto.block_bytes(key)
    socks = sockets.open_sockets(spec.sockets, spec.host, spec.receive_buffer_bytes)
    sockets.register(socks, spec.relay, wire.registration(key.public_key()), spec.relay_key_pem)
    conn.send(("ok", [sock.getsockname() for sock in socks]))

    by_fd = {sock.fileno(): sock for sock in socks}
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    selector.register(conn, selectors.EVENT_READ)
    interval_s = 1.0 / spec.sample_per_s if spec.sample_per_s > 0 else None
    tally = Tally()
    next_sample = 0.0
    keepalive = sockets.Keepalive(socks, spec.relay)
    while True:
        keepalive.when_due()
        for ready, _events in selector.select(SELECT_TIMEOUT_S):
            if ready.fileobj is conn:
                command = conn.recv()
                if command[0] == "stop":
                    return
                if command[0] == "reset":
                    tally = Tally(step=command[1])
                    conn.send(("ok", None))
                elif command[0] == "count":
                    conn.send(("ok", tally.copies))
                else:
                    conn.send(("ok", tally.report()))
                continue
            for data in sockets.drain(by_fd[ready.fd]):
                now = time.monotonic()
                block = wire.relayed_block(data, block_bytes)
                if block is None:
                    tally.other += 1
                    continue
                tally.copies += 1
                tally.buckets[int(now / BUCKET_S)] += 1
                if interval_s is None or now < next_sample:
                    continue
                next_sample = now + interval_s
                try:
                    step, _sender, seq = wire.read_stamp_untrusted(key, block)
                except RemoteProtocolError:
                    tally.bad_samples += 1
                    continue
                if step == tally.step:
                    tally.samples.append((seq, now))
                else:
                    tally.late_samples += 1
