"""ROOT + NETWORK NAMESPACES: the real daemon and participants across a lossy link.

Runs ``bench/lossy_link.py`` with small counts: it creates two network
namespaces joined by a user-space netem link (loss 5 %, duplication 2 %,
reorder 25 %, delay 10 ms +- 5 ms; this kernel has no sch_netem) and deletes
them on the way out. Skipped unless we are root, ``ip`` and ``tc`` exist,
/dev/net/tun exists and a namespace can be made. About 10 s.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "lossy_link.py"
MESSAGES = ("2:200", "4:10", "16:5")
RUN_LIMIT_S = 45.0
STOP_LIMIT_S = 10.0
SIGMAS = 5.0
"""Band around the expected ratio: a correct relay leaves it about once in 1.7 million runs."""
LOSS, DUPLICATE, RECEIVERS = 0.05, 0.02, 2

pytestmark = pytest.mark.timeout(RUN_LIMIT_S + STOP_LIMIT_S + 5)


def tool(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def why_not_runnable() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "needs root: it creates network namespaces and TUN devices"
    ip = tool("ip")
    if ip is None or tool("tc") is None:
        return "needs iproute2 ('ip' and 'tc')"
    if not Path("/dev/net/tun").exists():
        return "needs /dev/net/tun"
    probe = f"mcrelay-probe-{os.getpid()}"
    made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run([ip, "netns", "delete", probe], check=True)
    return None


@pytest.fixture(scope="module")
def lossy_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if (reason := why_not_runnable()) is not None:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("lossy") / "lossy.json"
    command = [sys.executable, str(SCRIPT), "--messages", *MESSAGES, "--out", str(out)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=RUN_LIMIT_S)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)  # it stops what it started and deletes its namespaces
        stdout, stderr = process.communicate(timeout=STOP_LIMIT_S)
        pytest.fail(f"no result after {RUN_LIMIT_S:g} s\n{stderr}")
    assert process.returncode == 0, stderr
    assert "| fragments |" in stdout
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def rows(report: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {row["fragments"]: row for row in report["results"]}


def test_root_netns_no_message_is_delivered_twice_or_corrupted(lossy_run: dict[str, Any]) -> None:
    for row in lossy_run["results"]:
        assert row["duplicates_delivered"] == 0, row
        assert row["corrupted"] == 0, row
    # The link did duplicate relayed datagrams, and the receivers dropped exactly those copies.
    duplicated = sum(row["link_view"]["copies_duplicated"] for row in lossy_run["results"])
    suppressed = sum(d.get("duplicate_message", 0) for d in lossy_run["receivers_dropped"])
    assert suppressed == duplicated


def test_root_netns_two_fragment_messages_arrive_at_the_rate_the_link_allows(
    lossy_run: dict[str, Any],
) -> None:
    """A datagram crosses unless lost and not duplicated: p = 1 - L (1 - D). A copy of a
    2-fragment message needs 3 datagrams: p^3. Per message, copies Y = A (B1 + B2) with
    A ~ Bernoulli(p^2), B_i ~ Bernoulli(p): the ratio over K messages has
    sigma = sqrt(Var Y / (4K)); we allow SIGMAS of them."""
    two = rows(lossy_run)[2]
    p = 1 - LOSS * (1 - DUPLICATE)
    a, k = p**2, two["sent"]
    sigma = math.sqrt((a * (2 * p + 2 * p * p) - (2 * a * p) ** 2) / (RECEIVERS * RECEIVERS * k))
    assert two["expected_ratio"] == pytest.approx(p**3)
    assert two["sigma"] == pytest.approx(sigma)
    assert abs(two["delivery_ratio"] - p**3) <= SIGMAS * sigma, two


def test_root_netns_the_counters_explain_every_loss(lossy_run: dict[str, Any]) -> None:
    for row in lossy_run["results"]:
        missing = row["missing"]
        assert all(n >= 0 for n in missing.values()), row
        assert sum(missing.values()) == row["undelivered_pairs"], row
        assert missing["relayed_not_sent"] == 0, row
        assert row["accounting_adds_up"], row
        # The relay's counters agree with what the link saw cross, message by message.
        assert row["link_agrees"], row
    for name in ("lossy-relay", "lossy-clients"):
        assert lossy_run["link"]["kernel_queues"][name]["drops"] == 0
