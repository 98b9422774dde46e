"""The commands of a federation against a stand-in API (fake_api): ``mcrelay relays``, the
federation's filters of ``clients``, ids of other relays' clients for ``kick`` and ``post
--to``, ``post --local`` and the ``federation:`` line of ``status``."""

import argparse
import json
from typing import Any

import pytest
from fake_api import Answers, fake_api
from hypothesis import given
from hypothesis import strategies as st

from mcrelay.cli.options import client_id
from mcrelay.cli.status import ExitStatus
from mcrelay.protocol.secure.keys import client_id as key_client_id
from support import Console, assert_one_error_line

SECURE_ID = key_client_id(bytes(range(32)))
FEDERATION = {
    "cluster": "acme",
    "relay": "office-5007",
    "bus": "connected",
    "servers": ["nats://10.0.0.2:4222", "nats://10.0.0.3:4222"],
    "reconnects": 2,
}


def relay(name: str, local: bool, heartbeat: float | None, **counts: int | None) -> dict[str, Any]:
    fields = {"members": 0, "envelopes_in": 0, "envelopes_out": 0, "gaps": 0, "duplicates": 0}
    return {
        "name": name,
        "local": local,
        "epoch": 1_700_000_000_000_000_000,
        "last_heartbeat_s": heartbeat,
        **fields,
        **counts,
    }


def client(ident: str, relay: str | None, host: str = "10.0.0.5") -> dict[str, Any]:
    return {
        "id": ident,
        "relay": relay,
        "profile": "secure" if "k:" in ident else "legacy",
        "host": host,
        "port": 4000,
        "fingerprint": "SHA256:" + "A" * 43,
        "connected_at": "2025-01-01T00:00:00Z",
        "last_seen": "2025-01-01T00:00:01Z",
        "idle_s": 1.0,
        "messages_in": 3,
        "messages_out": 4,
        "bytes_in": 30,
        "bytes_out": 40,
    }


def status(federation: dict[str, Any] | None) -> dict[str, Any]:
    counters = ("messages_relayed", "datagrams_in", "bytes_in", "datagrams_out", "bytes_out")
    return {
        "version": "1.0",
        "uptime_s": 5.0,
        "group": "224.1.1.1",
        "port": 5007,
        "interface": "127.0.0.1",
        "fingerprint": "SHA256:" + "A" * 43,
        "clients": 0,
        "reassembly_in_flight": 0,
        "statistics": {**dict.fromkeys(counters, 0), "dropped": {}},
        "federation": federation,
    }


async def run(answers: Answers, *argv: str) -> tuple[Console, ExitStatus, list[Any]]:
    """The command against a stand-in API; its console, exit status and the requests made."""
    console = Console()
    async with fake_api(answers) as api:
        code = await console.run(*argv, "--api", api.address)
    return console, code, api.requests


# --- relays ---------------------------------------------------------------------------------


async def test_relays_says_when_federation_is_off() -> None:
    answer: dict[str, Any] = {"federation": None, "relays": [], "count": 0}
    console, code, requests = await run({("GET", "/v1/relays"): (200, answer)}, "relays")
    assert (code, console.out_lines()) == (ExitStatus.OK, ["federation is off"])
    assert [(r.method, r.path) for r in requests] == [("GET", "/v1/relays")]


async def test_relays_lists_the_federation_with_the_local_relay_marked() -> None:
    relays = [
        relay("office-5007", True, None, members=3, envelopes_out=120),
        # The API's own: another relay's envelopes out are not counted apart (null),
        # which was shown as "None" (found by a review of the docs).
        relay("lab-5007", False, 1.25, members=2, envelopes_in=80, envelopes_out=None, gaps=1),
    ]
    answer = {"federation": FEDERATION, "relays": relays, "count": 2}
    console, code, _ = await run({("GET", "/v1/relays"): (200, answer)}, "relays")
    assert code == ExitStatus.OK
    first, *table = console.out_lines()
    assert first == (
        "cluster acme, relay office-5007, bus connected "
        "(nats://10.0.0.2:4222, nats://10.0.0.3:4222), 2 reconnects"
    )
    assert [line.split() for line in table] == [
        ["NAME", "LOCAL", "MEMBERS", "HEARTBEAT_S", "IN", "OUT", "GAPS"],
        ["office-5007", "yes", "3", "-", "0", "120", "0"],
        ["lab-5007", "no", "2", "1.2", "80", "-", "1"],
    ]


async def test_relays_json_is_the_apis_answer() -> None:
    answer = {"federation": FEDERATION, "relays": [relay("office-5007", True, None)], "count": 1}
    console, code, _ = await run({("GET", "/v1/relays"): (200, answer)}, "relays", "--json")
    assert (code, json.loads(console.stdout.getvalue())) == (ExitStatus.OK, answer)


async def test_relays_cannot_write_control_characters_to_the_terminal() -> None:
    federation = {**FEDERATION, "relay": "x\x1b[2Jy", "bus": "closed", "servers": []}
    relays = [relay("a\nb", False, 0.0)]
    answer = {"federation": federation, "relays": relays, "count": 1}
    console, code, _ = await run({("GET", "/v1/relays"): (200, answer)}, "relays")
    assert code == ExitStatus.OK
    output = console.stdout.getvalue()
    assert "\x1b" not in output
    assert "x\\x1b[2Jy" in output
    assert console.out_lines()[2].startswith("a\\nb")


async def test_relays_of_a_daemon_without_federation_is_one_error_line() -> None:
    console, code, _ = await run({}, "relays")
    assert code == ExitStatus.ERROR
    assert_one_error_line(console, "404")


# --- clients --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "query"),
    [
        ([], {"sort": "id"}),
        (["--relay", "lab-5007"], {"sort": "id", "relay": "lab-5007"}),
        (["--local"], {"sort": "id", "scope": "local"}),
        (["--local", "--host", "10.0.0.5"], {"sort": "id", "scope": "local", "host": "10.0.0.5"}),
    ],
)
async def test_clients_filters_by_relay_and_scope(flags: list[str], query: dict[str, str]) -> None:
    answer = {"clients": [], "count": 0}
    console, code, requests = await run({("GET", "/v1/clients"): (200, answer)}, "clients", *flags)
    assert (code, console.out_lines()) == (ExitStatus.OK, ["no clients"])
    assert [r.query for r in requests] == [query | {"limit": "10000"}]  # page by page


async def test_clients_shows_a_relay_column_when_a_client_has_a_relay() -> None:
    remote = f"lab-5007/{SECURE_ID}"
    clients = [client("10.0.0.5:4000", None), client(remote, "lab-5007", "10.1.0.9")]
    answer = {"clients": clients, "count": 2}
    console, code, _ = await run({("GET", "/v1/clients"): (200, answer)}, "clients")
    assert code == ExitStatus.OK
    header, *rows = [line.split() for line in console.out_lines()]
    assert header[:4] == ["ID", "RELAY", "PROFILE", "ADDRESS"]
    assert [row[:4] for row in rows] == [
        ["10.0.0.5:4000", "-", "legacy", "10.0.0.5:4000"],
        [remote, "lab-5007", "secure", "10.1.0.9:4000"],
    ]


async def test_clients_without_relays_has_no_relay_column() -> None:
    answer = {"clients": [client("10.0.0.5:4000", None)], "count": 1}
    console, code, _ = await run({("GET", "/v1/clients"): (200, answer)}, "clients")
    assert code == ExitStatus.OK
    assert console.out_lines()[0].split()[:2] == ["ID", "PROFILE"]


# --- ids of other relays' clients -----------------------------------------------------------


@pytest.mark.parametrize(
    "ident",
    [
        "lab-5007/10.0.0.5:4000",
        "lab_2/[2001:db8::1]:4000",
        f"L/{SECURE_ID}",
        "x" * 64 + "/1.2.3.4:5",
    ],
)
async def test_kick_takes_the_id_of_another_relays_client(ident: str) -> None:
    answers = {("DELETE", f"/v1/clients/{ident}"): (200, {"id": ident, "removed": [ident]})}
    console, code, requests = await run(answers, "kick", ident)
    assert (code, console.out_lines()) == (ExitStatus.OK, [f"kicked {ident}"])
    assert [(r.method, r.path) for r in requests] == [("DELETE", f"/v1/clients/{ident}")]


async def test_post_to_another_relays_client_and_to_local_clients_only() -> None:
    ident = "lab-5007/10.0.0.5:4000"
    answers = {("POST", "/v1/messages"): (200, {"recipients": 1})}
    console, code, requests = await run(answers, "post", "--to", ident, "--local", "hello")
    assert (code, console.out_lines()) == (ExitStatus.OK, ["sent to 1 client"])
    [request] = requests
    assert (request.query, request.body) == ({"scope": "local"}, {"to": [ident], "text": "hello"})
    _, _, everywhere = await run(answers, "post", "hello")
    assert [(r.query, r.body) for r in everywhere] == [({}, {"text": "hello"})]


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["kick", "/10.0.0.5:4000"], "'' is not a relay name"),
        (["kick", "x" * 65 + "/10.0.0.5:4000"], "is not a relay name"),
        (["kick", "lab 1/10.0.0.5:4000"], "'lab 1' is not a relay name"),
        (["kick", "lab/notanid"], "'notanid' is not ip:port"),
        (["kick", "lab/k:short"], "is not a client id"),
        (["kick", "lab/x/10.0.0.5:4000"], "is not an IP address"),
        (["post", "--to", "läb/10.0.0.5:4000", "x"], "is not a relay name"),
        (["clients", "--relay", "a.b"], "'a.b' is not a relay name"),
        (["clients", "--relay", "lab", "--local"], "not allowed with argument"),
    ],
)
async def test_bad_relay_names_are_usage_errors_before_any_request(
    argv: list[str], fragment: str
) -> None:
    console, code, requests = await run({}, *argv)
    assert (code, requests) == (ExitStatus.USAGE, [])
    assert_one_error_line(console, fragment)


RELAY_NAMES = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
LOCAL_IDS = st.sampled_from(["10.0.0.5:4000", "[2001:db8::1]:4000", SECURE_ID])


@given(RELAY_NAMES, LOCAL_IDS)
def test_every_relay_name_and_client_id_make_an_id(name: str, local: str) -> None:
    assert client_id(f"{name}/{local}") == f"{name}/{local}"


@given(st.text(max_size=120))
def test_any_text_is_an_id_or_an_argument_error(text: str) -> None:
    try:
        ident = client_id(text)
    except argparse.ArgumentTypeError:
        return
    assert client_id(ident) == ident  # as the API writes it: given again, unchanged


# --- status ---------------------------------------------------------------------------------


async def test_status_shows_the_federation_only_when_there_is_one() -> None:
    on, code, _ = await run({("GET", "/v1/status"): (200, status(FEDERATION))}, "status")
    assert code == ExitStatus.OK
    [line] = [line for line in on.out_lines() if line.startswith("federation:")]
    assert line == (
        "federation: cluster acme, relay office-5007, bus connected "
        "(nats://10.0.0.2:4222, nats://10.0.0.3:4222), 2 reconnects"
    )
    off, code, _ = await run({("GET", "/v1/status"): (200, status(None))}, "status")
    assert code == ExitStatus.OK
    assert not any(line.startswith("federation") for line in off.out_lines())
