"""The ``mcrelay`` command's entry point, kept tiny on purpose.

Loading the command's modules (Trio, cryptography, httpx) takes about 0.2 s. Ctrl-C in
that time would print a traceback from whichever import it hit; here it ends the
process at once with 130, quietly. Once loaded, the command handles Ctrl-C itself.

A standard stream the command was started without (``<&-``, ``>&-``, ``2>&-``) is
/dev/null: each command failed with a traceback, the daemon could not start its
workers, and a file or socket the command opened would have taken that descriptor
and received what was meant for the terminal (found by review).
"""

import os
import signal
import sys
from types import FrameType

from mcrelay.cli.status import ExitStatus


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    _open_missing_streams()
    from mcrelay.cli.main import main as run

    # Trio takes over SIGINT only from Python's default handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run()


def _interrupted_while_loading(_signum: int, _frame: FrameType | None) -> None:
    os._exit(ExitStatus.INTERRUPTED)


def _open_missing_streams() -> None:
    """/dev/null in place of each standard descriptor that is not open."""
    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: fd
            if opened != fd:
                os.dup2(opened, fd)
                os.close(opened)
            os.set_inheritable(fd, True)  # as a standard stream is (the crypto workers')
        if getattr(sys, name) is None:  # Python found it closed at its start
            setattr(sys, name, open(fd, mode, closefd=False))  # noqa: SIM115 (the process's)
