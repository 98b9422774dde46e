"""Operator commands that talk to a running daemon's API: clients, kick, bans, post, status,
events, and relays (the federation)."""

from __future__ import annotations

import argparse
import base64
from collections.abc import Iterator, Mapping
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from mcrelay.cli.console import LongLine, read_line
from mcrelay.cli.describe import describe_event
from mcrelay.cli.environment import Environment
from mcrelay.cli.options import (
    Parser,
    UsageError,
    add_flag,
    api_address,
    argument_type,
    client_id,
    ip_address,
    relay_name,
)
from mcrelay.cli.relays import RELAYS_HEADER, describe_federation, relays_rows
from mcrelay.cli.signals import cancel_on_signal
from mcrelay.cli.status import ApiAnswerError, ExitStatus
from mcrelay.cli.text import json_text, message_bytes, printable
from mcrelay.core.bans import ban_scope, parse_ban_seconds, parse_ban_target
from mcrelay.protocol.addresses import format_address
from mcrelay.protocol.legacy.wire import MAX_MESSAGE_BYTES
from mcrelay.settings.address import default_api
from mcrelay.settings.table import BY_NAME

if TYPE_CHECKING:
    from mcrelay.cli.api_client import Api

CLIENTS_PAGE = 10_000
"""Clients asked for at a time (the API's most); a listing of 1,000 showed no more."""
MAX_CLIENT_PAGES = 100


JSON_HELP = {
    "post": "print the API's answer, one JSON object per message",
    "events": "one JSON object per event, as the API sends them",
}
SORTS = ("id", "connected_at", "last_seen", "idle_s", "messages_in", "bytes_in")


def _ban_text(text: str) -> str:
    """The ban's length as given, once checked: the API reads the same text."""
    parse_ban_seconds(text)
    return text


ban_seconds = argument_type(_ban_text)


def _ban_id(text: str) -> str:
    """A ban's id as given, once checked: ``ip:port``, an IP address for a host ban, or a
    secure client's ``k:`` id."""
    parse_ban_target(text)
    return text


ban_id = argument_type(_ban_id)


def add_parsers(subparsers: argparse._SubParsersAction[Parser], environ: Mapping[str, str]) -> None:
    def command(name: str, help: str, run: Any) -> argparse.ArgumentParser:
        parser = subparsers.add_parser(name, help=help)
        add_flag(
            parser,
            environ,
            "--api",
            api_address,
            default_api(environ),
            "the daemon's API: unix:/path or host:port",
            default_text=BY_NAME["api"].default_text,
        )
        add_flag(
            parser, environ, "--api-token-file", Path, None, "file holding the API's bearer token"
        )
        help_json = JSON_HELP.get(name, "print the API's JSON")
        parser.add_argument("--json", action="store_true", help=help_json)
        parser.set_defaults(command=run)
        return parser

    clients = command("clients", "list registered clients", run_clients)
    clients.add_argument(
        "--sort",
        choices=[*SORTS, *(f"-{s}" for s in SORTS)],
        default="id",
        metavar="KEY",
        help=f"one of {', '.join(SORTS)}; descending with a '-', written --sort=-KEY",
    )
    clients.add_argument("--host", type=ip_address, help="only clients from this IP address")
    where = clients.add_mutually_exclusive_group()
    where.add_argument(
        "--relay", type=relay_name, metavar="NAME", help="only the clients of this federated relay"
    )
    where.add_argument(
        "--local", action="store_true", help="only this relay's clients, none of the federation's"
    )
    kick = command("kick", "remove a client (and tell the others)", run_kick)
    kick.add_argument(
        "id",
        type=client_id,
        help="ip:port, or k:KEY for a secure client; RELAY/ before it for another relay's client",
    )
    kick.add_argument(
        "--ban",
        type=ban_seconds,
        metavar="SECONDS",
        help="also keep it out that long (plain decimal seconds): a legacy client by its "
        "address, a secure client by its key",
    )
    kick.add_argument(
        "--host",
        action="store_true",
        help="with --ban: ban its whole host (every port) and kick every client from it",
    )
    command("bans", "list active bans", run_bans)
    ban = command(
        "ban",
        "ban an address, a host or a key, connected or not (kept across restarts; a warning "
        "says when the daemon could not write it)",
        run_ban,
    )
    ban.add_argument(
        "id",
        type=ban_id,
        help="ip:port for a client's address, ip for a whole host, k:KEY for a secure "
        "client's key; its clients here are removed",
    )
    ban.add_argument(
        "--ban-s",
        type=ban_seconds,
        required=True,
        metavar="SECONDS",
        help="how long (plain decimal seconds, at most a year)",
    )
    ban.add_argument(
        "--host", action="store_true", help="with ip:port: ban its whole host (every port)"
    )
    unban = command("unban", "lift a ban", run_unban)
    unban.add_argument(
        "id",
        type=ban_id,
        help="ip:port for a client's ban, ip for a host ban, k:KEY for a secure client's key",
    )
    post = command("post", "send a message from the relay to clients", run_post)
    post.add_argument(
        "text",
        nargs="?",
        help="the message; '-' reads it from stdin: all of it (32768 bytes at most), but a final newline",
    )
    post.add_argument(
        "--to", action="append", type=client_id, metavar="ID", help="only this client (repeatable)"
    )
    post.add_argument("--lines", action="store_true", help="one message per stdin line")
    post.add_argument(
        "--local",
        action="store_true",
        help="only this relay's clients: not the other relays of the federation",
    )
    command("status", "the daemon's version, settings and counters", run_status)
    command("events", "follow the daemon's events until interrupted", run_events)
    command("relays", "list the relays of the federation and the bus's state", run_relays)


def _api(args: argparse.Namespace) -> Any:
    from mcrelay.cli.api_client import open_api, read_token

    token = read_token(args.api_token_file) if args.api_token_file else None
    return open_api(args.api, token)


def _print(env: Environment, value: Any) -> None:
    print(json_text(value, indent=2), file=env.stdout, flush=True)


def _clients(count: int) -> str:
    return f"{count} client" if count == 1 else f"{count} clients"


def _setting(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return printable(str(value))


@contextmanager
def _reading() -> Iterator[None]:
    """Around the reading of an API answer: one not of the shape this mcrelay expects
    (another program at the address, another version) is an error, not a traceback."""
    try:
        yield
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ApiAnswerError(
            f"the API answered what this mcrelay cannot read ({type(exc).__name__}: {exc})"
        ) from None


def _warn_unsaved(env: Environment, answer: Any, change: str) -> None:
    """A ban or lift the daemon could not write to its bans file in time (its answer's
    ``persisted``): it applies, but a restart may undo it. Said on stderr, whatever the
    output's form; the exit status stays 0 (the change was made). An answer without the
    field (an older daemon) says nothing."""
    if isinstance(answer, dict) and answer.get("persisted") is False:
        env.say(
            f"warning: the daemon's bans file does not hold this {change} yet: a restart "
            "may undo it (its log and ban_writes_failed say why)"
        )


def _table(env: Environment, header: list[str], rows: list[list[str]]) -> None:
    rows = [[printable(str(cell)) for cell in row] for row in rows]  # what the API said
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
            file=env.stdout,
        )


async def run_clients(args: argparse.Namespace, env: Environment) -> ExitStatus:
    params = {"sort": args.sort, **({"host": args.host} if args.host else {})}
    if args.relay:
        params["relay"] = args.relay
    if args.local:
        params["scope"] = "local"
    async with _api(args) as api:
        result = await _all_clients(api, params)
    with _reading():
        _show_clients(env, result, args.json)
    return ExitStatus.OK


async def _all_clients(api: Api, params: dict[str, str]) -> Any:
    """Every page of ``/v1/clients``, as one answer: ``clients`` and ``count``."""
    result = await api.call("GET", "/v1/clients", params={**params, "limit": str(CLIENTS_PAGE)})
    with _reading():
        clients, count = list(result["clients"]), int(result["count"])
        for _ in range(MAX_CLIENT_PAGES):  # bounded, whatever a count says
            if len(clients) >= count:
                break
            page = await api.call(
                "GET",
                "/v1/clients",
                params={**params, "limit": str(CLIENTS_PAGE), "offset": str(len(clients))},
            )
            if not page["clients"]:
                break  # fewer now than when counted
            clients += page["clients"]
        # Who joined or left between two pages shifts the next: a row may come twice
        # (one may be missed, as in any listing by offset), so each id once.
        unique = list({str(client["id"]): client for client in clients}.values())
    return {"clients": unique, "count": len(unique)}


def _show_clients(env: Environment, result: Any, as_json: bool) -> None:
    if as_json:
        _print(env, result)
    elif not result["clients"]:
        print("no clients", file=env.stdout)
    else:
        rows = [
            [
                c["id"],
                c["profile"],
                format_address((c["host"], c["port"])),
                c["fingerprint"],
                c["connected_at"],
                f"{c['idle_s']:.1f}",
                str(c["messages_in"]),
                str(c["messages_out"]),
            ]
            for c in result["clients"]
        ]
        header = ["ID", "PROFILE", "ADDRESS", "FINGERPRINT", "CONNECTED", "IDLE_S", "IN", "OUT"]
        if any(c.get("relay") for c in result["clients"]):
            header.insert(1, "RELAY")
            for row, c in zip(rows, result["clients"], strict=True):
                row.insert(1, c.get("relay") or "-")
        _table(env, header, rows)


async def run_kick(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.host and args.ban is None:
        raise UsageError("--host bans a whole host: give --ban SECONDS too")
    params = {"ban_s": args.ban} if args.ban is not None else {}
    if args.host:
        params["ban_scope"] = "host"
    async with _api(args) as api:
        removed = await api.call("DELETE", f"/v1/clients/{args.id}", params=params)
    _warn_unsaved(env, removed, "ban")
    if args.json:
        _print(env, removed)
        return ExitStatus.OK
    with _reading():
        banned = ""
        if args.ban is not None:
            scope = removed["ban_scope"]
            what = {"host": f"host {removed['host']} ", "key": "key "}.get(scope, "")
            banned = f", banned {what}for {args.ban} s"
        print(printable(f"kicked {', '.join(removed['removed'])}{banned}"), file=env.stdout)
    return ExitStatus.OK


async def run_bans(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api:
        result = await api.call("GET", "/v1/bans")
    with _reading():
        if args.json:
            _print(env, result)
        elif not result["bans"]:
            print("no bans", file=env.stdout)
        else:
            rows = [
                [b["id"], b["scope"], b["until"], f"{b['remaining_s']:.0f}"] for b in result["bans"]
            ]
            _table(env, ["ID", "SCOPE", "UNTIL", "REMAINING_S"], rows)
    return ExitStatus.OK


async def run_ban(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.host and ban_scope(parse_ban_target(args.id)) == "key":
        raise UsageError("--host bans the host of an ip:port; a key has none")
    body = {"id": args.id, "ban_s": args.ban_s}
    if args.host:
        body["scope"] = "host"
    async with _api(args) as api:
        ban = await api.call("POST", "/v1/bans", json=body)
    _warn_unsaved(env, ban, "ban")
    if args.json:
        _print(env, ban)
        return ExitStatus.OK
    with _reading():
        removed = f", removed {', '.join(ban['removed'])}" if ban["removed"] else ""
        line = f"banned {ban['scope']} {ban['id']} until {ban['until']}{removed}"
    print(printable(line), file=env.stdout)
    return ExitStatus.OK


async def run_unban(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api:
        lifted = await api.call("DELETE", f"/v1/bans/{args.id}")
    _warn_unsaved(env, lifted, "lift")
    if args.json:
        _print(env, lifted)
        return ExitStatus.OK
    print(f"lifted the ban on {args.id}", file=env.stdout)
    return ExitStatus.OK


async def run_post(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.lines and args.text not in (None, "-"):
        raise UsageError("--lines reads stdin; give no TEXT (or '-')")
    if args.text is None and not args.lines:
        raise UsageError("give the message, '-' to read it from stdin, or --lines")
    async with _api(args) as api:
        if args.text not in (None, "-"):
            await _post(api, env, args.text, args)
        elif not args.lines:
            # At most what a message may be, and its final newline: all of stdin (of
            # /dev/zero, say) was read, gigabytes of it (found by review).
            text = await trio.to_thread.run_sync(
                env.stdin.read, MAX_MESSAGE_BYTES + 3, abandon_on_cancel=True
            )
            if not text:
                raise UsageError("stdin is empty; nothing was sent")
            if len(message := _without_final_newline(text)) > MAX_MESSAGE_BYTES:
                raise UsageError(f"stdin holds over {MAX_MESSAGE_BYTES} bytes; nothing was sent")
            await _post(api, env, message, args)
        else:
            # One message per line as it comes, so 'tail -f log | mcrelay post --lines' works;
            # each line read at most a message's size at a time (as for 'post -').
            while line := await trio.to_thread.run_sync(_line, env, abandon_on_cancel=True):
                await _post(api, env, line.rstrip("\r\n"), args)
    return ExitStatus.OK


def _line(env: Environment) -> str:
    try:
        return read_line(env.stdin, MAX_MESSAGE_BYTES)
    except LongLine:
        raise UsageError(
            f"a line of over {MAX_MESSAGE_BYTES} bytes: it and the lines after it were not sent"
        ) from None


def _without_final_newline(text: str) -> str:
    return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")


async def _post(api: Api, env: Environment, text: str, args: argparse.Namespace) -> None:
    try:
        data = message_bytes(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if len(data) > MAX_MESSAGE_BYTES:  # in our words, not the web framework's (a review)
        raise UsageError(f"a message of {len(data)} bytes; at most {MAX_MESSAGE_BYTES}")
    body: dict[str, Any] = {"to": args.to} if args.to else {}
    try:
        body["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        body["data_b64"] = base64.b64encode(data).decode("ascii")  # bytes that are not text
    params = {"scope": "local"} if args.local else {}
    result = await api.call("POST", "/v1/messages", json=body, params=params)
    with _reading():
        answer = json_text(result) if args.json else f"sent to {_clients(result['recipients'])}"
    print(printable(answer) if not args.json else answer, file=env.stdout, flush=True)


async def run_status(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api:
        status = await api.call("GET", "/v1/status")
    if args.json:
        _print(env, status)
        return ExitStatus.OK
    with _reading():
        lines = _status_lines(status)
    print("\n".join(printable(line) for line in lines), file=env.stdout)
    return ExitStatus.OK


def _keys_line(status: Any) -> str:
    """The keys clients pin: each profile's, when it is served."""
    keys = []
    if status.get("fingerprint"):
        keys.append(f"relay key {status['fingerprint']}")
    if status.get("secure_key"):
        keys.append(f"secure key {status['secure_key']}")
    return ", ".join(keys)


def _status_lines(status: Any) -> list[str]:
    statistics = status["statistics"]
    lines = [
        f"mcrelay {status['version']}, up {status['uptime_s']:.0f} s",
        f"group {status['group']} port {status['port']} interface {status['interface']}"
        # the profiles served (the settings' "profiles" is "(not set)" by default)
        + (f", profiles {', '.join(status['profiles'])}" if status.get("profiles") else ""),
        _keys_line(status),
        *(
            [f"federation: {describe_federation(status['federation'])}"]
            if status.get("federation")
            else []
        ),
        f"{_clients(status['clients'])}, {statistics['messages_relayed']} messages relayed, "
        f"{status['reassembly_in_flight']} in reassembly",
        f"in {statistics['datagrams_in']} datagrams / {statistics['bytes_in']} bytes, "
        f"out {statistics['datagrams_out']} datagrams / {statistics['bytes_out']} bytes",
    ]
    dropped = {k: v for k, v in statistics["dropped"].items() if v}
    lines.append("dropped: " + (", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"))
    settings = status.get("settings", {})  # an older daemon sends none
    lines.extend(["settings:"] if settings else [])
    lines.extend(f"  {name} = {_setting(value)}" for name, value in settings.items())
    return lines


async def run_relays(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api:
        result = await api.call("GET", "/v1/relays")
    with _reading():
        if args.json:
            _print(env, result)
        elif result["federation"] is None:
            print("federation is off", file=env.stdout)
        else:
            print(printable(describe_federation(result["federation"])), file=env.stdout)
            _table(env, RELAYS_HEADER, relays_rows(result["relays"]))
    return ExitStatus.OK


async def run_events(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api, trio.open_nursery() as nursery:
        await nursery.start(cancel_on_signal, nursery.cancel_scope)
        await _follow(api, env, args.json)
        nursery.cancel_scope.cancel()
    return ExitStatus.OK


async def _follow(api: Api, env: Environment, as_json: bool) -> None:
    async with aclosing(api.events()) as events:
        async for event in events:
            with _reading():
                line = json_text(event) if as_json else describe_event(event)
            print(line, file=env.stdout, flush=True)
