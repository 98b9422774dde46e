"""The control API application: auth, errors, health, status, metrics and the document.

Every response is JSON (except ``/metrics`` and the event stream); every error is
``{"error": {"code": ..., "message": ...}}``, whatever raised it.
"""

import hmac
import logging
import time
from pathlib import Path
from typing import Any

import trio
from quart import Response, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound, RequestEntityTooLarge

from mcrelay import __version__
from mcrelay.api import clients, events
from mcrelay.api.context import EXTENSION, ApiContext, api_context
from mcrelay.api.metrics import render_metrics
from mcrelay.api.openapi import openapi_document
from mcrelay.api.serialize import error_json, rfc3339
from mcrelay.settings.config import RelayConfig
from mcrelay.settings.quoted import quoted
from mcrelay.settings.table import SETTINGS

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 128 * 1024
"""Room for a base64 message of the largest size and its JSON."""


def create_app(context: ApiContext) -> QuartTrio:
    app = QuartTrio("mcrelay.api", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["JSON_SORT_KEYS"] = False
    # OPTIONS is no method of the API (its document lists none): a JSON 405 with Allow,
    # which says what an OPTIONS asks, not Quart's empty text/html 200.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.extensions[EXTENSION] = context
    context.relay.events.encoder = events.encode_frame
    # An id like '/x' or '//' in a path gets a JSON 404, not an HTML redirect.
    app.url_map.merge_slashes = False
    app.register_blueprint(clients.blueprint)
    app.register_blueprint(events.blueprint)
    app.before_request(_check_token)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _server_error)
    app.add_url_rule("/healthz", view_func=_healthz, methods=["GET"])
    app.add_url_rule("/readyz", view_func=_readyz, methods=["GET"])
    app.add_url_rule("/v1/status", view_func=_status, methods=["GET"])
    app.add_url_rule("/v1/relays", view_func=_relays, methods=["GET"])
    app.add_url_rule("/metrics", view_func=_metrics, methods=["GET"])
    app.add_url_rule("/v1/openapi.json", view_func=_openapi, methods=["GET"])
    return app


def error(status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
    return jsonify(error_json(code, message, **extra)), status


async def _check_token() -> tuple[Response, int] | None:
    context = api_context()
    if context.token is None or request.path in context.open_paths:
        return None
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    token = given.strip().encode("utf-8", "replace")
    if scheme.lower() == "bearer" and hmac.compare_digest(token, context.token.encode()):
        return None
    response, status = error(
        401, "unauthorized", "a valid 'Authorization: Bearer <token>' is needed"
    )
    response.headers["WWW-Authenticate"] = 'Bearer realm="mcrelay"'
    return response, status


async def _http_error(exc: HTTPException) -> tuple[Response, int]:
    code = (exc.name or "error").lower().replace(" ", "_")
    response, status = error(exc.code or 500, code, _http_error_message(exc))
    for name, value in exc.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value  # Allow on a 405, for one
    if status == 413:
        # The rest of the body is not read: the connection cannot carry another
        # request, and a client that is told so does not send one into its close.
        response.headers["Connection"] = "close"
    return response, status


def _http_error_message(exc: HTTPException) -> str:
    """The API's own words for what routing refuses: Werkzeug's were for a browser ("If
    you entered the URL manually please check your spelling": found by review)."""
    path = quoted(request.path)
    if isinstance(exc, NotFound):
        return f"no such path: {path} (the API's paths are in /v1/openapi.json)"
    if isinstance(exc, MethodNotAllowed):
        allowed = ", ".join(sorted(exc.valid_methods or ()))
        return f"{request.method} is no method of {path}: it takes {allowed}"
    if isinstance(exc, RequestEntityTooLarge):
        return f"the body is over {MAX_BODY_BYTES} bytes"
    return exc.description or exc.name or "error"


async def _server_error(exc: Exception) -> tuple[Response, int]:
    log.error("%s %s failed", request.method, request.path, exc_info=exc)
    return error(500, "internal_error", f"{type(exc).__name__}: {exc}")


async def _healthz() -> Response:
    return jsonify({"status": "ok"})


async def _readyz() -> Response | tuple[Response, int]:
    context = api_context()
    if context.ready:
        # The bus's state is shown, not required: local relaying goes on without it.
        federation = context.relay.federation
        if federation is None:
            return jsonify({"status": "ready"})
        return jsonify({"status": "ready", "federation": federation.status()["bus"]})
    return error(503, "not_ready", "the relay is not serving yet")


async def _status() -> Response:
    context = api_context()
    relay = context.relay
    config = relay.config
    statistics = {**relay.statistics().as_dict(), **context.statistics()}
    return jsonify(
        {
            "version": __version__,
            "started_at": rfc3339(context.started_at),
            "uptime_s": round(trio.current_time() - context.started_monotonic, 3),
            "group": config.group,
            "port": relay.address[1],
            "interface": config.interface,
            "fingerprint": relay.fingerprint,
            "secure_key": relay.secure_key,
            "profiles": list(relay.config.served_profiles),
            "clients": statistics["clients"],
            "reassembly_in_flight": statistics["reassembly_in_flight"],
            "statistics": statistics,
            "settings": settings_json(config),
            "federation": None if relay.federation is None else relay.federation.status(),
            "time": rfc3339(time.time()),
        }
    )


async def _relays() -> Response:
    federation = api_context().relay.federation
    if federation is None:
        return jsonify({"federation": None, "relays": [], "count": 0})
    relays = federation.relays()
    return jsonify({"federation": federation.status(), "relays": relays, "count": len(relays)})


def settings_json(config: RelayConfig) -> dict[str, Any]:
    """The effective settings, by the names ``mcrelay config check`` uses; a reload shows.
    The API token's file is named, never the token itself."""
    values = {setting.name: getattr(config, setting.field) for setting in SETTINGS}
    return {name: str(v) if isinstance(v, Path) else v for name, v in values.items()}


async def _metrics() -> Response:
    body, content_type = render_metrics(api_context())
    return Response(body, content_type=content_type)


async def _openapi() -> Response:
    return jsonify(openapi_document())
