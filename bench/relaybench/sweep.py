"""Throughput and latency: S senders, R receivers, the offered rate swept past saturation.

For each configuration (S, R, message size): the crypto floor and the bare
floor for that load, then a fresh daemon and one step per rate (fractions of
the crypto floor's all-core rate), then the overload measurement: steps offering
the most the ladder's steps delivered (the peak's rate) and twice that ("past
saturation"), alternating, :data:`OVERLOAD_REPEATS` of each, compared by their
medians. Then, for each configuration again, twice the peak's rate on a daemon
with ``--crypto-workers 1`` and on one with ``--crypto-workers 2``.
"""

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from relaybench import floors, report, senders
from relaybench.daemon import Daemon, running_daemon
from relaybench.keys import BenchKeys
from relaybench.load import Fleet, open_fleet
from relaybench.stats import ratio

FRACTIONS = (0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.5, 2.0)
QUICK_FRACTIONS = (0.25, 0.5, 1.0, 2.0)
BARE_FRACTION = 0.5
"""The bare floor is measured at this fraction of the crypto floor's rate (well below its own)."""
OVERLOAD_REPEATS = 3
"""Steps at the peak's rate and at twice it, each. One 3 s step is not enough to compare
the two: at `fbb74a9`, two steps offered 7,450 and 7,446 messages/s to the same daemon and
it delivered 2,533 and 3,002; and the ladder's best step is the luckiest of eight."""
OVERLOAD_BASIS = "offered C and 2 C, C the most a ladder step delivered"
"""Recorded in the results: before `69aeefe`, the best step's offered rate and twice it."""


@dataclass(frozen=True)
class Config:
    senders: int
    receivers: int
    size: int

    @classmethod
    def parse(cls, text: str) -> "Config":
        """``S:R:SIZE``, e.g. ``4:8:1000``."""
        senders, receivers, size = (int(part) for part in text.split(":"))
        if senders < 1 or receivers < 1 or size < 20:
            raise ValueError(f"{text!r}: at least 1 sender, 1 receiver and 20 bytes")
        return cls(senders, receivers, size)

    @property
    def recipients(self) -> int:
        """Copies the relay makes of each message: every registered client but the sender."""
        return self.receivers + self.senders - 1

    @property
    def label(self) -> str:
        return f"S={self.senders} R={self.receivers} {self.size} B"


CONFIGS = (Config(1, 2, 100), Config(4, 8, 100), Config(1, 2, 1000), Config(4, 8, 1000))


@dataclass(frozen=True)
class SweepOptions:
    configs: tuple[Config, ...] = CONFIGS
    fractions: tuple[float, ...] = FRACTIONS
    step_s: float = 3.0
    floor_s: float = 1.5
    receiver_processes: int = 2


def run(keys: BenchKeys, workdir: Path, options: SweepOptions) -> dict[str, Any]:
    started = time.monotonic()
    configs = [sweep_config(keys, workdir, config, options) for config in options.configs]
    workers = [
        compare_workers(keys, workdir, config, swept, options)
        for config, swept in zip(options.configs, configs, strict=True)
    ]
    settings = {
        **asdict(options),
        "configs": [asdict(c) for c in options.configs],
        "sender_tick_s": senders.TICK_S,
        "overload": OVERLOAD_BASIS,
    }
    result = {
        **report.envelope("sweep", settings, started),
        "configs": configs,
        "workers": workers,
    }
    result["total_s"] = time.monotonic() - started
    return result


def sweep_config(
    keys: BenchKeys, workdir: Path, config: Config, options: SweepOptions
) -> dict[str, Any]:
    blocks = floors.blocks_for(config.size)

    def crypto_floor() -> floors.CryptoFloor:
        return floors.crypto_floor(
            keys.relay, keys.client.public_key(), blocks, config.recipients, options.floor_s
        )

    before = crypto_floor()
    bare = floors.bare_floor(
        keys,
        config.senders,
        config.receivers,
        config.size,
        BARE_FRACTION * before.msgs_per_s,
        options.step_s,
        options.receiver_processes,
    )
    with daemon_and_fleet(keys, workdir, config, options) as (daemon, fleet):
        steps = []
        for number, fraction in enumerate(options.fractions, 1):
            rate = fraction * before.msgs_per_s
            step = fleet.step(daemon.pid, daemon.api, number, rate, options.step_s, config.size)
            steps.append({"fraction_asked": fraction, **step})
        # The peak's rate is what the best step delivered, not what it was offered: past
        # saturation the ladder's steps deliver about the same, and the best of them, by
        # luck, can be one offered three times what the relay carries.
        peak = max(steps, key=lambda s: s["delivered_per_s"])
        if peak["delivered_per_s"] <= 0:
            raise RuntimeError(f"{config.label}: no step of the ladder delivered anything")
        at_peak: list[dict[str, Any]] = []
        at_twice: list[dict[str, Any]] = []
        for _repeat in range(OVERLOAD_REPEATS):
            for measured, times in ((at_peak, 1), (at_twice, 2)):
                rate = times * peak["delivered_per_s"]
                step = fleet.step(
                    daemon.pid, daemon.api, len(steps) + 1 + len(at_peak) + len(at_twice),
                    rate, options.step_s, config.size,
                )  # fmt: skip
                measured.append({"fraction_asked": rate / before.msgs_per_s, **step})
    # The rates were fractions of the floor before the steps; the ratios use the floor
    # before and after together, since the machine's speed drifts.
    after = crypto_floor()
    crypto = floors.pooled([before, after])
    for step in [*steps, *at_peak, *at_twice]:
        step["cpu_vs_crypto"] = ratio(step["relay_cpu_ms_per_msg"], crypto.cpu_ms_per_msg)
        step["cpu_vs_bare"] = ratio(step["relay_cpu_ms_per_msg"], bare["cpu_ms_per_msg"])
        step["delivered_vs_crypto"] = step["delivered_per_s"] / crypto.msgs_per_s
    return {
        "config": asdict(config),
        "label": config.label,
        "recipients": config.recipients,
        "crypto_floor": crypto.as_dict(),
        "crypto_floor_before": before.as_dict(),
        "crypto_floor_after": after.as_dict(),
        "bare_floor": bare,
        "steps": steps,
        "peak": peak,
        "overload": overload(at_peak, at_twice),
    }


def overload(at_peak: list[dict[str, Any]], at_twice: list[dict[str, Any]]) -> dict[str, Any]:
    """What the relay keeps of its peak at twice the peak's rate: the medians of the steps
    at each rate, and the worst p99 latency at twice it."""
    delivered = statistics.median(step["delivered_per_s"] for step in at_peak)
    kept = statistics.median(step["delivered_per_s"] for step in at_twice)
    p99s = [step["latency_p99_ms"] for step in at_twice]
    return {
        "at_peak": at_peak,
        "at_twice": at_twice,
        "delivered_at_peak_per_s": delivered,
        "delivered_at_twice_per_s": kept,
        "kept": ratio(kept, delivered),
        "worst_p99_ms": None if None in p99s else max(p99s),
    }


WORKER_ROUNDS = 2
"""Daemons per worker count, alternating 1, 2, 1, 2: one saturated step varies by a fifth."""


@contextlib.contextmanager
def daemon_and_fleet(
    keys: BenchKeys,
    workdir: Path,
    config: Config,
    options: SweepOptions,
    extra: Sequence[str] = (),
) -> Iterator[tuple[Daemon, Fleet]]:
    """A fresh daemon and the configuration's senders and receivers, registered with it."""
    with (
        running_daemon(workdir, keys.key_file, extra) as daemon,
        open_fleet(
            daemon.address,
            keys,
            config.senders,
            config.receivers,
            options.receiver_processes,
            daemon.api,
        ) as fleet,
    ):
        yield daemon, fleet


def compare_workers(
    keys: BenchKeys,
    workdir: Path,
    config: Config,
    swept: dict[str, Any],
    options: SweepOptions,
) -> dict[str, Any]:
    """The past-saturation rate with 1 and with 2 crypto workers, each on fresh daemons."""
    rate = swept["overload"]["at_twice"][0]["rate_asked_per_s"]
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    for _round in range(WORKER_ROUNDS):
        for workers, measured in runs.items():
            extra = ["--crypto-workers", workers]
            with daemon_and_fleet(keys, workdir, config, options, extra) as (daemon, fleet):
                measured.append(
                    fleet.step(daemon.pid, daemon.api, 1, rate, options.step_s, config.size)
                )
    delivered = {
        workers: statistics.mean(run["delivered_per_s"] for run in measured)
        for workers, measured in runs.items()
    }
    return {
        "config": asdict(config),
        "label": config.label,
        "rate_per_s": rate,
        "runs": runs,
        "delivered_per_s": delivered,
        "ratio": ratio(delivered["2"], delivered["1"]),
    }


def markdown(result: dict[str, Any]) -> str:
    parts = [f"## Throughput and latency\n\n{report.header(result)}\n"]
    for swept in result["configs"]:
        crypto, bare = swept["crypto_floor"], swept["bare_floor"]
        before, after = swept["crypto_floor_before"], swept["crypto_floor_after"]
        parts.append(
            f"### {swept['label']} ({swept['recipients']} copies per message)\n\n"
            f"Crypto floor: {crypto['cpu_ms_per_msg']:.3f} ms CPU per message "
            f"({before['cpu_ms_per_msg']:.3f} before the steps, {after['cpu_ms_per_msg']:.3f} after), "
            f"{crypto['msgs_per_s']:.0f} messages/s on {crypto['threads']} threads "
            f"(other load meanwhile: {crypto['other_cores']:.2f} cores). "
            f"Bare floor: {report.fmt(bare['cpu_ms_per_msg'])} ms CPU per message "
            f"(at {bare['rate_per_s']:.0f}/s).\n"
        )
        rows = [step_row(step) for step in swept["steps"]]
        loaded = swept["overload"]
        for number, (peak, twice) in enumerate(
            zip(loaded["at_peak"], loaded["at_twice"], strict=True), 1
        ):
            rows.append(step_row(peak, f"peak's rate, {number}"))
            rows.append(step_row(twice, f"2x peak, {number}"))
        parts.append(
            report.table(STEP_HEADERS, rows)
            + f"\n\nThe peak's rate C: {report.fmt(swept['peak']['delivered_per_s'])} "
            "messages/s, the most a step of the ladder delivered. "
            f"At twice it, median of {len(loaded['at_twice'])} steps: "
            f"{report.fmt(loaded['delivered_at_twice_per_s'])} messages/s delivered; at the "
            f"peak's rate: {report.fmt(loaded['delivered_at_peak_per_s'])}; kept "
            f"{report.fmt(loaded['kept'])}, worst p99 {report.fmt(loaded['worst_p99_ms'])} ms.\n"
        )
    rows = [
        [workers["label"], f"--crypto-workers {n}", workers["rate_per_s"],
         " / ".join(report.fmt(run["delivered_per_s"]) for run in measured),
         workers["delivered_per_s"][n], ratio(workers["delivered_per_s"][n], workers["delivered_per_s"]["1"]),
         statistics.mean(run["relay_cpu_ms_per_msg"] or 0.0 for run in measured),
         statistics.mean(run["relay_cores"] for run in measured)]
        for workers in result["workers"]
        for n, measured in workers["runs"].items()
    ]  # fmt: skip
    headers = ["configuration", "daemon", "offered/s", "delivered/s, each daemon",
               "delivered/s, mean", "/ 1 worker", "CPU ms/msg", "daemon cores"]  # fmt: skip
    parts.append(
        "### Crypto workers: the past-saturation rate with 1 and with 2\n\n"
        + report.table(headers, rows)
        + "\n"
    )
    return "\n".join(parts)


STEP_HEADERS = [
    "offered (x crypto floor)", "offered/s", "delivered/s", "loss", "p50 ms", "p99 ms",
    "max ms", "samples", "CPU ms/msg", "main", "workers", "x crypto", "x bare",
    "daemon cores", "load cores", "other cores", "drops",
]  # fmt: skip


def step_row(step: dict[str, Any], label: str | None = None) -> list[object]:
    return [
        label or f"{step['fraction_asked']:g}", step["offered_per_s"], step["delivered_per_s"],
        report.pct(step["loss"]), step["latency_p50_ms"], step["latency_p99_ms"],
        step["latency_max_ms"], step["latency_samples"], step["relay_cpu_ms_per_msg"],
        step["relay_main_ms_per_msg"], step["relay_others_ms_per_msg"], step["cpu_vs_crypto"],
        step["cpu_vs_bare"], step["relay_cores"], step["load_cores"], step["other_cores"],
        report.drops(step["counters"]),
    ]  # fmt: skip
