"""The secure profile beside the legacy one, in one run (issue 11's figures).

For each configuration (S senders, R receivers, 100-byte messages), each profile
on a fresh daemon of its own (a daemon serves both, but clients of one profile
would then get the other's copies too):

1. a ladder of offered rates, each step ``step_s`` long, until two steps in a
   row are not lossless, or the relay removed a member. A step is lossless when
   the senders sent every message at its due time (none skipped: a secure sender
   skips only when its channel's queue of 64 is full), every receiver got every
   message, and the relay still lists every member;
2. ``repeats`` more steps at the highest lossless rate of the ladder, on a fresh
   daemon: the medians of the lossless ones and of the ladder's step at that rate
   (CPU per message, latency) are the profile's figures;
3. the bare floor (``bench/bare_forwarder.py``, legacy datagrams) at that rate.

Then the fan-out: one secure sender, N secure receivers, at 50 messages/s (at most
5,000 copies/s), each N on a fresh daemon once every receiver has its roster (one
PRESENCE per other member), with the bare floor at the same rate.

Every sender here wakes for each message (:data:`LEGACY_TICK_S`), where the sweep's
wake once a millisecond.
"""

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mcrelay.daemon.secure.keyfile import load_or_create_secure_key
from mcrelay.settings.config import secure_key_beside
from relaybench import floors, report
from relaybench.daemon import Daemon, running_daemon
from relaybench.keys import BenchKeys
from relaybench.load import Fleet, open_fleet
from relaybench.secure_load import open_secure_fleet
from relaybench.secure_report import PROFILES
from relaybench.stats import ratio
from relaybench.sweep import Config
from relaybench.workers import call_all

SIZE = 100
CONFIGS = (Config(1, 2, SIZE), Config(4, 8, SIZE))
RATES = (250, 500, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 12000)
QUICK_RATES = (500, 1000, 2000, 4000)
FAN_OUTS = (1, 10, 100, 500)
FAN_OUT_RATE_PER_S = 50.0
FAN_OUT_COPIES_PER_S = 5000.0
"""The fan-out's rate is at most this over N (10 messages/s to 500): below saturation."""
ROSTER_TIMEOUT_S = 120.0
"""Receivers of a large fan-out wait this long at most for every PRESENCE (N^2 of them)."""
FAILED_IN_A_ROW = 2
OFFERED_AT_LEAST = 0.95
"""A lossless step sent at least this share of the rate asked for."""
LEGACY_TICK_S = 0.0
"""The legacy senders and the bare floor's wake for every message, as the secure senders
do (their own loop), and as every sender did when issue 11 set its targets against the
bare floor: with the sweep's once a millisecond, the bare floor costs half as much per
message (its loop wakes once per burst), the secure relay the same (`bench/README.md`)."""


@dataclass(frozen=True)
class SecureOptions:
    configs: tuple[Config, ...] = CONFIGS
    rates: tuple[int, ...] = RATES
    step_s: float = 2.0
    repeats: int = 3
    fan_outs: tuple[int, ...] = FAN_OUTS
    fan_out_rate_per_s: float = FAN_OUT_RATE_PER_S
    fan_out_step_s: float = 3.0
    receiver_processes: int = 2
    floor_repeats: int = 3
    """Steps of the bare floor at the lossless rate, their median taken: the figure
    issue 11 divides by, as the relay's is a median of its repeats."""


QUICK = SecureOptions(
    configs=CONFIGS[:1],
    rates=QUICK_RATES,
    step_s=1.5,
    repeats=1,
    fan_outs=(1, 10, 100),
    floor_repeats=1,
)


def secure_key(keys: BenchKeys) -> bytes:
    """The relay's secure public key, written beside its RSA key file (the daemon's default)."""
    return load_or_create_secure_key(secure_key_beside(keys.key_file)).public


def run(keys: BenchKeys, workdir: Path, options: SecureOptions) -> dict[str, Any]:
    started = time.monotonic()
    relay_key = secure_key(keys)
    configs = [compare(keys, relay_key, workdir, config, options) for config in options.configs]
    fan_outs = [fan_out(keys, relay_key, workdir, n, options) for n in options.fan_outs]
    settings = {**asdict(options), "configs": [asdict(c) for c in options.configs]}
    result = {
        **report.envelope("secure", settings, started),
        "configs": configs,
        "fan_outs": fan_outs,
    }
    result["total_s"] = time.monotonic() - started
    return result


@contextlib.contextmanager
def fleet_of(
    profile: str,
    keys: BenchKeys,
    relay_key: bytes,
    workdir: Path,
    config: Config,
    options: SecureOptions,
) -> Iterator[Callable[[int, float], dict[str, Any]]]:
    """A fresh daemon and a fleet of ``profile``; yields the function that measures one
    step (number, rate), also telling whether the relay removed members meanwhile."""
    with (
        running_daemon(workdir, keys.key_file) as daemon,
        open_any_fleet(
            profile, daemon, keys, relay_key, config.senders, config.receivers, options
        ) as fleet,
    ):
        members = config.senders + config.receivers

        def measure(number: int, rate: float) -> dict[str, Any]:
            step = fleet.step(daemon.pid, daemon.api, number, rate, options.step_s, SIZE)
            step["members_lost"] = members - daemon.api.client_count()
            step["lossless"] = lossless(step) and not step["members_lost"]
            step["relay_rtt_ms"] = receivers_rtt_ms(daemon.api.clients())
            return step

        yield measure


def open_any_fleet(
    profile: str,
    daemon: Daemon,
    keys: BenchKeys,
    relay_key: bytes,
    senders: int,
    receivers: int,
    options: SecureOptions,
) -> contextlib.AbstractContextManager[Fleet]:
    processes = options.receiver_processes
    if profile == "secure":
        return open_secure_fleet(
            daemon.address, relay_key, senders, receivers, processes, daemon.api
        )
    return open_fleet(
        daemon.address, keys, senders, receivers, processes, daemon.api, tick_s=LEGACY_TICK_S
    )


def receivers_rtt_ms(clients: list[dict[str, Any]]) -> float | None:
    """The median of the relay's smoothed round-trip times to the secure members it
    sent messages to (the receivers; the API's ``rtt_ms``, from its ACK samples, the
    receivers' ACK delay included): the pace of the 8 messages in flight per member."""
    rtts = [c["rtt_ms"] for c in clients if c.get("rtt_ms") is not None and c["messages_out"]]
    return statistics.median(rtts) if rtts else None


def lossless(step: dict[str, Any]) -> bool:
    return bool(
        step["skipped"] == 0
        and step["copies"] >= step["copies_expected"]
        and step["offered_per_s"] >= OFFERED_AT_LEAST * step["rate_asked_per_s"]
    )


def compare(
    keys: BenchKeys, relay_key: bytes, workdir: Path, config: Config, options: SecureOptions
) -> dict[str, Any]:
    profiles = {
        profile: ladder(profile, keys, relay_key, workdir, config, options) for profile in PROFILES
    }
    for measured in profiles.values():
        rate = measured["lossless_rate"] or options.rates[0]
        measured["bare_floor"] = floors.bare_floor(
            keys,
            config.senders,
            config.receivers,
            SIZE,
            rate,
            options.step_s,
            options.receiver_processes,
            LEGACY_TICK_S,
            options.floor_repeats,
        )
        measured["cpu_vs_bare"] = ratio(
            measured["median"]["relay_cpu_ms_per_msg"], measured["bare_floor"]["cpu_ms_per_msg"]
        )
    legacy, secure = profiles["legacy"], profiles["secure"]
    return {
        "config": asdict(config),
        "label": config.label,
        "profiles": profiles,
        "lossless_ratio": ratio(secure["lossless_rate"], legacy["lossless_rate"]),
        "cpu_ratio": ratio(
            secure["median"]["relay_cpu_ms_per_msg"], legacy["median"]["relay_cpu_ms_per_msg"]
        ),
    }


def ladder(
    profile: str,
    keys: BenchKeys,
    relay_key: bytes,
    workdir: Path,
    config: Config,
    options: SecureOptions,
) -> dict[str, Any]:
    """The ladder on one daemon, then the repeats at its best rate on a fresh one (the
    ladder's last steps may have left the relay holding back, or removing, members)."""
    print(f"secure: {profile} {config.label}", flush=True)
    steps: list[dict[str, Any]] = []
    with fleet_of(profile, keys, relay_key, workdir, config, options) as measure:
        failed = 0
        for rate in options.rates:
            steps.append(measure(len(steps) + 1, rate))
            failed = 0 if steps[-1]["lossless"] else failed + 1
            if failed >= FAILED_IN_A_ROW or steps[-1]["members_lost"]:
                break
    best = max((s["rate_asked_per_s"] for s in steps if s["lossless"]), default=None)
    with fleet_of(profile, keys, relay_key, workdir, config, options) as measure:
        repeats = [measure(i + 1, best or options.rates[0]) for i in range(options.repeats)]
    # A step that collapsed relayed little on an idle relay: its CPU per message is
    # not the cost of that rate. The figures are those of the lossless steps there.
    at_rate = [s for s in steps if s["lossless"] and s["rate_asked_per_s"] == best]
    at_rate += [s for s in repeats if s["lossless"]]
    return {
        "profile": profile,
        "steps": steps,
        "lossless_rate": best,
        "repeats": repeats,
        "repeats_lossless": sum(step["lossless"] for step in repeats),
        "median": medians(at_rate or repeats),
        "median_of": len(at_rate),
    }


MEDIAN_FIGURES = (
    "offered_per_s", "delivered_per_s", "loss", "latency_p50_ms", "latency_p99_ms",
    "relay_cpu_ms_per_msg", "relay_main_ms_per_msg", "relay_others_ms_per_msg",
    "relay_cores", "load_cores", "other_cores",
)  # fmt: skip


def medians(steps: list[dict[str, Any]]) -> dict[str, float | None]:
    def median(name: str) -> float | None:
        values = [step[name] for step in steps if step[name] is not None]
        return statistics.median(values) if values else None

    return {name: median(name) for name in MEDIAN_FIGURES}


def fan_out(
    keys: BenchKeys, relay_key: bytes, workdir: Path, n: int, options: SecureOptions
) -> dict[str, Any]:
    print(f"secure: fan-out {n}", flush=True)
    rate = min(options.fan_out_rate_per_s, FAN_OUT_COPIES_PER_S / n)
    bare = floors.bare_floor(
        keys, 1, n, SIZE, rate, options.fan_out_step_s, options.receiver_processes, LEGACY_TICK_S
    )
    with (
        running_daemon(workdir, keys.key_file) as daemon,
        open_any_fleet("secure", daemon, keys, relay_key, 1, n, options) as fleet,
    ):
        settled_s = wait_rosters(fleet, n * n)
        registration = daemon.api.statistics()
        step = fleet.step(daemon.pid, daemon.api, 1, rate, options.fan_out_step_s, SIZE)
    counters = step["counters"]
    copies = counters["copies_sent"] if counters else 0
    return {
        "receivers": n,
        "rate_per_s": rate,
        "roster_s": settled_s,
        "registration_drops": {k: v for k, v in registration["dropped"].items() if v},
        "step": step,
        "lossless": lossless(step),
        "cpu_ms_per_copy": 1e3 * step["relay_cpu_s"] / copies if copies else None,
        "bare_floor": bare,
        "cpu_vs_bare": ratio(step["relay_cpu_ms_per_msg"], bare["cpu_ms_per_msg"]),
    }


def wait_rosters(fleet: Fleet, expected: int) -> float:
    """Until the receivers got ``expected`` PRESENCEs together (each one per other
    member); the seconds that took."""
    started = time.monotonic()
    while sum(call_all(fleet.receiving, "others")) < expected:
        if time.monotonic() - started > ROSTER_TIMEOUT_S:
            raise RuntimeError(f"the receivers' rosters were not complete in {ROSTER_TIMEOUT_S} s")
        time.sleep(0.2)
    return time.monotonic() - started
