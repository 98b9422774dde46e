"""The secure profile across the lossy link of ``lossy_link.py``: delivery exactly once,
in order, within the deadline; retransmissions and latency (issue 11).

As root, for each loss rate in turn, two fresh network namespaces joined by the
user-space netem link of ``netem_link.py`` (the same link, settings and cleanup as
``lossy_link.py``). The daemon runs in one, serving the secure profile only with a
fresh key; one secure sender and two secure receivers (``open_secure_participant``,
the relay key pinned) run in the other. The sender sends K messages of exactly F
fragments, paced, one fragment count after the other. A text's length makes both
the CHAT and the relayed CHAT (origin added) exactly F fragments; it carries a
run-wide number and a checksum. Per fragment count the figures are: the (message,
receiver) pairs delivered exactly once and in order; those within the 10 s
deadline; fragments retransmitted per message by the sender (its channel's
``ChannelStatistics``) and per relayed copy by the relay (each receiver's
``retransmissions`` in ``GET /v1/clients``); and latency from ``send`` to receipt
at each receiver. ``--check`` exits 1 on any duplicate, out-of-order, missing,
corrupted, late or abandoned message, or one the sender did not cut into exactly F
fragments. Ctrl-C or SIGTERM stops what we started (by
pid) and deletes the namespaces.
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
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio
from lossy_link import (
    API_ADDRESS,
    GROUP,
    POLL_S,
    RELAY_PORT,
    SLACK_S,
    JsonLines,
    add_link_options,
    cancel_on_signals,
    emit,
    git,
    impairment_of,
    judged,
    may_start,
    next_command,
    run_inside,
    run_role,
    started,
    statistics,
    this_script,
    wait_ready,
)
from netem_link import (
    CLIENTS_IP,
    CLIENTS_TUN,
    RELAY_IP,
    RELAY_TUN,
    Impairment,
    LinkDirection,
    namespaces,
    queue_stats,
    tun_pair,
)

from mcrelay.cli.api_client import Api, open_api
from mcrelay.client.secure import SecureParticipant, open_secure_participant
from mcrelay.daemon.secure.keyfile import generate_secure_key_file
from mcrelay.protocol.errors import DropReason, RemoteProtocolError
from mcrelay.protocol.secure.client_events import ChatReceived
from mcrelay.protocol.secure.frames import MAX_FRAGMENT_BYTES
from mcrelay.protocol.secure.keys import KeyPair, client_id, decode_key, encode_key
from mcrelay.protocol.secure.messages import Chat, RelayedChat, encode_message
from mcrelay.protocol.secure.origins import Origin, OriginKind
from mcrelay.protocol.secure.sending import MESSAGE_DEADLINE_S

RECEIVERS = 2
CONNECT_LIMIT_S = 30.0
"""Per participant: its INIT is retried after 1, 2, 4 s and then every 5 s."""
LISTED_LIMIT_S = 15.0
DUPLICATE = DropReason.DUPLICATE_FRAGMENT.value
"""A fragment the channel already had: a retransmission that was not needed (a copy the
link duplicated is a replayed DATA, dropped before its frames are read)."""
# Text: magic 4s | fragments u16 | number u32 | random filler | SHA-256 of the rest, cut
TEXT_HEADER = struct.Struct("!4sHI")
TEXT_MAGIC = b"SLSY"
CHECKSUM_BYTES = 16
RELAYED_CHAT_OVERHEAD = len(
    encode_message(RelayedChat(Origin(OriginKind.SECURE_CLIENT, bytes(32), ("0.0.0.0", 0)), b""))
)
"""Kind, origin (kind, key, an IPv4 address): what the relay adds to a CHAT's text."""


# Texts that take exactly F fragments on both hops.


def text_bytes(fragments: int) -> int:
    """The largest text whose relayed CHAT takes ``fragments`` fragments (the CHAT then
    takes as many: it is the origin's 40 bytes shorter)."""
    size = fragments * MAX_FRAGMENT_BYTES - RELAYED_CHAT_OVERHEAD
    chat = len(encode_message(Chat(bytes(size))))
    if (
        size < TEXT_HEADER.size + CHECKSUM_BYTES
        or math.ceil(chat / MAX_FRAGMENT_BYTES) != fragments
    ):
        raise ValueError(f"no text takes exactly {fragments} fragments both ways")
    return size


def make_text(fragments: int, number: int) -> bytes:
    body = TEXT_HEADER.pack(TEXT_MAGIC, fragments, number)
    body += random.randbytes(text_bytes(fragments) - len(body) - CHECKSUM_BYTES)
    return body + hashlib.sha256(body).digest()[:CHECKSUM_BYTES]


def read_text(text: bytes) -> int | None:
    """The number of an intact text; None when it is corrupted."""
    body, checksum = text[:-CHECKSUM_BYTES], text[-CHECKSUM_BYTES:]
    if len(body) < TEXT_HEADER.size or hashlib.sha256(body).digest()[:CHECKSUM_BYTES] != checksum:
        return None
    magic, fragments, number = TEXT_HEADER.unpack_from(body)
    if magic != TEXT_MAGIC or len(text) != text_bytes(fragments):
        return None
    return int(number)


# The clients' namespace: one sender, two receivers, driven by JSON lines on stdin.


@dataclass
class Arrivals:
    """What one receiver got from the sender: (number, time) in order of arrival."""

    got: list[tuple[int, float]] = field(default_factory=list)
    corrupted: int = 0
    foreign: int = 0

    async def collect(self, receiver: SecureParticipant, sender_key: bytes) -> None:
        async for event in receiver.events:
            if not isinstance(event, ChatReceived):
                continue
            at = trio.current_time()
            if event.origin.id != sender_key:
                self.foreign += 1
            elif (number := read_text(event.text)) is None:
                self.corrupted += 1
            else:
                self.got.append((number, at))

    def numbers(self) -> set[int]:
        return {number for number, _ in self.got}


def drops(participant: SecureParticipant) -> dict[str, int]:
    counted = participant.connection.drops + participant.dropped
    return {reason.value: n for reason, n in counted.items() if n}


def channel_figures(participant: SecureParticipant) -> dict[str, Any]:
    session = participant.connection.session
    assert session is not None
    s = session.channel.statistics()
    return {
        "messages_sent": s.messages_sent,
        "fragments_sent": s.fragments_sent,
        "retransmissions": s.retransmissions,
        "timeouts": s.timeouts,
        "acks_sent": s.acks_sent,
        "srtt_ms": None if s.srtt_s is None else s.srtt_s * 1000,
        "rto_ms": s.rto_s * 1000,
        "drops": {reason.value: n for reason, n in s.drops.items()},
    }


async def send_phase(
    sender: SecureParticipant, fragments: int, numbers: range, interval_s: float
) -> tuple[dict[int, float], list[int]]:
    """Each message's send time by number, and the message ids, paced."""
    sent_at: dict[int, float] = {}
    ids: list[int] = []
    started_at = trio.current_time()
    with trio.fail_after(len(numbers) * interval_s + SLACK_S):
        for offset, number in enumerate(numbers):
            await trio.sleep_until(started_at + offset * interval_s)
            text = make_text(fragments, number)
            sent_at[number] = trio.current_time()
            ids.append(await sender.send(text))
    return sent_at, ids


async def wait_phase(
    sender: SecureParticipant, ids: list[int], arrivals: list[Arrivals], numbers: range
) -> None:
    """Until every message is settled at the sender and at every receiver, or the deadline
    (and some slack) has passed since the last was sent."""
    wanted = set(numbers)
    with trio.move_on_after(MESSAGE_DEADLINE_S + SLACK_S):
        while not (  # noqa: ASYNC110
            not any(i in sender.pending for i in ids)
            and all(wanted <= a.numbers() for a in arrivals)
        ):
            await trio.sleep(POLL_S)


async def clients_side(args: argparse.Namespace) -> None:
    destination = (RELAY_IP if args.unicast else GROUP, RELAY_PORT)
    relay_key = decode_key(args.relay_key)
    async with contextlib.AsyncExitStack() as stack:
        participants = []
        for _ in range(RECEIVERS + 1):
            participant = await stack.enter_async_context(
                open_secure_participant(
                    destination=destination,
                    interface=CLIENTS_IP,
                    identity=KeyPair.generate(),
                    relay_key=relay_key,
                    connect_timeout_s=CONNECT_LIMIT_S,
                )
            )
            participants.append(participant)
        sender, receivers = participants[0], participants[1:]
        arrivals = [Arrivals() for _ in receivers]
        nursery = await stack.enter_async_context(trio.open_nursery())
        for tally, receiver in zip(arrivals, receivers, strict=True):
            nursery.start_soon(tally.collect, receiver, sender.identity.public)
        emit(
            {"event": "connected", "members": [client_id(p.identity.public) for p in participants]}
        )
        first = 0
        while (command := await next_command())["command"] == "send":
            fragments, count = command["fragments"], command["messages"]
            numbers = range(first, first + count)
            first += count
            before = channel_figures(sender)
            receivers_before = [channel_figures(r) for r in receivers]
            given_up_before = sender.given_up
            began = trio.current_time()
            sent_at, ids = await send_phase(
                sender, fragments, numbers, fragments * args.pace_s_per_fragment
            )
            sending_s = trio.current_time() - began
            await wait_phase(sender, ids, arrivals, numbers)
            emit(
                {
                    "event": "phase",
                    "send_s": sending_s,
                    "numbers": [numbers.start, numbers.stop],
                    "abandoned": sender.given_up - given_up_before,
                    "unsettled": sum(i in sender.pending for i in ids),
                    "sender_before": before,
                    "sender_after": channel_figures(sender),
                    "receivers_before": receivers_before,
                    "arrivals": [
                        [[n, at - sent_at[n]] for n, at in a.got if n in numbers] for a in arrivals
                    ],
                }
            )
        report = {
            "event": "report",
            "corrupted": [a.corrupted for a in arrivals],
            "foreign": [a.foreign for a in arrivals],
            "sender_drops": drops(sender),
            "receiver_drops": [drops(r) for r in receivers],
            "receiver_channels": [channel_figures(r) for r in receivers],
        }
        emit(report)
        nursery.cancel_scope.cancel()


# The relay's namespace: the link, the daemon, and the run.


def daemon_command(key_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "mcrelay", "daemon", "--profiles", "secure",
        "--interface", RELAY_IP, "--port", str(RELAY_PORT), "--secure-key-file", str(key_file),
        "--api", API_ADDRESS, "--api-tcp-without-token", "--log-level", "warning",
    ]  # fmt: skip


async def relay_figures(api: Api, members: list[str], link: list[LinkDirection]) -> dict[str, Any]:
    """Each member's retransmissions by the relay, and its drops, once the relay holds no
    copy unacknowledged, nothing is on the link and its traffic stood still between polls."""
    previous: dict[str, Any] = {}
    with trio.fail_after(MESSAGE_DEADLINE_S + SLACK_S):
        while True:
            stats = await statistics(api)
            secure = stats["profiles"]["secure"]
            busy = secure["send_buffer_bytes"] or secure["receive_buffer_bytes"]
            moving = any(stats[n] != previous.get(n) for n in ("datagrams_in", "datagrams_out"))
            if not (busy or moving or any(d.pending for d in link)):
                break
            previous = stats
            await trio.sleep(POLL_S)
    listed = {c["id"]: c for c in (await api.call("GET", "/v1/clients"))["clients"]}
    return {
        "retransmissions": [listed[m]["retransmissions"] for m in members],
        "rtt_ms": [listed[m]["rtt_ms"] for m in members],
        "dropped": stats["dropped"],
    }


async def wait_listed(api: Api, members: list[str]) -> None:
    with trio.fail_after(LISTED_LIMIT_S):
        while True:
            listed = (await api.call("GET", "/v1/clients"))["clients"]
            if set(members) <= {c["id"] for c in listed}:
                return
            await trio.sleep(POLL_S)


async def drive(
    args: argparse.Namespace, api: Api, link: list[LinkDirection], relay_key: bytes
) -> dict[str, Any]:
    """Connect the clients, send each fragment count, and read the relay after each."""
    options = (*sys.argv[1:], "--role", "clients", "--relay-key", encode_key(relay_key))
    command = this_script(args.clients_ns, *options, script=__file__)
    async with started(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as process:
        clients = JsonLines(process)
        members = (await clients.receive(CONNECT_LIMIT_S * (RECEIVERS + 1)))["members"]
        await wait_listed(api, members)
        before = await relay_figures(api, members, link)
        phases = []
        for fragments, count in args.messages:
            await clients.send({"command": "send", "fragments": fragments, "messages": count})
            sending_s = count * fragments * args.pace_s_per_fragment
            phase = await clients.receive(sending_s + MESSAGE_DEADLINE_S + 3 * SLACK_S)
            after = await relay_figures(api, members, link)
            phases.append({"fragments": fragments, "sent": count, "relay_before": before} | phase)
            phases[-1]["relay_after"] = before = after
        await clients.send({"command": "finish"})
        report = await clients.receive(2 * SLACK_S)
    # The receivers' channels as each next phase began (the relay had settled): the
    # duplicate fragments the relay's retransmissions caused arrive until then.
    ends = [phase["receivers_before"] for phase in phases[1:]] + [report["receiver_channels"]]
    for phase, end in zip(phases, ends, strict=True):
        phase["receivers_after"] = end
    return {"phases": phases} | report


def unseen(_payload: bytes, _copies: int) -> None:
    """The link cannot read secure datagrams: only its own counters are kept."""


async def relay_side(args: argparse.Namespace) -> dict[str, Any] | None:
    """The run's figures, or None when a signal stopped it."""
    impairment, rng = impairment_of(args), random.Random(args.seed)
    environ = {name: value for name, value in os.environ.items() if not name.startswith("MCRELAY_")}
    with (
        tempfile.TemporaryDirectory() as tmp,
        tun_pair(args.clients_ns) as (relay_fd, clients_fd),
        trio.CancelScope() as terminated,
    ):
        key_file = Path(tmp) / "secure-key"
        relay_key = generate_secure_key_file(key_file).public
        ends = ((clients_fd, relay_fd), (relay_fd, clients_fd))
        link = [LinkDirection(e, impairment, rng, unseen, RemoteProtocolError) for e in ends]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_signals, terminated)
            for direction in link:
                nursery.start_soon(direction.run)
            async with (
                started(daemon_command(key_file), env=environ),
                open_api(API_ADDRESS, None) as api,
            ):
                await wait_ready(api)
                run = await drive(args, api, link, relay_key)
            nursery.cancel_scope.cancel()
        queues = queue_stats(args.clients_ns)
    if terminated.cancelled_caught:
        return None
    directions = {"to_relay": asdict(link[0].stats), "to_clients": asdict(link[1].stats)}
    return run | {"link": directions | {"kernel_queues": queues}}


# Figures.


def percentile(values: list[float], q: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarise(impairment: Impairment, phase: dict[str, Any]) -> dict[str, Any]:
    """One fragment count's figures. The floor of retransmissions: each transmission is
    lost with q = L (1 - D), so a fragment needs q / (1 - q) retransmissions on average."""
    sent, fragments = phase["sent"], phase["fragments"]
    wanted = set(range(*phase["numbers"]))
    pairs = {"exactly_once_in_order": 0, "duplicates": 0, "out_of_order": 0, "missing": 0}
    latencies: list[float] = []
    """Of each (message, receiver) pair delivered: its first arrival's."""
    for got in phase["arrivals"]:
        seen: Counter[int] = Counter()
        late_in_order: set[int] = set()
        first: dict[int, float] = {}
        highest = -1
        for number, latency in got:
            if not seen[number] and number < highest:
                late_in_order.add(number)
            seen[number] += 1
            first.setdefault(number, latency)
            highest = max(highest, number)
        pairs["duplicates"] += sum(seen.values()) - len(seen)
        pairs["out_of_order"] += len(late_in_order)
        pairs["missing"] += len(wanted - set(seen))
        pairs["exactly_once_in_order"] += sum(
            1 for n in wanted if seen[n] == 1 and n not in late_in_order
        )
        latencies += first.values()
    sender = {k: phase["sender_after"][k] - phase["sender_before"][k] for k in ("retransmissions", "timeouts", "messages_sent", "fragments_sent")}  # fmt: skip
    relay = [
        after - before
        for after, before in zip(
            phase["relay_after"]["retransmissions"],
            phase["relay_before"]["retransmissions"],
            strict=True,
        )
    ]
    dropped = {
        reason: n - phase["relay_before"]["dropped"].get(reason, 0)
        for reason, n in phase["relay_after"]["dropped"].items()
    }
    copies = RECEIVERS * sent
    repeated = [
        after["drops"].get(DUPLICATE, 0) - before["drops"].get(DUPLICATE, 0)
        for before, after in zip(phase["receivers_before"], phase["receivers_after"], strict=True)
    ]
    q = 1 - impairment.datagram_delivery()
    return {
        "loss_percent": impairment.loss * 100,
        "fragments": fragments,
        "text_bytes": text_bytes(fragments),
        "sent": sent,
        "send_s": phase["send_s"],
        "fragments_per_message": sender["fragments_sent"] / sent,
        "copies": copies,
        **pairs,
        "within_deadline": sum(1 for x in latencies if x <= MESSAGE_DEADLINE_S),
        "abandoned": phase["abandoned"],
        "unsettled": phase["unsettled"],
        "sender_retransmissions": sender["retransmissions"],
        "sender_timeouts": sender["timeouts"],
        "sender_retransmissions_per_message": sender["retransmissions"] / sent,
        "relay_retransmissions_to_receivers": relay[1:],
        "relay_retransmissions_to_sender": relay[0],
        "relay_retransmissions_per_copy": sum(relay[1:]) / copies,
        "retransmissions_floor_per_message": fragments * q / (1 - q),
        "spurious_at_relay": dropped.get(DUPLICATE, 0),
        "spurious_at_receivers": sum(repeated),
        "latency_ms": {
            name: None if (x := percentile(latencies, q)) is None else x * 1000
            for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0))
        },
        "relay_drops": {reason: n for reason, n in dropped.items() if n},
    }


def check(report: dict[str, Any]) -> list[str]:
    """What is wrong with a run, one line each (nothing: it passes): every copy must be
    delivered exactly once, in order, within the deadline, and nothing abandoned,
    corrupted or dropped by a kernel queue."""
    failures: list[str] = []
    for row in report["results"]:
        name = f"{row['loss_percent']:g} % loss, {row['fragments']} fragments"
        if row["exactly_once_in_order"] != row["copies"] or row["within_deadline"] < row["copies"]:
            failures.append(
                f"{name}: {row['exactly_once_in_order']} of {row['copies']} copies exactly once "
                f"and in order, {row['within_deadline']} within {MESSAGE_DEADLINE_S:g} s "
                f"(duplicates {row['duplicates']}, out of order {row['out_of_order']}, "
                f"missing {row['missing']})"
            )
        if row["fragments_per_message"] != row["fragments"]:
            failures.append(f"{name}: the sender sent {row['fragments_per_message']:g} per message")
        if row["abandoned"] or row["unsettled"]:
            failures.append(
                f"{name}: the sender abandoned {row['abandoned']}, {row['unsettled']} never settled"
            )
    for run in report["runs"]:
        if sum(run["corrupted"]) or sum(run["foreign"]):
            failures.append(f"{run['loss_percent']:g} % loss: corrupted or foreign texts")
        for device, queue in run["link"]["kernel_queues"].items():
            if queue["drops"]:
                failures.append(f"kernel queue {device} dropped {queue['drops']} packets")
    return failures


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "| loss | fragments | text bytes | sent | exactly once, in order | within 10 s "
        "| retransmitted / message: sender | relay (per copy) | p50 ms | p99 ms | max ms "
        "| abandoned |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        latency = r["latency_ms"]
        lines.append(
            f"| {r['loss_percent']:g} % | {r['fragments']} | {r['text_bytes']} | {r['sent']} "
            f"| {r['exactly_once_in_order']}/{r['copies']} "
            f"({100 * r['exactly_once_in_order'] / r['copies']:.0f} %) "
            f"| {r['within_deadline']}/{r['copies']} "
            f"| {r['sender_retransmissions_per_message']:.2f} "
            f"| {r['relay_retransmissions_per_copy']:.2f} "
            f"| {ms(latency['p50'])} | {ms(latency['p99'])} | {ms(latency['max'])} "
            f"| {r['abandoned']} |"
        )
    lines += [
        "",
        "| loss | fragments | floor / message | sender: retransmitted | RTO expiries "
        "| not needed (relay had them) | relay: retransmitted to receivers "
        "| not needed (receivers had them) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['loss_percent']:g} % | {r['fragments']} "
            f"| {r['retransmissions_floor_per_message']:.2f} | {r['sender_retransmissions']} "
            f"| {r['sender_timeouts']} | {r['spurious_at_relay']} "
            f"| {sum(r['relay_retransmissions_to_receivers'])} | {r['spurious_at_receivers']} |"
        )
    lines += [
        "",
        "| loss | link | packets | lost | duplicated | sent at once | delayed | kernel queue drops |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in report["runs"]:
        link = run["link"]
        for name, device in (("to_relay", CLIENTS_TUN), ("to_clients", RELAY_TUN)):
            s = link[name]
            lines.append(
                f"| {run['loss_percent']:g} % | {name} | {s['packets_in']} | {s['lost']} "
                f"| {s['duplicated']} | {s['sent_at_once']} | {s['delayed']} "
                f"| {link['kernel_queues'][device]['drops']} |"
            )
    return "\n".join(lines)


# The script's own process: per loss rate, the namespaces and the run inside them.


def impairments(args: argparse.Namespace) -> list[Impairment]:
    return [impairment_of(argparse.Namespace(**vars(args) | {"loss": loss})) for loss in args.loss]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    began = time.monotonic()
    runs, results = [], []
    for loss, impairment in zip(args.loss, impairments(args), strict=True):
        with namespaces(f"mcrelay-slossy-{os.getpid()}") as (relay_ns, clients_ns):
            run = run_inside(
                args, relay_ns, clients_ns, script=__file__, extra=("--loss", str(loss))
            )
        runs.append({"loss_percent": loss} | run)
        results += [summarise(impairment, phase) for phase in run["phases"]]
    head, changes = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "src")
    settings = {
        "impairments": [asdict(i) for i in impairments(args)],
        "messages": dict(args.messages),
        "pace_s_per_fragment": args.pace_s_per_fragment,
        "destination": "unicast" if args.unicast else "multicast",
        "seed": args.seed,
    }
    machine = {
        "nproc": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
    return {
        "benchmark": "secure_lossy",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": settings,
        "machine": machine,
        "code": {"head": head.strip(), "uncommitted_in_src": changes.splitlines()},
        "total_s": time.monotonic() - began,
        "results": results,
        "runs": runs,
    }


def fragment_messages(text: str) -> tuple[int, int]:
    """'F:K': K messages of exactly F fragments."""
    fragments, _, count = text.partition(":")
    text_bytes(int(fragments))
    return int(fragments), int(count)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument(
        "--messages",
        type=fragment_messages,
        nargs="+",
        default=[(2, 200), (4, 100), (16, 40)],
        metavar="F:K",
        help="K messages of F fragments, in this order (2:200 4:100 16:40)",
    )
    p.add_argument(
        "--loss",
        type=float,
        nargs="+",
        default=[5.0, 10.0],
        help="percent of packets lost; one run per value (5 10)",
    )
    add_link_options(p)
    p.add_argument(
        "--pace-s-per-fragment",
        type=float,
        default=0.015,
        help="seconds between messages per fragment (0.015: 33 two-fragment messages/s)",
    )
    p.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "secure_lossy.json"
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 on a duplicate, out-of-order, missing, late or abandoned message, or one "
        "not of exactly F fragments",
    )
    p.add_argument(
        "--role", choices=("main", "relay", "clients"), default="main", help=argparse.SUPPRESS
    )
    p.add_argument("--clients-ns", help=argparse.SUPPRESS)
    p.add_argument("--relay-key", help=argparse.SUPPRESS)
    return p  # fmt: skip


def main() -> int:
    args = parser().parse_args()
    if args.role != "main":
        (args.loss,) = args.loss
    if (status := run_role(args, clients_side, relay_side)) is not None:
        return status
    if not may_start("secure_lossy", args):
        return 2
    try:
        report = measure(args)
    except KeyboardInterrupt:
        return 130
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"link: loss {' and '.join(f'{x:g}%' for x in args.loss)}, duplicate "
        f"{args.duplicate:g}%, reorder {args.reorder:g}%, delay {args.delay_ms:g} ms +- "
        f"{args.jitter_ms:g} ms (seed {args.seed}); {report['settings']['destination']} to "
        f"the relay\n\n{markdown(report)}\n\nJSON: {args.out} ({report['total_s']:.1f} s)"
    )
    return judged(check(report)) if args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
