"""``GET /metrics``: the relay's figures in Prometheus text format (``mcrelay_*``)."""

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from mcrelay.api.context import ApiContext

COUNTERS = {
    "datagrams_in": "Datagrams received",
    "bytes_in": "Bytes received",
    "datagrams_out": "Datagrams sent",
    "bytes_out": "Bytes sent",
    "messages_relayed": "Messages fanned out to their recipients",
    "copies_sent": "Relayed-message datagrams queued, one per recipient",
    "ban_writes_failed": "Writes of the bans file that failed (the bans held still apply)",
    "api_connections_refused": "API connections refused at api_max_connections",
    "api_event_subscribers_refused": "Event streams refused at api_max_event_subscribers",
    "api_accept_errors": "API connections the kernel would not accept (out of descriptors)",
}
GAUGES = {
    "clients": "Registered clients",
    "reassembly_in_flight": "Messages in reassembly",
    "reassembly_bytes": "Bytes charged to reassembly buffers",
    "pending_relays": "Completed messages waiting for or in crypto",
    "leaves_pending": "Removed clients whose leave waits for their messages in flight",
    "send_queue": "Datagrams waiting in the send queue",
    "bans": "Active bans",
    "event_subscribers": "Open event streams",
    "api_connections": "Open API connections",
}


class RelayCollector(Collector):
    def __init__(self, context: ApiContext) -> None:
        self._context = context

    def collect(self) -> Iterator[Metric]:
        statistics = {**self._context.relay.statistics().as_dict(), **self._context.statistics()}
        for name, help_text in COUNTERS.items():
            counter = CounterMetricFamily(f"mcrelay_{name}", help_text)
            counter.add_metric([], _number(statistics[name]))
            yield counter
        for name, help_text in GAUGES.items():
            yield GaugeMetricFamily(f"mcrelay_{name}", help_text, value=_number(statistics[name]))
        yield from _per_profile(statistics["profiles"])
        dropped = CounterMetricFamily("mcrelay_dropped", "Drops by reason", labels=["reason"])
        counts = statistics["dropped"]
        assert isinstance(counts, dict)
        for reason, count in counts.items():
            dropped.add_metric([reason], count)
        yield dropped
        yield from _federation(self._context)


FEDERATION_COUNTERS = {
    "envelopes_published": "Envelopes handed to the bus",
    "envelopes_received": "Envelopes from other relays acted on",
    "gaps": "Envelopes of other relays' message and presence streams that never came",
    "reconnects": "Reconnections to the bus",
}


def _federation(context: ApiContext) -> Iterator[Metric]:
    """``mcrelay_federation_*``, when the relay federates."""
    federation = context.relay.federation
    if federation is None:
        return
    status = federation.status()
    for name, help_text in FEDERATION_COUNTERS.items():
        counter = CounterMetricFamily(f"mcrelay_federation_{name}", help_text)
        counter.add_metric([], _number(status[name]))
        yield counter
    dropped = CounterMetricFamily(
        "mcrelay_federation_envelopes_dropped", "Envelopes dropped, by reason", labels=["reason"]
    )
    counts = status["envelopes_dropped"]
    assert isinstance(counts, dict)
    for reason, count in counts.items():
        dropped.add_metric([reason], count)
    yield dropped
    connected = 1.0 if status["bus"] == "connected" else 0.0
    yield GaugeMetricFamily(
        "mcrelay_federation_bus_connected", "1 while the bus is connected", value=connected
    )
    relays = len(context.relay.remotes.relays)
    yield GaugeMetricFamily(
        "mcrelay_federation_relays", "Other relays of the federation heard", value=relays
    )
    yield GaugeMetricFamily(
        "mcrelay_federation_remote_clients",
        "Other relays' members held on leases",
        value=len(context.relay.remotes),
    )


PROFILE_COUNTERS = {
    "datagrams_in": "Datagrams handed to each wire profile",
    "copies_sent": "Copies sent to each wire profile's members",
    "crypto_worker_restarts": "RSA worker processes started again after one ended",
}
PROFILE_GAUGES = {
    "clients": "Registered clients of each wire profile",
    "crypto_workers": "RSA worker processes up",
    "registrations_waiting": "Legacy registrations waiting for the rate limits",
    "handshakes_pending": "Secure handshakes answered and not yet confirmed",
    "send_buffer_bytes": "Secure copies queued or not yet acknowledged, in bytes",
    "receive_buffer_bytes": "Secure messages in reassembly, in bytes",
}


def _per_profile(profiles: object) -> Iterator[Metric]:
    """``mcrelay_profile_*{profile="legacy"|"secure"}``: a profile's figures, for those
    it has."""
    assert isinstance(profiles, dict)
    for names, family in (
        (PROFILE_COUNTERS, CounterMetricFamily),
        (PROFILE_GAUGES, GaugeMetricFamily),
    ):
        for name, help_text in names.items():
            metric = family(f"mcrelay_profile_{name}", help_text, labels=["profile"])
            for profile, figures in profiles.items():
                if name in figures:
                    metric.add_metric([profile], _number(figures[name]))
            yield metric


def _number(value: object) -> float:
    assert isinstance(value, int | float)
    return float(value)


def render_metrics(context: ApiContext) -> tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(context))
    return generate_latest(registry), CONTENT_TYPE_LATEST
