"""The ``mcrelay`` command's entry point, kept tiny on purpose.

Loading the command's modules (Trio, cryptography, httpx) takes about 0.2 s. Ctrl-C in
that time would print a traceback from whichever import it hit; here it ends the
process at once with 130, quietly. Once loaded, the command handles Ctrl-C itself.
"""

import os
import signal
from types import FrameType

from mcrelay.cli.status import ExitStatus


def main() -> int:
    signal.signal(signal.SIGINT, _interrupted_while_loading)
    from mcrelay.cli.main import main as run

    # Trio takes over SIGINT only from Python's default handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return run()


def _interrupted_while_loading(_signum: int, _frame: FrameType | None) -> None:
    os._exit(ExitStatus.INTERRUPTED)
