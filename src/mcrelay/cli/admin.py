"""Operator commands that talk to a running daemon's API: clients, kick, bans, post, status, events."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from mcrelay.api.address import default_api
from mcrelay.cli.chat import cancel_on_signal
from mcrelay.cli.environment import Environment
from mcrelay.cli.options import Parser, UsageError, add_flag, api_address, argument_type
from mcrelay.cli.status import ExitStatus
from mcrelay.daemon.bans import parse_ban_seconds

if TYPE_CHECKING:
    from mcrelay.cli.api_client import Api

SORTS = ("id", "connected_at", "last_seen", "idle_s", "messages_in", "bytes_in")


def _ban_text(text: str) -> str:
    """The ban's length as given, once checked: the API reads the same text."""
    parse_ban_seconds(text)
    return text


ban_seconds = argument_type(_ban_text)


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
        )
        add_flag(
            parser, environ, "--api-token-file", Path, None, "file holding the API's bearer token"
        )
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
    clients.add_argument("--host", help="only clients from this IP address")
    clients.add_argument("--json", action="store_true", help="print the API's JSON")
    kick = command("kick", "remove a client (and tell the others)", run_kick)
    kick.add_argument("id", help="ip:port")
    kick.add_argument(
        "--ban",
        type=ban_seconds,
        metavar="SECONDS",
        help="also ignore its address that long (plain decimal seconds)",
    )
    kick.add_argument(
        "--host",
        action="store_true",
        help="with --ban: ban its whole host (every port) and kick every client from it",
    )
    command("bans", "list active bans", run_bans).add_argument("--json", action="store_true")
    command("unban", "lift a ban", run_unban).add_argument(
        "id", help="ip:port for a client's ban, or ip for a host ban"
    )
    post = command("post", "send a message from the relay to clients", run_post)
    post.add_argument(
        "text", nargs="?", default="-", help="the message; '-' or nothing reads stdin"
    )
    post.add_argument("--to", action="append", metavar="ID", help="only this client (repeatable)")
    post.add_argument("--lines", action="store_true", help="one message per stdin line")
    command("status", "the daemon's version, settings and counters", run_status).add_argument(
        "--json", action="store_true"
    )
    command("events", "follow the daemon's events until interrupted", run_events).add_argument(
        "--json", action="store_true"
    )


def _api(args: argparse.Namespace) -> Any:
    from mcrelay.cli.api_client import open_api, read_token

    token = read_token(args.api_token_file) if args.api_token_file else None
    return open_api(args.api, token)


def _print(env: Environment, value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False), file=env.stdout, flush=True)


def _table(env: Environment, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in [header, *rows]:
        print(
            "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip(),
            file=env.stdout,
        )


async def run_clients(args: argparse.Namespace, env: Environment) -> ExitStatus:
    params = {"sort": args.sort, **({"host": args.host} if args.host else {})}
    async with _api(args) as api:
        result = await api.call("GET", "/v1/clients", params=params)
    if args.json:
        _print(env, result)
    elif not result["clients"]:
        print("no clients", file=env.stdout)
    else:
        rows = [
            [
                c["id"],
                c["fingerprint"],
                str(c["key_bits"]),
                c["connected_at"],
                f"{c['idle_s']:.1f}",
                str(c["messages_in"]),
                str(c["messages_out"]),
            ]
            for c in result["clients"]
        ]
        _table(env, ["ID", "FINGERPRINT", "BITS", "CONNECTED", "IDLE_S", "IN", "OUT"], rows)
    return ExitStatus.OK


async def run_kick(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.host and args.ban is None:
        raise UsageError("--host bans a whole host: give --ban SECONDS too")
    params = {"ban_s": args.ban} if args.ban is not None else {}
    if args.host:
        params["ban_scope"] = "host"
    async with _api(args) as api:
        removed = await api.call("DELETE", f"/v1/clients/{args.id}", params=params)
    banned = ""
    if args.ban is not None:
        host = f"host {args.id.rpartition(':')[0].strip('[]')} " if args.host else ""
        banned = f", banned {host}for {args.ban} s"
    print(f"kicked {', '.join(removed['removed'])}{banned}", file=env.stdout)
    return ExitStatus.OK


async def run_bans(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api:
        result = await api.call("GET", "/v1/bans")
    if args.json:
        _print(env, result)
    elif not result["bans"]:
        print("no bans", file=env.stdout)
    else:
        _table(
            env,
            ["ID", "SCOPE", "UNTIL", "REMAINING_S"],
            [[b["id"], b["scope"], b["until"], f"{b['remaining_s']:.0f}"] for b in result["bans"]],
        )
    return ExitStatus.OK


async def run_unban(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api:
        await api.call("DELETE", f"/v1/bans/{args.id}")
    print(f"lifted the ban on {args.id}", file=env.stdout)
    return ExitStatus.OK


async def run_post(args: argparse.Namespace, env: Environment) -> ExitStatus:
    if args.text != "-" and args.lines:
        raise UsageError("--lines reads stdin; give no TEXT (or '-')")
    async with _api(args) as api:
        if args.text != "-":
            await _post(api, env, args.text, args.to)
        elif not args.lines:
            await _post(api, env, await trio.to_thread.run_sync(env.stdin.read), args.to)
        else:
            # One message per line as it comes, so 'tail -f log | mcrelay post --lines' works.
            while line := await trio.to_thread.run_sync(env.stdin.readline, abandon_on_cancel=True):
                await _post(api, env, line.rstrip("\r\n"), args.to)
    return ExitStatus.OK


async def _post(api: Api, env: Environment, text: str, to: list[str] | None) -> None:
    body: dict[str, Any] = {"text": text, **({"to": to} if to else {})}
    result = await api.call("POST", "/v1/messages", json=body)
    print(f"sent to {result['recipients']} clients", file=env.stdout, flush=True)


async def run_status(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api:
        status = await api.call("GET", "/v1/status")
    if args.json:
        _print(env, status)
        return ExitStatus.OK
    statistics = status["statistics"]
    lines = [
        f"mcrelay {status['version']}, up {status['uptime_s']:.0f} s",
        f"group {status['group']} port {status['port']} interface {status['interface']}",
        f"relay key {status['fingerprint']}",
        f"{status['clients']} clients, {statistics['messages_relayed']} messages relayed, "
        f"{status['reassembly_in_flight']} in reassembly",
        f"in {statistics['datagrams_in']} datagrams / {statistics['bytes_in']} bytes, "
        f"out {statistics['datagrams_out']} datagrams / {statistics['bytes_out']} bytes",
    ]
    dropped = {k: v for k, v in statistics["dropped"].items() if v}
    lines.append("dropped: " + (", ".join(f"{k} {v}" for k, v in dropped.items()) or "none"))
    print("\n".join(lines), file=env.stdout)
    return ExitStatus.OK


def _describe(event: dict[str, Any]) -> str:
    details = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("id", "event", "time"))
    return f"{event['time']} {event['event']} {details}".rstrip()


async def run_events(args: argparse.Namespace, env: Environment) -> ExitStatus:
    async with _api(args) as api, trio.open_nursery() as nursery:
        nursery.start_soon(cancel_on_signal, nursery.cancel_scope)
        await _follow(api, env, args.json)
        nursery.cancel_scope.cancel()
    return ExitStatus.OK


async def _follow(api: Api, env: Environment, as_json: bool) -> None:
    async for event in api.events():
        print(json.dumps(event) if as_json else _describe(event), file=env.stdout, flush=True)
