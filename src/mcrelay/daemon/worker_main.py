"""A crypto worker process: :func:`main`, started by the relay (``daemon/workers.py``).

It reads frames from stdin and writes one frame per job to stdout, in the order the
jobs came. A frame is a 4-byte big-endian length and a pickle. The first frame is the
worker's set-up, ``(build, argument)``: its state is ``build(argument)`` (the relay
key, say), and its first answer says it is ready. Every frame after it is a job: an
object with ``run(state)``; its answer is ``(True, result)`` or ``(False,
exception)``. At the end of stdin it exits.

Pickles cross only between the relay and the workers it started, over their pipes:
the same program, the same user. Each answer is written as soon as its job is done:
the relay gives a worker a few jobs at a time, and a message's sender may be waiting
for it (answering the jobs read in one go together, or every 2 ms, delivered 10 to
25 % less past saturation).

A worker runs in a session of its own (no terminal's signals reach it), and systemd's
SIGTERM and SIGHUP, which reach every process of the unit, are ignored: it ends with
its relay (at the end of its stdin), so the messages in flight at a graceful stop are
still sealed, and a reload costs no worker.
"""

import os
import pickle
import signal
import struct
import sys
from typing import Any

LENGTH = struct.Struct(">I")
READ_BYTES = 1 << 16


def frame(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return LENGTH.pack(len(data)) + data


def split_frames(buffer: bytearray) -> list[bytes]:
    """Take every whole frame from the front of ``buffer``."""
    frames: list[bytes] = []
    start = 0
    while len(buffer) - start >= LENGTH.size:
        (size,) = LENGTH.unpack_from(buffer, start)
        end = start + LENGTH.size + size
        if end > len(buffer):
            break
        frames.append(bytes(buffer[start + LENGTH.size : end]))
        start = end
    del buffer[:start]
    return frames


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def serve(read_fd: int, write_fd: int) -> None:
    buffer = bytearray()
    state: Any = None
    set_up = False
    while chunk := os.read(read_fd, READ_BYTES):
        buffer += chunk
        for data in split_frames(buffer):
            if not set_up:
                build, argument = pickle.loads(data)  # noqa: S301 (from the relay, our parent)
                state, set_up = build(argument), True
                _write_all(write_fd, frame((True, None)))  # ready
                continue
            try:
                work = pickle.loads(data)  # noqa: S301 (from the relay, our parent)
                answer: tuple[bool, object] = (True, work.run(state))
            except Exception as exc:
                answer = (False, exc)
            try:
                answered = frame(answer)
            except Exception as exc:  # an answer that does not pickle still answers its job
                answered = frame((False, RuntimeError(f"an answer that did not pickle: {exc!r}")))
            _write_all(write_fd, answered)


def main() -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    answers = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot break a frame
    serve(sys.stdin.fileno(), answers)


if __name__ == "__main__":
    main()
