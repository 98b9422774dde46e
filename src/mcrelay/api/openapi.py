"""The OpenAPI 3.1 document of the control API (a test checks it against the routes)."""

from dataclasses import fields
from typing import Any

from mcrelay import __version__
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.table import SETTINGS


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _page(items: str, description: str) -> dict[str, Any]:
    listing = {"type": "array", "items": _ref(items.capitalize().removesuffix("s"))}
    schema = {"type": "object", "properties": {items: listing, "count": {"type": "integer"}}}
    return _json(schema, description)


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _json(_ref("Error"), "error") for status in statuses}


_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "a client's id, an opaque string (a legacy client's is ip:port, or "
    "[ipv6]:port; a secure client's is k: and its static key in unpadded base64url; "
    "another relay's member's is that relay's name, '/' and its id there)",
}
_COUNTERS = {
    name: {"type": "integer"}
    for name in ("messages_in", "messages_out", "bytes_in", "bytes_out", "port", "key_bits")
}


def _settings_schema() -> dict[str, Any]:
    """One property per setting, typed as in the settings file; null where it may be unset."""
    kinds = {str: "string", int: "integer", float: "number", bool: "boolean"}
    unset = {f.name for f in fields(RelayConfig) if f.default is None}
    properties = {
        s.name: {"type": [kinds[s.toml], "null"] if s.field in unset else kinds[s.toml]}
        for s in SETTINGS
    }
    return {
        "type": "object",
        "description": "the effective settings, named as in the settings file "
        "(api_token_file names the token's file; the token is never shown)",
        "properties": properties,
    }


_PERSISTED = {
    "type": "boolean",
    "description": "the bans file holds the change (written and synced) as the answer "
    "leaves: a restart finds it. false: the write failed or took over 2 s (see "
    "ban_writes_failed), or the relay keeps no file (port 0); the change applies, but a "
    "restart may not find it",
}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    "Client": {
        "type": "object",
        "properties": {
            "id": {
                "type": "string",
                "description": "opaque; a legacy client's is ip:port, a secure client's k:KEY",
            },
            "profile": {"type": "string", "enum": ["legacy", "secure"]},
            "host": {"type": "string"},
            "fingerprint": {"type": "string"},
            "connected_at": {"type": "string", "format": "date-time"},
            "last_seen": {"type": "string", "format": "date-time"},
            "idle_s": {"type": "number"},
            **_COUNTERS,
            "key": {"type": "string", "description": "secure: the static public key, base64"},
            "epoch": {"type": "integer", "description": "secure: the client's session epoch"},
            "relay_epoch": {"type": "integer", "description": "secure: the relay's epoch for it"},
            "rtt_ms": {
                "type": ["number", "null"],
                "description": "secure: smoothed round-trip time; null before a sample",
            },
            "retransmissions": {
                "type": "integer",
                "description": "secure: fragments the relay sent it again",
            },
            "relay": {
                "type": ["string", "null"],
                "description": "the relay of the federation it is a member of (this one's "
                "name for its own); null when the relay does not federate",
            },
        },
    },
    "Kicked": {
        "allOf": [
            _ref("Client"),
            {
                "type": "object",
                "properties": {
                    "removed": {"type": "array", "items": {"type": "string"}},
                    "banned_for_s": {"type": "number", "description": "with ban_s"},
                    "ban_scope": {
                        "type": "string",
                        "enum": ["address", "host", "key"],
                        "description": "with ban_s",
                    },
                    "persisted": {
                        **_PERSISTED,
                        "description": "with ban_s, for this relay's member (another "
                        "relay keeps its bans in its own file): " + _PERSISTED["description"],
                    },
                },
            },
        ]
    },
    "Federation": {
        "type": ["object", "null"],
        "description": "the bus and this relay's place in it; null when it does not federate",
        "properties": {
            "cluster": {"type": "string"},
            "relay": {"type": "string", "description": "this relay's name"},
            "epoch": {"type": "integer"},
            "bus": {
                "type": "string",
                "enum": ["connecting", "connected", "disconnected", "closed"],
            },
            "servers": {"type": "array", "items": {"type": "string"}},
            "reconnects": {"type": "integer"},
            "errors": {"type": "integer", "description": "failed connections and bus errors"},
            "envelopes_published": {"type": "integer"},
            "envelopes_received": {"type": "integer"},
            "envelopes_dropped": {"type": "object", "description": "by reason"},
            "gaps": {"type": "integer"},
        },
    },
    "Relay": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "local": {"type": "boolean"},
            "epoch": {"type": "integer"},
            "members": {"type": "integer"},
            "last_heartbeat_s": {
                "type": ["number", "null"],
                "description": "seconds since it was last heard; null for this relay",
            },
            "envelopes_in": {"type": "integer"},
            "envelopes_out": {"type": "integer"},
            "gaps": {"type": "integer"},
            "duplicates": {"type": "integer"},
        },
    },
    "Ban": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "scope": {"type": "string", "enum": ["address", "host", "key"]},
            "until": {"type": "string", "format": "date-time"},
            "remaining_s": {"type": "number"},
            "removed": {
                "type": "array",
                "items": {"type": "string"},
                "description": "POST's answer: the ids of the clients the ban removed",
            },
            "persisted": _PERSISTED,
        },
    },
    "Lifted": {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "scope": {"type": "string", "enum": ["address", "host", "key"]},
            "lifted": {"type": "boolean", "const": True},
            "persisted": _PERSISTED,
        },
    },
    "Status": {
        "type": "object",
        "properties": {
            "version": {"type": "string"},
            "started_at": {"type": "string", "format": "date-time"},
            "uptime_s": {"type": "number"},
            "group": {"type": "string"},
            "port": {"type": "integer"},
            "interface": {"type": "string"},
            "fingerprint": {
                "type": ["string", "null"],
                "description": "the RSA key's, as legacy clients pin it; null when legacy is "
                "not served",
            },
            "secure_key": {
                "type": ["string", "null"],
                "description": "the secure profile's public key (base64), as clients pin it",
            },
            "profiles": {
                "type": "array",
                "items": {"type": "string", "enum": ["legacy", "secure"]},
            },
            "clients": {"type": "integer"},
            "reassembly_in_flight": {"type": "integer"},
            "statistics": {
                "type": "object",
                "description": "every counter of the relay; under profiles, each served "
                "profile's figures",
            },
            "settings": _settings_schema(),
            "federation": _ref("Federation"),
            "time": {"type": "string", "format": "date-time"},
        },
    },
    "Message": {
        "type": "object",
        "additionalProperties": False,
        "oneOf": [{"required": ["text"]}, {"required": ["data_b64"]}],
        "properties": {
            "text": {"type": "string"},
            "data_b64": {"type": "string", "contentEncoding": "base64"},
            "to": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
    },
    "NewBan": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "ban_s"],
        "properties": {
            "id": {
                "type": "string",
                "description": "ip:port (an address), an IP address (a host) or k:KEY (a "
                "key); IPv4 (::ffff:a.b.c.d is a.b.c.d): the relay serves IPv4 only",
            },
            "ban_s": {
                "oneOf": [{"type": "number"}, {"type": "string"}],
                "description": "seconds above 0, at most a year: a number, or plain decimal text",
            },
            "scope": {
                "type": "string",
                "enum": ["address", "host", "key"],
                "description": "the id's own; host with an ip:port bans its IP",
            },
        },
    },
}

_QUERY = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
    {
        "name": "sort",
        "in": "query",
        "schema": {"type": "string"},
        "description": "id (the default), connected_at, last_seen, idle_s, messages_in or "
        "bytes_in; '-' prefix for descending; ties in id order",
    },
    {
        "name": "host",
        "in": "query",
        "schema": {"type": "string"},
        "description": "only the clients from this IP address (any spelling); else 400",
    },
    {
        "name": "relay",
        "in": "query",
        "schema": {"type": "string"},
        "description": "only the members of this relay of the federation",
    },
    {
        "name": "scope",
        "in": "query",
        "schema": {"type": "string", "enum": ["all", "local"]},
        "description": "local: only this relay's own members (default all)",
    },
]

PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "The process is alive",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "alive")},
        }
    },
    "/readyz": {
        "get": {
            "summary": "The relay is serving",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "ready"), **_errors(503)},
        }
    },
    "/v1/status": {
        "get": {
            "summary": "Version, settings and every counter",
            "responses": {"200": _json(_ref("Status"), "status"), **_errors(401)},
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics (mcrelay_*)",
            "responses": {
                "200": {
                    "description": "text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(401),
            },
        }
    },
    "/v1/openapi.json": {
        "get": {
            "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1"), **_errors(401)},
        }
    },
    "/v1/clients": {
        "get": {
            "summary": "Registered clients",
            "parameters": _QUERY,
            "responses": {
                "200": _page("clients", "a page of clients; count is before paging"),
                **_errors(400, 401),
            },
        }
    },
    "/v1/clients/{id}": {
        "get": {
            "summary": "One client",
            "parameters": [_ID],
            "responses": {"200": _json(_ref("Client"), "the client"), **_errors(401, 404)},
        },
        "delete": {
            "summary": "Kick a client; with ban_s, also keep it out that long: a legacy "
            "client by its address, a secure one by its key (ban_scope: address, host, key)",
            "parameters": [
                _ID,
                {
                    "name": "ban_s",
                    "in": "query",
                    "schema": {"type": "string", "pattern": "^[0-9]{1,9}(\\.[0-9]{1,6})?$"},
                    "description": "plain decimal seconds, above 0, at most 31536000",
                },
                {
                    "name": "ban_scope",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["address", "host", "key"]},
                    "description": "with ban_s: address (a legacy client's default), host "
                    "(every port), key (a secure client's default; a secure client's key is "
                    "banned whatever the scope; 400 for a legacy client)",
                },
            ],
            "responses": {
                "200": _json(_ref("Kicked"), "the removed client"),
                **_errors(400, 401, 404, 409, 503, 504),
            },
        },
    },
    "/v1/bans": {
        "get": {
            "summary": "Active bans",
            "responses": {
                "200": _page("bans", "active bans"),
                **_errors(401),
            },
        },
        "post": {
            "summary": "Ban an address, a host or a key, connected or not; its members here "
            "are removed (reason ban); kept across restarts",
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("NewBan")}},
            },
            "responses": {
                "201": _json(
                    _ref("Ban"),
                    "the ban, with 'removed' and 'persisted'; answered once the bans file "
                    "holds it (2 s at most)",
                ),
                **_errors(400, 401, 409, 415, 422),
            },
        },
    },
    "/v1/bans/{id}": {
        "delete": {
            "summary": "Lift a ban",
            "parameters": [
                {
                    **_ID,
                    "description": "ip:port for an address ban, the IP alone for a host ban, "
                    "k:KEY for a key ban",
                }
            ],
            "responses": {"200": _json(_ref("Lifted"), "lifted"), **_errors(400, 401, 404)},
        }
    },
    "/v1/messages": {
        "post": {
            "summary": "Send a message from the relay itself (sender 0.0.0.0:0); without "
            "'to' it reaches the whole federation unless scope=local",
            "parameters": [
                {
                    "name": "scope",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["federation", "local"]},
                    "description": "local: this relay's members only (default federation)",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("Message")}},
            },
            "responses": {
                "200": _json(
                    {"type": "object", "properties": {"recipients": {"type": "integer"}}},
                    "queued for each recipient",
                ),
                **_errors(400, 401, 404, 413, 415, 422, 503),
            },
        }
    },
    "/v1/relays": {
        "get": {
            "summary": "The relays of the federation, this one first",
            "responses": {
                "200": _json(
                    {
                        "type": "object",
                        "properties": {
                            "federation": _ref("Federation"),
                            "relays": {"type": "array", "items": _ref("Relay")},
                            "count": {"type": "integer"},
                        },
                    },
                    "the relays known here",
                ),
                **_errors(401),
            },
        }
    },
    "/v1/events": {
        "get": {
            "summary": "Server-Sent Events: client_joined, client_left, client_moved, "
            "message_relayed, dropped, overflow",
            "responses": {
                "200": {
                    "description": "event stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(401, 503),
            },
        }
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "mcrelay control API", "version": __version__},
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
