"""The documents against the code: what an operator reads names what the relay counts."""

import re
from pathlib import Path

from mcrelay.daemon.messages import MAX_RELAYS_PER_CLIENT
from mcrelay.protocol.errors import DropReason

DOCS = Path(__file__).resolve().parent.parent / "docs"
DROP_ROW = re.compile(
    r"^\| `([a-z0-9_]+)` \| (?:legacy|secure|both|client|federation) \|", re.MULTILINE
)
"""A row of the drop reasons' table in operations.md: reason, profile, meaning."""


def test_the_drop_reasons_table_lists_every_drop_reason_once() -> None:
    rows = DROP_ROW.findall((DOCS / "operations.md").read_text(encoding="utf-8"))
    values = [reason.value for reason in DropReason]
    assert sorted(set(values) - set(rows)) == [], "reasons missing from docs/operations.md"
    assert sorted(set(rows) - set(values)) == [], (
        "docs/operations.md names reasons no longer counted"
    )
    assert len(rows) == len(set(rows)), "a reason has two rows"


def test_the_per_client_bound_on_completed_messages_is_the_codes() -> None:
    """docs/protocol.md said 32 while the code and operations.md said 128 (review)."""
    said = re.search(
        r"One client has at most (\d+) completed messages",
        (DOCS / "protocol.md").read_text(encoding="utf-8"),
    )
    assert said is not None
    assert int(said.group(1)) == MAX_RELAYS_PER_CLIENT
