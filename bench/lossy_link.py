"""Lossy links: the real relay and participants across a link that loses, duplicates,
reorders and delays packets, with every missing copy accounted for.

As root, the script makes two network namespaces (named with our pid) joined by
the user-space netem link of ``netem_link.py`` (this kernel has no sch_netem).
The daemon runs in one, one sender and two receivers in the other, and they
talk across the link. Messages of exactly F fragments are sent, one fragment
count after the other; between them the relay's counters are read from its
control API (``GET /v1/status``). Each message carries its number and a
checksum, so the receivers count duplicates and corruption. The link records,
from the cleartext FRAGMENT headers and RELAYED_MESSAGE lengths, which messages
reached the relay whole, in part or not at all, and which relayed copies it
lost: the relay's counters must agree with it. bench/README.md ("Lossy links")
explains the figures and the expected ratio. With ``--check`` the run is also
judged (see :func:`check`): exit status 1 when the relay delivered a message twice
or corrupted, left a loss unexplained, or the delivery ratio is off what the link
allows by more than five sigma. Ctrl-C or SIGTERM stops what we started (by pid)
and deletes both namespaces.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from netem_link import (
    CLIENTS_IP,
    CLIENTS_TUN,
    RELAY_IP,
    RELAY_TUN,
    Impairment,
    LinkDirection,
    namespaces,
    netem_probe,
    queue_stats,
    tool,
    tun_pair,
)

from mcrelay.cli.api_client import Api, open_api
from mcrelay.cli.status import ApiError, ApiUnreachable
from mcrelay.client.participant import MessageReceived, Participant, open_participant
from mcrelay.protocol import legacy
from mcrelay.protocol.addresses import Address
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.legacy.events import FragmentReceived, RelayedMessage
from mcrelay.protocol.legacy.fragments import FRAGMENT_SIZE, MAX_FRAGMENTS
from mcrelay.protocol.legacy.tlv import TLV_HEADER

GROUP = "224.1.1.1"
RELAY_PORT = 5007
API_ADDRESS = "127.0.0.1:7507"
RECEIVERS = 2
KEY_BYTES = 256
BLOCK_PLAINTEXT_BYTES = 190
BLOCK_TLV_BYTES = TLV_HEADER.size + KEY_BYTES
RELAY_MAX_MESSAGES_PER_SOURCE = 1024
"""Far above what the pacing keeps in reassembly, so that bound never drops a fragment."""
TIMEOUT = DropReason.REASSEMBLY_TIMEOUT.value
BENIGN_DROPS = {DropReason.DUPLICATE_FRAGMENT.value, DropReason.LATE_FRAGMENT.value, TIMEOUT}
"""Fragment copies the link duplicated, and messages the link left incomplete."""
KEEPALIVE_INTERVAL_S = 0.5
"""Participants resend their key this often, so a lost registration heals quickly."""
KEY_RETRY_INTERVAL_S = 0.25
REGISTER_LIMIT_S = 15.0
READY_LIMIT_S = 20.0
POLL_S = 0.05
SLACK_S = 10.0
"""Added to every wait whose length we know (sending, settling, draining)."""
QUIET_S = 0.5
STOP_LIMIT_S = 5.0
RUN_LIMIT_S = 600.0
CHECK_SIGMAS = 5.0
"""``--check``: the band around the expected ratio; a correct relay leaves it about
once in 1.7 million runs (for each fragment count judged)."""
CHECK_MIN_MESSAGES = 100
"""``--check`` judges the ratio of a fragment count sent at least this many times (fewer
make the normal approximation of the ratio's spread too rough)."""
# Message plaintext: magic 4s | fragments u16 | index u32 | filler | SHA-256 of the rest, cut
MESSAGE_HEADER = struct.Struct("!4sHI")
MESSAGE_MAGIC = b"LOSY"
CHECKSUM_BYTES = 16


# Messages that take an exact number of fragments.


def fragments_for(blocks: int) -> int:
    """FRAGMENT datagrams of a message of ``blocks`` 190-byte blocks (2048-bit relay key)."""
    return math.ceil(blocks * BLOCK_TLV_BYTES / FRAGMENT_SIZE)


def blocks_for(fragments: int) -> int:
    """Blocks of the message that takes exactly ``fragments`` fragments."""
    for blocks in range(1, MAX_FRAGMENTS + 1):
        if fragments_for(blocks) == fragments:
            return blocks
    raise ValueError(f"no message takes exactly {fragments} fragments")


def make_message(fragments: int, index: int) -> bytes:
    """A message of full blocks: the largest that takes ``fragments`` fragments."""
    size = blocks_for(fragments) * BLOCK_PLAINTEXT_BYTES
    body = MESSAGE_HEADER.pack(MESSAGE_MAGIC, fragments, index)
    body += random.randbytes(size - len(body) - CHECKSUM_BYTES)
    return body + hashlib.sha256(body).digest()[:CHECKSUM_BYTES]


def read_message(data: bytes) -> tuple[int, int] | None:
    """(fragments, index) of an intact message; None when it is corrupted."""
    body, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if (
        len(body) < MESSAGE_HEADER.size
        or hashlib.sha256(body).digest()[:CHECKSUM_BYTES] != checksum
    ):
        return None
    magic, fragments, index = MESSAGE_HEADER.unpack_from(body)
    if magic != MESSAGE_MAGIC or len(data) != blocks_for(fragments) * BLOCK_PLAINTEXT_BYTES:
        return None
    return fragments, index


# What crossed the link, seen from its cleartext headers.


@dataclass
class LinkLedger:
    """Per message sent to the relay, the seqs that crossed; per relayed copy, its fate."""

    fragments: dict[bytes, tuple[int, set[int]]] = field(default_factory=dict)
    copies: dict[int, Counter[str]] = field(default_factory=dict)

    def to_relay(self, payload: bytes, copies: int) -> None:
        for event in legacy.decode_client_datagram_untrusted(payload):
            if isinstance(event, FragmentReceived):
                fragment = event.fragment
                _, crossed = self.fragments.setdefault(fragment.msg_id, (fragment.total, set()))
                if copies:
                    crossed.add(fragment.seq)

    def to_clients(self, payload: bytes, copies: int) -> None:
        for event in legacy.decode_relay_datagram_untrusted(payload):
            if isinstance(event, RelayedMessage):
                fragments = fragments_for(len(event.ciphertext) // KEY_BYTES)
                tally = self.copies.setdefault(fragments, Counter())
                tally.update(seen=1, lost=copies == 0, duplicated=copies == 2)

    def view(self, fragments: int) -> dict[str, int]:
        """Messages that reached the relay whole, in part or not at all; relayed copies."""
        seen = Counter(
            "whole" if len(crossed) == total else "partial" if crossed else "none"
            for total, crossed in self.fragments.values()
            if total == fragments
        )
        copies = self.copies.get(fragments, Counter())
        return {name: seen[name] for name in ("whole", "partial", "none")} | {
            f"copies_{name}": copies[name] for name in ("seen", "lost", "duplicated")
        }


def expected_ratio(impairment: Impairment, fragments: int) -> float:
    """F fragments must reach the relay, then the relayed copy the receiver."""
    return impairment.datagram_delivery() ** (fragments + 1)


def ratio_sigma(impairment: Impairment, fragments: int, messages: int) -> float:
    """Standard deviation of the delivery ratio over ``messages`` messages.

    Copies delivered per message: Y = A (B_1 + ... + B_R), A (all fragments reach
    the relay) ~ Bernoulli(a = p^F), B_i (copy i crosses) ~ Bernoulli(p), all
    independent: Var Y = a (Rp + R(R-1)p^2) - (aRp)^2. The ratio is sum(Y) / (RK).
    """
    p, r = impairment.datagram_delivery(), RECEIVERS
    a = p**fragments
    variance = a * (r * p + r * (r - 1) * p * p) - (a * r * p) ** 2
    return math.sqrt(variance / (r * r * messages))


# The clients' namespace: one sender, two receivers, driven by JSON lines on stdin.


@dataclass
class Tally:
    """What one receiver got from the sender: per fragment count, copies per message."""

    copies: dict[int, Counter[int]] = field(default_factory=dict)
    corrupted: Counter[int] = field(default_factory=Counter)
    foreign: int = 0
    last_at: float = 0.0

    async def collect(self, receiver: Participant, sender: Address) -> None:
        async for event in receiver.events:
            if not isinstance(event, MessageReceived):
                continue
            self.last_at = trio.current_time()
            if event.sender != sender:
                self.foreign += 1
            elif (found := read_message(event.data)) is None:
                self.corrupted[fragments_for(max(1, len(event.data) // BLOCK_PLAINTEXT_BYTES))] += 1
            else:
                self.copies.setdefault(found[0], Counter())[found[1]] += 1

    def report(self, receiver: Participant) -> dict[str, Any]:
        return {
            "delivered": {f: sorted(c) for f, c in self.copies.items()},
            "duplicates": {f: c.total() - len(c) for f, c in self.copies.items()},
            "corrupted": dict(self.corrupted),
            "foreign": self.foreign,
            "dropped": dict(receiver.dropped),
        }


def emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


async def next_command() -> dict[str, Any]:
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    if not line:
        raise RuntimeError("the driver closed our stdin")
    command: dict[str, Any] = json.loads(line)
    return command


async def send_messages(sender: Participant, fragments: int, count: int, pace_s: float) -> float:
    interval_s = blocks_for(fragments) * pace_s
    started = trio.current_time()
    with trio.fail_after(count * interval_s + SLACK_S):
        for index in range(count):
            await trio.sleep_until(started + index * interval_s)
            await sender.send(make_message(fragments, index))
    return trio.current_time() - started


async def wait_quiet(tallies: list[Tally]) -> None:
    """Until no receiver has had a message for QUIET_S (at most SLACK_S)."""
    with trio.move_on_after(SLACK_S):
        while trio.current_time() - max(t.last_at for t in tallies) < QUIET_S:  # noqa: ASYNC110
            await trio.sleep(QUIET_S / 5)


async def clients_side(args: argparse.Namespace) -> None:
    destination = (RELAY_IP if args.unicast else GROUP, RELAY_PORT)
    async with contextlib.AsyncExitStack() as stack:
        participants = [
            await stack.enter_async_context(
                open_participant(
                    destination=destination,
                    interface=CLIENTS_IP,
                    keepalive_interval_s=KEEPALIVE_INTERVAL_S,
                    retry_interval_s=KEY_RETRY_INTERVAL_S,
                    register_timeout_s=REGISTER_LIMIT_S,
                )
            )
            for _ in range(RECEIVERS + 1)
        ]
        sender, receivers = participants[0], participants[1:]
        tallies = [Tally() for _ in receivers]
        nursery = await stack.enter_async_context(trio.open_nursery())
        for tally, receiver in zip(tallies, receivers, strict=True):
            nursery.start_soon(tally.collect, receiver, sender.address)
        emit({"event": "registered", "addresses": [list(p.address) for p in participants]})
        while (command := await next_command())["command"] == "send":
            fragments, count = command["fragments"], command["messages"]
            seconds = await send_messages(sender, fragments, count, args.pace_s_per_block)
            emit({"event": "sent", "seconds": seconds})
        await wait_quiet(tallies)
        receiving = [t.report(r) for t, r in zip(tallies, receivers, strict=True)]
        emit({"event": "report", "receivers": receiving, "sender_dropped": dict(sender.dropped)})
        nursery.cancel_scope.cancel()


# The relay's namespace: the link, the daemon, and the run.


class JsonLines:
    """JSON messages over a child's stdin and stdout, one per line."""

    def __init__(self, process: trio.Process) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self._stdin, self._stdout = process.stdin, process.stdout
        self._buffer = b""

    async def send(self, message: dict[str, Any]) -> None:
        await self._stdin.send_all(json.dumps(message).encode() + b"\n")

    async def receive(self, limit_s: float) -> dict[str, Any]:
        with trio.fail_after(limit_s):
            while b"\n" not in self._buffer:
                chunk = await self._stdout.receive_some()
                if not chunk:
                    raise RuntimeError("the clients' process ended early")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        message: dict[str, Any] = json.loads(line)
        return message


@contextlib.asynccontextmanager
async def started(command: list[str], **options: Any) -> AsyncIterator[trio.Process]:
    """A child process, stopped by its pid on the way out (SIGTERM, then SIGKILL)."""
    process = await trio.lowlevel.open_process(command, **options)
    try:
        yield process
    finally:
        with trio.CancelScope(shield=True):
            process.terminate()
            with trio.move_on_after(STOP_LIMIT_S):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


def this_script(netns: str, *options: str, script: str = __file__) -> list[str]:
    """A bench script (this one unless told), run again in ``netns`` with ``options`` (the
    last of a repeated one wins)."""
    path = str(Path(script).resolve())
    return [tool("ip"), "netns", "exec", netns, sys.executable, path, *options]


def daemon_command(args: argparse.Namespace, key_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "mcrelay", "daemon",
        "--interface", RELAY_IP, "--port", str(RELAY_PORT), "--key-file", str(key_file),
        "--api", API_ADDRESS, "--api-tcp-without-token",
        "--reassembly-timeout", str(args.reassembly_timeout_s),
        "--max-messages-per-source", str(RELAY_MAX_MESSAGES_PER_SOURCE),
        "--log-level", "warning",
    ]  # fmt: skip


async def statistics(api: Api) -> dict[str, Any]:
    status: dict[str, Any] = await api.call("GET", "/v1/status")
    stats: dict[str, Any] = status["statistics"]
    return stats


async def wait_ready(api: Api) -> None:
    with trio.fail_after(READY_LIMIT_S):
        while True:
            with contextlib.suppress(ApiUnreachable, ApiError):
                await api.call("GET", "/readyz")
                return
            await trio.sleep(POLL_S)


async def wait_registered(api: Api, addresses: list[list[Any]]) -> None:
    """Until the relay lists all our participants (a lost key is resent with the keep-alive)."""
    wanted = {f"{host}:{port}" for host, port in addresses}
    with trio.fail_after(REGISTER_LIMIT_S):
        while not wanted <= {c["id"] for c in (await api.call("GET", "/v1/clients"))["clients"]}:  # noqa: ASYNC110
            await trio.sleep(POLL_S)


async def settle(api: Api, link: list[LinkDirection], limit_s: float) -> dict[str, Any]:
    """The relay's counters once nothing is in reassembly, crypto, queues or on the link,
    and its traffic counters stood still between two polls."""
    previous: dict[str, Any] = {}
    with trio.fail_after(limit_s):
        while True:
            stats = await statistics(api)
            busy = stats["reassembly_in_flight"] or stats["pending_relays"] or stats["send_queue"]
            traffic = ("datagrams_in", "datagrams_out")
            moving = any(stats[name] != previous.get(name) for name in traffic)
            if not (busy or moving or any(d.pending for d in link)):
                return stats
            previous = stats
            await trio.sleep(POLL_S)


def counter_deltas(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    deltas = {name: after[name] - before[name] for name in ("messages_relayed", "copies_sent")}
    dropped = {r: n - before["dropped"].get(r, 0) for r, n in after["dropped"].items()}
    return deltas | {"dropped": {reason: n for reason, n in dropped.items() if n}}


async def drive(args: argparse.Namespace, api: Api, link: list[LinkDirection]) -> dict[str, Any]:
    """Register the clients, send each fragment count, and read the relay after each."""
    command = this_script(args.clients_ns, *sys.argv[1:], "--role", "clients")
    async with started(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        clients = JsonLines(process)
        registered = await clients.receive(REGISTER_LIMIT_S * (RECEIVERS + 1))
        await wait_registered(api, registered["addresses"])
        before = await settle(api, link, SLACK_S)
        phases: dict[int, dict[str, Any]] = {}
        for fragments, count in args.messages:
            await clients.send({"command": "send", "fragments": fragments, "messages": count})
            sent = await clients.receive(
                count * blocks_for(fragments) * args.pace_s_per_block + 2 * SLACK_S
            )
            after = await settle(api, link, args.reassembly_timeout_s + SLACK_S)
            phases[fragments] = {"sent": count, "send_s": sent["seconds"]} | counter_deltas(
                before, after
            )
            before = after
        await clients.send({"command": "finish"})
        report = await clients.receive(2 * SLACK_S)
    return {"phases": phases} | report


async def cancel_on_signals(scope: trio.CancelScope) -> None:
    """Unwind in order on SIGTERM or Ctrl-C: the clients, then the daemon (by pid), the link."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            scope.cancel()


async def relay_side(args: argparse.Namespace) -> dict[str, Any] | None:
    """The run's figures, or None when a signal stopped it."""
    impairment, rng, ledger = impairment_of(args), random.Random(args.seed), LinkLedger()
    environ = {name: value for name, value in os.environ.items() if not name.startswith("MCRELAY_")}
    with (
        tempfile.TemporaryDirectory() as tmp,
        tun_pair(args.clients_ns) as (relay_fd, clients_fd),
        trio.CancelScope() as terminated,
    ):
        link = [
            LinkDirection(
                (clients_fd, relay_fd), impairment, rng, ledger.to_relay, RemoteProtocolError
            ),
            LinkDirection(
                (relay_fd, clients_fd), impairment, rng, ledger.to_clients, RemoteProtocolError
            ),
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_signals, terminated)
            for direction in link:
                nursery.start_soon(direction.run)
            daemon = daemon_command(args, Path(tmp) / "relay-key.pem")
            async with started(daemon, env=environ), open_api(API_ADDRESS, None) as api:
                await wait_ready(api)
                run = await drive(args, api, link)
            nursery.cancel_scope.cancel()
        queues = queue_stats(args.clients_ns)
    if terminated.cancelled_caught:
        return None
    rows = [summarise(f, run, ledger.view(f), impairment) for f, _ in args.messages]
    directions = {"to_relay": asdict(link[0].stats), "to_clients": asdict(link[1].stats)}
    return {
        "results": rows,
        "link": directions | {"kernel_queues": queues},
        "receivers_dropped": [r["dropped"] for r in run["receivers"]],
        "sender_dropped": run["sender_dropped"],
    }


# Figures: per fragment count, the delivery and where every missing copy went.


def summarise(
    fragments: int, run: dict[str, Any], link: dict[str, int], impairment: Impairment
) -> dict[str, Any]:
    phase = run["phases"][fragments]
    sent, relayed, copies_sent = phase["sent"], phase["messages_relayed"], phase["copies_sent"]
    timeouts = phase["dropped"].get(TIMEOUT, 0)
    key = str(fragments)  # the receivers' figures came as JSON: their keys are strings
    delivered = [set(r["delivered"].get(key, [])) for r in run["receivers"]]
    copies = sum(len(indices) for indices in delivered)
    missing = {
        "relay_timed_out": RECEIVERS * timeouts,
        "no_fragment_reached_relay": RECEIVERS * (sent - relayed - timeouts),
        "relayed_not_sent": RECEIVERS * relayed - copies_sent,
        "lost_on_the_way_out": copies_sent - copies,
    }
    unexplained = {r: n for r, n in phase["dropped"].items() if r not in BENIGN_DROPS}
    expected, sigma = (
        expected_ratio(impairment, fragments),
        ratio_sigma(impairment, fragments, sent),
    )
    ratio = copies / (RECEIVERS * sent)
    return {
        "fragments": fragments,
        "plaintext_bytes": blocks_for(fragments) * BLOCK_PLAINTEXT_BYTES,
        "sent": sent,
        "send_s": phase["send_s"],
        "relayed": relayed,
        "copies_sent": copies_sent,
        "delivered_copies": copies,
        "delivered_to_neither": sent - len(set.union(*delivered)),
        "delivery_ratio": ratio,
        "expected_ratio": expected,
        "sigma": sigma,
        "z": (ratio - expected) / sigma,
        "duplicates_delivered": sum(r["duplicates"].get(key, 0) for r in run["receivers"]),
        "corrupted": sum(r["corrupted"].get(key, 0) for r in run["receivers"]),
        "undelivered_pairs": RECEIVERS * sent - copies,
        "missing": missing,
        "relay_drops": phase["dropped"],
        "accounting_adds_up": sum(missing.values()) == RECEIVERS * sent - copies
        and min(missing.values()) >= 0
        and not unexplained,
        "link_view": link,
        "link_agrees": (link["whole"], link["partial"], link["none"])
        == (relayed, timeouts, sent - relayed - timeouts)
        and (link["copies_seen"], link["copies_lost"])
        == (copies_sent, missing["lost_on_the_way_out"]),
    }


def check(report: dict[str, Any]) -> list[str]:
    """What is wrong with a run, one line each (nothing: it passes).

    No message delivered twice or corrupted; every undelivered copy explained by the
    relay's counters (each term at least 0, no other relay drop, none relayed and not
    sent); the link's own view agrees; the receivers dropped exactly the relayed
    datagrams the link duplicated; no kernel queue dropped a packet; and for each
    fragment count sent at least ``CHECK_MIN_MESSAGES`` times, the delivery ratio is
    within ``CHECK_SIGMAS`` sigma of what the link allows."""
    failures: list[str] = []
    for row in report["results"]:
        name = f"{row['fragments']} fragments"
        if row["duplicates_delivered"] or row["corrupted"]:
            failures.append(
                f"{name}: {row['duplicates_delivered']} delivered twice, "
                f"{row['corrupted']} corrupted"
            )
        if not row["accounting_adds_up"] or row["missing"]["relayed_not_sent"]:
            failures.append(
                f"{name}: the counters do not explain every loss: {row['missing']}, "
                f"relay drops {row['relay_drops']}"
            )
        if not row["link_agrees"]:
            failures.append(f"{name}: the link saw otherwise: {row['link_view']}")
        if row["sent"] >= CHECK_MIN_MESSAGES and abs(row["z"]) > CHECK_SIGMAS:
            failures.append(
                f"{name}: ratio {row['delivery_ratio']:.3f}, expected "
                f"{row['expected_ratio']:.3f} +- {CHECK_SIGMAS:g} x {row['sigma']:.3f}"
            )
    duplicated = sum(row["link_view"]["copies_duplicated"] for row in report["results"])
    suppressed = sum(d.get("duplicate_message", 0) for d in report["receivers_dropped"])
    if suppressed != duplicated:
        failures.append(
            f"the link duplicated {duplicated} relayed datagrams, receivers dropped {suppressed}"
        )
    for device, queue in report["link"]["kernel_queues"].items():
        if queue["drops"]:
            failures.append(f"kernel queue {device} dropped {queue['drops']} packets")
    return failures


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| fragments | bytes | sent | relayed | delivered copies | ratio | expected (sigma) "
        "| duplicates | corrupted | missing: relay timed out | no fragment reached relay "
        "| lost on the way out | link agrees |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in report["results"]:
        m = r["missing"]
        lines.append(
            f"| {r['fragments']} | {r['plaintext_bytes']} | {r['sent']} | {r['relayed']} "
            f"| {r['delivered_copies']} | {r['delivery_ratio']:.3f} "
            f"| {r['expected_ratio']:.3f} ({r['sigma']:.3f}) | {r['duplicates_delivered']} "
            f"| {r['corrupted']} | {m['relay_timed_out']} | {m['no_fragment_reached_relay']} "
            f"| {m['lost_on_the_way_out']} | {'yes' if r['link_agrees'] else 'NO'} |"
        )
    lines += [
        "",
        "| link | packets | lost | duplicated | sent at once | delayed | write errors | kernel queue drops |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    link = report["link"]
    for name, device in (("to_relay", CLIENTS_TUN), ("to_clients", RELAY_TUN)):
        s = link[name]
        lines.append(
            f"| {name} | {s['packets_in']} | {s['lost']} | {s['duplicated']} | {s['sent_at_once']} "
            f"| {s['delayed']} | {s['write_errors']} | {link['kernel_queues'][device]['drops']} |"
        )
    return "\n".join(lines)


# The script's own process: the namespaces, and the run inside them.


def impairment_of(args: argparse.Namespace) -> Impairment:
    return Impairment(
        loss=args.loss / 100,
        duplicate=args.duplicate / 100,
        reorder=args.reorder / 100,
        delay_s=args.delay_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
    )


def run_inside(
    args: argparse.Namespace,
    relay_ns: str,
    clients_ns: str,
    *,
    script: str = __file__,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The relay's side of ``script`` (this one unless told) run in ``relay_ns`` with our
    options and ``extra``; what it printed, as JSON."""
    options = [
        *sys.argv[1:],
        *extra,
        "--seed",
        str(args.seed),
        "--role",
        "relay",
        "--clients-ns",
        clients_ns,
    ]
    command = this_script(relay_ns, *options, script=script)
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        out, _ = child.communicate(timeout=RUN_LIMIT_S)
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_LIMIT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"the run in the namespaces failed (exit {child.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


def git(*argv: str) -> str:
    return subprocess.run(["git", *argv], capture_output=True, text=True, check=False).stdout


def measure(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    with namespaces(f"mcrelay-lossy-{os.getpid()}") as (relay_ns, clients_ns):
        netem = netem_probe(clients_ns)
        run = run_inside(args, relay_ns, clients_ns)
    impairment = impairment_of(args)
    head, changes = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "src")
    settings = {
        "impairment": asdict(impairment),
        "messages": dict(args.messages),
        "pace_s_per_block": args.pace_s_per_block,
        "reassembly_timeout_s": args.reassembly_timeout_s,
        "destination": "unicast" if args.unicast else "multicast",
        "seed": args.seed,
        "netem": netem,
    }
    machine = {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    return {
        "benchmark": "lossy_link",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "machine": machine,
        "code": {"head": head.strip(), "uncommitted_in_src": changes.splitlines()},
        "total_s": time.monotonic() - began,
        "datagram_delivery": impairment.datagram_delivery(),
    } | run


def fragment_messages(text: str) -> tuple[int, int]:
    """'F:K': K messages of exactly F fragments."""
    fragments, _, count = text.partition(":")
    blocks_for(int(fragments))
    return int(fragments), int(count)


def add_link_options(p: argparse.ArgumentParser) -> None:
    """The link's options beside ``--loss`` (netem's meanings), where the clients send, and
    the link's seed: the same in every lossy-link bench."""
    p.add_argument("--duplicate", type=float, default=2.0, help="percent duplicated (2)")
    p.add_argument(
        "--reorder", type=float, default=25.0, help="percent sent at once, skipping the delay (25)"
    )
    p.add_argument("--delay-ms", type=float, default=10.0, help="delay of the others (10)")
    p.add_argument("--jitter-ms", type=float, default=5.0, help="uniform +- around the delay (5)")
    p.add_argument("--unicast", action="store_true", help="send to 192.0.2.1, not the group")
    p.add_argument("--seed", type=int, default=None, help="the link's random seed (default: drawn)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--messages",
        type=fragment_messages,
        nargs="+",
        default=[(2, 400), (4, 300), (16, 150)],
        metavar="F:K",
        help="K messages of F fragments, in this order (2:400 4:300 16:150)",
    )
    p.add_argument("--loss", type=float, default=5.0, help="percent of packets lost (5)")
    add_link_options(p)
    p.add_argument(
        "--pace-s-per-block",
        type=float,
        default=0.01,
        help="seconds between messages per 190-byte block (0.01: 100 two-fragment messages/s)",
    )
    p.add_argument("--reassembly-timeout-s", type=float, default=0.5, help="the relay's (0.5)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "lossy.json")
    p.add_argument(
        "--check",
        action="store_true",
        help="judge the run: exit 1 on a duplicate, corruption, an unexplained loss or a ratio "
        "off by more than 5 sigma",
    )
    p.add_argument(
        "--role", choices=("main", "relay", "clients"), default="main", help=argparse.SUPPRESS
    )
    p.add_argument("--clients-ns", help=argparse.SUPPRESS)
    return p  # fmt: skip


def stop_on_sigterm(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def run_role(
    args: argparse.Namespace,
    clients: Callable[[argparse.Namespace], Awaitable[None]],
    relay: Callable[[argparse.Namespace], Awaitable[dict[str, Any] | None]],
) -> int | None:
    """Run the clients' or the relay's side when ``--role`` says this process is one, and
    its exit status; None for the main process."""
    if args.role == "clients":
        trio.run(clients, args)
        return 0
    if args.role == "relay":
        if (run := trio.run(relay, args)) is None:
            return 130
        print(json.dumps(run))
        return 0
    return None


def may_start(name: str, args: argparse.Namespace) -> bool:
    """The main process's start: only as root; a seed drawn unless given; SIGTERM unwinds
    as Ctrl-C does."""
    if os.geteuid() != 0:
        print(f"{name}: needs root (network namespaces and TUN devices)", file=sys.stderr)
        return False
    if args.seed is None:
        args.seed = random.randrange(2**32)
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    return True


def judged(failures: list[str]) -> int:
    """Print each failure of ``--check`` (or that it passed); the exit status."""
    for failure in failures:
        print(f"check: FAILED: {failure}")
    if failures:
        return 1
    print("check: passed")
    return 0


def main() -> int:
    args = parser().parse_args()
    if (status := run_role(args, clients_side, relay_side)) is not None:
        return status
    if not may_start("lossy_link", args):
        return 2
    try:
        report = measure(args)
    except KeyboardInterrupt:
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"link: loss {args.loss:g}%, duplicate {args.duplicate:g}%, reorder {args.reorder:g}%, "
        f"delay {args.delay_ms:g} ms +- {args.jitter_ms:g} ms (seed {args.seed}): a datagram "
        f"crosses with p = {report['datagram_delivery']:.4f}; {report['settings']['destination']} "
        f"to the relay\n\n{markdown(report)}\n\nJSON: {args.out} ({report['total_s']:.1f} s)"
    )
    return judged(check(report)) if args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
