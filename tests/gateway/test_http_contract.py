"""The OpenAPI document (gateway/openapi.json) matches the code, the routes, and what is served."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from helpers import KeyPair
from openapi_spec_validator import validate

from auth.app import create_app as create_auth_app
from auth.settings import AuthSettings
from gateway.app import create_app as create_gateway_app
from gateway.contract import OPENAPI_PATH, OPERATIONS, openapi, render
from gateway.routes import ROUTES, Access
from gateway.settings import GatewaySettings

# Routes the apps serve that are not part of the public API: Prometheus is scraped on the internal
# network (HAProxy answers /metrics with 404 at the front door).
INTERNAL_ROUTES = {("GET", "/metrics")}
# Every operation that works without a bearer token. Adding one is a security decision: it is
# made here, on purpose, not by forgetting a `security` entry.
UNAUTHENTICATED = {
    ("POST", "/register"),
    ("POST", "/login"),
    ("POST", "/refresh"),
    ("GET", "/.well-known/jwks.json"),
    ("POST", "/internal/api-keys/verify"),  # gateways only: INTERNAL_API_TOKEN, not routed by HAProxy
    ("GET", "/health"),
    ("GET", "/ready"),
    ("GET", "/openapi.json"),
    ("GET", "/"),  # the chat page and its assets (the page signs in itself)
    ("GET", "/assets/{name}"),
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def _document() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(OPENAPI_PATH.read_text())
    return document


def _documented() -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in _document()["paths"].items()
        for method in item
        if method in METHODS
    }


def _routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of every route; HEAD is aiohttp's automatic twin of each GET."""
    return {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


def _apps(keys: KeyPair) -> dict[str, web.Application]:
    """Both apps as configured for a test; nothing connects until an app starts."""
    return {
        "auth": create_auth_app(AuthSettings.from_env({"ENVIRONMENT": "test"})),
        "gateway": create_gateway_app(
            GatewaySettings.from_env({"ENVIRONMENT": "test", "JWT_PUBLIC_KEY": keys.public_pem})
        ),
    }


def test_openapi_document_is_in_sync_with_the_code() -> None:
    assert OPENAPI_PATH.read_text() == render(openapi()), "run: make contract (python -m gateway.contract)"


def test_openapi_document_is_valid_openapi_3_1() -> None:
    document = _document()
    assert document["openapi"].startswith("3.1.")
    validate(document)


def test_every_route_is_documented_and_every_documented_route_exists(keys: KeyPair) -> None:
    apps = _apps(keys)
    served = {service: _routes(app) - INTERNAL_ROUTES for service, app in apps.items()}
    documented = _documented()

    undocumented = (served["auth"] | served["gateway"]) - documented
    assert not undocumented, f"routes missing from the OpenAPI document: {sorted(undocumented)}"
    phantom = documented - served["auth"] - served["gateway"]
    assert not phantom, f"documented routes no app serves: {sorted(phantom)}"
    # And each is served by the service the document says (HAProxy routes by it).
    for op in OPERATIONS:
        assert (op.method, op.path) in served[op.service], f"{op.method} {op.path} is not on {op.service}"
    assert len({(op.method, op.path) for op in OPERATIONS}) == len(OPERATIONS), "an operation is listed twice"


def test_only_the_chosen_operations_work_without_a_token() -> None:
    document = _document()
    public = {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS and operation.get("security", document["security"]) == []
    }
    assert public == UNAUTHENTICATED
    # The gateway's route table makes exactly its documented public routes public (and /metrics).
    gateway_paths = {op.path for op in OPERATIONS if op.service == "gateway"}
    gateway_public = {(method, path) for method, path in UNAUTHENTICATED if path in gateway_paths}
    routes_public = {(r.method, r.path) for r in ROUTES if r.access is Access.PUBLIC}
    assert gateway_public | {("GET", "/metrics")} == routes_public


def test_every_operation_documents_its_errors_in_the_error_shape() -> None:
    document = _document()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            label = f"{method.upper()} {path}"
            refused = operation.get("x-always-refused", False)  # documented as never succeeding
            assert refused or any(code.startswith("2") for code in responses), f"{label}: no success response"
            assert responses["429"]["headers"]["Retry-After"]["required"] is True, label
            if operation.get("security", document["security"]):
                assert {"401", "403"} <= responses.keys(), f"{label}: authentication errors"
            if "requestBody" in operation:
                assert {"400", "413", "415"} <= responses.keys(), f"{label}: body errors"
            for code, response in responses.items():
                if code >= "400":
                    schema = response["content"]["application/json"]["schema"]
                    assert "Error" in json.dumps(schema), f"{label} {code}: not the error shape"


async def test_the_gateway_serves_the_document_without_a_token(gateway: Any) -> None:
    response = await gateway.get("/openapi.json")
    assert response.status == 200
    assert response.content_type == "application/json"
    assert await response.read() == OPENAPI_PATH.read_bytes()
