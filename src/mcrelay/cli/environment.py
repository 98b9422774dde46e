"""Where a command reads and writes: the real process, or a test's buffers."""

import io
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO


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

    def say(self, line: str) -> None:
        """One line for the person at the terminal (stderr, so stdout stays data)."""
        print(line, file=self.stderr, flush=True)
