"""The operator commands against a running daemon's API, in-process, over TCP and a Unix socket."""

import functools
import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from fake_api import FakeApi, Request

from mcrelay.api.openapi import SCHEMAS
from mcrelay.cli.status import ExitStatus
from mcrelay.client import MessageReceived, PeerPresent
from mcrelay.core.bans import MAX_BANS
from mcrelay.protocol.addresses import RELAY_ITSELF, format_address
from mcrelay.protocol.legacy.events import PeerJoined, PeerLeft
from mcrelay.protocol.secure.keys import decode_key
from mcrelay.service import Daemon
from mcrelay.settings.table import SETTINGS
from secure_harness import SecurePeer, UdpLink
from support import (
    Console,
    assert_one_error_line,
    join,
    next_event,
    peer_on,
    relay_config,
    running_daemon,
    wait_until,
)

Keys = list[rsa.RSAPrivateKey]
KEY_ID = "k:AXQK9dm6xvZ7rOAaFe7PGW8CkxbY1bTyHkZ8yXid9hQ"


@asynccontextmanager
async def daemon_with_api(
    key_file: Path, api: str, **overrides: Any
) -> AsyncIterator[tuple[Daemon, str]]:
    """A daemon whose API listens at ``api``, and the value to give ``--api``."""
    async with running_daemon(relay_config(key_file, api=api, **overrides)) as daemon:
        flag = api if api.startswith("unix:") else daemon.api_urls[0].removeprefix("http://")
        yield daemon, flag


@pytest.fixture(params=["tcp", "unix"])
def api_address(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "127.0.0.1:0" if request.param == "tcp" else f"unix:{tmp_path / 'api.sock'}"


async def test_clients_post_kick_ban_unban(
    relay_key_file: Path, keys: Keys, api_address: str
) -> None:
    async with daemon_with_api(relay_key_file, api_address) as (daemon, api):
        async with join(daemon.relay, keys[1]) as a, join(daemon.relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            assert await next_event(b) == PeerPresent(a.address)
            console = Console()
            assert await console.run("clients", "--api", api) == ExitStatus.OK
            table = console.out_lines()
            assert table[0].split()[:4] == ["ID", "PROFILE", "ADDRESS", "FINGERPRINT"]
            ids = {format_address(a.address), format_address(b.address)}
            assert {line.split()[0] for line in table[1:]} == ids

            here = Console()
            assert await here.run("clients", "--api", api, "--host", "127.0.0.1") == 0
            assert {line.split()[0] for line in here.out_lines()[1:]} == ids
            elsewhere = Console()
            assert await elsewhere.run("clients", "--api", api, "--host", "0:0::1") == 0
            assert elsewhere.out_lines() == ["no clients"]

            listed = Console()
            assert await listed.run("clients", "--api", api, "--json", "--sort=-id") == 0
            rows = json.loads(listed.stdout.getvalue())["clients"]
            ports = [int(row["id"].rsplit(":", 1)[1]) for row in rows]
            assert ports == sorted(ports, reverse=True)

            to_all = Console()
            assert await to_all.run("post", "--api", api, "to all") == ExitStatus.OK
            assert to_all.out_lines() == ["sent to 2 clients"]
            for peer in (a, b):
                assert await next_event(peer) == MessageReceived(RELAY_ITSELF, b"to all")
            to_b = format_address(b.address)
            only_b = Console(stdin_text="one\ntwo\n")
            assert await only_b.run("post", "--api", api, "--to", to_b, "--lines") == 0
            assert only_b.out_lines() == ["sent to 1 client", "sent to 1 client"]
            assert await next_event(b) == MessageReceived(RELAY_ITSELF, b"one")
            assert await next_event(b) == MessageReceived(RELAY_ITSELF, b"two")

            kick = Console()
            assert await kick.run("kick", "--api", api, to_b, "--ban", "60") == ExitStatus.OK
            assert kick.out_lines() == [f"kicked {to_b}, banned for 60 s"]
            assert await next_event(a) == PeerLeft(b.address)
            bans = Console()
            assert await bans.run("bans", "--api", api) == ExitStatus.OK
            assert bans.out_lines()[1].startswith(to_b)
            assert await Console().run("unban", "--api", api, to_b) == ExitStatus.OK
            again = Console()
            assert await again.run("unban", "--api", api, to_b) == ExitStatus.ERROR
            assert again.stderr.getvalue().startswith("mcrelay: error: no ban on")


async def test_ban_an_id_connected_or_not(relay_key_file: Path, keys: Keys) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        async with join(daemon.relay, keys[1]) as a, join(daemon.relay, keys[2]) as b:
            assert await next_event(a) == PeerJoined(b.address)
            absent = Console()
            assert await absent.run("ban", "--api", api, KEY_ID, "--ban-s", "600") == 0
            (line,) = absent.out_lines()
            assert line.startswith(f"banned key {KEY_ID} until 20")
            to_b = format_address(b.address)
            present = Console()
            assert await present.run("ban", "--api", api, to_b, "--ban-s", "60", "--json") == 0
            banned = json.loads(present.stdout.getvalue())
            assert (banned["id"], banned["scope"], banned["removed"]) == (to_b, "address", [to_b])
            assert await next_event(a) == PeerLeft(b.address)
            host = Console()
            assert await host.run("ban", "--api", api, "10.0.0.7:1", "--ban-s", "9", "--host") == 0
            assert host.out_lines()[0].startswith("banned host 10.0.0.7 until ")
            bans = Console()
            assert await bans.run("bans", "--api", api) == ExitStatus.OK
            assert {row.split()[0] for row in bans.out_lines()[1:]} == {KEY_ID, to_b, "10.0.0.7"}


async def test_a_ban_or_lift_not_on_disk_is_warned_on_stderr_and_still_succeeds(
    relay_key_file: Path, keys: Keys
) -> None:
    """A ban the daemon could not write said nothing: a restart lifted it unannounced
    (found by review). A relay of port 0 keeps no bans file; one of a fixed port does."""
    warning = (
        "warning: the daemon's bans file does not hold this {} yet: a restart may undo it "
        "(its log and ban_writes_failed say why)"
    )
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        async with join(daemon.relay, keys[1]) as a:
            for argv, change in (
                (["ban", "10.0.0.7", "--ban-s", "60"], "ban"),
                (["ban", "10.0.0.8", "--ban-s", "60", "--json"], "ban"),
                (["unban", "10.0.0.7"], "lift"),
                (["kick", format_address(a.address), "--ban", "60"], "ban"),
            ):
                console = Console()
                assert await console.run(*argv, "--api", api) == ExitStatus.OK
                assert console.out_lines()
                assert console.err_lines() == [warning.format(change)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with daemon_with_api(relay_key_file, "127.0.0.1:0", port=port) as (daemon, api):
        for argv in (["ban", "10.0.0.7", "--ban-s", "60"], ["unban", "10.0.0.7"]):
            console = Console()
            assert await console.run(*argv, "--api", api) == ExitStatus.OK
            assert console.err_lines() == []


async def test_ban_when_the_bans_are_full_is_the_apis_refusal(relay_key_file: Path) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        now = trio.current_time()
        for n in range(MAX_BANS):
            daemon.relay.bans.ban((f"10.{n // 65536}.{n // 256 % 256}.{n % 256}", 1), 60, now)
        full = Console()
        assert await full.run("ban", "--api", api, "10.9.9.9", "--ban-s", "60") == ExitStatus.ERROR
        assert_one_error_line(full, "lift some first")


async def test_status_and_events(relay_key_file: Path, keys: Keys) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        status = Console()
        assert await status.run("status", "--api", api, "--json") == ExitStatus.OK
        assert json.loads(status.stdout.getvalue())["fingerprint"] == daemon.relay.fingerprint
        human = Console()
        assert await human.run("status", "--api", api) == ExitStatus.OK
        shown = f"relay key {daemon.relay.fingerprint}, secure key {daemon.relay.secure_key}"
        assert shown in human.out_lines()
        assert human.out_lines()[1].endswith(", profiles legacy, secure")  # review

        watcher = Console()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watcher.run, "events", "--api", api, "--json")
            await wait_until(lambda: daemon.relay.events.subscribers == 1)
            async with join(daemon.relay, keys[1]) as a:
                await Console().run("post", "--api", api, "hello")
                assert await next_event(a) == MessageReceived(RELAY_ITSELF, b"hello")
            await wait_until(lambda: len(watcher.out_lines()) >= 3)
            nursery.cancel_scope.cancel()
        kinds = [json.loads(line)["event"] for line in watcher.out_lines()]
        assert kinds[:3] == ["client_joined", "message_relayed", "client_left"]


async def test_status_of_a_secure_only_relay_names_its_secure_key_only(tmp_path: Path) -> None:
    key_file = tmp_path / "relay-key.pem"
    async with daemon_with_api(key_file, "127.0.0.1:0", profiles="secure") as (daemon, api):
        status = Console()
        assert await status.run("status", "--api", api, "--json") == ExitStatus.OK
        assert json.loads(status.stdout.getvalue())["fingerprint"] is None
        human = Console()
        assert await human.run("status", "--api", api) == ExitStatus.OK
        assert human.out_lines()[2] == f"secure key {daemon.relay.secure_key}"
    assert not key_file.exists()


async def test_api_errors_map_to_exit_codes(relay_key_file: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    token_file.chmod(0o600)
    async with daemon_with_api(relay_key_file, "127.0.0.1:0", api_token="s3cret") as (_, api):
        refused = Console()
        assert await refused.run("clients", "--api", api) == ExitStatus.ERROR
        assert "401" in refused.stderr.getvalue()
        # What to do, said (found by review).
        assert (
            refused.stderr.getvalue()
            .rstrip("\n")
            .endswith("give --api-token-file or MCRELAY_API_TOKEN_FILE")
        )
        wrong_file = tmp_path / "wrong"
        wrong_file.write_text("guess\n")
        wrong_file.chmod(0o600)
        wrong = Console()
        assert await wrong.run("clients", "--api", api, "--api-token-file", str(wrong_file)) == 1
        assert "401" in wrong.stderr.getvalue()
        assert "give --api-token-file" not in wrong.stderr.getvalue()
        allowed = Console()
        assert await allowed.run("clients", "--api", api, "--api-token-file", str(token_file)) == 0
        assert allowed.out_lines() == ["no clients"]
        unknown = Console(environ={"MCRELAY_API_TOKEN_FILE": str(token_file)})
        assert await unknown.run("kick", "--api", api, "127.0.0.1:9") == ExitStatus.ERROR
        assert unknown.stderr.getvalue().count("\n") == 1
        post = Console(environ={"MCRELAY_API_TOKEN_FILE": str(token_file)})
        assert await post.run("post", "--api", api, "--to", "127.0.0.1:9", "x") == ExitStatus.ERROR
        assert "127.0.0.1:9" in post.stderr.getvalue()
    gone = Console()
    assert await gone.run("status", "--api", api) == ExitStatus.UNREACHABLE
    assert gone.stderr.getvalue().startswith("mcrelay: error: cannot reach the daemon's API")
    usage = Console()
    assert await usage.run("post", "--api", api, "text", "--lines") == ExitStatus.USAGE


async def test_post_without_a_message_is_a_usage_error() -> None:
    # Nothing listens on port 9: a request would exit 3, so 2 shows none was made.
    for stdin, argv in (("never read\n", []), ("", ["-"])):
        console = Console(stdin_text=stdin)
        assert await console.run("post", "--api", "127.0.0.1:9", *argv) == ExitStatus.USAGE
        assert_one_error_line(console)


async def test_post_from_stdin_drops_the_final_newline(relay_key_file: Path, keys: Keys) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        async with join(daemon.relay, keys[1]) as a:
            for stdin, sent in (("two\nlines\n", b"two\nlines"), ("\r\n", b"")):
                assert await Console(stdin_text=stdin).run("post", "--api", api, "-") == 0
                assert await next_event(a) == MessageReceived(RELAY_ITSELF, sent)


async def test_an_empty_message_is_sent(relay_key_file: Path, keys: Keys) -> None:
    """As the API sends ``{"text": ""}``: only an empty stdin, no message at all, is
    refused (above)."""
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        async with join(daemon.relay, keys[1]) as a:
            assert await Console().run("post", "--api", api, "") == ExitStatus.OK
            lines = Console(stdin_text="one\n\ntwo\n")
            assert await lines.run("post", "--api", api, "--lines") == ExitStatus.OK
            for sent in (b"", b"one", b"", b"two"):
                assert await next_event(a) == MessageReceived(RELAY_ITSELF, sent)


async def test_post_passes_bytes_that_are_not_utf8(relay_key_file: Path, keys: Keys) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        async with join(daemon.relay, keys[1]) as a:
            assert await Console().run("post", "--api", api, "\udcff") == ExitStatus.OK
            assert await next_event(a) == MessageReceived(RELAY_ITSELF, b"\xff")
            lines = Console(stdin_text="ok\ncaf\udce9\n\ud800\nnever\n")
            assert await lines.run("post", "--api", api, "--lines") == ExitStatus.USAGE
            assert await next_event(a) == MessageReceived(RELAY_ITSELF, b"ok")
            assert await next_event(a) == MessageReceived(RELAY_ITSELF, b"caf\xe9")
            assert lines.out_lines() == ["sent to 1 client", "sent to 1 client"]
            assert_one_error_line(lines, "not text")


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["kick", "notanid"], "'notanid' is not ip:port"),
        (["kick", "10.0.0.1:99999"], "port must be 0 to 65535"),
        (["unban", "host:1"], "not an IP address"),
        (["unban", "x"], "'x' is no ban's id: ip:port (an address), an IP (a host) or k:"),
        (["ban", "notanid", "--ban-s", "60"], "'notanid' is no ban's id"),
        (["ban", "10.0.0.1", "--ban-s", "1e3"], "plain decimal seconds"),
        (["ban", "10.0.0.1"], "--ban-s"),
        (["ban", KEY_ID, "--ban-s", "60", "--host"], "a key has none"),
        (["clients", "--host", "notanip"], "'notanip' is not an IP address"),
        (["post", "--to", "::1:5", "x"], "[addr]:port"),
        (["clients", "--api-token-file", "/nonexistent/token"], "/nonexistent/token"),
    ],
)
async def test_bad_ids_and_files_are_usage_errors_before_any_request(
    argv: list[str], fragment: str
) -> None:
    # Nothing listens on port 9: a request would exit 3, so 2 shows none was made.
    console = Console()
    assert await console.run(*argv, "--api", "127.0.0.1:9") == ExitStatus.USAGE
    assert_one_error_line(console, fragment)


async def test_kick_unban_and_post_print_the_apis_json(relay_key_file: Path, keys: Keys) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        async with join(daemon.relay, keys[1]) as a:
            to_a = format_address(a.address)
            post = Console(stdin_text="one\ntwo\n")
            assert await post.run("post", "--api", api, "--json", "--lines") == ExitStatus.OK
            assert [json.loads(line) for line in post.out_lines()] == [{"recipients": 1}] * 2
            kick = Console()
            assert await kick.run("kick", "--api", api, to_a, "--ban", "60", "--json") == 0
            kicked = json.loads(kick.stdout.getvalue())
            assert (kicked["id"], kicked["banned_for_s"]) == (to_a, 60)
            unban = Console()
            assert await unban.run("unban", "--api", api, to_a, "--json") == ExitStatus.OK
            assert json.loads(unban.stdout.getvalue()) == {
                "id": to_a,
                "scope": "address",
                "lifted": True,
                "persisted": False,
            }


@pytest.mark.parametrize("in_order", [True, False], ids=["in order", "cut"])
async def test_events_tells_a_daemon_that_stops_from_a_stream_cut_short(
    relay_key_file: Path, in_order: bool
) -> None:
    """A daemon killed ended 'events' with exit 0, as an orderly stop did (found by
    review): one that stops in order ends the stream whole, after relay_stopping."""
    watcher = Console()
    statuses: list[ExitStatus] = []

    async def watch(api: str) -> None:
        statuses.append(await watcher.run("events", "--api", api))

    async with trio.open_nursery() as nursery:
        async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
            nursery.start_soon(watch, api)
            await wait_until(lambda: daemon.relay.events.subscribers == 1)
            if in_order:  # as the daemon's stop does, before the API goes
                daemon.relay.events.close()
                await daemon.relay.events.wait_ended()
    if in_order:
        assert (statuses, watcher.stderr.getvalue()) == ([ExitStatus.OK], "")
        assert watcher.out_lines()[-1].endswith("the relay is stopping: no more events")
    else:
        assert statuses == [ExitStatus.UNREACHABLE]
        assert_one_error_line(watcher, "was cut short: the daemon died or was stopped at once")


async def test_kick_host_bans_every_port_of_the_host(relay_key_file: Path, keys: Keys) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        async with (
            peer_on("127.0.0.2", daemon.relay, keys[1]) as first,
            peer_on("127.0.0.2", daemon.relay, keys[2]) as second,
        ):
            await first.register()
            await second.register()
            ident = format_address(first.address)
            for bad in (["--host"], ["--ban", "1e3"], ["--ban", "1_000"], ["--ban", "-5"]):
                console = Console()
                assert await console.run("kick", "--api", api, ident, *bad) == ExitStatus.USAGE
                assert_one_error_line(console)
            assert len(daemon.relay.roster) == 2
            kick = Console()
            assert await kick.run("kick", "--api", api, ident, "--ban", "600", "--host") == 0
            both = f"{ident}, {format_address(second.address)}"
            assert kick.out_lines() == [f"kicked {both}, banned host 127.0.0.2 for 600 s"]
            assert len(daemon.relay.roster) == 0
            bans = Console()
            assert await bans.run("bans", "--api", api) == ExitStatus.OK
            assert bans.out_lines()[1].split()[:2] == ["127.0.0.2", "host"]
            assert await Console().run("unban", "--api", api, "127.0.0.2") == ExitStatus.OK
            assert daemon.relay.statistics().bans == 0


@pytest.mark.parametrize(("mode", "data"), [(0o644, b"s3cret\n"), (0o600, "sécret".encode())])
async def test_a_token_file_the_daemon_would_refuse_is_a_usage_error(
    tmp_path: Path, mode: int, data: bytes
) -> None:
    token = tmp_path / "token"
    token.write_bytes(data)
    token.chmod(mode)
    console = Console()
    status = await console.run("status", "--api", "127.0.0.1:9", "--api-token-file", str(token))
    assert status == ExitStatus.USAGE
    assert_one_error_line(console, str(token))


async def test_status_shows_the_settings_but_never_the_token(
    relay_key_file: Path, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-t0ken\n")
    token_file.chmod(0o600)
    overrides = {
        "api_token": "s3cret-t0ken",
        "api_token_file": token_file,
        "client_timeout_s": 42.5,
    }
    async with daemon_with_api(relay_key_file, "127.0.0.1:0", **overrides) as (daemon, api):
        flags = ["--api", api, "--api-token-file", str(token_file)]
        as_json = Console()
        assert await as_json.run("status", *flags, "--json") == ExitStatus.OK
        settings = json.loads(as_json.stdout.getvalue())["settings"]
        assert set(settings) == {s.name for s in SETTINGS}
        documented = SCHEMAS["Status"]["properties"]["settings"]["properties"]
        assert set(documented) == set(settings)
        assert settings["client_timeout"] == 42.5
        assert settings["port"] == daemon.relay.config.port
        assert settings["key_file"] == str(relay_key_file)
        assert settings["api_token_file"] == str(token_file)
        human = Console()
        assert await human.run("status", *flags) == ExitStatus.OK
        lines = human.out_lines()
        shown = lines[lines.index("settings:") + 1 :]
        assert len(shown) == len(SETTINGS)
        for line in (
            "client_timeout = 42.5",
            f"api_token_file = {token_file}",
            "group = 224.1.1.1",
        ):
            assert f"  {line}" in shown
        for console in (as_json, human):
            assert "s3cret-t0ken" not in console.stdout.getvalue()


async def test_clients_lists_both_profiles_and_kick_bans_a_secure_key(
    relay_key_file: Path, keys: Keys
) -> None:
    async with daemon_with_api(relay_key_file, "127.0.0.1:0") as (daemon, api):
        relay = daemon.relay
        assert relay.secure_key is not None
        link = UdpLink(relay.address, decode_key(relay.secure_key))
        with link.sock:
            s = SecurePeer(link, link.address)
            await s.connect()
            async with join(relay, keys[1]) as a:
                await wait_until(lambda: len(relay.roster) == 2)
                console = Console()
                assert await console.run("clients", "--api", api) == ExitStatus.OK
                rows = {line.split()[0]: line.split() for line in console.out_lines()[1:]}
                assert rows[s.id][1:3] == ["secure", format_address(s.address)]
                assert rows[format_address(a.address)][1] == "legacy"
                kick = Console()
                assert await kick.run("kick", "--api", api, s.id, "--ban", "60") == ExitStatus.OK
                assert kick.out_lines() == [f"kicked {s.id}, banned key for 60 s"]
                unban = Console()
                assert await unban.run("unban", "--api", api, s.id) == ExitStatus.OK


def row(port: int) -> dict[str, Any]:
    """A legacy client as /v1/clients lists it, at 10.0.0.1:``port`` (zero-padded id)."""
    return {
        "id": f"10.0.0.1:{port:05}",
        "profile": "legacy",
        "host": "10.0.0.1",
        "port": port,
        "fingerprint": "SHA256:x",
        "connected_at": "now",
        "idle_s": 0.0,
        "messages_in": 0,
        "messages_out": 0,
    }


class PagedApi(FakeApi):
    """``/v1/clients`` in pages, as the API gives them (``limit``, ``offset``); before
    the second page, ``joining`` (if any) joins ahead of the others."""

    def __init__(self, clients: list[dict[str, Any]], joining: dict[str, Any] | None = None):
        super().__init__({})
        self.clients, self.joining = clients, joining

    def _answer(self, request: Request) -> tuple[int, Any]:
        self.requests.append(request)
        offset, limit = int(request.query.get("offset", 0)), int(request.query.get("limit", 1000))
        if offset and self.joining is not None:
            self.clients = [self.joining, *self.clients]
            self.joining = None
        return 200, {"clients": self.clients[offset : offset + limit], "count": len(self.clients)}


async def listed_clients(api: PagedApi) -> dict[str, Any]:
    """What ``mcrelay clients --json`` prints, asking ``api``."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, api.serve, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        address = f"127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        console = Console()
        assert await console.run("clients", "--api", address, "--json") == ExitStatus.OK
        nursery.cancel_scope.cancel()
    listed: dict[str, Any] = json.loads(console.stdout.getvalue())
    return listed


async def test_clients_lists_every_client_however_many_pages() -> None:
    """It showed the API's first page, 1,000, and said nothing of the rest (found by a
    review of the docs: 1,079 registered, 1,000 listed)."""
    api = PagedApi([row(n) for n in range(12_345)])
    assert len((await listed_clients(api))["clients"]) == 12_345
    assert [r.query.get("offset", "0") for r in api.requests] == ["0", "10000"]


async def test_clients_paged_while_members_come_lists_each_once() -> None:
    """One joining between two pages shifted the next page: a row came twice and the
    count disagreed with the rows (found by review)."""
    listed = await listed_clients(PagedApi([row(n) for n in range(1, 10_002)], row(0)))
    ids = [client["id"] for client in listed["clients"]]
    assert len(ids) == len(set(ids)) == listed["count"]


@pytest.mark.parametrize(
    ("argv", "stdin", "fragment"),
    [
        (["post", "-"], "x" * 40_000, "stdin holds over 32768 bytes; nothing was sent"),
        (
            ["post", "--lines"],
            "x" * 40_000,
            "a line of over 32768 bytes: it and the lines after it were not sent",
        ),
        (["post", "x" * 40_000], "", "a message of 40000 bytes; at most 32768"),
    ],
)
async def test_stdin_is_read_at_most_a_message_at_a_time(
    argv: list[str], stdin: str, fragment: str
) -> None:
    """All of stdin was read (/dev/zero: gigabytes), and a long message was refused in
    the web framework's words (found by review). No request is made: no API here."""
    console = Console(stdin_text=stdin)
    assert await console.run(*argv, "--api", "127.0.0.1:9") == ExitStatus.USAGE
    assert_one_error_line(console, fragment)


@asynccontextmanager
async def event_stream_that(ends: str) -> AsyncIterator[str]:
    """A stand-in API whose event stream sends one event, then ends ``whole`` (its last
    chunk, no relay_stopping: a proxy's end) or ``reset`` (a TCP reset)."""
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    frame = b'event: client_left\ndata: {"event": "client_left", "client": "x"}\n\n'
    chunk = b"%x\r\n%s\r\n" % (len(frame), frame)

    async def serve(stream: trio.SocketStream) -> None:
        await stream.receive_some()
        await stream.send_all(head + chunk + (b"0\r\n\r\n" if ends == "whole" else b""))
        if ends == "reset":
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serving = functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1")
        (listener,) = await nursery.start(serving)
        yield f"127.0.0.1:{listener.socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("ends", ["whole", "reset"])
async def test_events_ended_without_the_daemons_word_is_a_stream_cut_short(ends: str) -> None:
    """A body that ended whole without relay_stopping (a proxy's) exited 0, and a reset
    said 'cannot reach the daemon's API' after events were shown (found by review)."""
    async with event_stream_that(ends) as api:
        watcher = Console()
        assert await watcher.run("events", "--api", api) == ExitStatus.UNREACHABLE
    assert len(watcher.out_lines()) == 1
    assert_one_error_line(watcher, "was cut short: the daemon died or was stopped at once")
