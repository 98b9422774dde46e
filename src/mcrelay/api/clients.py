"""Clients, kicks, bans and injected messages."""

import base64
import binascii
import ipaddress
import json
import math
import time
from collections.abc import Callable
from typing import Any

import trio
from quart import Blueprint, Response, jsonify, request

from mcrelay.api.context import api_context
from mcrelay.api.serialize import ban_json, client_json, error_json
from mcrelay.core.bans import (
    MAX_BAN_S,
    BanTarget,
    TooManyBans,
    ban_said,
    ban_scope,
    kick_ban_scope,
    length_text,
    parse_ban_seconds,
    parse_ban_target,
)
from mcrelay.core.control import Control, Overloaded
from mcrelay.core.members import Member
from mcrelay.protocol.addresses import format_address, parse_address
from mcrelay.settings.quoted import quoted

blueprint = Blueprint("clients", __name__)

DEFAULT_LIMIT = 1000
MAX_INT_DIGITS = 20
"""The longest integer a body may hold: larger ones fit no field (a ban is a year at most)."""
MAX_LIMIT = 10000

Reply = Response | tuple[Response, int]


def _by_id(member: Member) -> tuple[str, int, int, int, str]:
    """This relay's members first, then each other relay's; by address within (IPv4 before
    IPv6: a federation may hold both), then by id: no two members tie."""
    address = ipaddress.ip_address(member.address[0])
    return (
        member.identity.relay or "",
        address.version,
        int(address),
        member.address[1],
        member.id,
    )


SORT_KEYS: dict[str, Callable[[Member], Any]] = {
    "id": _by_id,
    "connected_at": lambda c: c.connected_at,
    "last_seen": lambda c: c.last_seen,
    "idle_s": lambda c: -c.last_seen,
    "messages_in": lambda c: c.messages_in,
    "bytes_in": lambda c: c.bytes_in,
}


class BadRequest(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.extra = status, code, extra


@blueprint.errorhandler(BadRequest)
async def _bad_request(exc: BadRequest) -> Reply:
    return jsonify(error_json(exc.code, str(exc), **exc.extra)), exc.status


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    text = request.args.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= 10) or not low <= int(text) <= high:
        raise BadRequest(400, "bad_query", f"{name} must be an integer from {low} to {high}")
    return int(text)


def _host_arg() -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``host=``, parsed: an address matches in any spelling (``0:0::1`` is ``::1``), as
    an ``ip:port`` id does, and a host that is no address is an error, not an empty list."""
    text = request.args.get("host")
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise BadRequest(400, "bad_query", f"host must be an IP address, not {text!r}") from None


def _member_id(text: str) -> str:
    """A member's id as given: opaque, but ``ip:port`` is read in its canonical form."""
    try:
        return format_address(parse_address(text))
    except ValueError:
        return text


def _now() -> tuple[float, float]:
    return trio.current_time(), time.time()


def _name(relay: Control) -> str | None:
    """This relay's name in its federation, if it federates."""
    federation = relay.federation
    return None if federation is None else str(federation.status()["relay"])


def _find(relay: Control, member_id: str) -> Member | None:
    """A member here, or of another relay of the federation (its id prefixed)."""
    return relay.roster.get(member_id) or relay.remotes.get(member_id)


@blueprint.get("/v1/clients")
async def list_clients() -> Reply:
    relay = api_context().relay
    scope = request.args.get("scope", "all")
    if scope not in ("all", "local"):
        raise BadRequest(400, "bad_query", "scope must be 'all' or 'local'")
    only = request.args.get("relay")
    sort = request.args.get("sort", "id")
    key = SORT_KEYS.get(sort.removeprefix("-"))
    if key is None:
        raise BadRequest(
            400, "bad_query", f"sort must be one of {', '.join(SORT_KEYS)}, '-' for descending"
        )
    limit = _int_arg("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 2**31)
    host = _host_arg()
    name = _name(relay)
    members = list(relay.roster) if scope == "local" else [*relay.roster, *relay.remotes]
    chosen = [
        c
        for c in members
        if (host is None or ipaddress.ip_address(c.address[0]) == host)
        and (only is None or (c.identity.relay or name) == only)
    ]
    # Ties of the other orders in id order: the roster's own order changes with every
    # datagram, and paging with offset skipped or repeated clients that tied.
    descending = sort.startswith("-")
    chosen.sort(key=_by_id, reverse=descending and key is _by_id)
    if key is not _by_id:
        chosen.sort(key=key, reverse=descending)  # stable: ties stay in id order
    now, wall = _now()
    page = [client_json(c, now, wall, name) for c in chosen[offset : offset + limit]]
    return jsonify({"clients": page, "count": len(chosen)})


@blueprint.get("/v1/clients/<path:client_id>")
async def get_client(client_id: str) -> Reply:
    relay = api_context().relay
    client = _find(relay, _member_id(client_id))
    if client is None:
        raise BadRequest(404, "not_found", f"no client {client_id}")
    return jsonify(client_json(client, *_now(), _name(relay)))


@blueprint.delete("/v1/clients/<path:client_id>")
async def kick_client(client_id: str) -> Reply:
    relay = api_context().relay
    member_id = _member_id(client_id)
    ban_s = _ban_seconds()
    scope = request.args.get("ban_scope")
    if scope not in (None, "address", "host", "key"):
        raise BadRequest(400, "bad_query", "ban_scope must be 'address', 'host' or 'key'")
    if scope is not None and ban_s is None:
        raise BadRequest(400, "bad_query", f"ban_scope={scope} needs ban_s")
    now, wall = _now()
    client = _find(relay, member_id)
    if client is None:
        raise BadRequest(404, "not_found", f"no client {client_id}")
    record = client_json(client, now, wall, _name(relay))
    banned_scope = kick_ban_scope(scope, client.identity.profile)
    banned = ban_said(ban_s, banned_scope)
    if client.identity.relay is not None:
        removed = await _kick_remote(relay, client, ban_s, scope, banned)
    else:
        try:
            removed = [member.id for member in relay.kick(member_id, ban_s, scope=scope)]
        except TooManyBans as exc:
            raise BadRequest(409, "too_many_bans", str(exc)) from None
        except ValueError as exc:
            raise BadRequest(400, "bad_query", f"ban_scope=key: {exc}") from None
    if ban_s is not None:
        record["banned_for_s"] = ban_s
        record["ban_scope"] = banned_scope
    record["removed"] = removed
    api_context().admin_log.action("API: kicked %s%s; %d removed", client.id, banned, len(removed))
    if ban_s is not None and client.identity.relay is None:  # another relay's is in its file
        record["persisted"] = await relay.bans_saved()
    return jsonify(record)


async def _kick_remote(
    relay: Control, client: Member, ban_s: float | None, scope: str | None, banned: str
) -> list[str]:
    """Ask the member's own relay to kick it, over the bus; 504 when it does not answer
    in time, which does not say it will not: a relay that had stalled did the kick, and
    its ban, once it caught up (found by review). The asking is logged either way."""
    federation = relay.federation
    if federation is None:  # remote members are held only while the relay federates
        raise BadRequest(404, "not_found", f"no client {client.id}")
    try:
        result = await federation.kick(client, ban_s, scope)
    except ConnectionError as exc:
        raise BadRequest(
            503, "bus_down", f"cannot reach relay {client.identity.relay}: {exc}"
        ) from None
    except TimeoutError:
        api_context().admin_log.action(
            "API: asked relay %s to kick %s%s: no answer in time",
            client.identity.relay,
            client.id,
            banned,
        )
        raise BadRequest(
            504,
            "relay_timeout",
            f"relay {client.identity.relay} did not answer the kick in time: it may still "
            "carry it out (and its ban) when it catches up; see its clients and bans",
        ) from None
    if result.status == "not_found":
        raise BadRequest(404, "not_found", f"relay {client.identity.relay}: {result.message}")
    if result.status == "refused":
        raise BadRequest(400, "bad_query", f"relay {client.identity.relay}: {result.message}")
    return list(result.removed)


def _ban_seconds() -> float | None:
    text = request.args.get("ban_s")
    if text is None:
        return None
    try:
        return parse_ban_seconds(text)
    except ValueError as exc:
        raise BadRequest(400, "bad_query", f"ban_s: {exc}") from None


@blueprint.get("/v1/bans")
async def list_bans() -> Reply:
    now = trio.current_time()
    bans = [ban_json(ban, now) for ban in api_context().relay.bans.active(now)]
    return jsonify({"bans": bans, "count": len(bans)})


@blueprint.post("/v1/bans")
async def add_ban() -> Reply:
    relay = api_context().relay
    target, ban_s = _ban_body(await _json_body())
    try:
        ban, removed = relay.ban(target, ban_s)
    except TooManyBans as exc:
        raise BadRequest(409, "too_many_bans", str(exc)) from None
    api_context().admin_log.action(
        "API: banned %s (%s) for %s s; %d removed",
        ban.id,
        ban.scope,
        length_text(ban_s),
        len(removed),
    )
    persisted = await relay.bans_saved()
    record = ban_json(ban, trio.current_time())
    record["removed"] = [member.id for member in removed]
    record["persisted"] = persisted
    return jsonify(record), 201


def _ban_body(body: object) -> tuple[BanTarget, float]:
    """``{"id": ..., "ban_s": ..., "scope": ...}``: what to ban, and for how long."""
    if not isinstance(body, dict):
        raise BadRequest(422, "invalid_body", "the body must be a JSON object")
    extra = set(body) - {"id", "ban_s", "scope"}
    if extra:
        raise BadRequest(422, "invalid_body", f"unknown fields: {', '.join(sorted(extra))}")
    ban_id, ban_s, scope = body.get("id"), body.get("ban_s"), body.get("scope")
    if not isinstance(ban_id, str):
        raise BadRequest(
            422, "invalid_body", "'id' must be ip:port, an IP address (a host) or k:KEY"
        )
    try:
        target = parse_ban_target(ban_id)
    except ValueError as exc:
        raise BadRequest(422, "invalid_body", f"'id': {exc}") from None
    return _scoped(target, scope), _ban_length(ban_s)


def _ban_length(ban_s: object) -> float:
    """A JSON number of seconds, or the text a kick's ``ban_s`` takes."""
    if isinstance(ban_s, str):
        try:
            return parse_ban_seconds(ban_s)
        except ValueError as exc:
            raise BadRequest(422, "invalid_body", f"'ban_s': {exc}") from None
    if isinstance(ban_s, bool) or not isinstance(ban_s, int | float) or not 0 < ban_s <= MAX_BAN_S:
        raise BadRequest(
            422, "invalid_body", f"'ban_s' must be seconds above 0 and at most {MAX_BAN_S:.0f}"
        )
    return float(ban_s)


def _scoped(target: BanTarget, scope: object) -> BanTarget:
    """The target a ``scope`` makes of an id: ``host`` takes an ``ip:port``'s IP (as a
    kick's ``ban_scope=host``); otherwise the scope, if given, must be the id's own."""
    own = ban_scope(target)
    if scope is None or scope == own:
        return target
    if scope == "host" and isinstance(target, tuple):
        return target[0]
    if scope not in ("address", "host", "key"):
        raise BadRequest(422, "invalid_body", "'scope' must be 'address', 'host' or 'key'")
    raise BadRequest(422, "invalid_body", f"'scope' {scope} does not fit the id: {own} is its own")


@blueprint.delete("/v1/bans/<path:ban_id>")
async def lift_ban(ban_id: str) -> Reply:
    relay = api_context().relay
    try:
        target = parse_ban_target(ban_id)
    except ValueError as exc:
        raise BadRequest(400, "bad_query", f"not a ban's id: {exc}") from None
    ban = relay.bans.lift(target, trio.current_time())
    if ban is None:
        raise BadRequest(404, "not_found", f"no ban on {ban_id}")
    api_context().admin_log.action("API: lifted the ban on %s (%s)", ban.id, ban.scope)
    persisted = await relay.bans_saved()
    return jsonify({"id": ban.id, "scope": ban.scope, "lifted": True, "persisted": persisted})


async def _json_body() -> object:
    """The request's JSON body: 415 unless sent as JSON, 400 when it is not JSON."""
    if request.mimetype != "application/json":
        raise BadRequest(415, "unsupported_media_type", "send the body as application/json")
    try:
        return json.loads(
            await request.get_data(as_text=False),
            parse_int=_json_int,
            object_pairs_hook=_json_object,
        )
    except (TooManyDigits, DuplicateKey) as exc:
        raise BadRequest(422, "invalid_body", str(exc)) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, "bad_json", f"the body is not JSON: {exc}") from None
    except RecursionError:
        raise BadRequest(400, "bad_json", "the body is nested too deeply") from None


class TooManyDigits(ValueError):
    """An integer of more digits than any the API takes."""


class DuplicateKey(ValueError):
    """An object of the body names a field twice."""


def _json_object(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """An object of the body; one naming a field twice is refused: the last one won, so
    ``{"id": "10.0.0.9", "id": "10.0.0.10"}`` banned .10, not what a reader of the
    request would take it to ban (found by review)."""
    found: dict[str, object] = {}
    for key, value in pairs:
        if key in found:
            raise DuplicateKey(f"the field {quoted(key)} is given twice")
        found[key] = value
    return found


def _json_int(text: str) -> int:
    """An integer of the body; past :data:`MAX_INT_DIGITS`, none the API takes (5,000
    digits were 400 with Python's "use sys.set_int_max_str_digits()": found by review)."""
    digits = len(text.lstrip("-"))
    if digits > MAX_INT_DIGITS:
        raise TooManyDigits(f"a number of {digits} digits is too large for any field")
    return int(text)


@blueprint.post("/v1/messages")
async def post_message() -> Reply:
    relay = api_context().relay
    plaintext, recipients = _message_body(await _json_body())
    scope = request.args.get("scope", "federation")
    if scope not in ("federation", "local"):
        raise BadRequest(400, "bad_query", "scope must be 'federation' or 'local'")
    if len(plaintext) > relay.config.max_message_bytes:
        raise BadRequest(
            413, "too_large", f"{len(plaintext)} bytes; at most {relay.config.max_message_bytes}"
        )
    if recipients is None:
        targets = list(relay.roster)
    else:
        remote = [i for i in recipients if relay.remotes.get(i) is not None]
        if remote:
            raise BadRequest(
                422,
                "remote_client",
                "a message to chosen clients reaches this relay's own; post it on their "
                "relay, or to everyone (without 'to')",
                ids=remote,
            )
        unknown = [i for i in recipients if relay.roster.get(i) is None]
        if unknown:
            raise BadRequest(404, "not_found", "no such clients", ids=unknown)
        targets = [member for i in recipients if (member := relay.roster.get(i)) is not None]
    federate = recipients is None and scope == "federation" and relay.federation is not None
    try:
        copies = await relay.post(plaintext, targets, federate=federate)
    except Overloaded as exc:
        response = jsonify(error_json("overloaded", str(exc)))
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after_s))
        return response, 503
    if recipients is not None:
        reached = f"{len(recipients)} chosen clients"
    else:
        reached = "everyone, on every relay" if federate else "everyone here"
    api_context().admin_log.post(
        "API: posted %d bytes to %s; %d copies sent here", len(plaintext), reached, copies
    )
    return jsonify({"recipients": copies})


def _message_body(body: object) -> tuple[bytes, list[str] | None]:
    if not isinstance(body, dict):
        raise BadRequest(422, "invalid_body", "the body must be a JSON object")
    extra = set(body) - {"text", "data_b64", "to"}
    if extra:
        raise BadRequest(422, "invalid_body", f"unknown fields: {', '.join(sorted(extra))}")
    if ("text" in body) == ("data_b64" in body):
        raise BadRequest(422, "invalid_body", "give exactly one of 'text' and 'data_b64'")
    if "text" in body:
        if not isinstance(body["text"], str):
            raise BadRequest(422, "invalid_body", "'text' must be a string")
        try:
            plaintext = body["text"].encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(422, "invalid_body", "'text' is not valid Unicode") from None
    else:
        if not isinstance(body["data_b64"], str):
            raise BadRequest(422, "invalid_body", "'data_b64' must be a string")
        try:
            plaintext = base64.b64decode(body["data_b64"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(422, "invalid_body", "'data_b64' is not valid base64") from None
    if "to" not in body:
        return plaintext, None
    to = body["to"]
    if not isinstance(to, list) or not to or not all(isinstance(i, str) for i in to):
        raise BadRequest(422, "invalid_body", "'to' must be a non-empty list of client ids")
    return plaintext, list(dict.fromkeys(_member_id(i) for i in to))
