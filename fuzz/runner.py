"""What both fuzz targets share: playing one input deterministically (Trio's
deterministic scheduling and a mock clock, so an input replays exactly), counting
the drop reasons reached, and the engines' plumbing (libFuzzer through atheris, and
replaying inputs). Imports nothing of mcrelay: a target loads atheris first, so that
mcrelay is instrumented when the target imports it."""

import argparse
import importlib
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NoReturn

import trio
import trio.testing

if TYPE_CHECKING:
    from mcrelay.settings.config import RelayConfig


class Runs:
    """Plays inputs; a target says how one is played (:meth:`play`)."""

    def __init__(self, configs: Sequence["RelayConfig"], max_input_bytes: int, report_every: int):
        self.configs = configs
        self.max_input_bytes = max_input_bytes
        self.report_every = report_every
        self.executions = 0
        self.reasons: Counter[str] = Counter()
        self.started = time.monotonic()

    def run_one(self, data: bytes) -> None:
        """Play one input (its first byte picks the configuration); raises on any
        failure (that is the crash the fuzzer reports)."""
        if len(data) > self.max_input_bytes:
            return
        config = self.configs[data[0] % len(self.configs)] if data else self.configs[0]
        run_core: Any = importlib.import_module("trio._core._run")
        run_core._ALLOW_DETERMINISTIC_SCHEDULING = True
        run_core._r.seed(0)
        clock = trio.testing.MockClock()
        trio.run(self.play, data, config, clock, clock=clock)
        self.executions += 1
        if self.executions % self.report_every == 0:
            self.report()

    async def play(self, data: bytes, config: "RelayConfig", clock: trio.testing.MockClock) -> None:
        raise NotImplementedError

    def report(self) -> None:
        elapsed = time.monotonic() - self.started
        reasons = ", ".join(f"{name}={count}" for name, count in sorted(self.reasons.items()))
        print(
            f"#{self.executions} in {elapsed:.0f} s ({self.executions / elapsed:.0f}/s); "
            f"drops seen: {reasons}",
            file=sys.stderr,
            flush=True,
        )


def run_engine(
    parser: argparse.ArgumentParser,
    options: argparse.Namespace,
    rest: list[str],
    runs: Runs,
    atheris: ModuleType | None,
    hypothesis: Callable[[], None],
) -> int:
    """Replay ``options.replay``, or fuzz with atheris (``rest`` is libFuzzer's) when it is
    installed and chosen, else with ``hypothesis``; the exit status."""
    if options.replay:
        return replay(runs.run_one, options.replay)
    engine = options.engine or ("atheris" if atheris else "hypothesis")
    if engine == "atheris":
        if atheris is None:
            parser.error("atheris is not installed: pip install atheris, or --engine hypothesis")
        run_atheris(atheris, runs.run_one, runs.max_input_bytes, rest)
    if rest:
        parser.error(f"unknown arguments: {' '.join(rest)}")
    start = time.monotonic()
    hypothesis()
    runs.report()
    print(f"hypothesis: {runs.executions} runs in {time.monotonic() - start:.0f} s, no failure")
    return 0


def run_atheris(
    atheris: ModuleType, run_one: Callable[[bytes], None], max_len: int, argv: list[str]
) -> NoReturn:
    atheris.Setup([sys.argv[0], f"-max_len={max_len}", *argv], run_one)
    atheris.Fuzz()
    raise SystemExit(0)  # pragma: no cover - libFuzzer exits the process itself


def replay(run_one: Callable[[bytes], None], paths: list[Path]) -> int:
    """Play each file; 1 if any failed (its traceback printed), else 0."""
    failed = 0
    for path in paths:
        try:
            run_one(path.read_bytes())
        except Exception:
            failed += 1
            print(f"{path}: FAILED", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"{path}: ok", file=sys.stderr)
    return 1 if failed else 0
