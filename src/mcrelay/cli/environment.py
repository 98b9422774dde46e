"""Where a command reads and writes: the real process, or a test's buffers."""

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class Environment:
    stdin: TextIO = field(default_factory=lambda: sys.stdin)
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
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
