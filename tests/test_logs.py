"""configure_logging: human, journal and JSON lines, and how "auto" recognizes the journal."""

import io
import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import pytest

from mcrelay.logs import LOG_FORMATS, configure_logging, is_journal_stream, syslog_priority

NAME = "mcrelay.daemon.relay"
HUMAN_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<name>[\w.]+): (?P<message>.*)"
)


@contextmanager
def configured(
    log_format: str,
    stream: TextIO,
    environ: dict[str, str] | None = None,
    level: str = "debug",
) -> Iterator[logging.Logger]:
    """configure_logging, and the root logger as it was afterwards (pytest's handlers too)."""
    root = logging.getLogger()
    handlers, previous_level = root.handlers[:], root.level
    try:
        configure_logging(level, log_format, stream, environ or {})
        yield logging.getLogger(NAME)
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(previous_level)


def log_both(logger: logging.Logger) -> None:
    """One INFO record and one ERROR record with a traceback."""
    logger.info("client %s joined", "127.0.0.1:5000")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("handler failed for %s", "127.0.0.1:5000")


def output(log_format: str, environ: dict[str, str] | None = None) -> str:
    stream = io.StringIO()
    with configured(log_format, stream, environ) as logger:
        log_both(logger)
    return stream.getvalue()


def test_log_formats_are_exported() -> None:
    assert LOG_FORMATS == ("auto", "human", "journal", "json")


# --- human ----------------------------------------------------------------------------------


def test_human_format() -> None:
    lines = output("human").splitlines()
    first = HUMAN_LINE.fullmatch(lines[0])
    assert first is not None, lines[0]
    assert first.group("level", "name", "message") == ("INFO", NAME, "client 127.0.0.1:5000 joined")
    second = HUMAN_LINE.fullmatch(lines[1])
    assert second is not None, lines[1]
    assert second.group("level", "name", "message") == (
        "ERROR",
        NAME,
        "handler failed for 127.0.0.1:5000",
    )
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


# --- journal --------------------------------------------------------------------------------


def test_journal_format() -> None:
    lines = output("journal").splitlines()
    assert lines[0] == f"<6>{NAME}: client 127.0.0.1:5000 joined"
    assert lines[1] == f"<3>{NAME}: handler failed for 127.0.0.1:5000"
    assert lines[2] == "<3>Traceback (most recent call last):"
    assert lines[-1] == "<3>ValueError: boom"
    assert len(lines) > 4
    assert all(line.startswith("<3>") for line in lines[1:])  # no line without a priority


def test_journal_format_prefixes_every_line_of_a_message() -> None:
    """A newline in logged text (a peer's, say) cannot start a line of another priority."""
    stream = io.StringIO()
    with configured("journal", stream) as logger:
        logger.warning("first\n<0>forged emergency\nthird")
    assert stream.getvalue().splitlines() == [
        f"<4>{NAME}: first",
        "<4><0>forged emergency",
        "<4>third",
    ]


@pytest.mark.parametrize(
    ("level", "priority"),
    [
        (logging.DEBUG, 7),
        (logging.INFO, 6),
        (logging.WARNING, 4),
        (logging.ERROR, 3),
        (logging.CRITICAL, 2),
        (logging.INFO + 5, 6),
        (logging.CRITICAL + 10, 2),
        (1, 7),
    ],
)
def test_syslog_priority(level: int, priority: int) -> None:
    assert syslog_priority(level) == priority


def test_journal_format_for_each_level() -> None:
    stream = io.StringIO()
    with configured("journal", stream) as logger:
        logger.debug("d")
        logger.info("i")
        logger.warning("w")
        logger.error("e")
        logger.critical("c")
    assert stream.getvalue().splitlines() == [
        f"<7>{NAME}: d",
        f"<6>{NAME}: i",
        f"<4>{NAME}: w",
        f"<3>{NAME}: e",
        f"<2>{NAME}: c",
    ]


# --- json -----------------------------------------------------------------------------------


def test_json_format() -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    lines = output("json").splitlines()
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert len(lines) == 2  # the traceback stays inside its record's line
    records: list[dict[str, Any]] = [json.loads(line) for line in lines]
    info, error = records
    assert set(info) == {"time", "level", "logger", "message"}
    assert info["level"] == "info"
    assert info["logger"] == NAME
    assert info["message"] == "client 127.0.0.1:5000 joined"
    assert set(error) == {"time", "level", "logger", "message", "exception"}
    assert error["level"] == "error"
    assert error["message"] == "handler failed for 127.0.0.1:5000"
    assert error["exception"].startswith("Traceback (most recent call last):\n")
    assert error["exception"].endswith("ValueError: boom")
    for record in records:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", record["time"])
        moment = datetime.fromisoformat(record["time"].replace("Z", "+00:00"))
        assert before <= moment <= after


def test_json_format_keeps_text_exact_on_one_line() -> None:
    stream = io.StringIO()
    with configured("json", stream) as logger:
        logger.warning("peer text: %s", 'é\n"quoted"\x1b[2J')
    [line] = stream.getvalue().splitlines()
    assert json.loads(line)["message"] == 'peer text: é\n"quoted"\x1b[2J'
    assert json.loads(line)["level"] == "warning"


# --- levels and handlers --------------------------------------------------------------------


def test_level_filters_and_handlers_are_replaced() -> None:
    first, second = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, previous_level = root.handlers[:], root.level
    try:
        configure_logging("debug", "human", first, {})
        configure_logging("warning", "json", second, {})
        assert len(root.handlers) == 1
        assert root.level == logging.WARNING
        logger = logging.getLogger(NAME)
        logger.info("not shown")
        logger.warning("shown")
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(previous_level)
    assert first.getvalue() == ""
    assert [json.loads(line)["message"] for line in second.getvalue().splitlines()] == ["shown"]


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error", "INFO"])
def test_levels_by_name(level: str) -> None:
    with configured("human", io.StringIO(), level=level):
        assert logging.getLogger().level == logging.getLevelName(level.upper())


def test_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        configure_logging("info", "xml", io.StringIO(), {})


# --- auto -----------------------------------------------------------------------------------


def journal_stream_of(file: TextIO, inode_offset: int = 0) -> str:
    info = os.fstat(file.fileno())
    return f"{info.st_dev}:{info.st_ino + inode_offset}"


def auto_output(stream: TextIO, environ: dict[str, str]) -> str:
    with configured("auto", stream, environ) as logger:
        logger.info("hello")
    stream.seek(0)
    return stream.read()


def test_auto_is_journal_when_the_stream_is_journal_stream(tmp_path: Path) -> None:
    with (tmp_path / "journal").open("w+", encoding="utf-8") as file:
        environ = {"JOURNAL_STREAM": journal_stream_of(file)}
        assert is_journal_stream(file, environ)
        assert auto_output(file, environ) == f"<6>{NAME}: hello\n"


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"JOURNAL_STREAM": ""},
        {"JOURNAL_STREAM": "garbage"},
        {"JOURNAL_STREAM": "1:two"},
        {"NOT_JOURNAL_STREAM": "8:1234"},
    ],
)
def test_auto_is_human_without_a_journal_stream(tmp_path: Path, environ: dict[str, str]) -> None:
    with (tmp_path / "log").open("w+", encoding="utf-8") as file:
        assert not is_journal_stream(file, environ)
        line = auto_output(file, environ).rstrip("\n")
    match = HUMAN_LINE.fullmatch(line)
    assert match is not None, line
    assert match.group("message") == "hello"


def test_auto_is_human_when_journal_stream_names_another_file(tmp_path: Path) -> None:
    """A child of a service inherits JOURNAL_STREAM even when its stderr goes elsewhere."""
    with (
        (tmp_path / "journal").open("w+", encoding="utf-8") as journal,
        (tmp_path / "log").open("w+", encoding="utf-8") as file,
    ):
        for value in (journal_stream_of(journal), journal_stream_of(file, inode_offset=1)):
            environ = {"JOURNAL_STREAM": value}
            assert not is_journal_stream(file, environ)
            assert HUMAN_LINE.fullmatch(auto_output(file, environ).rstrip("\n"))
            file.seek(0)
            file.truncate()


def test_auto_trusts_journal_stream_for_a_stream_without_a_descriptor() -> None:
    environ = {"JOURNAL_STREAM": "8:1234"}
    stream = io.StringIO()
    assert is_journal_stream(stream, environ)
    assert auto_output(stream, environ) == f"<6>{NAME}: hello\n"
    assert HUMAN_LINE.fullmatch(auto_output(io.StringIO(), {}).rstrip("\n"))
