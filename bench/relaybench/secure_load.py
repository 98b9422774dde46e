"""Secure senders and receivers in their own processes, driven as the legacy ones are.

They answer the commands of :class:`relaybench.load.Fleet` (``send``; ``reset``,
``count``, ``report``; ``stop``), so one measured step is the same code for both
profiles. Unlike the legacy receivers, a secure receiver must decrypt every copy
and acknowledge it (the relay keeps at most 8 messages in flight per member), so
every copy costs its process an AEAD open and the channel's work; the latency of
every copy is read from its stamp.

Senders keep their windows full: a message is queued in its client's channel
(8 in flight, up to 64 more queued) at its due time, and skipped (counted) only
when that queue is full, so the offered rate is what the relay was really given.
"""

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import RemoteProtocolError
from mcrelay.protocol.secure.messages import (
    Chat,
    RelayedChat,
    decode_relay_message_untrusted,
    encode_message,
)
from relaybench import senders as legacy_senders
from relaybench.api import Api
from relaybench.load import Fleet, wait_registered
from relaybench.pacing import Pacer
from relaybench.procfs import raise_nofile
from relaybench.receivers import BUCKET_S, Tally
from relaybench.secure_client import Clients, OnBody, SecureClient
from relaybench.wire import STAMP
from relaybench.workers import Worker, stop_all

DRAIN_LIMIT_S = 10.0
"""After its last message is due, a sender waits this long at most for its ACKs."""
RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
SENDER_RECEIVE_BUFFER_BYTES = 1024 * 1024


@dataclass(frozen=True)
class SecureSpec:
    clients: int
    relay: Address
    relay_key: bytes
    first_sender: int = 0


def receiver_main(conn: Connection, spec: SecureSpec) -> None:
    raise_nofile(spec.clients + 256)
    clients = Clients(spec.clients, spec.relay, spec.relay_key, RECEIVE_BUFFER_BYTES)
    tally = Tally()
    errors_before: Counter[str] = Counter()

    def on_body(_client: SecureClient, body: bytes, now: float) -> None:
        try:
            message = decode_relay_message_untrusted(body)
        except RemoteProtocolError:
            tally.bad_samples += 1
            return
        if not isinstance(message, RelayedChat) or len(message.text) < STAMP.size:
            tally.other += 1
            return
        step, _sender, seq = STAMP.unpack_from(message.text)
        tally.copies += 1
        tally.buckets[int(now / BUCKET_S)] += 1
        if step == tally.step:
            tally.samples.append((seq, now))
        else:
            tally.late_samples += 1

    clients.register(on_body)
    clients.add_reader(conn)
    conn.send(("ok", [client.sock.getsockname() for client in clients.clients]))
    try:
        while True:
            if not clients.poll(time.monotonic() + 1.0, on_body):
                continue
            command = conn.recv()
            if command[0] == "stop":
                return
            if command[0] == "reset":
                tally = Tally(step=command[1])
                errors_before = clients.errors()
                conn.send(("ok", None))
            elif command[0] == "count":
                conn.send(("ok", tally.copies))
            elif command[0] == "others":
                conn.send(("ok", tally.other))
            else:
                errors = dict(clients.errors() - errors_before)
                conn.send(("ok", {**tally.report(), "client_errors": errors}))
    finally:
        clients.close()


def sender_main(conn: Connection, spec: SecureSpec) -> None:
    clients = Clients(spec.clients, spec.relay, spec.relay_key, SENDER_RECEIVE_BUFFER_BYTES)
    copies_back = 0

    def on_body(_client: SecureClient, _body: bytes, _now: float) -> None:
        nonlocal copies_back
        copies_back += 1  # other senders' messages (and the roster): read and discarded

    clients.register(on_body)
    clients.add_reader(conn)
    conn.send(("ok", [client.sock.getsockname() for client in clients.clients]))
    try:
        while True:
            if not clients.poll(time.monotonic() + 1.0, on_body):
                continue
            command = conn.recv()
            if command[0] == "stop":
                return
            if command[0] == "prepare":  # nothing to make ahead: a stamp costs no RSA here
                conn.send(("ok", None))
                continue
            _command, step, rate_per_s, duration_s, size = command
            copies_back = 0
            result = send(clients, on_body, spec, step, rate_per_s, duration_s, size)
            conn.send(("ok", {**result, "copies_back": copies_back}))
    finally:
        clients.close()


def send(
    clients: Clients,
    on_body: OnBody,
    spec: SecureSpec,
    step: int,
    rate_per_s: float,
    duration_s: float,
    size: int,
) -> dict[str, Any]:
    """Offer ``rate_per_s`` for ``duration_s``, then wait for the ACKs (bounded)."""
    filler = bytes(max(0, size - STAMP.size))
    pacer = Pacer(
        rate_per_s=rate_per_s,
        total=max(1, round(rate_per_s * duration_s)),
        catch_up=max(1, round(rate_per_s * legacy_senders.CATCH_UP_S)),
        time_limit_s=duration_s + legacy_senders.SEND_SLACK_S,
    )
    full = 0
    sent_at = [0.0] * pacer.total
    retransmitted, errors_before = _retransmissions(clients), clients.errors()
    while pacer.done < pacer.total:
        due_at = pacer.wake_at()
        if time.monotonic() >= due_at:
            batch = pacer.next_batch()
            if not batch:
                break
            now = time.monotonic()
            for seq in range(pacer.done - batch, pacer.done):
                index = seq % len(clients.clients)
                client = clients.clients[index]
                session = client.session
                assert session is not None
                if not session.channel.can_send:
                    full += 1
                    continue
                text = STAMP.pack(step, spec.first_sender + index, seq) + filler
                session.channel.send(encode_message(Chat(text)), now)
                sent_at[seq] = now
                clients.wake(client, now)
        clients.poll(due_at, on_body)
    elapsed = time.monotonic() - pacer.started
    drain_until = time.monotonic() + DRAIN_LIMIT_S
    while time.monotonic() < drain_until and not _settled(clients):
        clients.poll(time.monotonic() + 0.01, on_body)
    return {
        "sent": pacer.sent - full,
        "skipped": pacer.skipped + full,
        "queue_full": full,
        "elapsed_s": elapsed,
        "unsettled": not _settled(clients),
        "retransmissions": _retransmissions(clients) - retransmitted,
        "client_errors": dict(clients.errors() - errors_before),
        "sent_at": sent_at,
    }


def _retransmissions(clients: Clients) -> int:
    """Fragments the senders' channels sent again, since they started."""
    return sum(
        client.session.channel.statistics().retransmissions
        for client in clients.clients
        if client.session is not None
    )


def _settled(clients: Clients) -> bool:
    for client in clients.clients:
        if client.session is None:
            continue
        statistics = client.session.channel.statistics()
        if statistics.in_flight or statistics.queued:
            return False
    return True


@contextlib.contextmanager
def open_secure_fleet(
    relay: Address,
    relay_key: bytes,
    senders_count: int,
    receivers_count: int,
    receiver_processes: int,
    api: Api,
) -> Iterator[Fleet]:
    """Register the receivers (in parallel processes), then the senders; wait until
    the relay lists every one."""
    processes = max(1, min(receiver_processes, receivers_count))
    shares = [
        receivers_count // processes + (i < receivers_count % processes) for i in range(processes)
    ]
    workers: list[Worker] = []
    try:
        for index, share in enumerate(shares):
            spec = SecureSpec(share, relay, relay_key)
            workers.append(Worker(f"secure-receivers-{index}", receiver_main, spec))
        for worker in workers:
            worker.reply()
        sending = Worker("secure-senders", sender_main, SecureSpec(senders_count, relay, relay_key))
        workers.append(sending)
        sending.reply()
        wait_registered(api, senders_count + receivers_count)
        yield Fleet(sending, workers[:-1], senders_count, receivers_count)
    finally:
        stop_all(workers)
