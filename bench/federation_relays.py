"""Relays federated over a real nats-server on loopback (issue 12's figures).

    .venv/bin/python bench/federation_relays.py all          # the four below, about 4 minutes
    .venv/bin/python bench/federation_relays.py all --quick  # fewer rates and repeats (~2 min)
    .venv/bin/python bench/federation_relays.py latency      # or bridge, death, restart

Real processes only: one nats-server (tests/natsserver.py) and ``python -m mcrelay
daemon`` relays (relaybench.daemon: 127.0.0.1, free ports, a loopback API), each
stopped by its pid; the cluster key is written to a temporary directory. Members
are legacy clients: relaybench's sender and receiver processes for load, and
``mcrelay.client`` participants in this process for presence.

- latency: 1 sender on relay a, 1 receiver on relay b, 100-byte messages at 2,000/s
  for STEP_S, REPEATS times; the receiver decrypts a time-bounded sample of the
  copies to read the send time stamped in each. Baseline, same run: sender and
  receiver on one relay with federation off.
- bridge out: 1 sender and 1 receiver on one relay, federation on, at rising rates:
  envelopes/s it publishes and its CPU per message, beside the same relay with
  federation off (the bare relay) at the same rates.
- bridge in: a raw NATS connection in another process publishes MSG envelopes sealed
  with the cluster key (relay ``bench-publisher``) at rising rates to a relay with
  no member, then one: envelopes/s it takes in, its drops, its CPU per envelope.
- death: a member on relay a, one on relay b watching; kill -9 relay a; time until
  b's member gets CLIENT_DISCONNECTED for a's member (lease 10 s, snapshots 3 s).
- restart: a's member sends every 20 ms; stop the nats-server, wait 2 s, start it on
  its port again; time from its being back to b's member receiving again.

Writes bench/results/federation.json and .md; bench/README.md keeps the numbers.
"""

import argparse
import contextlib
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import trio
from relaybench import cluster, receivers, report, senders
from relaybench.daemon import INTERFACE, Daemon, running_daemon
from relaybench.keys import BenchKeys
from relaybench.load import Fleet
from relaybench.procfs import process_cpu
from relaybench.workers import Worker, stop_all

from mcrelay.client import (
    MessageReceived,
    Participant,
    ParticipantEvent,
    PeerPresent,
    open_participant,
)
from mcrelay.federation.keyfile import read_cluster_key
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from natsserver import NatsServer, binary

LATENCY_SAMPLES_PER_S = 400.0
"""Copies the receiver decrypts a second to read their stamps (RSA: not all 2,000)."""
QUIET_S = 0.5
DRAIN_LIMIT_S = 15.0
JOIN_TIMEOUT_S = 10.0
LEFT_TIMEOUT_S = 20.0
RESUME_TIMEOUT_S = 15.0
CHAT_EVERY_S = 0.02
OUTAGE_S = 2.0
SNAPSHOT_S = 3.0
"""The relays' snapshot period: the kill falls at a spread of points in it."""
TARGETS = {
    "latency_p99_ms": 10.0,
    "envelopes_per_s": 20_000.0,
    "left_s": 10.0,
    "resume_s": 2.0,
}


@dataclass(frozen=True)
class Options:
    repeats: int = 3
    step_s: float = 3.0
    message_bytes: int = 100
    latency_rate_per_s: float = 2000.0
    out_rates: tuple[float, ...] = (1000.0, 2000.0, 4000.0)
    in_rates: tuple[float, ...] = (10_000.0, 20_000.0, 40_000.0, 80_000.0)


QUICK = Options(repeats=2, step_s=2.0, out_rates=(2000.0,), in_rates=(20_000.0, 80_000.0))


@dataclass
class Bench:
    workdir: Path
    keys: BenchKeys
    cluster_key: Path
    server: NatsServer

    @contextlib.contextmanager
    def relay(self, name: str | None) -> Iterator[Daemon]:
        """A relay in the cluster as ``name``; with None, a relay with federation off."""
        extra = [] if name is None else cluster.federation_flags(
            self.server.url, self.cluster_key, name
        )  # fmt: skip
        with running_daemon(self.workdir, self.keys.key_file, extra) as daemon:
            yield daemon


def median(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


@contextlib.contextmanager
def fleet(
    keys: BenchKeys, sender_relay: Daemon, receiver_relay: Daemon, sample_per_s: float
) -> Iterator[Fleet]:
    """One receiver (registered first), then one sender, each in a process of its own."""
    workers: list[Worker] = []
    try:
        receiving = Worker(
            "receiver",
            receivers.main,
            receivers.ReceiverSpec(
                sockets=1, host=INTERFACE, relay=receiver_relay.address,
                key_pem=keys.client_private_pem, relay_key_pem=keys.relay_public_pem,
                sample_per_s=sample_per_s,
            ),
        )  # fmt: skip
        workers.append(receiving)
        receiving.reply()
        sending = Worker(
            "sender",
            senders.main,
            senders.SenderSpec(
                sockets=1, host=INTERFACE, relay=sender_relay.address,
                key_pem=keys.client_public_pem, relay_key_pem=keys.relay_public_pem,
                tick_s=0.0,  # a wake per message, as when its figures were taken
            ),
        )  # fmt: skip
        workers.append(sending)
        sending.reply()
        yield Fleet(sending, [receiving], 1, 1)
    finally:
        stop_all(workers)


# a. Latency across relays.


def latency(bench: Bench, options: Options) -> dict[str, Any]:
    layouts: dict[str, Any] = {}
    for layout in ("one relay", "across relays"):
        with contextlib.ExitStack() as stack:
            across = layout == "across relays"
            a = stack.enter_context(bench.relay("a" if across else None))
            b = stack.enter_context(bench.relay("b")) if across else a
            if across:
                cluster.wait_linked({"a": a.api, "b": b.api})
            members = stack.enter_context(fleet(bench.keys, a, b, LATENCY_SAMPLES_PER_S))
            rate, size = options.latency_rate_per_s, options.message_bytes
            before = [_counters(relay) for relay in (a, b)]
            started = time.monotonic()
            steps = [
                members.step(a.pid, None, i, rate, options.step_s, size)
                for i in range(1, options.repeats + 1)
            ]
            elapsed = time.monotonic() - started
            after = [_counters(relay) for relay in (a, b)]
            relays = {
                name: _counters_delta(earlier, later, elapsed)
                for name, earlier, later in zip("ab", before, after, strict=True)
            }
        layouts[layout] = {
            "p50_ms": median([step["latency_p50_ms"] for step in steps]),
            "p99_ms": median([step["latency_p99_ms"] for step in steps]),
            "worst_p99_ms": max(step["latency_p99_ms"] or 0.0 for step in steps),
            "offered_per_s": median([step["offered_per_s"] for step in steps]),
            "loss": median([step["loss"] for step in steps]),
            "samples": sum(step["latency_samples"] for step in steps),
            "relays": relays if across else {"a": relays["a"]},
            "steps": [_brief(step) for step in steps],
        }
    return layouts


def _counters(relay: Daemon) -> dict[str, Any]:
    status = relay.api.status()
    return {
        "cpu_s": process_cpu(relay.pid).total_s,
        "dropped": status["statistics"]["dropped"],
        "federation": status["federation"],
    }


def _counters_delta(
    before: dict[str, Any], after: dict[str, Any], elapsed: float
) -> dict[str, Any]:
    """A relay's cores, drops and envelopes over an interval."""
    delta: dict[str, Any] = {
        "cores": (after["cpu_s"] - before["cpu_s"]) / elapsed,
        "dropped": _delta(before["dropped"], after["dropped"]),
    }
    if after["federation"] is not None:
        earlier, later = before["federation"], after["federation"]
        for key in ("envelopes_published", "envelopes_received", "gaps"):
            delta[key] = later[key] - earlier[key]
        delta["envelopes_dropped"] = _delta(
            earlier["envelopes_dropped"], later["envelopes_dropped"]
        )
    return delta


def _brief(step: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "offered_per_s", "sent", "copies", "loss", "latency_samples", "latency_p50_ms",
        "latency_p99_ms", "latency_max_ms", "relay_cpu_ms_per_msg", "counters",
    )  # fmt: skip
    return {key: step.get(key) for key in keys}


# b. The bridge, out and in.


def bridge_out(bench: Bench, options: Options) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    for label, name in (("bare", None), ("federated", "out")):
        rows = []
        with bench.relay(name) as relay:
            if name is not None:
                cluster.wait_linked({name: relay.api}, others=0)
            with fleet(bench.keys, relay, relay, 0.0) as members:
                number = 0
                for rate in options.out_rates:
                    steps = []
                    for _ in range(options.repeats):
                        number += 1
                        before = cluster.federation(relay.api) if name else None
                        step = members.step(
                            relay.pid, relay.api, number, rate, options.step_s,
                            options.message_bytes,
                        )  # fmt: skip
                        published = None
                        if before is not None:
                            after = cluster.federation(relay.api)
                            count = after["envelopes_published"] - before["envelopes_published"]
                            published = count / step["sender"]["elapsed_s"]
                        steps.append({**_brief(step), "published_per_s": published})
                    rows.append(
                        {
                            "rate_per_s": rate,
                            "offered_per_s": median([s["offered_per_s"] for s in steps]),
                            "relayed_per_s": median(
                                [s["counters"]["messages_relayed"] / options.step_s for s in steps]
                            ),
                            "published_per_s": median([s["published_per_s"] for s in steps]),
                            "cpu_ms_per_msg": median([s["relay_cpu_ms_per_msg"] for s in steps]),
                            "loss": median([s["loss"] for s in steps]),
                            "steps": steps,
                        }
                    )
        runs[label] = rows
    return runs


def _received(relay: Daemon) -> int:
    return int(cluster.federation(relay.api)["envelopes_received"])


def _wait_still(read: Callable[[], int]) -> tuple[int, float]:
    """Until ``read()`` has not changed for ``QUIET_S``: its value and when it last rose."""
    value, changed = read(), time.monotonic()
    deadline = changed + DRAIN_LIMIT_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != value:
            value, changed = now, time.monotonic()
        elif time.monotonic() - changed > QUIET_S:
            break
    return value, changed


def bridge_in(bench: Bench, options: Options) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    spec = cluster.PublisherSpec(
        bench.server.port, read_cluster_key(bench.cluster_key), options.message_bytes
    )
    for local in (0, 1):
        rows = []
        with contextlib.ExitStack() as stack:
            relay = stack.enter_context(bench.relay("in"))
            cluster.wait_linked({"in": relay.api}, others=0)
            receiver = None
            if local:
                receiver = stack.enter_context(fleet(bench.keys, relay, relay, 0.0)).receiving[0]
            publisher = Worker("publisher", cluster.publisher_main, spec)
            stack.callback(publisher.stop)
            publisher.reply()
            verify = True  # a new relay: it hears the publisher first
            for rate in options.in_rates:
                steps = []
                for _ in range(options.repeats):
                    if receiver is not None:
                        receiver.call("reset", 0)
                    before, cpu_before = cluster.federation(relay.api), process_cpu(relay.pid)
                    started = time.monotonic()
                    sent = publisher.call("send", rate, options.step_s, verify)
                    verify = False
                    received, last = _wait_still(partial(_received, relay))
                    cpu = (process_cpu(relay.pid) - cpu_before).total_s
                    after = cluster.federation(relay.api)
                    taken = received - before["envelopes_received"]
                    span = max(sent["elapsed_s"], last - started)
                    dropped = _delta(before["envelopes_dropped"], after["envelopes_dropped"])
                    steps.append(
                        {
                            "sent": sent["sent"],
                            "offered_per_s": sent["sent"] / sent["elapsed_s"],
                            "received": taken,
                            "received_per_s": taken / span,
                            "accepted_per_s": (taken - dropped.get("overloaded", 0)) / span,
                            "cpu_us_per_envelope": 1e6 * cpu / taken if taken else None,
                            "dropped": dropped,
                            "copies": receiver.call("count") if receiver is not None else None,
                        }
                    )
                rows.append(
                    {
                        "rate_per_s": rate,
                        "offered_per_s": median([s["offered_per_s"] for s in steps]),
                        "received_per_s": median([s["received_per_s"] for s in steps]),
                        "accepted_per_s": median([s["accepted_per_s"] for s in steps]),
                        "cpu_us_per_envelope": median([s["cpu_us_per_envelope"] for s in steps]),
                        "lost": median([1 - s["received"] / s["sent"] for s in steps]),
                        "steps": steps,
                    }
                )
        runs[f"{local} local members"] = rows
    return runs


def _delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}


# c. A relay's death, seen from another; d. the nats-server's restart.


async def _wait_event(
    member: Participant, wanted: Callable[[ParticipantEvent], bool], timeout_s: float
) -> None:
    with trio.fail_after(timeout_s):
        async for event in member.events:
            if wanted(event):
                return


def _joined(peer: Participant) -> Callable[[ParticipantEvent], bool]:
    return lambda e: isinstance(e, PeerJoined | PeerPresent) and e.peer == peer.address


async def _death_round(a: Daemon, b: Daemon, keys: list[Any], delay_s: float) -> float:
    async with (
        open_participant(destination=b.address, interface=INTERFACE, key=keys[0]) as watcher,
        open_participant(destination=a.address, interface=INTERFACE, key=keys[1]) as member,
    ):
        await _wait_event(watcher, _joined(member), JOIN_TIMEOUT_S)
        await trio.sleep(delay_s)
        killed = time.monotonic()
        os.kill(a.pid, signal.SIGKILL)
        await _wait_event(
            watcher,
            lambda e: isinstance(e, PeerLeft) and e.peer == member.address,
            LEFT_TIMEOUT_S,
        )
        return time.monotonic() - killed


def death(bench: Bench, options: Options) -> dict[str, Any]:
    keys = [crypto.generate_private_key() for _ in range(2)]
    rounds = []
    delays = [SNAPSHOT_S * i / options.repeats for i in range(options.repeats)]
    with bench.relay("b") as b:
        for delay_s in delays:
            with bench.relay("a") as a:
                cluster.wait_linked({"a": a.api, "b": b.api})
                rounds.append(trio.run(_death_round, a, b, keys, delay_s))
    return {
        "kill_after_join_s": delays,
        "left_s": rounds,
        "median_s": median(list(rounds)),
        "max_s": max(rounds),
    }


async def _restart_round(server: NatsServer, a: Daemon, b: Daemon, keys: list[Any]) -> float:
    first, resumed = trio.Event(), trio.Event()
    back = resumed_at = math.inf
    async with (
        open_participant(destination=b.address, interface=INTERFACE, key=keys[0]) as watcher,
        open_participant(destination=a.address, interface=INTERFACE, key=keys[1]) as member,
        trio.open_nursery() as nursery,
    ):
        await _wait_event(watcher, _joined(member), JOIN_TIMEOUT_S)

        async def chat() -> None:
            for number in range(int(60 / CHAT_EVERY_S)):
                await member.send(f"{number}")
                await trio.sleep(CHAT_EVERY_S)

        async def listen() -> None:
            nonlocal resumed_at
            async for event in watcher.events:
                if isinstance(event, MessageReceived) and event.sender == member.address:
                    first.set()
                    if time.monotonic() > back and not resumed.is_set():
                        resumed_at = time.monotonic()
                        resumed.set()

        nursery.start_soon(chat)
        nursery.start_soon(listen)
        with trio.fail_after(JOIN_TIMEOUT_S):
            await first.wait()
        await trio.to_thread.run_sync(server.stop)
        await trio.sleep(OUTAGE_S)
        await trio.to_thread.run_sync(server.start)
        back = time.monotonic()
        with trio.fail_after(RESUME_TIMEOUT_S):
            await resumed.wait()
        nursery.cancel_scope.cancel()
    return resumed_at - back


def restart(bench: Bench, options: Options) -> dict[str, Any]:
    keys = [crypto.generate_private_key() for _ in range(2)]
    rounds = []
    with bench.relay("a") as a, bench.relay("b") as b:
        for _ in range(options.repeats):
            cluster.wait_linked({"a": a.api, "b": b.api})
            rounds.append(trio.run(_restart_round, bench.server, a, b, keys))
    return {"resume_s": rounds, "median_s": median(list(rounds)), "max_s": max(rounds)}


# The report.


def targets(result: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []

    def row(figure: str, measured: float | None, target: str, passed: bool | None) -> None:
        verdict = "-" if passed is None or measured is None else ("pass" if passed else "FAIL")
        rows.append([figure, measured, target, verdict])

    if "latency" in result:
        p99 = result["latency"]["across relays"]["p99_ms"]
        row("cross-relay p99 at 2,000/s, ms", p99, "< 10", p99 is not None and p99 < 10)
    if "bridge_out" in result:
        out = max(r["published_per_s"] or 0.0 for r in result["bridge_out"]["federated"])
        row("envelopes/s out (members' messages)", out, ">= 20,000", out >= 20_000)
    if "bridge_in" in result:
        for members, rows_ in result["bridge_in"].items():
            best = max(r["received_per_s"] for r in rows_)
            row(f"envelopes/s taken in, {members}", best, ">= 20,000", best >= 20_000)
            best = max(r["accepted_per_s"] for r in rows_)
            row(f"envelopes/s delivered, {members}", best, ">= 20,000", best >= 20_000)
    if "death" in result:
        worst = result["death"]["max_s"]
        row("relay killed to left at the other, s (worst)", worst, "<= 10", worst <= 10)
    if "restart" in result:
        worst = result["restart"]["max_s"]
        row("nats-server back to relaying again, s (worst)", worst, "<= 2", worst <= 2)
    return rows


def markdown(result: dict[str, Any]) -> str:
    parts = ["## Federation", "", report.header(result), ""]
    parts += [report.table(["figure", "measured", "target", "result"], targets(result)), ""]
    if "latency" in result:
        rows = [
            [name, r["offered_per_s"], r["p50_ms"], r["p99_ms"], r["worst_p99_ms"],
             report.pct(r["loss"]), r["samples"]]
            for name, r in result["latency"].items()
        ]  # fmt: skip
        parts += ["### Latency, 100-byte messages at 2,000/s (medians of the repeats)", ""]
        headers = ["layout", "offered/s", "p50 ms", "p99 ms", "worst p99 ms", "loss", "samples"]
        parts += [report.table(headers, rows), ""]
    if "bridge_out" in result:
        out = result["bridge_out"]
        rows = [
            [bare["rate_per_s"], bare["relayed_per_s"], bare["cpu_ms_per_msg"],
             fed["relayed_per_s"], fed["published_per_s"], fed["cpu_ms_per_msg"],
             None if fed["cpu_ms_per_msg"] is None or bare["cpu_ms_per_msg"] is None
             else 1e3 * (fed["cpu_ms_per_msg"] - bare["cpu_ms_per_msg"])]
            for bare, fed in zip(out["bare"], out["federated"], strict=True)
        ]  # fmt: skip
        parts += ["### Bridge out: 1 sender, 1 receiver on the relay, federation off / on", ""]
        headers = [
            "asked/s", "bare relayed/s", "bare CPU ms/msg", "federated relayed/s",
            "envelopes published/s", "federated CPU ms/msg", "more per envelope, us",
        ]  # fmt: skip
        parts += [report.table(headers, rows), ""]
    if "bridge_in" in result:
        rows = [
            [members, r["rate_per_s"], r["offered_per_s"], r["received_per_s"],
             r["accepted_per_s"], report.pct(r["lost"]), r["cpu_us_per_envelope"],
             ", ".join(f"{k} {v}" for s in r["steps"] for k, v in s["dropped"].items()) or "-"]
            for members, runs in result["bridge_in"].items() for r in runs
        ]  # fmt: skip
        parts += ["### Bridge in: sealed MSG envelopes from a raw bus client", ""]
        headers = [
            "relay", "asked/s", "offered/s", "taken in/s", "delivered/s", "not taken",
            "CPU us/envelope",
            "drops (all repeats)",
        ]  # fmt: skip
        parts += [report.table(headers, rows), ""]
    for key, what, field in (
        ("death", "Relay killed (kill -9) to its member left at the other relay", "left_s"),
        ("restart", "nats-server back to a message crossing again", "resume_s"),
    ):
        if key in result:
            r = result[key]
            rounds = ", ".join(f"{value:.3f}" for value in r[field])
            parts += [
                f"### {what}",
                "",
                f"Rounds: {rounds} s; median {r['median_s']:.3f} s, worst {r['max_s']:.3f} s.",
                "",
            ]
    return "\n".join(parts).rstrip()


EXPERIMENTS: dict[str, Callable[[Bench, Options], dict[str, Any]]] = {
    "latency": latency,
    "bridge_out": bridge_out,
    "bridge_in": bridge_in,
    "death": death,
    "restart": restart,
}
CHOICES = {"latency": ["latency"], "bridge": ["bridge_out", "bridge_in"], "death": ["death"]}
CHOICES |= {"restart": ["restart"], "all": list(EXPERIMENTS)}


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=list(CHOICES))
    parser.add_argument("--quick", action="store_true", help="fewer rates and repeats")
    args = parser.parse_args()
    if binary() is None:
        print("federation: error: no nats-server (make .venv/.installed-bench)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    options = QUICK if args.quick else Options()
    started = time.monotonic()
    result: dict[str, Any] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="mcrelay-fedbench-") as tmp:
            workdir = Path(tmp)
            server = NatsServer(workdir, "bench")
            server.start()
            try:
                bench = Bench(
                    workdir,
                    BenchKeys.create(workdir),
                    cluster.write_cluster_key(workdir / "cluster.key"),
                    server,
                )
                for name in CHOICES[args.experiment]:
                    print(f"federation: {name}", file=sys.stderr, flush=True)
                    result[name] = EXPERIMENTS[name](bench, options)
            finally:
                server.kill()
    except KeyboardInterrupt:
        print("interrupted; the relays, clients and nats-server were stopped", file=sys.stderr)
        return 130
    settings = {**asdict(options), "targets": TARGETS, "experiment": args.experiment}
    full = {**report.envelope("federation", settings, started), **result}
    text = markdown(full)
    path = report.write("federation", full, text)
    print(f"{text}\n\nfederation: {path}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
