"""mcrelay benchmarks: a real daemon on loopback, driven by protocol clients in other processes.

    .venv/bin/python bench/run.py all            # everything, as `make bench` runs it
    .venv/bin/python bench/run.py sweep --quick  # one experiment, shortened

Each experiment writes bench/results/<name>.json, <name>.md and <name>.png and
prints its tables; `all` and `targets` also write targets.json/.md. See bench/README.md.
"""

import argparse
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relaybench import fanout, plots, report, scale, secure, secure_report, sweep, targets
from relaybench.keys import BenchKeys
from relaybench.procfs import raise_nofile

NOFILE = 4096
"""For this process; each client process raises its own limit for its sockets."""


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(part) for part in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


def sweep_options(args: argparse.Namespace) -> sweep.SweepOptions:
    options = sweep.SweepOptions()
    if args.quick:
        options = sweep.SweepOptions(
            configs=options.configs[:1], fractions=sweep.QUICK_FRACTIONS, step_s=1.5, floor_s=0.5
        )
    return sweep.SweepOptions(
        configs=tuple(args.config) or options.configs,
        fractions=args.fractions or options.fractions,
        step_s=args.step_s or options.step_s,
        floor_s=options.floor_s,
        receiver_processes=args.receiver_processes,
    )


def fanout_options(args: argparse.Namespace) -> fanout.FanoutOptions:
    quick = fanout.FanoutOptions(fan_outs=(1, 10, 100), step_s=2.0, floor_s=0.5)
    options = quick if args.quick else fanout.FanoutOptions()
    return fanout.FanoutOptions(
        fan_outs=args.fan_outs or options.fan_outs,
        rate_per_s=args.rate or options.rate_per_s,
        step_s=args.step_s or options.step_s,
        floor_s=options.floor_s,
        receiver_processes=args.receiver_processes,
    )


def scale_options(args: argparse.Namespace) -> scale.ScaleOptions:
    quick = scale.ScaleOptions(clients=(1000,), register_limit_s=30.0, idle_s=2.0)
    options = quick if args.quick else scale.ScaleOptions()
    return scale.ScaleOptions(
        clients=args.clients or options.clients,
        register_limit_s=args.register_limit or options.register_limit_s,
        chunk=options.chunk,
        idle_s=options.idle_s,
        sockets_per_process=options.sockets_per_process,
        send_per_s=options.send_per_s,
        default_page_requests=options.default_page_requests,
        large_page_requests=options.large_page_requests,
        key_samples=options.key_samples,
    )


def secure_options(args: argparse.Namespace) -> secure.SecureOptions:
    options = secure.QUICK if args.quick else secure.SecureOptions()
    return secure.SecureOptions(
        configs=tuple(args.config) or options.configs,
        rates=args.rates or options.rates,
        step_s=args.step_s or options.step_s,
        repeats=options.repeats,
        fan_outs=args.fan_outs or options.fan_outs,
        fan_out_rate_per_s=args.rate or options.fan_out_rate_per_s,
        fan_out_step_s=options.fan_out_step_s,
        receiver_processes=args.receiver_processes,
        floor_repeats=options.floor_repeats,
    )


@dataclass(frozen=True)
class Experiment:
    options: Callable[[argparse.Namespace], Any]
    run: Callable[[BenchKeys, Path, Any], dict[str, Any]]
    markdown: Callable[[dict[str, Any]], str]
    plot: Callable[[dict[str, Any]], Path] | None = None


EXPERIMENTS = {
    "sweep": Experiment(sweep_options, sweep.run, sweep.markdown, plots.sweep),
    "fanout": Experiment(fanout_options, fanout.run, fanout.markdown, plots.fanout),
    "scale": Experiment(scale_options, scale.run, scale.markdown, plots.scale),
    "secure": Experiment(secure_options, secure.run, secure_report.markdown),
}


def experiment(name: str, args: argparse.Namespace, keys: BenchKeys, workdir: Path) -> None:
    chosen = EXPERIMENTS[name]
    print(f"{name}: running", file=sys.stderr, flush=True)
    result = chosen.run(keys, workdir, chosen.options(args))
    text = chosen.markdown(result)
    path = report.write(name, result, text)
    written = [path] if chosen.plot is None else [path, chosen.plot(result)]
    print(f"{text}\n\n{name}: {', '.join(map(str, written))}\n", flush=True)


def write_targets() -> None:
    sources = {name: report.read(name) for name in ("sweep", "scale")}
    rows = targets.evaluate(sources["sweep"], sources["scale"])
    text = targets.markdown(rows, sources)
    report.write("targets", {"targets": rows}, text)
    print(text, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, "targets", "all"])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter steps")
    parser.add_argument(
        "--config", type=sweep.Config.parse, action="append", default=[],
        help="sweep, secure: S:R:SIZE (senders, receivers, message bytes); repeat for several",
    )  # fmt: skip
    parser.add_argument(
        "--fractions", type=floats, help="sweep: rates, as fractions of the crypto floor"
    )
    parser.add_argument(
        "--rates", type=ints, help="secure: offered rates of the ladder, messages/s"
    )
    parser.add_argument("--step-s", type=float, help="sweep, fanout, secure: seconds per step")
    parser.add_argument(
        "--fan-outs", type=ints, help="fanout, secure: receiver counts, e.g. 1,10,100,500"
    )
    parser.add_argument("--rate", type=float, help="fanout, secure: fan-out messages/s")
    parser.add_argument("--clients", type=ints, help="scale: client counts, e.g. 1000,10000")
    parser.add_argument(
        "--register-limit", type=float, help="scale: seconds to register N, at most"
    )
    parser.add_argument(
        "--receiver-processes", type=int, default=2, help="processes the receivers share"
    )
    return parser.parse_args()


def _interrupt(signum: int, _frame: object) -> None:
    """SIGTERM unwinds like Ctrl-C, so every ``finally`` stops its daemon and workers."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    args = parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    raise_nofile(NOFILE)
    started = time.monotonic()
    try:
        if args.experiment == "targets":
            write_targets()
            return 0
        names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
        with tempfile.TemporaryDirectory(prefix="mcrelay-bench-") as tmp:
            keys = BenchKeys.create(Path(tmp))
            for name in names:
                experiment(name, args, keys, Path(tmp))
        if args.experiment == "all":
            write_targets()
    except KeyboardInterrupt:
        print("interrupted; daemons and clients were stopped", file=sys.stderr)
        return 130
    print(f"done in {time.monotonic() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
