"""Senders and receivers in their own processes, and one measured step of load.

A step: the receivers reset their tallies, the senders send at a rate for a
time, the harness waits until no copy has arrived for ``QUIET_S`` and the
relay says it holds nothing in crypto or to send, then reads the relay's CPU
and its counters. The API is only asked once the senders have stopped (and
once before they start): those few requests are the only API work in a step.
"""

import contextlib
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from relaybench import receivers, senders
from relaybench.api import Api, counter_delta
from relaybench.keys import BenchKeys
from relaybench.procfs import machine_busy_s, process_cpu, processes_cpu_s, udp_rcvbuf_errors
from relaybench.stats import percentile, ratio
from relaybench.workers import Worker, call_all, stop_all

HOST = "127.0.0.1"
QUIET_S = 0.3
DRAIN_LIMIT_S = 10.0
"""After the senders stop, the copies still arriving are waited for this long at most."""
WARM_UP_S = 0.5
"""The delivered rate is read from this long after the step's start to the senders' end."""
REGISTERED_TIMEOUT_S = 30.0
SAMPLES_PER_PROCESS_S = 30.0
PREPARE_S = 300.0
"""How long the senders may take to make a step's messages (an RSA encryption each)."""


@dataclass
class Fleet:
    """``senders`` sockets in one process, ``receivers`` sockets spread over a few."""

    sending: Worker
    receiving: list[Worker]
    senders: int
    receivers: int

    @property
    def pids(self) -> list[int]:
        return [self.sending.pid, *(worker.pid for worker in self.receiving)]

    def step(
        self,
        relay_pid: int,
        api: Api | None,
        step: int,
        rate_per_s: float,
        duration_s: float,
        size: int,
    ) -> dict[str, Any]:
        """Offer ``rate_per_s`` messages of ``size`` bytes for ``duration_s``; measure it."""
        self.sending.call("prepare", step, rate_per_s, duration_s, size, timeout_s=PREPARE_S)
        call_all(self.receiving, "reset", step)
        before = api.statistics() if api else None
        cpu_before, load_before = process_cpu(relay_pid), processes_cpu_s(self.pids)
        kernel_before, machine_before = udp_rcvbuf_errors(), machine_busy_s()
        started = time.monotonic()
        sent = self.sending.call(
            "send", step, rate_per_s, duration_s, size, timeout_s=duration_s + 30
        )
        sent_by = time.monotonic()
        self._wait_quiet(api)
        ended = time.monotonic()
        cpu = process_cpu(relay_pid) - cpu_before
        load_s = processes_cpu_s(self.pids) - load_before
        kernel_drops = udp_rcvbuf_errors() - kernel_before
        machine_s = machine_busy_s() - machine_before
        counters = counter_delta(before, api.statistics()) if api and before else None
        reports = call_all(self.receiving, "report")

        copies = sum(report["copies"] for report in reports)
        buckets: Counter[int] = Counter()
        for report in reports:
            buckets.update(report["buckets"])
        first = math.ceil((started + min(WARM_UP_S, duration_s / 4)) / receivers.BUCKET_S)
        last = math.floor(sent_by / receivers.BUCKET_S)
        window_s = max(1, last - first) * receivers.BUCKET_S
        in_window = sum(buckets[index] for index in range(first, last))
        sent_at = sent.pop("sent_at")
        latencies = [
            arrived - sent_at[seq]
            for report in reports
            for seq, arrived in report["samples"]
            if seq < len(sent_at) and sent_at[seq]
        ]
        expected = sent["sent"] * self.receivers
        relayed = counters["messages_relayed"] if counters else copies / self.receivers

        def ms(value: float | None) -> float | None:
            return None if value is None else 1e3 * value

        return {
            "step": step,
            "rate_asked_per_s": rate_per_s,
            "size": size,
            "duration_s": duration_s,
            "sent": sent["sent"],
            "skipped": sent["skipped"],
            "offered_per_s": sent["sent"] / sent["elapsed_s"],
            "copies_expected": expected,
            "copies": copies,
            "loss": ratio(expected - copies, expected),
            "delivered_per_s": in_window / window_s / self.receivers,
            "delivered_window_s": window_s,
            "drain_s": ended - sent_by,
            "latency_samples": len(latencies),
            "latency_p50_ms": ms(percentile(latencies, 0.50)),
            "latency_p99_ms": ms(percentile(latencies, 0.99)),
            "latency_max_ms": ms(max(latencies, default=None)),
            "late_samples": sum(report["late_samples"] for report in reports),
            "bad_samples": sum(report["bad_samples"] for report in reports),
            "relayed": relayed,
            "relay_cpu_s": cpu.total_s,
            "relay_main_cpu_s": cpu.main_s,
            "relay_cpu_ms_per_msg": ms(ratio(cpu.total_s, relayed)),
            "relay_main_ms_per_msg": ms(ratio(cpu.main_s, relayed)),
            "relay_others_ms_per_msg": ms(ratio(cpu.others_s, relayed)),
            "relay_cores": cpu.total_s / (ended - started),
            "load_cores": load_s / (ended - started),
            # Everything else: this harness, other processes, kernel work charged to nobody.
            "other_cores": (machine_s - cpu.total_s - load_s) / (ended - started),
            "kernel_rcvbuf_drops": kernel_drops,
            "copies_to_senders": sent["copies_back"],
            "sender": sent,
            "client_errors": dict(
                sum(
                    (Counter(part.get("client_errors", {})) for part in [*reports, sent]),
                    Counter(),
                )
            ),
            "counters": counters,
        }

    def _wait_quiet(self, api: Api | None) -> None:
        """Until no copy arrived for ``QUIET_S`` and the relay (asked when there is an API)
        holds no message in crypto and nothing to send."""
        deadline = time.monotonic() + DRAIN_LIMIT_S
        seen = -1
        while time.monotonic() < deadline:
            count = sum(call_all(self.receiving, "count"))
            if count == seen and (api is None or _relay_idle(api)):
                return
            seen = count
            time.sleep(QUIET_S)


def _relay_idle(api: Api) -> bool:
    statistics = api.statistics()
    return not (statistics["pending_relays"] or statistics["send_queue"])


@contextlib.contextmanager
def open_fleet(
    relay: tuple[str, int],
    keys: BenchKeys,
    senders_count: int,
    receivers_count: int,
    receiver_processes: int,
    api: Api | None,
    sample: bool = True,
    tick_s: float = senders.TICK_S,
) -> Iterator[Fleet]:
    """Register the receivers, then the senders; with ``api``, wait until the relay lists all.
    The senders wake at most once per ``tick_s`` (0: for every message)."""
    processes = max(1, min(receiver_processes, receivers_count))
    shares = [
        receivers_count // processes + (i < receivers_count % processes) for i in range(processes)
    ]
    workers: list[Worker] = []
    try:
        for index, share in enumerate(shares):
            spec = receivers.ReceiverSpec(
                sockets=share,
                host=HOST,
                relay=relay,
                key_pem=keys.client_private_pem,
                relay_key_pem=keys.relay_public_pem,
                sample_per_s=SAMPLES_PER_PROCESS_S if sample else 0.0,
            )
            workers.append(Worker(f"receivers-{index}", receivers.main, spec))
        for worker in workers:
            worker.reply()
        sending = Worker(
            "senders",
            senders.main,
            senders.SenderSpec(
                sockets=senders_count,
                host=HOST,
                relay=relay,
                key_pem=keys.client_public_pem,
                relay_key_pem=keys.relay_public_pem,
                tick_s=tick_s,
            ),
        )
        workers.append(sending)
        sending.reply()
        if api is not None:
            wait_registered(api, senders_count + receivers_count)
        yield Fleet(sending, workers[:-1], senders_count, receivers_count)
    finally:
        stop_all(workers)


def wait_registered(api: Api, count: int) -> None:
    deadline = time.monotonic() + REGISTERED_TIMEOUT_S
    while (registered := api.client_count()) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the relay lists {registered} of {count} clients")
        time.sleep(0.1)
