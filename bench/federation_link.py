"""The federation link alone, both ways, against one nats-server, in-process.

    .venv/bin/python bench/federation_link.py            # about a minute

Out: ``Link.relayed`` (a member record, sealing, the bus), beside the bus alone
publishing envelopes already sealed. In: MSG envelopes written by another process on
a raw NATS connection (relaybench/cluster.py's publisher) at IN_RATES for SECONDS,
taken off the bus, opened, checked against their stream and decoded by the link and
handed to a relay that takes each at once (no pipeline: the relay's own rate is
bench/federation_relays.py's); envelopes acted on per second and this process's CPU
per envelope.

In the relay a message reaches the link when its copies were handed out; messages
whose crypto came back together reach it in the same turn of the loop. So the link
is driven at a paced rate in bursts: B envelopes in one turn, then a sleep, for
SECONDS per setting; ROUNDS rounds, medians. CPU per envelope is this process's
(``time.process_time``: the Trio thread and the NATS thread together), idle pacing
included; the baseline, in the same run and the same pacing, is ``Bus.publish`` of an
envelope sealed beforehand. Writes results/federation_link.json and .md.
"""

import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from tempfile import TemporaryDirectory

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from relaybench import cluster, report
from relaybench.workers import Worker

from mcrelay.core.members import Identity, Member, Roster
from mcrelay.core.profile import Origin
from mcrelay.core.remotes import Change, Remotes
from mcrelay.federation.bus import Bus, BusEvent, BusOptions
from mcrelay.federation.link import Link
from mcrelay.federation.subjects import Subjects
from natsserver import NatsServer, running

IN_RATES = (20_000, 40_000, 80_000)
SETTINGS = ((2_000, 1), (4_000, 1), (4_000, 8), (20_000, 16), (100_000, 64))
"""(envelopes/s, envelopes per turn)."""
SECONDS = 2.0
ROUNDS = 3
SIZE = 100


class Host:
    """The relay as the link sees it; nothing comes in during this bench."""

    def __init__(self) -> None:
        self.roster = Roster()
        self.remotes = Remotes()

    async def deliver_remote(self, origin: Origin, plaintext: bytes, line: str) -> str | None:
        return None

    def remote_changes(self, changes: Sequence[Change], line: str) -> None:
        pass

    def kick(
        self, member_id: str, ban_s: float | None = None, *, scope: str | None = None
    ) -> list[Member]:
        return []


async def paced(bus: Bus, send: Callable[[], object], rate: int, burst: int) -> dict[str, float]:
    turns = int(rate * SECONDS) // burst
    before = bus.counters.published
    cpu = time.process_time()
    start = trio.current_time()
    for turn in range(turns):
        for _ in range(burst):
            send()
        await trio.sleep_until(start + (turn + 1) * burst / rate)
    elapsed = trio.current_time() - start
    count = turns * burst
    with trio.fail_after(5):
        while bus.counters.published - before < count and not bus.counters.publish_dropped:  # noqa: ASYNC110
            await trio.sleep(0.01)
    return {
        "published_per_s": (bus.counters.published - before) / elapsed,
        "cpu_us_per_envelope": (time.process_time() - cpu) / count * 1e6,
    }


async def way_in(server: NatsServer, publisher: Worker, key: bytes) -> dict[str, dict[str, float]]:
    subjects = Subjects(cluster.CLUSTER, "bench-in")
    bus = Bus(BusOptions(servers=(server.url,), name="bench-in"), subjects.subscribed())
    link = Link(
        Host(), bus, cluster=cluster.CLUSTER, name="bench-in", key=key, epoch=1,
        servers=(server.url,),
    )  # fmt: skip
    figures: dict[str, dict[str, float]] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        while bus.state != "connected":  # noqa: ASYNC110 - the bus has no event for it
            await trio.sleep(0.01)
        for rate in IN_RATES:
            before, overflow = link.received, bus.counters.receive_overflow
            cpu = time.process_time()
            first = rate == IN_RATES[0]  # a new link: it hears the publisher first
            sent = await trio.to_thread.run_sync(publisher.call, "send", rate, SECONDS, first)
            while True:  # until nothing more comes
                seen = link.received
                await trio.sleep(0.2)
                if link.received == seen:
                    break
            taken = link.received - before
            figures[f"in {rate}"] = {
                "offered_per_s": sent["sent"] / sent["elapsed_s"],
                "taken_per_s": taken / sent["elapsed_s"],
                "cpu_us_per_envelope": (time.process_time() - cpu) / max(1, taken) * 1e6,
                "receive_overflow": bus.counters.receive_overflow - overflow,
            }
        nursery.cancel_scope.cancel()
    return figures


async def one_round(server: NatsServer) -> dict[str, dict[str, float]]:
    subjects = Subjects("bench", "r1")
    bus = Bus(BusOptions(servers=(server.url,), name="bench"), subjects.subscribed())
    link = Link(
        Host(), bus, cluster="bench", name="r1", key=os.urandom(32), epoch=1, servers=(server.url,)
    )
    identity = Identity("legacy", "10.0.0.1:4000", "SHA256:x", None, bytes(32))
    origin = Origin(identity.id, ("10.0.0.1", 4000), identity)
    body = bytes(SIZE)
    figures: dict[str, dict[str, float]] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(bus.run)
        while BusEvent.CONNECTED not in await bus.receive():
            pass
        envelope = bytes(SIZE + 120)  # about the size of the link's MSG envelope
        for rate, burst in SETTINGS:
            key = f"{rate}/{burst}"
            figures[f"link {key}"] = await paced(
                bus, lambda: link.relayed(origin, body), rate, burst
            )
            figures[f"bus {key}"] = await paced(
                bus, lambda: bus.publish(subjects.msg, envelope), rate, burst
            )
        nursery.cancel_scope.cancel()
    return figures


def main() -> None:
    rounds: list[dict[str, dict[str, float]]] = []
    key = os.urandom(32)
    with TemporaryDirectory() as workdir:
        server = NatsServer(Path(workdir), "bench")
        with running([server]):
            server.start()
            publisher = Worker(
                "publisher", cluster.publisher_main, cluster.PublisherSpec(server.port, key, SIZE)
            )
            try:
                publisher.reply()
                for number in range(ROUNDS):
                    print(f"round {number + 1}/{ROUNDS}", file=sys.stderr, flush=True)
                    figures = trio.run(one_round, server)
                    figures.update(trio.run(way_in, server, publisher, key))
                    rounds.append(figures)
            finally:
                publisher.stop()
    medians = {
        name: {
            field: statistics.median(r[name][field] for r in rounds) for field in rounds[0][name]
        }
        for name in rounds[0]
    }
    rows = []
    for rate, burst in SETTINGS:
        link, bus = medians[f"link {rate}/{burst}"], medians[f"bus {rate}/{burst}"]
        rows.append(
            [
                rate,
                burst,
                round(link["published_per_s"]),
                round(link["cpu_us_per_envelope"], 1),
                round(bus["cpu_us_per_envelope"], 1),
                round(link["cpu_us_per_envelope"] / bus["cpu_us_per_envelope"], 2),
            ]
        )
    rows_in = [
        [
            rate,
            round(medians[f"in {rate}"]["offered_per_s"]),
            round(medians[f"in {rate}"]["taken_per_s"]),
            round(medians[f"in {rate}"]["cpu_us_per_envelope"], 1),
            round(medians[f"in {rate}"]["receive_overflow"]),
        ]
        for rate in IN_RATES
    ]
    text = "\n".join(
        [
            "## Federation link, out",
            "",
            report.table(
                [
                    "asked/s",
                    "per turn",
                    "published/s",
                    "link CPU us/env",
                    "bus alone CPU us/env",
                    "ratio",
                ],
                rows,
            ),
            "",
            "## Federation link, in",
            "",
            report.table(
                ["asked/s", "offered/s", "acted on/s", "CPU us/env", "receive_overflow"], rows_in
            ),
        ]
    )
    result = {
        "settings": SETTINGS,
        "in_rates": IN_RATES,
        "seconds": SECONDS,
        "rounds": ROUNDS,
        "size": SIZE,
        "medians": medians,
        "runs": rounds,
        "machine": report.machine(),
        "code": report.code_state(),
    }
    print(text)
    print(report.write("federation_link", result, text))


if __name__ == "__main__":
    main()
