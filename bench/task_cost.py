"""What a task per message costs on the Trio loop, on its own (issue 10, item 1).

    .venv/bin/python bench/task_cost.py            # about 20 s

The relay gives each message a task: it waits for the message's last fragment under
a cancel scope at the reassembly deadline, is woken when the crypto workers are done
(one wake of the loop hands back many results), waits for its sender's earlier
message when that one is not out yet, and settles. The shapes below do that with no
crypto and no socket, for MESSAGES messages completing BATCH at a time (as the
receive loop reads them), and report the loop's CPU per message, best of ROUNDS:

- loop: the batches alone, no task (the harness's floor);
- spawn: a task that returns at once;
- event: a task that waits for one Event;
- scope + event: the same wait under ``trio.move_on_at``;
- relay shape: the wait for completion under the scope, then one for the workers.
"""

import time
from collections.abc import Awaitable, Callable

import trio

MESSAGES = 20_000
ROUNDS = 5
BATCH = 64
DEADLINE_S = 5.0

Spawn = Callable[[trio.Nursery, list[trio.Event]], None]


def nothing(_nursery: trio.Nursery, _wakes: list[trio.Event]) -> None:
    return


def spawn(nursery: trio.Nursery, _wakes: list[trio.Event]) -> None:
    async def message() -> None:
        return

    nursery.start_soon(message)


def event(nursery: trio.Nursery, wakes: list[trio.Event]) -> None:
    completed = trio.Event()

    async def message() -> None:
        await completed.wait()

    nursery.start_soon(message)
    wakes.append(completed)


def scope_and_event(nursery: trio.Nursery, wakes: list[trio.Event]) -> None:
    completed = trio.Event()

    async def message() -> None:
        with trio.move_on_at(trio.current_time() + DEADLINE_S):
            await completed.wait()

    nursery.start_soon(message)
    wakes.append(completed)


def relay_shape(nursery: trio.Nursery, wakes: list[trio.Event]) -> None:
    completed, worked = trio.Event(), trio.Event()

    async def message() -> None:
        with trio.move_on_at(trio.current_time() + DEADLINE_S):
            await completed.wait()
        await worked.wait()

    nursery.start_soon(message)
    wakes.extend((completed, worked))


async def messages(start: Spawn) -> None:
    async with trio.open_nursery() as nursery:
        for _ in range(0, MESSAGES, BATCH):
            wakes: list[trio.Event] = []
            for _ in range(BATCH):
                start(nursery, wakes)
            await trio.lowlevel.checkpoint()
            for wake in wakes:  # the last fragments arrive, then the workers hand back
                wake.set()
            await trio.lowlevel.checkpoint()


def measure(run: Callable[[], Awaitable[None]]) -> float:
    samples = []
    for _ in range(ROUNDS):
        start = time.process_time()
        trio.run(run)
        samples.append((time.process_time() - start) / MESSAGES * 1e6)
    return min(samples)


def main() -> None:
    shapes: dict[str, Spawn] = {
        "loop": nothing,
        "spawn": spawn,
        "event": event,
        "scope + event": scope_and_event,
        "relay shape": relay_shape,
    }
    floor = measure(lambda: messages(nothing))
    for name, shape in shapes.items():
        us = measure(lambda shape=shape: messages(shape))  # type: ignore[misc]
        print(f"{name:14} {us:5.1f} us of loop CPU per message ({us - floor:+.1f} over the loop)")
    print(f"best of {ROUNDS} rounds of {MESSAGES:,} messages, {BATCH} at a time")


if __name__ == "__main__":
    main()
