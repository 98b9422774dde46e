"""``GET /v1/status`` and ``GET /metrics``: the relay's settings and every counter."""

from pathlib import Path

import pytest
from api_support import ApiDaemon, api_daemon, parse_time
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mcrelay import __version__
from mcrelay.api.metrics import COUNTERS, GAUGES, PROFILE_COUNTERS, PROFILE_GAUGES
from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.protocol.errors import DropReason
from mcrelay.protocol.legacy import crypto
from mcrelay.protocol.legacy.events import PeerJoined
from support import GROUP, LOOPBACK, dropped, join, next_event, raw_peer, wait_until

Keys = list[rsa.RSAPrivateKey]
STATISTICS = frozenset(
    {
        "clients",
        "profiles",
        "reassembly_in_flight",
        "reassembly_bytes",
        "pending_relays",
        "leaves_pending",
        "send_queue",
        "bans",
        "ban_writes_failed",
        "event_subscribers",
        "datagrams_in",
        "bytes_in",
        "datagrams_out",
        "bytes_out",
        "messages_relayed",
        "copies_sent",
        "dropped",
        "api_connections",
        "api_connections_refused",
        "api_accept_errors",
        "api_event_subscribers_refused",
    }
)
REASONS = frozenset(reason.value for reason in DropReason)


async def metric_families(api: ApiDaemon) -> dict[str, Metric]:
    response = await api.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {family.name: family for family in text_string_to_metric_families(response.text)}


def value(families: dict[str, Metric], name: str, **labels: str) -> float:
    matches = [
        sample.value
        for family in families.values()
        for sample in family.samples
        if sample.name == name and sample.labels == labels
    ]
    assert len(matches) == 1, (name, labels, matches)
    return matches[0]


async def test_status_of_an_idle_relay(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api:
        response = await api.http.get("/v1/status")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        status = response.json()
        assert status["version"] == __version__
        assert isinstance(status["uptime_s"], int | float)
        assert status["uptime_s"] >= 0
        parse_time(status["started_at"])
        assert parse_time(status["started_at"]) <= parse_time(status["time"])
        assert status["group"] == GROUP
        assert status["port"] == api.relay.address[1] > 0
        assert status["interface"] == LOOPBACK
        assert status["fingerprint"] == api.relay.fingerprint
        assert status["fingerprint"] == crypto.fingerprint(keys[0].public_key())
        assert status["clients"] == 0
        assert status["reassembly_in_flight"] == 0
        statistics = status["statistics"]
        assert set(statistics) == STATISTICS
        assert set(statistics["dropped"]) == REASONS
        assert all(count == 0 for count in statistics["dropped"].values())
        for name in STATISTICS - {"dropped", "profiles"}:
            assert isinstance(statistics[name], int), name
        assert statistics["messages_relayed"] == 0
        assert statistics["profiles"] == {
            "legacy": {
                "clients": 0,
                "datagrams_in": 0,
                "copies_sent": 0,
                "crypto_workers": 1,
                "crypto_worker_restarts": 0,
                "registrations_waiting": 0,
            },
            "secure": {
                "clients": 0,
                "datagrams_in": 0,
                "copies_sent": 0,
                "handshakes_pending": 0,
                "send_buffer_bytes": 0,
                "receive_buffer_bytes": 0,
            },
        }


async def test_status_counts_traffic_clients_and_drops(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api:
        async with join(api.relay, keys[1]) as a, join(api.relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            assert await next_event(b) == PeerPresent(a.address)
            await a.send("counted")
            assert await next_event(b) == MessageReceived(a.address, b"counted")
            async with raw_peer(api.relay, keys[3]) as raw:
                await raw.send(b"\x00", b"\x00")
                await wait_until(lambda: dropped(api.relay, "malformed") == 2)
            await wait_until(lambda: api.relay.statistics().counters.copies_sent == 1)
            status = (await api.http.get("/v1/status")).json()
            assert status["clients"] == 2
            statistics = status["statistics"]
            assert statistics["clients"] == 2
            assert statistics["messages_relayed"] == 1
            assert statistics["copies_sent"] == 1
            assert statistics["dropped"]["malformed"] == 2
            assert statistics["datagrams_in"] >= 2 + 2 + 2
            assert statistics["bytes_in"] > 0
            assert statistics["datagrams_out"] > 0
            assert statistics["bytes_out"] > 0
            ident = f"{b.address[0]}:{b.address[1]}"
            await api.http.delete(f"/v1/clients/{ident}", params={"ban_s": "60"})
            status = (await api.http.get("/v1/status")).json()
            assert status["clients"] == 1
            assert status["statistics"]["bans"] == 1


async def test_metrics_are_prometheus_text(relay_key_file: Path, keys: Keys) -> None:
    async with api_daemon(relay_key_file) as api:
        async with join(api.relay, keys[1]) as a, join(api.relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            assert await next_event(b) == PeerPresent(a.address)
            await a.send("measured")
            assert await next_event(b) == MessageReceived(a.address, b"measured")
            async with raw_peer(api.relay, keys[3]) as raw:
                await raw.send(b"\x00", bytes.fromhex("00630000"))
                await wait_until(lambda: dropped(api.relay, "unknown_type") == 1)
            families = await metric_families(api)
            assert families
            for name, family in families.items():
                assert name.startswith("mcrelay_"), name
                assert family.documentation
                for sample in family.samples:
                    assert sample.name.startswith("mcrelay_"), sample.name
            assert set(families) == {
                *(f"mcrelay_{n}" for n in COUNTERS),
                *(f"mcrelay_{n}" for n in GAUGES),
                *(f"mcrelay_profile_{n}" for n in PROFILE_COUNTERS),
                *(f"mcrelay_profile_{n}" for n in PROFILE_GAUGES),
                "mcrelay_dropped",
            }
            for name in COUNTERS:
                assert families[f"mcrelay_{name}"].type == "counter"
            for name in GAUGES:
                assert families[f"mcrelay_{name}"].type == "gauge"

            assert value(families, "mcrelay_clients") == len(api.relay.roster) == 2
            assert value(families, "mcrelay_messages_relayed_total") == 1
            assert value(families, "mcrelay_copies_sent_total") == 1
            assert value(families, "mcrelay_event_subscribers") == 0
            assert value(families, "mcrelay_profile_clients", profile="legacy") == 2
            assert value(families, "mcrelay_profile_clients", profile="secure") == 0
            assert value(families, "mcrelay_profile_copies_sent_total", profile="legacy") == 1
            assert value(families, "mcrelay_profile_handshakes_pending", profile="secure") == 0
            assert value(families, "mcrelay_profile_crypto_workers", profile="legacy") == 1
            assert (
                value(families, "mcrelay_profile_crypto_worker_restarts_total", profile="legacy")
                == 0
            )
            drops = families["mcrelay_dropped"]
            assert drops.type == "counter"
            by_reason = {s.labels["reason"]: s.value for s in drops.samples}
            assert set(by_reason) == REASONS
            assert all(s.name == "mcrelay_dropped_total" for s in drops.samples)
            assert by_reason["malformed"] == 1
            assert by_reason["unknown_type"] == 1
            assert value(families, "mcrelay_dropped_total", reason="banned") == 0

            # The figures agree with /v1/status.
            statistics = (await api.http.get("/v1/status")).json()["statistics"]
            for name in ("messages_relayed", "copies_sent"):
                assert value(families, f"mcrelay_{name}_total") == statistics[name]
        await wait_until(lambda: len(api.relay.roster) == 0)
        families = await metric_families(api)
        assert value(families, "mcrelay_clients") == 0


async def test_metrics_count_open_event_streams(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        with api.relay.events.subscribe():
            families = await metric_families(api)
            assert value(families, "mcrelay_event_subscribers") == 1
        families = await metric_families(api)
        assert value(families, "mcrelay_event_subscribers") == 0


async def test_a_bug_is_a_500_and_its_traceback_is_logged(
    relay_key_file: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A 500 left nothing in the log: an operator saw it fail and could not say why."""
    async with api_daemon(relay_key_file) as api:

        def broken() -> None:
            raise RuntimeError("a bug")

        monkeypatch.setattr(api.relay, "statistics", broken)
        response = await api.http.get("/v1/status")
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "internal_error"
    [record] = [r for r in caplog.records if r.name == "mcrelay.api.app"]
    assert record.getMessage() == "GET /v1/status failed"
    assert record.exc_info is not None
    assert "a bug" in str(record.exc_info[1])
