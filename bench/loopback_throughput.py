"""Loopback throughput of the real relay daemon, against the RSA "crypto floor".

Each run starts ``python -m mcrelay daemon`` on 127.0.0.1 (a fresh process on a
free port, stopped by its pid), joins three participants from this process (one
sender, two receivers, all pinned to the daemon's key), sends ``--messages``
messages of ``--size`` bytes as fast as ``Participant.send`` allows (or at
``--rate``), and counts what the receivers get. Figures, per run:

* delivered copies/s: copies delivered (both receivers) / time from the first
  send to the last delivery;
* relayed messages/s: distinct messages delivered to at least one receiver over
  the same time (one message = one decrypt + two encrypts in the relay);
* loss: copies expected (2 x messages sent) - copies delivered;
* daemon CPU per relayed message: utime+stime of the daemon (``/proc/<pid>/stat``)
  from the first send to the last delivery, split into its main thread (the Trio
  loop) and the rest (the crypto worker threads);
* the crypto floor, measured in this process before each run: one RSA-2048 OAEP
  decrypt of one 190-byte block plus two encrypts, single-threaded, repeated, in
  thread CPU time. Throughput is reported as a ratio to the floor's messages/s,
  and the daemon's CPU per message as a ratio to the floor's seconds per message.

The receivers decrypt every copy in worker threads of this process, on the same
cores as the daemon: that is more RSA private-key work than the relay does, so
the figures are for a relay sharing its machine with its clients.

All traffic stays on loopback: the daemon and every participant use
``--interface 127.0.0.1`` and multicast TTL 1. Results: JSON at ``--out`` and a
Markdown table (median, min, max over ``--runs``) on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from cryptography.hazmat.primitives.asymmetric import rsa

from mcrelay.client.participant import (
    MessageReceived,
    Participant,
    RegistrationError,
    open_participant,
)
from mcrelay.protocol import crypto
from mcrelay.protocol.events import PeerJoined

GROUP = "224.1.1.1"
INTERFACE = "127.0.0.1"
SEND_LIMIT_S = 60.0
"""The sender gives up after this long, whatever it has sent."""
QUIET_S = 2.0
"""Receivers stop after this long without a message, once the sender is done."""
DRAIN_LIMIT_S = 30.0
"""Hard bound on the receiving phase after the sender is done."""
READY_TIMEOUT_S = 20.0
"""Bound on the daemon's start (it makes its key on the first run)."""
ROSTER_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
SEQ_BYTES = 8
BLOCK_PLAINTEXT = 190
CLK_TCK = os.sysconf("SC_CLK_TCK")
RECEIVERS = 2
# "relay listening" is logged at INFO: at --log-level warning the daemon prints
# nothing at start, so we run it at info. Info adds only the start, join and
# leave lines (a handful per run); nothing is logged per message below debug.
# --daemon-log-level debug logs every drop with its reason, which we tally (and
# which costs the daemon CPU per drop: use it to diagnose loss, not to time).
DAEMON_LOG_LEVELS = ("info", "debug")
DROP_LINE = re.compile(r"dropped (\S+) from ")


# The daemon subprocess.


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((INTERFACE, 0))
        port: int = sock.getsockname()[1]
    return port


def _ticks(stat_path: str) -> int:
    """utime + stime, in clock ticks, of a /proc stat file."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" closing comm: fields[0] is state (field 3), utime is field 14.
    return int(fields[11]) + int(fields[12])


@dataclass
class CpuSample:
    process_s: float
    main_thread_s: float


def daemon_cpu(pid: int) -> CpuSample:
    return CpuSample(
        process_s=_ticks(f"/proc/{pid}/stat") / CLK_TCK,
        main_thread_s=_ticks(f"/proc/{pid}/task/{pid}/stat") / CLK_TCK,
    )


@dataclass
class Daemon:
    process: subprocess.Popen[str]
    port: int
    lines: list[str] = field(default_factory=list)
    ready: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        return self.process.pid

    def read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))
            if "relay listening" in line:
                self.ready.set()

    def warnings(self) -> list[str]:
        return [line for line in self.lines if " WARNING " in line or " ERROR " in line]

    def drops(self) -> dict[str, int]:
        """Drops by reason, from the daemon's debug lines (empty below debug)."""
        found = Counter(m.group(1) for line in self.lines if (m := DROP_LINE.search(line)))
        return dict(found)


@contextlib.contextmanager
def running_daemon(key_file: Path, log_level: str, attempts: int = 3) -> Iterator[Daemon]:
    """Start the daemon on a free loopback port; stop it (by its own pid) on exit."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MCRELAY_")}
    # Newer daemons also serve a control API on 127.0.0.1:7507 by default; a
    # benchmark run must not depend on (or collide over) that port. Older ones
    # ignore the variable.
    env["MCRELAY_API"] = "off"
    for attempt in range(1, attempts + 1):
        port = free_udp_port()
        command = [
            sys.executable,
            "-m",
            "mcrelay",
            "daemon",
            "--interface",
            INTERFACE,
            "--port",
            str(port),
            "--key-file",
            str(key_file),
            "--log-level",
            log_level,
        ]
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        daemon = Daemon(process, port)
        reader = threading.Thread(target=daemon.read_stderr, daemon=True)
        reader.start()
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while not daemon.ready.is_set() and process.poll() is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"daemon not ready after {READY_TIMEOUT_S:g} s")
                daemon.ready.wait(0.05)
            if daemon.ready.is_set():
                yield daemon
                return
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            reader.join(1.0)
        # It exited before listening (most likely the port was taken meanwhile).
        tail = "\n".join(daemon.lines[-5:])
        if attempt == attempts:
            raise RuntimeError(f"daemon exited with {process.returncode}:\n{tail}")


# The crypto floor.


def crypto_floor(
    relay_key: rsa.RSAPrivateKey, recipients: list[rsa.RSAPublicKey], reps: int
) -> dict[str, float]:
    """One decrypt of one 190-byte block plus one encrypt per recipient, single-threaded."""
    block = crypto.encrypt_blocks(relay_key.public_key(), os.urandom(BLOCK_PLAINTEXT))[0]

    def one() -> None:
        plaintext = crypto.decrypt_block_untrusted(relay_key, block)
        for key in recipients:
            crypto.encrypt_blocks(key, plaintext)

    for _ in range(max(1, reps // 20)):
        one()
    wall, cpu = time.perf_counter(), time.thread_time()
    for _ in range(reps):
        one()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    return {
        "reps": reps,
        "s_per_msg": wall / reps,
        "cpu_s_per_msg": cpu / reps,
        "msgs_per_s": reps / wall,
    }


# One run.


def payload(seq: int, size: int) -> bytes:
    head = seq.to_bytes(SEQ_BYTES, "big")
    return head + b"x" * (size - SEQ_BYTES)


@dataclass
class ReceiverTally:
    copies: int = 0
    seqs: set[int] = field(default_factory=set)
    duplicates: int = 0
    reordered: int = 0
    foreign: int = 0
    last_at: float | None = None
    highest: int = -1


def udp_counters() -> dict[str, int]:
    """The network namespace's UDP counters (loopback traffic of this benchmark, mostly)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Udp:")]
    return {name: int(value) for name, value in zip(rows[0][1:], rows[1][1:], strict=True)}


async def roster(sender: Participant, peers: set[tuple[str, int]]) -> None:
    """Wait until the relay has told the sender about both receivers (it is registered)."""
    seen: set[tuple[str, int]] = set()
    with trio.fail_after(ROSTER_TIMEOUT_S):
        while not peers <= seen:
            event = await sender.events.receive()
            if isinstance(event, PeerJoined):
                seen.add((event.peer[0], event.peer[1]))


async def receive(
    participant: Participant,
    sender: tuple[str, int],
    expected: int,
    sender_done: trio.Event,
    tally: ReceiverTally,
) -> None:
    while tally.copies < expected:
        with trio.move_on_after(QUIET_S) as quiet:
            event = await participant.events.receive()
        if quiet.cancelled_caught:
            if sender_done.is_set():
                return
            continue
        if not isinstance(event, MessageReceived):
            continue
        if (event.sender[0], event.sender[1]) != sender:
            tally.foreign += 1
            continue
        tally.last_at = time.perf_counter()
        tally.copies += 1
        seq = int.from_bytes(event.data[:SEQ_BYTES], "big")
        if seq in tally.seqs:
            tally.duplicates += 1
        tally.seqs.add(seq)
        if seq < tally.highest:
            tally.reordered += 1
        tally.highest = max(tally.highest, seq)


async def count_own(participant: Participant, box: list[int]) -> None:
    """The sender must never get its own messages back: count any that come."""
    async for event in participant.events:
        if isinstance(event, MessageReceived):
            box[0] += 1


def machine_busy_s() -> float:
    """CPU seconds all processes have used, on all cores (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        ticks = [int(value) for value in f.readline().split()[1:]]
    return sum(ticks[i] for i in (0, 1, 2, 5, 6)) / CLK_TCK


@dataclass(frozen=True)
class Sample:
    """CPU counters at one instant: the daemon's, this process's and the machine's."""

    at: float
    daemon: CpuSample
    own_s: float
    machine_s: float

    @classmethod
    def take(cls, pid: int) -> Sample:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            at=time.perf_counter(),
            daemon=daemon_cpu(pid),
            own_s=usage.ru_utime + usage.ru_stime,
            machine_s=machine_busy_s(),
        )


SAMPLE_INTERVAL_S = 0.05


async def sample_cpu(pid: int, samples: list[Sample]) -> None:
    """Sample every 50 ms, so the window can end at the last delivery, not after the quiet."""
    while True:
        await trio.sleep(SAMPLE_INTERVAL_S)
        samples.append(Sample.take(pid))


async def one_run(
    daemon: Daemon,
    fingerprint: str,
    keys: list[rsa.RSAPrivateKey],
    n: int,
    size: int,
    rate: float,
) -> dict[str, Any]:
    def join(key: rsa.RSAPrivateKey) -> contextlib.AbstractAsyncContextManager[Participant]:
        # Pinned: with other relays on this machine (tests in parallel), we never
        # register with one that happens to share the port.
        return open_participant(
            destination=(GROUP, daemon.port),
            interface=INTERFACE,
            key=key,
            relay_fingerprint=fingerprint,
        )

    async with contextlib.AsyncExitStack() as stack:
        receivers = [await stack.enter_async_context(join(key)) for key in keys[1 : 1 + RECEIVERS]]
        sender = await stack.enter_async_context(join(keys[0]))
        await roster(sender, {r.address for r in receivers})

        tallies = [ReceiverTally() for _ in receivers]
        own = [0]
        sender_done = trio.Event()
        sent = 0
        udp_before = udp_counters()
        samples = [Sample.take(daemon.pid)]
        first_send = time.perf_counter()
        send_s = 0.0
        async with trio.open_nursery() as nursery:
            nursery.start_soon(count_own, sender, own)
            nursery.start_soon(sample_cpu, daemon.pid, samples)
            async with trio.open_nursery() as receiving:
                for participant, tally in zip(receivers, tallies, strict=True):
                    receiving.start_soon(
                        receive, participant, sender.address, n, sender_done, tally
                    )
                start = trio.current_time()
                with trio.move_on_after(SEND_LIMIT_S):
                    for seq in range(n):
                        if rate > 0:
                            await trio.sleep_until(start + seq / rate)
                        await sender.send(payload(seq, size))
                        sent += 1
                send_s = time.perf_counter() - first_send
                sender_done.set()
                receiving.cancel_scope.deadline = trio.current_time() + DRAIN_LIMIT_S
            nursery.cancel_scope.cancel()
        samples.append(Sample.take(daemon.pid))
        udp_after = udp_counters()
        client_drops = {
            str(reason): count for r in receivers for reason, count in r.dropped.items()
        }

    copies = sum(t.copies for t in tallies)
    relayed = len(set().union(*(t.seqs for t in tallies)))
    deliveries = [t.last_at for t in tallies if t.last_at is not None]
    last = max(deliveries) if deliveries else samples[-1].at
    elapsed = last - first_send
    # The CPU window: from just before the first send to the first sample at or
    # after the last delivery (within 50 ms of it), not to the end of the quiet period.
    before = samples[0]
    after = next(sample for sample in samples if sample.at >= last or sample is samples[-1])
    window = after.at - before.at
    daemon_s = after.daemon.process_s - before.daemon.process_s
    main_s = after.daemon.main_thread_s - before.daemon.main_thread_s
    bench_s = after.own_s - before.own_s
    other_s = after.machine_s - before.machine_s - daemon_s - bench_s
    per_msg = (lambda seconds: seconds / relayed) if relayed else (lambda _seconds: None)
    return {
        "sent": sent,
        "send_s": send_s,
        "copies_expected": RECEIVERS * sent,
        "copies_delivered": copies,
        "loss_copies": RECEIVERS * sent - copies,
        "loss_pct": 100.0 * (RECEIVERS * sent - copies) / (RECEIVERS * sent) if sent else None,
        "relayed_messages": relayed,
        "elapsed_s": elapsed,
        "delivered_copies_per_s": copies / elapsed if elapsed > 0 else 0.0,
        "relayed_messages_per_s": relayed / elapsed if elapsed > 0 else 0.0,
        "daemon_cpu_s": daemon_s,
        "daemon_main_thread_cpu_s": main_s,
        "cpu_window_s": window,
        "daemon_cpu_s_per_msg": per_msg(daemon_s),
        "daemon_main_thread_cpu_s_per_msg": per_msg(main_s),
        "daemon_worker_cpu_s_per_msg": per_msg(daemon_s - main_s),
        "bench_process_cpu_s": bench_s,
        "bench_process_cpu_s_per_msg": per_msg(bench_s),
        "daemon_cpu_s_per_sent_msg": daemon_s / sent if sent else None,
        "daemon_cores_busy": daemon_s / window,
        "bench_cores_busy": bench_s / window,
        # Everything else on the machine in the window: other processes, and kernel
        # work (softirq) not charged to any process.
        "other_cores_busy": other_s / window,
        "duplicates": sum(t.duplicates for t in tallies),
        "reordered": sum(t.reordered for t in tallies),
        "own_messages_echoed": own[0],
        "foreign_messages": sum(t.foreign for t in tallies),
        "receiver_drops": client_drops,
        "udp_rcvbuf_errors": udp_after["RcvbufErrors"] - udp_before["RcvbufErrors"],
        "udp_in_errors": udp_after["InErrors"] - udp_before["InErrors"],
    }


# Reporting.

ROWS: list[tuple[str, str, float]] = [
    # (label, key in the summary, scale for display)
    ("delivered copies/s", "delivered_copies_per_s", 1.0),
    ("relayed messages/s", "relayed_messages_per_s", 1.0),
    ("crypto floor, messages/s (1 core)", "floor_msgs_per_s", 1.0),
    ("throughput / floor (messages/s)", "throughput_ratio", 1.0),
    ("loss, copies (of 2 x sent)", "loss_copies", 1.0),
    ("loss, %", "loss_pct", 1.0),
    ("daemon CPU ms / relayed message", "daemon_cpu_s_per_msg", 1e3),
    ("… main thread (Trio loop) ms", "daemon_main_thread_cpu_s_per_msg", 1e3),
    ("… worker threads (crypto) ms", "daemon_worker_cpu_s_per_msg", 1e3),
    ("crypto floor ms / message", "floor_s_per_msg", 1e3),
    ("daemon CPU / floor (s per message)", "cpu_ratio", 1.0),
    ("daemon CPU ms / message sent (incl. dropped)", "daemon_cpu_s_per_sent_msg", 1e3),
    ("bench process CPU ms / relayed message", "bench_process_cpu_s_per_msg", 1e3),
    ("cores busy: daemon", "daemon_cores_busy", 1.0),
    ("cores busy: bench process", "bench_cores_busy", 1.0),
    ("cores busy: everything else", "other_cores_busy", 1.0),
    ("sender: time to send all, s", "send_s", 1.0),
    ("elapsed, first send to last delivery, s", "elapsed_s", 1.0),
]


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for _label, key, _scale in ROWS:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            summary[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    return summary


def fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def markdown(summary: dict[str, dict[str, float]]) -> str:
    lines = ["| figure | median | min | max |", "|---|---:|---:|---:|"]
    for label, key, scale in ROWS:
        if key in summary:
            s = summary[key]
            lines.append(
                f"| {label} | {fmt(s['median'] * scale)} | "
                f"{fmt(s['min'] * scale)} | {fmt(s['max'] * scale)} |"
            )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "trio": importlib.metadata.version("trio"),
        "cryptography": importlib.metadata.version("cryptography"),
    }


def git_state() -> dict[str, Any]:
    """The code under test: HEAD and whether src/ differs from it (others edit it)."""
    root = Path(__file__).resolve().parent.parent

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=root, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.strip()

    changed = git("status", "--porcelain", "--", "src")
    return {"head": git("rev-parse", "HEAD"), "src_changes": changed.splitlines()}


async def until_sigterm(run: Any, *args: Any) -> Any:
    """``await run(*args)``, but turn SIGTERM into KeyboardInterrupt the Trio way."""

    async def watch() -> None:
        async for signum in signals:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            result = await run(*args)
            nursery.cancel_scope.cancel()
    return result


def interrupted(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(KeyboardInterrupt) is not None
    return isinstance(exc, KeyboardInterrupt)


def measure(
    key_file: Path,
    fingerprint: str,
    keys: list[rsa.RSAPrivateKey],
    args: argparse.Namespace,
    attempts: int = 2,
) -> dict[str, Any]:
    """One run on a fresh daemon; tried again (a fresh daemon) if registration fails."""
    for attempt in range(1, attempts + 1):
        with running_daemon(key_file, args.daemon_log_level) as daemon:
            try:
                result: dict[str, Any] = trio.run(
                    until_sigterm,
                    one_run,
                    daemon,
                    fingerprint,
                    keys,
                    args.messages,
                    args.size,
                    args.rate,
                )
            except BaseException as exc:
                if interrupted(exc):
                    raise KeyboardInterrupt from None
                registration = isinstance(exc, RegistrationError) or (
                    isinstance(exc, BaseExceptionGroup)
                    and exc.subgroup(RegistrationError) is not None
                )
                if registration and attempt < attempts:
                    print(f"registration failed ({exc!r}); new daemon", file=sys.stderr)
                    continue
                print("\n".join(["daemon stderr:", *daemon.lines[-20:]]), file=sys.stderr)
                raise
        result["attempts"] = attempt
        result["daemon_exit_code"] = daemon.process.returncode
        result["daemon_warnings"] = daemon.warnings()
        result["daemon_drops"] = daemon.drops()
        return result
    raise AssertionError("unreachable")


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` that stops the daemon runs.

    (Inside ``trio.run``, ``until_sigterm`` takes SIGTERM over instead.)
    """
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return benchmark()
    except KeyboardInterrupt:
        print("interrupted; the daemon was stopped", file=sys.stderr)
        return 130


def benchmark() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs, a fresh daemon each")
    parser.add_argument("--messages", type=int, default=2000, help="messages sent per run")
    parser.add_argument("--size", type=int, default=100, help="plaintext bytes per message")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="messages/s the sender keeps to (default 0: as fast as send allows)",
    )
    parser.add_argument("--floor-reps", type=int, default=500, help="crypto floor repetitions")
    parser.add_argument(
        "--daemon-log-level",
        choices=DAEMON_LOG_LEVELS,
        default="info",
        help="debug tallies the daemon's drops by reason, at a CPU cost per drop",
    )
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "loopback.json"
    )
    args = parser.parse_args()
    if args.rate < 0:
        parser.error("--rate must be 0 (unpaced) or more")
    if args.runs < 1 or args.messages < 1 or args.floor_reps < 1:
        parser.error("--runs, --messages and --floor-reps must be at least 1")
    if not SEQ_BYTES <= args.size <= 32768:
        parser.error(f"--size must be {SEQ_BYTES} to 32768 bytes")

    started = time.perf_counter()
    relay_key = crypto.generate_private_key()
    fingerprint = crypto.fingerprint(relay_key.public_key())
    keys = [crypto.generate_private_key() for _ in range(1 + RECEIVERS)]
    recipients = [key.public_key() for key in keys[1:]]
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mcrelay-bench-") as tmp:
        key_file = Path(tmp) / "k.pem"
        key_file.write_bytes(crypto.private_key_to_pem(relay_key))
        key_file.chmod(0o600)
        for index in range(args.runs):
            load = os.getloadavg()[0]
            floor = crypto_floor(relay_key, recipients, args.floor_reps)
            result = measure(key_file, fingerprint, keys, args)
            # The floor is what one core does per second of its own CPU time
            # (thread CPU time, so other load on the machine does not lower it).
            floor_msgs_per_s = 1.0 / floor["cpu_s_per_msg"]
            result.update(
                loadavg_1min_before=load,
                floor_msgs_per_s=floor_msgs_per_s,
                floor_s_per_msg=floor["cpu_s_per_msg"],
                floor_wall_s_per_msg=floor["s_per_msg"],
                throughput_ratio=result["relayed_messages_per_s"] / floor_msgs_per_s,
            )
            if result["daemon_cpu_s_per_msg"] is not None:
                result["cpu_ratio"] = result["daemon_cpu_s_per_msg"] / floor["cpu_s_per_msg"]
            runs.append(result)
            drops = f", daemon drops {result['daemon_drops']}" if result["daemon_drops"] else ""
            print(
                f"run {index + 1}/{args.runs}: sent {result['sent']}, "
                f"delivered {result['copies_delivered']}/{result['copies_expected']} copies, "
                f"{result['delivered_copies_per_s']:.0f} copies/s, "
                f"daemon {1e3 * (result['daemon_cpu_s_per_msg'] or 0):.2f} ms CPU/msg, "
                f"floor {floor_msgs_per_s:.0f} msg/s{drops}",
                file=sys.stderr,
            )

    summary = summarise(runs)
    m = machine()
    report: dict[str, Any] = {
        "benchmark": "loopback_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "settings": {
            "runs": args.runs,
            "messages": args.messages,
            "size": args.size,
            "floor_reps": args.floor_reps,
            "rate": args.rate or None,
            "receivers": RECEIVERS,
            "send_limit_s": SEND_LIMIT_S,
            "quiet_s": QUIET_S,
            "daemon_log_level": args.daemon_log_level,
        },
        "machine": m,
        "code": git_state(),
        "total_s": time.perf_counter() - started,
        "summary": summary,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    print(
        f"\n{args.runs} runs x {args.messages} messages of {args.size} bytes, 1 sender -> "
        f"{RECEIVERS} receivers; {m['nproc']} cores ({m['cpu_model']}), Python {m['python']}\n"
    )
    print(markdown(summary))
    print(
        "\nThe receivers decrypt every copy in worker threads of the benchmark process, "
        "on the same cores as the daemon;\nthe relay's figures are for a relay sharing "
        f"its machine with its clients. JSON: {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
