"""A sender process: a few registered sockets that send stamped messages at a paced rate."""

import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.protocol.legacy import crypto
from relaybench import sockets, wire
from relaybench.pacing import Pacer

CATCH_UP_S = 0.02
"""A late sender sends at most this much of its schedule at once, and skips the rest."""
DRAIN_EVERY_S = 0.01
SEND_SLACK_S = 1.0
"""A step that could not send its messages in its time plus this ends anyway."""
SENDER_RECEIVE_BUFFER_BYTES = 256 * 1024


@dataclass(frozen=True)
class SenderSpec:
    sockets: int
    host: str
    relay: tuple[str, int]
    key_pem: bytes
    """The public key the senders register with (they never decrypt anything)."""
    relay_key_pem: bytes
    first_sender: int = 0
    """Number of this process's first socket in the stamps."""


def main(conn: Connection, spec: SenderSpec) -> None:
    key = serialization.load_pem_public_key(spec.key_pem)
    assert isinstance(key, rsa.RSAPublicKey)
    relay_key = crypto.load_public_key_untrusted(spec.relay_key_pem)
    socks = sockets.open_sockets(spec.sockets, spec.host, SENDER_RECEIVE_BUFFER_BYTES)
    sockets.register(socks, spec.relay, wire.registration(key), spec.relay_key_pem)
    conn.send(("ok", [sock.getsockname() for sock in socks]))
    makers: dict[int, wire.MessageMaker] = {}
    # msg_ids never repeat within a run: the relay ignores a completed id for a while.
    msg_id = int.from_bytes(os.urandom(4), "big")
    keepalive = sockets.Keepalive(socks, spec.relay)
    while True:
        while not conn.poll(sockets.KEEPALIVE_S):
            keepalive.when_due()
        command = conn.recv()
        if command[0] == "stop":
            return
        _send, step, rate_per_s, duration_s, size = command
        maker = makers.get(size) or makers.setdefault(size, wire.MessageMaker(relay_key, size))
        pacer = Pacer(
            rate_per_s=rate_per_s,
            total=max(1, round(rate_per_s * duration_s)),
            catch_up=max(1, round(rate_per_s * CATCH_UP_S)),
            time_limit_s=duration_s + SEND_SLACK_S,
        )
        copies_back = send_errors = 0
        drained_at = pacer.started
        while batch := pacer.next_batch():
            first = pacer.done - batch
            for seq in range(first, first + batch):
                index = seq % len(socks)
                datagrams = maker.datagrams(
                    msg_id, step, spec.first_sender + index, seq, time.monotonic()
                )
                msg_id += 1
                for datagram in datagrams:
                    try:
                        socks[index].sendto(datagram, spec.relay)
                    except BlockingIOError:
                        send_errors += 1
            if time.monotonic() - drained_at > DRAIN_EVERY_S:
                drained_at = time.monotonic()
                copies_back += sum(len(sockets.drain(sock)) for sock in socks)
        result: dict[str, Any] = {
            "sent": pacer.sent,
            "skipped": pacer.skipped,
            "elapsed_s": time.monotonic() - pacer.started,
            "copies_back": copies_back,
            "send_errors": send_errors,
        }
        conn.send(("ok", result))
