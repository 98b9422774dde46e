"""What pacing costs a sender of the load: waking for each message, or once a tick.

    .venv/bin/python bench/pacing_cost.py          # about 30 s

The sweep's sender process shares the machine's two cores with the relay, so what it
spends per message at a high offered rate is taken from the relay. This runs the
sender's loop alone (``relaybench.pacing.Pacer`` and a ``sendto`` per message, of one
300-byte datagram where the sweep's sender sends a message's 2 to 7) against a process
on 127.0.0.1 that only drains its socket, and reports the sender's CPU (user and
system) per message, the median of ROUNDS, for each rate, waking for every message
(``tick_s=0``) and at most once per ``senders.TICK_S``. Unicast on loopback only;
every run is bounded by its count.
"""

import contextlib
import multiprocessing
import os
import select
import socket
import statistics
import time
from multiprocessing.connection import Connection

from relaybench import senders
from relaybench.pacing import Pacer

RATES = (4_000.0, 8_000.0)
TICKS = (0.0, senders.TICK_S)
SECONDS = 2.0
ROUNDS = 3
DATAGRAM = bytes(300)
RECEIVE_BUFFER_BYTES = 4 << 20


def drain(sock: socket.socket, seconds: float) -> None:
    """Read whatever arrives for ``seconds`` (the relay's side, reduced to its reads)."""
    sock.setblocking(False)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        select.select([sock], [], [], 0.1)
        while True:
            try:
                sock.recv(2048)
            except BlockingIOError:
                break


def sender_cpu_us(rate: float, tick_s: float, address: tuple[str, int]) -> float:
    """The sender's CPU per message for SECONDS at ``rate``, paced with ``tick_s``."""
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    out.setblocking(False)
    total = round(rate * SECONDS)
    pacer = Pacer(
        rate,
        total,
        catch_up=max(1, round(rate * senders.CATCH_UP_S)),
        time_limit_s=SECONDS + senders.SEND_SLACK_S,
        tick_s=tick_s,
    )
    before = os.times()
    sent_at = [0.0] * total
    while batch := pacer.next_batch():
        for seq in range(pacer.done - batch, pacer.done):
            sent_at[seq] = time.monotonic()  # as the sender keeps it, for latency
            with contextlib.suppress(BlockingIOError):  # a full buffer: the same cost
                out.sendto(DATAGRAM, address)
    after = os.times()
    out.close()
    cpu = (after.user - before.user) + (after.system - before.system)
    return 1e6 * cpu / max(1, pacer.sent)


def receiver(conn: Connection, seconds: float) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
    sock.bind(("127.0.0.1", 0))
    conn.send(sock.getsockname())
    drain(sock, seconds)


def main() -> None:
    runs = len(RATES) * len(TICKS) * ROUNDS
    parent, child = multiprocessing.Pipe()
    process = multiprocessing.Process(target=receiver, args=(child, runs * (SECONDS + 1) + 5))
    process.start()
    try:
        address = parent.recv()
        results: dict[tuple[float, float], list[float]] = {}
        for _round in range(ROUNDS):
            for rate in RATES:
                for tick_s in TICKS:
                    results.setdefault((rate, tick_s), []).append(
                        sender_cpu_us(rate, tick_s, address)
                    )
    finally:
        process.kill()
        process.join()
    print("| messages/s | wakes | sender CPU us/message (median) | cores |")
    print("|---:|---|---:|---:|")
    for (rate, tick_s), values in results.items():
        us = statistics.median(values)
        wakes = "every message" if tick_s == 0 else f"once per {1e3 * tick_s:g} ms"
        print(f"| {rate:,.0f} | {wakes} | {us:.1f} | {us * rate / 1e6:.3f} |")


if __name__ == "__main__":
    main()
