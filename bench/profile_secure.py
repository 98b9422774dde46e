"""Where the secure relay's CPU goes: one secure step with the daemon under cProfile.

    .venv/bin/python bench/profile_secure.py --config 1:2:100 --rate 1000 --seconds 6

The daemon runs under ``cProfile`` with ``time.process_time`` as its clock, so the
time it spends waiting in epoll, or preempted by its clients on these two cores, is
not counted: only its CPU. The profiler roughly doubles the cost of every Python
call, so compare the shares, not the absolute times, with ``run.py secure``. The
step is the one ``run.py secure`` measures (secure senders and receivers in their
own processes, loopback only, bounded). Prints the step's figures and the top
functions by their own time and by cumulative time (``mcrelay`` only); the
statistics file stays at ``--out`` for ``python -m pstats``.
"""

import argparse
import pstats
import tempfile
from pathlib import Path

from relaybench.daemon import running_daemon
from relaybench.keys import BenchKeys
from relaybench.secure import SIZE, secure_key, wait_rosters
from relaybench.secure_load import open_secure_fleet
from relaybench.sweep import Config

# The daemon's command line follows the file name; the statistics are written when it exits.
PROFILED = """\
import cProfile, runpy, sys, time
out = sys.argv[1]
sys.argv = ["mcrelay", *sys.argv[2:]]
profiler = cProfile.Profile(time.process_time)
profiler.enable()
try:
    runpy.run_module("mcrelay", run_name="__main__", alter_sys=True)
finally:
    profiler.disable()
    profiler.dump_stats(out)
"""
FIGURES = (
    "offered_per_s", "delivered_per_s", "skipped", "loss", "latency_p50_ms",
    "relay_cpu_ms_per_msg", "relay_cores", "load_cores", "other_cores",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Config.parse, default=Config(1, 2, SIZE))
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s offered")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--out", type=Path, default=Path("secure-daemon.prof"))
    args = parser.parse_args()
    config = args.config
    out = args.out.resolve()
    with tempfile.TemporaryDirectory(prefix="mcrelay-profile-") as tmp:
        keys = BenchKeys.create(Path(tmp))
        relay_key = secure_key(keys)
        runner = ("-c", PROFILED, str(out))
        with (
            running_daemon(Path(tmp), keys.key_file, runner=runner) as daemon,
            open_secure_fleet(
                daemon.address, relay_key, config.senders, config.receivers, 2, daemon.api
            ) as fleet,
        ):
            wait_rosters(fleet, config.receivers * (config.receivers + config.senders - 1))
            step = fleet.step(daemon.pid, daemon.api, 1, args.rate, args.seconds, config.size)
    print({name: step[name] for name in FIGURES}, step["counters"])
    stats = pstats.Stats(str(out))
    stats.sort_stats("tottime").print_stats("mcrelay|socket|builtins", args.top)
    stats.sort_stats("cumulative").print_stats(r"mcrelay/(daemon|protocol)", args.top)


if __name__ == "__main__":
    main()
