"""A sender process: a few registered sockets that send stamped messages at a paced rate.

A step's messages are made (their stamps encrypted with the relay key) before the
step starts, and the time each is sent is kept and returned with the step's result:
so during the step the sender only sends, and its CPU does not grow with the offered
rate at the relay's expense (the two share the machine's cores). The receivers'
sampled copies name their message (sender, seq); latency is the sample's arrival
time less that message's send time (``time.monotonic()`` is one clock for every
process on Linux).
"""

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

TICK_S = 0.001
"""The sweep's senders wake at most this often, and send the messages due. Waking for each
message cost them 22.5 us per message, 0.18 of a core at 8,000 messages/s taken from the
relay on the same two cores; once a millisecond, 6.2 us (``bench/pacing_cost.py``)."""
CATCH_UP_S = 0.02
"""A late sender sends at most this much of its schedule at once, and skips the rest."""
DRAIN_EVERY_S = 0.01
SEND_SLACK_S = 1.0
"""A step that could not send its messages in its time plus this ends anyway."""
SENDER_RECEIVE_BUFFER_BYTES = 256 * 1024
PREPARE_KEEPALIVE_EVERY = 1000
"""Messages made between two looks at the keep-alive timer."""


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
    tick_s: float = TICK_S
    """0: wake for every message."""


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
    messages: list[list[bytes]] = []
    """The next step's messages, made by ``prepare``."""
    while True:
        while not conn.poll(sockets.KEEPALIVE_S):
            keepalive.when_due()
        command = conn.recv()
        if command[0] == "stop":
            return
        if command[0] == "prepare":
            _prepare, step, rate_per_s, duration_s, size = command
            maker = makers.get(size) or makers.setdefault(size, wire.MessageMaker(relay_key, size))
            total = max(1, round(rate_per_s * duration_s))
            messages = []
            for seq in range(total):
                messages.append(
                    maker.datagrams(msg_id + seq, step, spec.first_sender + seq % len(socks), seq)
                )
                if seq % PREPARE_KEEPALIVE_EVERY == 0:
                    keepalive.when_due()  # making 50,000 messages takes seconds
            msg_id += total
            conn.send(("ok", None))
            continue
        _send, step, rate_per_s, duration_s, size = command
        if not messages:
            raise RuntimeError("a step sent before it was prepared")
        total = len(messages)
        sent_at = [0.0] * total
        pacer = Pacer(
            rate_per_s=rate_per_s,
            total=total,
            catch_up=max(1, round(rate_per_s * CATCH_UP_S)),
            time_limit_s=duration_s + SEND_SLACK_S,
            tick_s=spec.tick_s,
        )
        copies_back = send_errors = 0
        drained_at = pacer.started
        while batch := pacer.next_batch():
            first = pacer.done - batch
            for seq in range(first, first + batch):
                sock = socks[seq % len(socks)]
                sent_at[seq] = time.monotonic()
                for datagram in messages[seq]:
                    try:
                        sock.sendto(datagram, spec.relay)
                    except BlockingIOError:
                        send_errors += 1
            if time.monotonic() - drained_at > DRAIN_EVERY_S:
                drained_at = time.monotonic()
                copies_back += sum(len(sockets.drain(sock)) for sock in socks)
        messages = []
        result: dict[str, Any] = {
            "sent": pacer.sent,
            "skipped": pacer.skipped,
            "elapsed_s": time.monotonic() - pacer.started,
            "copies_back": copies_back,
            "send_errors": send_errors,
            "sent_at": sent_at,
        }
        conn.send(("ok", result))
