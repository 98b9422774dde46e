"""The federation bus's bridge (``mcrelay.federation.bus``) against one nats-server.

    .venv/bin/python bench/federation_bus.py            # about 20 s

One nats-server on loopback (tests/natsserver.py). Two directions, envelopes of SIZE
bytes (ENVELOPES_OUT out, ENVELOPES in, per round), ROUNDS rounds each, medians:

- out: a Bus publishes from Trio as fast as it accepts (a refusal, queue_full, waits
  1 ms); the round ends when its NATS thread has handed every envelope to nats-py.
- in: another process writes the envelopes to the server on a raw socket, all at
  once (much faster than any receiver); a Bus subscribed to them counts them as its
  ``receive`` hands them to Trio, from the first to the last.

CPU per envelope is this process's (``time.process_time``: the Trio thread and the
NATS thread together) over the same span. The baseline, measured in the same run,
alternating with the bridge: nats-py alone on a plain asyncio loop, with the same
connect options, publishing in a loop and counting in a subscription callback.
Writes results/federation_bus.json and .md.
"""

import asyncio
import multiprocessing
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import trio
from nats.aio.client import Client
from nats.aio.msg import Msg

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from relaybench import report

from mcrelay.federation.bus import BusEvent, BusOptions, Incoming
from mcrelay.federation.natsthread import connect_options
from natsserver import NatsServer, open_bus, running

ENVELOPES_OUT = 200_000
ENVELOPES = 50_000
"""In: all of them reach the server at once, within its 64 MB it holds for a client."""
SIZE = 1024
ROUNDS = 5
ROUND_LIMIT_S = 30.0
SUBJECT = "mcrelay.bench.msg"
TARGET_PER_S = 20_000


def write_all(port: int, count: int, size: int) -> None:
    """In a process of its own: ``count`` PUBs on a raw connection, then PING/PONG."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # INFO
        sock.sendall(b'CONNECT {"verbose":false,"pedantic":false}\r\n')
        one = b"PUB %s %d\r\n%s\r\n" % (SUBJECT.encode(), size, bytes(size))
        sock.sendall(one * count + b"PING\r\n")
        while not stream.readline().startswith(b"PONG"):
            pass


def writer(port: int) -> multiprocessing.process.BaseProcess:
    return multiprocessing.get_context("spawn").Process(
        target=write_all, args=(port, ENVELOPES, SIZE)
    )


def figures(count: int, seconds: float, cpu_s: float) -> dict[str, float]:
    return {"per_s": count / seconds, "cpu_us": cpu_s / count * 1e6, "count": count}


def options(server: NatsServer, name: str) -> BusOptions:
    return BusOptions(servers=(server.url,), name=name)


async def wait_connected(receive: Callable[[], Any]) -> None:
    with trio.fail_after(10):
        while BusEvent.CONNECTED not in await receive():
            pass


async def bridge_out(server: NatsServer) -> dict[str, float]:
    async with open_bus(options(server, "bench-out"), []) as bus:
        await wait_connected(bus.receive)
        payload = bytes(SIZE)
        start, cpu = time.perf_counter(), time.process_time()
        sent = 0
        with trio.fail_after(ROUND_LIMIT_S):
            while sent < ENVELOPES_OUT:
                if bus.publish(SUBJECT, payload):
                    sent += 1
                else:
                    await trio.sleep(0.001)
            while bus.counters.published < ENVELOPES_OUT:  # noqa: ASYNC110 (another thread's)
                await trio.sleep(0.001)
        result = figures(ENVELOPES_OUT, time.perf_counter() - start, time.process_time() - cpu)
        dropped = bus.counters.publish_dropped
        assert dropped.total() == dropped["queue_full"], dropped
        return {**result, "refused_queue_full": dropped["queue_full"]}


async def bridge_in(server: NatsServer) -> dict[str, float]:
    async with open_bus(options(server, "bench-in"), [SUBJECT]) as bus:
        await wait_connected(bus.receive)
        process = writer(server.port)
        process.start()
        got = 0
        with trio.fail_after(ROUND_LIMIT_S):
            batch = await bus.receive()
            start, cpu = time.perf_counter(), time.process_time()
            got = sum(isinstance(item, Incoming) for item in batch)
            while got + bus.counters.receive_overflow < ENVELOPES:
                got += sum(isinstance(item, Incoming) for item in await bus.receive())
        result = figures(got, time.perf_counter() - start, time.process_time() - cpu)
        await trio.to_thread.run_sync(process.join)
        return {**result, "overflow": bus.counters.receive_overflow}


async def plain_connect(server: NatsServer, name: str) -> Client:
    nc = Client()
    await nc.connect(**connect_options(options(server, name)))
    return nc


async def plain_out(server: NatsServer) -> dict[str, float]:
    nc = await plain_connect(server, "plain-out")
    payload = bytes(SIZE)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(ENVELOPES_OUT):
        await nc.publish(SUBJECT, payload)
    result = figures(ENVELOPES_OUT, time.perf_counter() - start, time.process_time() - cpu)
    await nc.close()
    return result


async def plain_in(server: NatsServer) -> dict[str, float]:
    nc = await plain_connect(server, "plain-in")
    done = asyncio.Event()
    marks: list[float] = []

    async def count(msg: Msg) -> None:
        if not marks:
            marks.extend((time.perf_counter(), time.process_time()))
        marks.append(0.0)
        if len(marks) - 2 == ENVELOPES:
            done.set()

    await nc.subscribe(SUBJECT, cb=count)
    await nc.flush()
    process = writer(server.port)
    process.start()
    await asyncio.wait_for(done.wait(), ROUND_LIMIT_S)
    result = figures(ENVELOPES, time.perf_counter() - marks[0], time.process_time() - marks[1])
    await nc.close()
    await asyncio.to_thread(process.join)
    return result


def median(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def markdown(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{ENVELOPES_OUT:,} envelopes out and {ENVELOPES:,} in, of {SIZE} bytes, "
        f"median of {ROUNDS} rounds; "
        f"target {TARGET_PER_S:,}/s each way",
        "",
        "| direction | bridge /s | baseline /s | bridge / baseline | bridge CPU us/env "
        "| baseline CPU us/env | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for way in ("out", "in"):
        bridge, plain = rows[f"bridge_{way}"], rows[f"plain_{way}"]
        lines.append(
            f"| {way} | {bridge['per_s']:,.0f} | {plain['per_s']:,.0f} "
            f"| {bridge['per_s'] / plain['per_s']:.2f} | {bridge['cpu_us']:.1f} "
            f"| {plain['cpu_us']:.1f} | {'met' if bridge['per_s'] >= TARGET_PER_S else 'MISSED'} |"
        )
    lines.append("")
    lines.append(
        f"out: refused as queue_full (then retried) per round, median "
        f"{rows['bridge_out']['refused_queue_full']:,.0f}; in: receive_overflow, median "
        f"{rows['bridge_in']['overflow']:,.0f}"
    )
    return "\n".join(lines)


def main() -> None:
    runs: dict[str, list[dict[str, float]]] = {
        name: [] for name in ("bridge_out", "plain_out", "bridge_in", "plain_in")
    }
    with TemporaryDirectory() as workdir:
        server = NatsServer(Path(workdir), "bench")
        with running([server]):
            server.start()
            for number in range(ROUNDS):
                print(f"round {number + 1}/{ROUNDS}", file=sys.stderr, flush=True)
                runs["bridge_out"].append(trio.run(bridge_out, server))
                runs["plain_out"].append(asyncio.run(plain_out(server)))
                runs["bridge_in"].append(trio.run(bridge_in, server))
                runs["plain_in"].append(asyncio.run(plain_in(server)))
    rows = {name: median(rounds) for name, rounds in runs.items()}
    text = markdown(rows)
    result = {
        "envelopes_out": ENVELOPES_OUT,
        "envelopes_in": ENVELOPES,
        "size": SIZE,
        "rounds": ROUNDS,
        "medians": rows,
        "runs": runs,
        "machine": report.machine(),
        "code": report.code_state(),
    }
    print(text)
    print(report.write("federation_bus", result, text))


if __name__ == "__main__":
    main()
