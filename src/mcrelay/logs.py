"""Log output for people, for the systemd journal, or as JSON lines for collectors."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

LOG_FORMATS = ("auto", "human", "journal", "json")
THROTTLE_INTERVAL_S = 60.0

HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(
    level: str, log_format: str, stream: TextIO, environ: Mapping[str, str]
) -> None:
    """Send every log record to ``stream`` in ``log_format``, from ``level`` up.

    Replaces whatever handlers the root logger had. ``auto`` means ``journal`` when
    ``stream`` is the journal (see :func:`is_journal_stream`), else ``human``.
    """
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(LOG_FORMATS)}")
    if log_format == "auto":
        log_format = "journal" if is_journal_stream(stream, environ) else "human"
    formatter: logging.Formatter
    if log_format == "journal":
        formatter = JournalFormatter()
    elif log_format == "json":
        formatter = JsonFormatter()
    else:
        formatter = logging.Formatter(HUMAN_FORMAT)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def is_journal_stream(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether systemd connected ``stream`` to the journal.

    systemd sets ``JOURNAL_STREAM=<device>:<inode>`` of the journal's socket on the
    stderr it gives a service; the variable is inherited by children whose stderr goes
    elsewhere, so it counts only when ``stream``'s descriptor is that very socket. A
    stream without a descriptor cannot be checked, and the variable is taken at its word.
    """
    value = environ.get("JOURNAL_STREAM", "")
    device, colon, inode = value.partition(":")
    if not colon:
        return False
    try:
        expected = (int(device), int(inode))
    except ValueError:
        return False
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return True
    try:
        info = os.fstat(fd)
    except OSError:
        return False
    return (info.st_dev, info.st_ino) == expected


def syslog_priority(levelno: int) -> int:
    """The syslog priority of a logging level: DEBUG 7, INFO 6, WARNING 4, ERROR 3, CRITICAL 2."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class JournalFormatter(logging.Formatter):
    """``<6>logger: message``, with the priority on every line (tracebacks included) so
    that journald files each line at the record's priority; the journal adds the time."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (RFC 3339, UTC, milliseconds), level, logger,
    message, and exception (the traceback text) when the record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, str] = {
            "time": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class LineBudget:
    """A burst of lines, then a rate, for lines a flood can drive (every join and leave,
    which spoofed legacy registrations make at 100 a second): those over it are held
    back, and the next line written says how many."""

    def __init__(self, burst: int, per_s: float) -> None:
        self.burst = burst
        self.per_s = per_s
        self._tokens = float(burst)
        self._updated = float("-inf")
        self._held = 0

    def take(self, now: float, count: int = 1) -> int | None:
        """None when over the budget (this line, which tells of ``count`` things, is held
        back); else how many were held back since the last line written (this one is
        written)."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.per_s)
        self._updated = now
        if self._tokens < 1:
            self._held += count
            return None
        self._tokens -= 1
        held, self._held = self._held, 0
        return held

    def log(
        self,
        logger: logging.Logger,
        level: int,
        now: float,
        held_said: str,
        message: str,
        *args: object,
    ) -> None:
        """``message`` logged at ``level``, unless over the budget; said with how many were
        held back before it, if any, in the words of ``held_said`` (``{held}`` their count)."""
        held = self.take(now)
        if held is None:
            return
        if held:
            message += f" ({held_said.format(held=held)})"
        logger.log(level, message, *args)


def once_a_minute() -> LineBudget:
    """One line a minute at most, for what can happen at the rate of datagrams or
    connections (a refused key, a failed receive or accept)."""
    return LineBudget(1, 1 / THROTTLE_INTERVAL_S)
