"""``GET /v1/openapi.json`` against the real routes; unknown routes and methods."""

import re
from pathlib import Path
from typing import Any

from api_support import api_daemon, assert_json_error

from mcrelay import __version__
from mcrelay.api.app import create_app
from mcrelay.api.openapi import openapi_document

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "patch"})
IMPLICIT_METHODS = frozenset({"HEAD"})


def openapi_path(rule: str) -> str:
    """Quart's ``/v1/clients/<path:client_id>`` as OpenAPI's ``/v1/clients/{id}``."""
    return re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "{id}", rule)


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (path, method.upper())
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def refs(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


async def test_the_document_matches_the_routes(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        response = await api.http.get("/v1/openapi.json")
        assert response.status_code == 200
        document = response.json()
        assert document == openapi_document()
        assert document["openapi"] == "3.1.0"
        assert document["info"]["version"] == __version__

        routes: set[tuple[str, str]] = set()
        for rule in create_app(api.daemon.api).url_map.iter_rules():
            if rule.endpoint == "static":
                continue
            methods = set(rule.methods or ()) - IMPLICIT_METHODS
            assert methods, rule.rule
            routes |= {(openapi_path(rule.rule), method) for method in methods}
        documented = documented_operations(document)
        assert routes - documented == set(), "routes missing from the document"
        assert documented - routes == set(), "documented operations with no route"
        assert ("/v1/clients/{id}", "DELETE") in routes
        assert ("/v1/messages", "POST") in routes


async def test_the_document_is_self_consistent() -> None:
    document = openapi_document()
    schemas = document["components"]["schemas"]
    for ref in refs(document):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.removeprefix("#/components/schemas/") in schemas, ref
    for path, item in document["paths"].items():
        params = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            assert method in HTTP_METHODS, (path, method)
            assert operation["summary"]
            success = {"201"} if (path, method) == ("/v1/bans", "post") else {"200"}
            assert success <= set(operation["responses"]), (path, method)
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == params, (path, method)
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (path, status)
    # The health checks are the only operations open without the token.
    open_operations = {
        path
        for path, item in document["paths"].items()
        for operation in item.values()
        if operation.get("security") == []
    }
    assert open_operations == {"/healthz", "/readyz"}
    assert document["security"] == [{"bearer": []}]


async def test_documented_gets_answer_with_their_documented_type(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        document = openapi_document()
        for path, item in document["paths"].items():
            if "get" not in item or "{" in path or path == "/v1/events":
                continue
            response = await api.http.get(path)
            assert response.status_code == 200, path
            (media_type,) = item["get"]["responses"]["200"]["content"]
            assert response.headers["content-type"].startswith(media_type), path


UNKNOWN_PATHS = [
    "/",
    "/nope",
    "/v1",
    "/v1/",
    "/v1/clients/",
    "/v2/clients",
    "/v1/client",
    "/V1/STATUS",
    "/metrics/extra",
    "/healthz/x",
    "/static/app.py",
    "/static/../app.py",
]


async def test_unknown_routes_are_json_404(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        for path in UNKNOWN_PATHS:
            # Quart's static route exists (with no folder behind it): only GET is a 404 there.
            methods = ["GET"] if path.startswith("/static/") else ["GET", "POST", "DELETE"]
            for method in methods:
                response = await api.http.request(method, path)
                error = assert_json_error(response, 404, "not_found")
                # Werkzeug's sentence for a browser, before (found by review).
                assert error["message"].startswith("no such path: '/"), error
                assert error["message"].endswith("(the API's paths are in /v1/openapi.json)")


async def test_a_long_unknown_path_is_quoted_cut_short(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        error = assert_json_error(await api.http.get("/" + "a" * 5000), 404, "not_found")
        assert error["message"] == (
            f"no such path: '/{'a' * 79}'... (5001 characters) (the API's paths are in "
            "/v1/openapi.json)"
        )


async def test_wrong_methods_are_json_405(relay_key_file: Path) -> None:
    wrong = [
        ("POST", "/healthz"),
        ("DELETE", "/readyz"),
        ("POST", "/v1/status"),
        ("PUT", "/metrics"),
        ("POST", "/v1/openapi.json"),
        ("POST", "/v1/clients"),
        ("DELETE", "/v1/clients"),
        ("PUT", "/v1/clients/127.0.0.1:1"),
        ("POST", "/v1/clients/127.0.0.1:1"),
        ("PUT", "/v1/bans"),
        ("POST", "/v1/bans/127.0.0.1:1"),
        ("GET", "/v1/bans/127.0.0.1:1"),
        ("GET", "/v1/messages"),
        ("PATCH", "/v1/messages"),
        ("POST", "/v1/events"),
        ("OPTIONS", "/healthz"),
        ("OPTIONS", "/v1/clients"),
        ("OPTIONS", "/v1/clients/127.0.0.1:1"),
        ("OPTIONS", "/v1/messages"),
    ]
    async with api_daemon(relay_key_file) as api:
        for method, path in wrong:
            response = await api.http.request(method, path)
            assert_json_error(response, 405, "method_not_allowed")


async def test_405_says_which_methods_are_allowed(relay_key_file: Path) -> None:
    async with api_daemon(relay_key_file) as api:
        response = await api.http.post("/v1/status")
        error = assert_json_error(response, 405, "method_not_allowed")
        assert error["message"] == "POST is no method of '/v1/status': it takes GET, HEAD"
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert "GET" in allowed
        response = await api.http.get("/v1/bans/127.0.0.1:1")
        assert "DELETE" in response.headers["Allow"]


async def test_options_is_a_405_that_says_the_methods(relay_key_file: Path) -> None:
    """OPTIONS is no method of the API: it got Quart's empty text/html 200 (found by
    review); the 405's Allow says what it asks, and names no OPTIONS."""
    async with api_daemon(relay_key_file) as api:
        for path, methods in (
            ("/v1/clients", {"GET", "HEAD"}),
            ("/v1/clients/127.0.0.1:1", {"GET", "HEAD", "DELETE"}),
            ("/v1/messages", {"POST"}),
        ):
            response = await api.http.options(path)
            assert_json_error(response, 405, "method_not_allowed")
            assert {m.strip() for m in response.headers["Allow"].split(",")} == methods
