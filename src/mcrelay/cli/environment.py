"""Where a command reads and writes: the real process, or a test's buffers."""

import io
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, TextIO, cast


def _stdin() -> TextIO:
    """The process's stdin, where bytes that are not UTF-8 arrive as lone surrogates
    (as they do in argv) instead of failing the read: see ``mcrelay.cli.text``."""
    if isinstance(sys.stdin, io.TextIOWrapper):
        sys.stdin.reconfigure(errors="surrogateescape")
    return sys.stdin


def _stdout() -> TextIO:
    """The process's stdout, where what its encoding cannot write (a peer's '€' on a
    Latin-1 terminal) is written as an escape instead of failing the command."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    return sys.stdout


@dataclass
class Environment:
    stdin: TextIO = field(default_factory=_stdin)
    stdout: TextIO = field(default_factory=_stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def stdin_isatty(self) -> bool:
        try:
            return self.stdin.isatty()
        except ValueError:
            return False

    def stdin_bytes(self) -> BinaryIO:
        """Stdin as bytes, for a command that reads nothing of it as text before: the
        process's own, or a test's text as the bytes it stands for."""
        buffer = getattr(self.stdin, "buffer", None)
        if isinstance(buffer, io.BufferedIOBase):
            return cast(BinaryIO, buffer)
        return io.BytesIO(self.stdin.read().encode("utf-8", "surrogateescape"))

    stderr_gone: bool = field(default=False, init=False)
    """Nobody reads stderr any more: what the command says there is not written."""

    def say(self, line: str) -> None:
        """One line for the person at the terminal (stderr, so stdout stays data). A
        stderr whose reader has gone (``2>&1 | true``) is given up, and the command
        carries on to its own outcome and exit status: the broken pipe ended ``send`` at
        once, with 0, having sent nothing (found by review)."""
        if self.stderr_gone:
            return
        try:
            print(line, file=self.stderr, flush=True)
        except BrokenPipeError:
            self.stderr_gone = True
            to_devnull(self.stderr)


def to_devnull(stream: TextIO) -> None:
    """Point ``stream``'s file at /dev/null, once its reader has gone: what its buffer
    still holds would fail the interpreter's own flush at exit again (a traceback, and
    another exit status)."""
    try:
        descriptor = stream.fileno()
    except (OSError, ValueError):  # a test's buffer: no file
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)
