"""The OpenAPI document (``GET /api/openapi.json``) is valid, complete and true.

* valid OpenAPI 3.1 (``openapi-spec-validator``);
* generated (``shared/api/openapi.py``), it still holds everything the hand-written document had
  (``tests/fixtures/openapi-handwritten.json``, saved before that code was deleted);
* every HTTP function ``function_app`` registers is documented with the same path, method and
  operationId, and nothing else is;
* real responses, over HTTP through the local host on a real PostgreSQL, the Polymarket stand-in
  and the Azure OpenAI stand-in, have documented statuses and headers, and their bodies validate
  (JSON Schema 2020-12, ``$ref``s resolved into the document) for every status the tests can
  provoke: 200, 304, 400, 404, 500, 502 and 503.
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import jsonschema
import pytest
import referencing
import referencing.jsonschema
from openapi_spec_validator import validate as validate_spec

from devtools.openai_standin import OpenAIStandIn, Reply, verdict
from shared import __version__
from shared.api.openapi import API_PREFIX, openapi_document, openapi_json
from shared.api.params import parse_query
from shared.db.database import get_database
from shared.markets.query import MarketQuery
from shared.markets.service import get_markets_service
from tests.conftest import ROOT, Upstream, handler, registered_functions, reset_app, reset_services

API_KEY = "sk-openapi-test-0a1b2c3d"
DOC_URI = "urn:polymarket-api:openapi"
UNKNOWN_TOKEN = "7" * 76  # well formed; neither the stand-in nor the store knows it
UNKNOWN_MARKET = "0x" + "ab" * 32


# --- the contract ------------------------------------------------------------------------------


def _pointer(*parts: str) -> str:
    return "/".join(part.replace("~", "~0").replace("/", "~1") for part in parts)


class Contract:
    """Checks real responses against the document: status, headers, content type and body."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        resource = referencing.Resource.from_contents(
            document, default_specification=referencing.jsonschema.DRAFT202012)
        self.registry = referencing.Registry().with_resource(DOC_URI, resource)
        self.format_checker = jsonschema.Draft202012Validator.FORMAT_CHECKER

    def _resolve(self, node: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """An OpenAPI object and its JSON pointer parts, following a ``$ref`` to components."""
        ref = node.get("$ref")
        if ref is None:
            return node, []
        parts = ref.removeprefix("#/").split("/")
        target: Any = self.document
        for part in parts:
            target = target[part]
        return target, parts

    def template_of(self, path: str) -> str:
        for template in self.document["paths"]:
            regex = "^" + re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(template)) + "$"
            if re.match(regex, path):
                return template
        raise AssertionError(f"{path} matches no documented path")

    def check(self, method: str, path: str, status: int, headers: httpx.Headers | dict[str, str],
              body: bytes) -> Any:
        """Assert the response is documented; returns the parsed body (None when empty)."""
        template = self.template_of(path.split("?")[0])
        operation = self.document["paths"][template][method.lower()]
        responses = operation["responses"]
        assert str(status) in responses, f"{method} {path}: status {status} is not documented: {body[:300]!r}"
        response, ref_parts = self._resolve(responses[str(status)])
        headers = httpx.Headers(headers)
        for name, header in response.get("headers", {}).items():
            header, _ = self._resolve(header)
            if header.get("required"):
                assert name in headers, f"{method} {path} {status}: header {name} missing"
            if name in headers:
                self._validate(headers[name], header["schema"], f"{method} {path} {status} header {name}")
        content = response.get("content")
        if content is None:
            assert body == b"", f"{method} {path} {status}: no body is documented"
            return None
        media = headers.get("content-type", "").split(";")[0].strip()
        assert media in content
        if media == "text/csv":  # a table: documented as a string
            return body.decode()
        parsed = json.loads(body)
        if ref_parts:
            pointer = _pointer(*ref_parts, "content", "application/json", "schema")
        else:
            pointer = _pointer("paths", template, method.lower(), "responses", str(status), "content",
                               "application/json", "schema")
        validator = jsonschema.Draft202012Validator(
            {"$ref": f"{DOC_URI}#/{pointer}"}, registry=self.registry, format_checker=self.format_checker)
        errors = sorted(validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))
        assert not errors, f"{method} {path} {status}: " + "; ".join(
            f"{list(e.absolute_path)}: {e.message[:300]}" for e in errors[:5])
        return parsed

    def _validate(self, value: str, schema: dict[str, Any], where: str) -> None:
        validator = jsonschema.Draft202012Validator(schema, format_checker=self.format_checker)
        errors = list(validator.iter_errors(value))
        assert not errors, f"{where}: {errors[0].message}"


@dataclass
class Api:
    """The app served over HTTP by the local host, on a real database and the stand-ins."""

    url: str
    client: httpx.Client
    upstream: Upstream
    model: OpenAIStandIn
    contract: Contract

    def get(self, path: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
            expect: int | None = None) -> tuple[httpx.Response, Any]:
        response = self.client.get(self.url + path, params=params, headers=headers)
        body = self.contract.check("GET", path, response.status_code, response.headers, response.content)
        if expect is not None:
            assert response.status_code == expect, f"GET {path} {params}: {response.status_code} {response.text}"
        return response, body

    def markets(self, index: int = 0) -> dict[str, Any]:
        return self.upstream.open_markets()[index]


def configure_model(monkeypatch: pytest.MonkeyPatch, model: OpenAIStandIn) -> None:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", model.endpoint)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("GPT5_DEPLOYMENT_NAME", "gpt-5")
    monkeypatch.setenv("AZURE_OPENAI_MAX_RETRIES", "0")


@contextmanager
def serving(upstream: Upstream, monkeypatch: pytest.MonkeyPatch, *, load_markets: bool = True) -> Iterator[Api]:
    """The app on a LocalHost (port 0), with the model stand-in configured; stops all it starts."""
    import function_app
    from devtools.funchost import LocalHost

    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    upstream.clear()
    model = OpenAIStandIn(api_key=API_KEY, deployment="gpt-5").start()
    try:
        configure_model(monkeypatch, model)
        reset_app()
        reset_services()
        if load_markets:
            get_markets_service().refresh(min_age_s=0)
        with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json") as host, \
                httpx.Client(timeout=60) as client:
            yield Api(host.url, client, upstream, model, Contract(openapi_document()))
    finally:
        reset_services()  # before the stand-in goes, so nothing is left calling it
        model.stop()


@pytest.fixture
def api(database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    with serving(upstream_env, monkeypatch) as served:
        yield served


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- the document ------------------------------------------------------------------------------


def test_document_is_valid_openapi_3_1_with_the_app_version() -> None:
    document = openapi_document()
    validate_spec(document)
    assert document["openapi"].startswith("3.1.")
    assert document["info"]["version"] == __version__
    assert json.loads(openapi_json()) == document
    for name in ("Error", "Freshness", "Market", "Outcome", "Quote", "Book", "History", "Sentiment", "Health"):
        assert name in document["components"]["schemas"], name


def test_every_registered_route_is_documented_and_nothing_else() -> None:
    prefix = json.loads((ROOT / "host.json").read_text())["extensions"]["http"]["routePrefix"]
    assert f"/{prefix}" == API_PREFIX
    registered: dict[tuple[str, str], str] = {}
    for name, fn in registered_functions().items():
        trigger = json.loads(fn.get_raw_bindings()[0])
        if trigger["type"] != "httpTrigger":
            continue  # timers are not HTTP
        for method in trigger["methods"]:
            registered[(method.lower(), f"{API_PREFIX}/{trigger['route']}")] = name
    document = openapi_document()
    documented = {(method, path): op["operationId"]
                  for path, item in document["paths"].items() for method, op in item.items()}
    assert documented == registered
    for path, item in document["paths"].items():
        route_params = set(re.findall(r"\{([^}:?]+)", path))
        for operation in item.values():
            params = [p if "$ref" not in p else document["components"]["parameters"][p["$ref"].split("/")[-1]]
                      for p in operation["parameters"]]
            assert {p["name"] for p in params if p["in"] == "path"} == route_params, path
            assert "200" in operation["responses"] and "500" in operation["responses"], path


def test_the_contract_check_rejects_what_the_document_does_not_allow() -> None:
    """The checks below are not vacuous: drift between code and document fails them."""
    contract = Contract(openapi_document())
    headers = {"Content-Type": "application/json", "ETag": '"0a1b"',
               "Cache-Control": "public, max-age=5, stale-while-revalidate=300, stale-if-error=86400"}
    fresh = {"source": "cache", "as_of": "2026-11-25T13:05:00+00:00", "age_seconds": 4.2}
    good = {"markets": [], "next_cursor": None, "total": 0, "freshness": fresh}

    def check(status: int, body: Any, sent: dict[str, str] = headers) -> None:
        contract.check("GET", "/api/markets", status, sent, json.dumps(body).encode())

    check(200, good)
    check(200, {**good, "simulated": True})
    wrong = [
        (200, {k: v for k, v in good.items() if k != "freshness"}),
        (200, {**good, "freshness": {**fresh, "source": "stale"}}),  # stale says why
        (200, {**good, "freshness": {**fresh, "as_of": "yesterday"}}),
        (200, {**good, "freshness": {**fresh, "age_seconds": -1}}),
        (200, {**good, "undocumented": 1}),
        (200, {**good, "simulated": False}),
        (400, {"error": {"code": "not_found", "message": "a 400 is bad_request"}}),
        (418, {"error": {"code": "internal", "message": "no such status"}}),
    ]
    for status, body in wrong:
        with pytest.raises(AssertionError):
            check(status, body)
    with pytest.raises(AssertionError):
        check(200, good, {k: v for k, v in headers.items() if k != "ETag"})


def test_document_is_served_as_json_with_a_long_cache(api: Api) -> None:
    response, body = api.get(f"{API_PREFIX}/openapi.json", expect=200)
    assert body == openapi_document()
    assert response.headers["content-type"].startswith("application/json")
    assert "max-age=3600" in response.headers["cache-control"]
    assert "freshness" not in body and "simulated" not in body


HANDWRITTEN = ROOT / "tests" / "fixtures" / "openapi-handwritten.json"
SCHEMA_FACTS = ("type", "pattern", "enum", "minimum", "maximum", "minLength", "maxLength", "default")
# Deliberate widenings since: old path -> (new path, old path parameter -> new name). A widened
# parameter must still accept what it did: its old pattern is one of the new alternatives.
RENAMED = {"/api/markets/{condition_id}": ("/api/markets/{market}", {"condition_id": "market"})}


def _deref(document: dict[str, Any], node: Any) -> Any:
    while isinstance(node, dict) and "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _parameters_of(document: dict[str, Any], operation: dict[str, Any]) -> dict[tuple[str, str], Any]:
    params = (_deref(document, p) for p in operation.get("parameters", []))
    return {(p["name"], p["in"]): p for p in params}


def _body_properties(document: dict[str, Any], schema: Any, prefix: str = "",
                     seen: frozenset[str] = frozenset()) -> set[str]:
    """Every property path a body schema names: through $ref, allOf/oneOf/anyOf, items and maps."""
    if isinstance(schema, dict) and "$ref" in schema:
        if schema["$ref"] in seen:
            return set()
        seen = seen | {schema["$ref"]}
    schema = _deref(document, schema)
    if not isinstance(schema, dict):
        return set()
    found: set[str] = set()
    for key in ("allOf", "oneOf", "anyOf"):
        for option in schema.get(key, []):
            found |= _body_properties(document, option, prefix, seen)
    if isinstance(schema.get("items"), dict):
        found |= _body_properties(document, schema["items"], f"{prefix}[].", seen)
    if isinstance(schema.get("additionalProperties"), dict):
        found |= _body_properties(document, schema["additionalProperties"], f"{prefix}{{}}.", seen)
    for name, sub in schema.get("properties", {}).items():
        found.add(prefix + name)
        found |= _body_properties(document, sub, f"{prefix}{name}.", seen)
    return found


def test_generated_document_holds_everything_the_handwritten_one_had() -> None:
    """The document once written by hand (saved before it was deleted) is contained in the generated
    one: every path and operation, every parameter with its type, pattern, enum, bounds and default,
    every response status and header, and every property of every response body."""
    old, new = json.loads(HANDWRITTEN.read_text()), openapi_document()
    missing: list[str] = []
    for path, item in old["paths"].items():
        new_path, renamed = RENAMED.get(path, (path, {}))
        for method, old_op in item.items():
            where = f"{method.upper()} {path}"
            new_op = new["paths"].get(new_path, {}).get(method)
            if new_op is None:
                missing.append(f"{where}: operation")
                continue
            assert new_op["operationId"] == old_op["operationId"], where
            new_params = _parameters_of(new, new_op)
            for key, old_param in _parameters_of(old, old_op).items():
                new_param = new_params.get((renamed.get(key[0], key[0]), key[1]))
                if new_param is None:
                    missing.append(f"{where}: parameter {key}")
                    continue
                assert new_param["required"] == old_param["required"], (where, key)
                old_schema, new_schema = _deref(old, old_param["schema"]), _deref(new, new_param["schema"])
                if key[0] in renamed:
                    assert old_schema["pattern"] in [o["pattern"] for o in new_schema["anyOf"]], (where, key)
                    continue
                for fact in SCHEMA_FACTS:
                    if fact == "enum" and fact in old_schema and set(old_schema[fact]) <= set(new_schema.get(fact, ())):
                        continue  # values added since: every old one still accepted
                    if fact in old_schema and new_schema.get(fact) != old_schema[fact]:
                        missing.append(f"{where}: parameter {key} {fact} {old_schema[fact]!r}, "
                                       f"now {new_schema.get(fact)!r}")
            for status, old_response in old_op["responses"].items():
                if status not in new_op["responses"]:
                    missing.append(f"{where}: status {status}")
                    continue
                old_response, new_response = _deref(old, old_response), _deref(new, new_op["responses"][status])
                for header in set(old_response.get("headers", {})) - set(new_response.get("headers", {})):
                    missing.append(f"{where} {status}: header {header}")
                for media, content in old_response.get("content", {}).items():
                    new_content = new_response.get("content", {}).get(media)
                    if new_content is None:
                        missing.append(f"{where} {status}: content {media}")
                        continue
                    gone = (_body_properties(old, content["schema"])
                            - _body_properties(new, new_content["schema"]))
                    missing += [f"{where} {status}: body property {name}" for name in sorted(gone)]
    assert not missing, "\n".join(missing)
    for name in old["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]:
        assert name in new["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"], name


# --- real responses ------------------------------------------------------------------------------


def test_health_responses_match(api: Api) -> None:
    _, basic = api.get(f"{API_PREFIX}/health", expect=200)
    assert set(basic) == {"status", "version", "time"}
    _, deep = api.get(f"{API_PREFIX}/health", {"deep": "true"}, expect=200)
    assert deep["status"] == "ok"
    api.get(f"{API_PREFIX}/markets", expect=200)
    api.get(f"{API_PREFIX}/price/{api.markets()['token_ids'][0]}", expect=200)
    api.upstream.fail("status", host="gamma", status=503)
    _, degraded = api.get(f"{API_PREFIX}/health", {"deep": "1"}, expect=200)
    assert degraded["status"] == "degraded"
    _, bad = api.get(f"{API_PREFIX}/health", {"deep": "perhaps"}, expect=400)
    assert bad["error"]["parameter"] == "deep"


def test_health_without_database_is_a_documented_503(monkeypatch: pytest.MonkeyPatch) -> None:
    import azure.functions as func

    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_PORT", str(_closed_port()))
    reset_app()
    contract = Contract(openapi_document())
    response = handler("health_check")(func.HttpRequest(
        "GET", "http://localhost/api/health", body=b"", params={"deep": "true"}))
    headers = {**dict(response.headers), "Content-Type": response.mimetype}
    body = contract.check("GET", "/api/health", response.status_code, headers, response.get_body())
    assert response.status_code == 503 and body["status"] == "unavailable"


def test_markets_responses_match(api: Api) -> None:
    path = f"{API_PREFIX}/markets"
    first, page = api.get(path, {"limit": "3", "sort": "liquidity"}, expect=200)
    assert len(page["markets"]) == 3 and page["next_cursor"] and page["freshness"]["source"] in ("cache", "live")
    _, second = api.get(path, {"limit": "3", "sort": "liquidity", "cursor": page["next_cursor"]}, expect=200)
    assert second["markets"][0]["condition_id"] != page["markets"][0]["condition_id"]
    api.get(path, {"limit": "3", "sort": "liquidity"}, headers={"If-None-Match": first.headers["ETag"]}, expect=304)
    api.get(path, {"q": api.markets()["question"].split()[0], "active_only": "false", "sort": "end_date",
                   "limit": "500"}, expect=200)
    api.get(path, {"tag": "crypto", "order": "asc", "sort": "price_change"}, expect=200)
    _, last = api.get(path, {"limit": "500", "active_only": "false"}, expect=200)
    assert last["next_cursor"] is None
    bad = {"sort": "bogus", "order": "up", "limit": "0", "q": "x" * 201, "tag": "t" * 101,
           "category": "c" * 101, "cursor": "not-a-cursor", "active_only": "maybe", "refresh": "maybe"}
    for name, value in bad.items():
        _, error = api.get(path, {name: value}, expect=400)
        assert error["error"]["parameter"] == ("tag" if name == "category" else name)
    # Not int()-able although str.isdigit() says digits (these were 500s), and non-ASCII digits.
    for value in ("501", "\u00b2", "\u0661\u0662", "1" * 5000):
        api.get(path, {"limit": value}, expect=400)
    _, other = api.get(path, {"limit": "3", "sort": "volume", "cursor": page["next_cursor"]}, expect=400)
    assert other["error"]["parameter"] == "cursor"
    # A forged cursor of the right query whose sort value no float holds (was a 500).
    fingerprint = parse_query(MarketQuery, {"sort": "liquidity"}).fingerprint()
    raw = json.dumps({"f": fingerprint, "k": [False, 10**309, "0x"]}, separators=(",", ":"))
    forged = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
    _, error = api.get(path, {"limit": "3", "sort": "liquidity", "cursor": forged}, expect=400)
    assert error["error"]["parameter"] == "cursor"


def test_market_responses_match(api: Api) -> None:
    cid = api.markets()["condition_id"]
    response, body = api.get(f"{API_PREFIX}/markets/{cid}", expect=200)
    assert body["market"]["condition_id"] == cid and "description" in body["market"]
    api.get(f"{API_PREFIX}/markets/{cid}", headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    api.get(f"{API_PREFIX}/markets/{cid}", headers={"If-None-Match": "*"}, expect=304)
    for bad in (cid.upper().replace("0X", "0x"), cid[:-1], "1" * 21, quote("0x" + "g" * 64)):
        _, error = api.get(f"{API_PREFIX}/markets/{bad}", expect=400)
        assert error["error"]["parameter"] == "market"
    _, missing = api.get(f"{API_PREFIX}/markets/{UNKNOWN_MARKET}", expect=404)
    assert missing["error"]["code"] == "not_found"


def test_events_responses_match(api: Api) -> None:
    path = f"{API_PREFIX}/events"
    first, page = api.get(path, {"limit": "3", "sort": "liquidity"}, expect=200)
    assert len(page["events"]) == 3 and page["next_cursor"]
    api.get(path, {"limit": "3", "sort": "liquidity", "cursor": page["next_cursor"]}, expect=200)
    api.get(path, {"limit": "3", "sort": "liquidity"}, headers={"If-None-Match": first.headers["ETag"]}, expect=304)
    _, everything = api.get(path, {"limit": "200", "active_only": "false", "sort": "end_date"}, expect=200)
    assert any(e["neg_risk"] and e["price_sum"] is not None for e in everything["events"])
    api.get(path, {"q": page["events"][0]["title"].split()[0], "tag": page["events"][0]["tags"][0],
                   "sort": "competitive", "order": "asc"}, expect=200)
    for name, value in {"sort": "bogus", "order": "up", "limit": "201", "q": "x" * 201, "tag": "t" * 101,
                        "cursor": "not-a-cursor", "active_only": "maybe", "refresh": "maybe"}.items():
        _, error = api.get(path, {name: value}, expect=400)
        assert error["error"]["parameter"] == name


def test_event_responses_match(api: Api) -> None:
    _, page = api.get(f"{API_PREFIX}/events", {"limit": "200"}, expect=200)
    event = next(e for e in page["events"] if e["neg_risk"])
    for ref in (event["id"], event["slug"]):
        response, body = api.get(f"{API_PREFIX}/events/{ref}", expect=200)
        assert body["event"]["id"] == event["id"] and body["event"]["markets"]
    api.get(f"{API_PREFIX}/events/{event['id']}", headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    _, missing = api.get(f"{API_PREFIX}/events/999999999", expect=404)
    assert missing["error"]["code"] == "not_found"
    _, bad = api.get(f"{API_PREFIX}/events/{quote('no such slug')}", expect=400)
    assert bad["error"]["parameter"] == "event"


def test_resolve_and_tags_responses_match(api: Api) -> None:
    market = api.markets()
    for q in (market["condition_id"], market["slug"], market["token_ids"][0]):
        response, body = api.get(f"{API_PREFIX}/resolve", {"q": q}, expect=200)
        assert market["condition_id"] in [m["condition_id"] for m in body["markets"]]
    api.get(f"{API_PREFIX}/resolve", {"q": market["condition_id"]},
            headers={"If-None-Match": response.headers["ETag"]}, expect=200)  # another q, another tag
    api.get(f"{API_PREFIX}/resolve", {"q": market["token_ids"][0]},
            headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    _, error = api.get(f"{API_PREFIX}/resolve", {"q": "https://polymarket.com.evil.com/event/x"}, expect=400)
    assert error["error"]["parameter"] == "q"
    api.get(f"{API_PREFIX}/resolve", expect=400)
    api.get(f"{API_PREFIX}/resolve", {"q": "no-such-thing-anywhere"}, expect=404)
    response, body = api.get(f"{API_PREFIX}/tags", expect=200)
    assert body["tags"]
    api.get(f"{API_PREFIX}/tags", headers={"If-None-Match": response.headers["ETag"]}, expect=304)


def test_history_read_responses_match(api: Api) -> None:
    """Candles (JSON and CSV), price-history CSV, sparklines and movers are what the document says."""
    token = api.markets()["token_ids"][0]
    path = f"{API_PREFIX}/price/{token}/candles"
    response, body = api.get(path, {"resolution": "5m"}, expect=200)
    assert body["candles"] and body["candles"][-1]["source"] == "captures"
    api.get(path, {"resolution": "5m"}, headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    _, table = api.get(path, {"resolution": "1h", "format": "csv"}, expect=200)
    assert table.startswith("time,period_s,open,high,low,close,points,volume,source")
    _, bad = api.get(path, {"resolution": "2m"}, expect=400)
    assert bad["error"]["parameter"] == "resolution"
    api.get(f"{API_PREFIX}/price/{'9' * 70}/candles", expect=404)
    _, history = api.get(f"{API_PREFIX}/price/{token}", {"format": "csv"}, expect=200)
    assert history.startswith("time,unix,price")
    _, page = api.get(f"{API_PREFIX}/markets", {"limit": "5", "sparkline": "24h", "sort": "abs_change_1h"},
                      expect=200)
    assert all("sparkline" in m and "change" in m for m in page["markets"])
    api.get(f"{API_PREFIX}/markets", {"sort": "change_24h", "min_volume_24h": "100", "sparkline": "7d"}, expect=200)
    _, bad = api.get(f"{API_PREFIX}/markets", {"sparkline": "1y"}, expect=400)
    assert bad["error"]["parameter"] == "sparkline"


def test_markets_without_data_and_failing_upstream_are_documented_503(
    database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serving(upstream_env, monkeypatch, load_markets=False) as api:
        api.upstream.fail("status", host="gamma", status=500)
        _, body = api.get(f"{API_PREFIX}/markets", expect=503)
        assert body["error"]["code"] == "unavailable"
        api.get(f"{API_PREFIX}/markets/{UNKNOWN_MARKET}", expect=503)
        _, deep = api.get(f"{API_PREFIX}/health", {"deep": "true"}, expect=200)
        assert deep["datasets"]["markets"]["loaded"] is False


def test_sentiment_responses_match(api: Api) -> None:
    cid, other, third = (api.markets(i)["condition_id"] for i in (0, 1, 2))
    path = f"{API_PREFIX}/markets/{cid}/sentiment"
    api.model.reply(verdict("bullish", 0.4, 0.7, "Up this week on steady volume."))
    response, body = api.get(path, expect=200)
    assert body["sentiment"]["score"] == 0.4 and body["freshness"]["source"] == "live"
    api.get(path, headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    _, with_history = api.get(path, {"history": "true"}, expect=200)
    assert len(with_history["history"]) == 1
    api.get(path, {"refresh": "true"}, expect=200)  # throttled: the cached analysis
    _, bad = api.get(path, {"history": "perhaps"}, expect=400)
    assert bad["error"]["parameter"] == "history"
    api.get(f"{API_PREFIX}/markets/0xNOPE/sentiment", expect=400)
    api.get(f"{API_PREFIX}/markets/{UNKNOWN_MARKET}/sentiment", expect=404)
    # The model fails with nothing stored: 502 with Retry-After.
    api.model.reply(Reply('{"sentiment": "bullish", "score": 0.4'))
    failed, error = api.get(f"{API_PREFIX}/markets/{other}/sentiment", expect=502)
    assert error["error"]["code"] == "model_error" and failed.headers["Retry-After"]
    # The model fails with an older analysis stored: that analysis, marked stale.
    api.get(f"{API_PREFIX}/markets/{third}/sentiment", expect=200)
    get_database().execute(
        "UPDATE market_sentiment SET created_at = created_at - interval '2 hours' WHERE condition_id = %s", (third,))
    get_database().execute(
        "UPDATE sentiment_state SET last_attempt_at = last_attempt_at - interval '2 hours' WHERE condition_id = %s",
        (third,))
    api.model.reply(Reply(status=500))
    _, stale = api.get(f"{API_PREFIX}/markets/{third}/sentiment", expect=200)
    assert stale["freshness"]["source"] == "stale" and stale["freshness"]["stale_reason"]


def test_sentiment_not_configured_is_a_documented_503(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AZURE_OPENAI_ENDPOINT")
    reset_app()
    _, body = api.get(f"{API_PREFIX}/markets/{api.markets()['condition_id']}/sentiment", expect=503)
    assert body["error"]["code"] == "not_configured"


def test_price_responses_match(api: Api) -> None:
    token = api.markets(3)["token_ids"][0]
    path = f"{API_PREFIX}/price/{token}"
    response, body = api.get(path, expect=200)
    assert body["token"]["token_id"] == token and body["history"]["points"]
    api.get(path, headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    api.get(path, {"history": "false"}, expect=200)
    for interval in ("1h", "6h", "1w", "1m", "max"):
        api.get(path, {"interval": interval}, expect=200)
    api.get(path, {"interval": "1d", "fidelity": "60", "refresh": "true"}, expect=200)
    bad = {"interval": "2d", "fidelity": "0", "history": "maybe", "refresh": "maybe"}
    for name, value in bad.items():
        _, error = api.get(path, {name: value}, expect=400)
        assert error["error"]["parameter"] == name
    api.get(path, {"interval": "1m", "fidelity": "5"}, expect=400)
    for value in ("1441", "\u00b2", "\u0665", "5" * 5000):
        api.get(path, {"fidelity": value}, expect=400)
    for bad_token in ("abc", "1" * 79, "0x" + "ab" * 32):
        _, error = api.get(f"{API_PREFIX}/price/{bad_token}", expect=400)
        assert error["error"]["parameter"] == "token_id"
    _, unknown = api.get(f"{API_PREFIX}/price/{UNKNOWN_TOKEN}", expect=404)
    assert unknown["error"]["code"] == "not_found"
    market = api.markets(4)
    api.upstream.close_market(market["condition_id"])
    _, closed = api.get(f"{API_PREFIX}/price/{market['token_ids'][0]}", expect=200)
    assert closed["quote"]["book"] == "closed" and closed["freshness"]["source"] == "stale"
    one_sided = api.markets(15)["token_ids"][0]
    api.upstream.standin.make_one_sided(one_sided)  # never traded, bids only: no price
    _, untraded = api.get(f"{API_PREFIX}/price/{one_sided}", {"history": "false"}, expect=200)
    assert untraded["quote"]["price"] is None and untraded["quote"]["price_rule"] == "none"


def test_prices_responses_match(api: Api) -> None:
    path = f"{API_PREFIX}/prices"
    good = [api.markets(5)["token_ids"][0], api.markets(6)["token_ids"][1]]
    closed_market = api.markets(7)
    api.upstream.close_market(closed_market["condition_id"])
    ids = [*good, "abc", UNKNOWN_TOKEN, closed_market["token_ids"][0]]
    response, body = api.get(path, {"token_ids": ",".join(ids)}, expect=200)
    assert [item["status"] for item in body["quotes"]] == ["ok", "ok", "invalid", "unknown", "closed"]
    api.get(path, {"token_ids": ",".join(ids)}, headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    for value in ("", ",,", ",".join(str(10**60 + i) for i in range(101))):
        _, error = api.get(path, {"token_ids": value}, expect=400)
        assert error["error"]["parameter"] == "token_ids"
    api.get(path, expect=400)
    # Polymarket failing: a known token is served stale, an unseen one is "unavailable".
    api.upstream.fail("status", host="clob", status=500)
    unseen = api.markets(8)["token_ids"][0]
    _, mixed = api.get(path, {"token_ids": f"{good[0]},{unseen}"}, expect=200)
    assert {item["status"] for item in mixed["quotes"]} == {"ok", "unavailable"}
    _, failing = api.get(path, {"token_ids": api.markets(9)["token_ids"][0]}, expect=503)
    assert failing["error"]["code"] == "unavailable"


def test_book_responses_match(api: Api) -> None:
    token = api.markets(10)["token_ids"][0]
    path = f"{API_PREFIX}/book/{token}"
    response, body = api.get(path, {"depth": "3"}, expect=200)
    assert body["book"]["depth"] == 3 and len(body["book"]["bids"]) <= 3
    api.get(path, {"depth": "3"}, headers={"If-None-Match": response.headers["ETag"]}, expect=304)
    api.get(path, {"depth": "100"}, expect=200)
    for bad in ("0", "101", "ten", "\u00b9", "\u0661", "9" * 5000):
        _, error = api.get(path, {"depth": bad}, expect=400)
        assert error["error"]["parameter"] == "depth"
    api.get(f"{API_PREFIX}/book/abc", expect=400)
    _, unknown = api.get(f"{API_PREFIX}/book/{UNKNOWN_TOKEN}", expect=404)
    assert unknown["error"]["code"] == "not_found"
    market = api.markets(11)
    api.upstream.close_market(market["condition_id"])
    _, closed = api.get(f"{API_PREFIX}/book/{market['token_ids'][0]}", expect=404)
    assert closed["error"]["code"] == "book_closed"
    api.upstream.fail("status", host="clob", status=500)
    _, failing = api.get(f"{API_PREFIX}/book/{api.markets(12)['token_ids'][0]}", expect=503)
    assert failing["error"]["code"] == "unavailable"
    _, price = api.get(f"{API_PREFIX}/price/{api.markets(13)['token_ids'][0]}", expect=503)
    assert price["error"]["code"] == "unavailable"


def test_a_bad_setting_is_a_documented_500(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MARKETS_CACHE_TTL_S", "soon")
    reset_app()
    reset_services()
    _, body = api.get(f"{API_PREFIX}/markets", expect=500)
    assert body["error"]["code"] == "config_error"


def test_simulated_bodies_match(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYMARKET_SIMULATED", "true")
    reset_app()
    token = api.markets(14)["token_ids"][0]
    for path, params in ((f"{API_PREFIX}/health", {}), (f"{API_PREFIX}/markets", {"limit": "2"}),
                         (f"{API_PREFIX}/price/{token}", {}), (f"{API_PREFIX}/prices", {"token_ids": token}),
                         (f"{API_PREFIX}/book/{token}", {}), (f"{API_PREFIX}/markets", {"limit": "-1"})):
        response, body = api.get(path, params)
        assert body["simulated"] is True and response.headers["X-Data-Simulated"] == "true"
        if "ETag" in response.headers:  # its 304 is labelled too (and documented so)
            again, _ = api.get(path, params, headers={"If-None-Match": response.headers["ETag"]}, expect=304)
            assert again.headers["X-Data-Simulated"] == "true"
    served, document = api.get(f"{API_PREFIX}/openapi.json", expect=200)
    assert "simulated" not in document and served.headers["X-Data-Simulated"] == "true"


def test_compressed_answers_match(api: Api) -> None:
    """gzip answers (what httpx and browsers ask for) and their -gzip tags are documented."""
    path = f"{API_PREFIX}/markets"
    packed, _ = api.get(path, {"limit": "100"}, headers={"Accept-Encoding": "gzip"}, expect=200)
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["ETag"].endswith('-gzip"')
    plain, _ = api.get(path, {"limit": "100"}, headers={"Accept-Encoding": "identity"}, expect=200)
    assert "Content-Encoding" not in plain.headers
    for tag in (packed.headers["ETag"], plain.headers["ETag"]):
        api.get(path, {"limit": "100"}, headers={"Accept-Encoding": "gzip", "If-None-Match": tag}, expect=304)
