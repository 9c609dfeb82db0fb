"""A real browser as the frontend: headless Chromium (Debian's ``chromium``) runs a page served from
another origin whose JavaScript fetches the markets list, a market and a price from the API behind
the local host, reads ``ETag`` (visible only if exposed), revalidates (a 304 by hand, and the
browser's own revalidation with ``cache: "no-cache"``), and writes what it saw into the page. The
test drives Chromium over the DevTools protocol (``websocket-client``), which also reports what
went over the wire (``Content-Encoding``, encoded sizes). A page from an origin that is not allowed
must be refused by the browser.

Chromium is installed with apt-get when it is missing and this runs as root (CI runs as root on a
fresh Debian machine; ``.ci/run`` installs it up front too); the test is skipped, saying why, only
where it cannot be installed. Nothing is downloaded from anywhere else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.markets.service import get_markets_service
from tests.conftest import REPORT_LINES, ROOT, Upstream, reset_app, reset_services

CHROMIUM = Path("/usr/bin/chromium")
PAGE_TIMEOUT_S = 60.0

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>frontend</title></head>
<body><pre id="results">running</pre>
<script>
const api = new URLSearchParams(location.search).get("api");
const show = (results) => {
  window.frontendResults = results;  // not window.results: that names the <pre id="results">
  document.getElementById("results").textContent = JSON.stringify(results);
};
const seen = (response) => ({
  status: response.status,
  etag: response.headers.get("ETag"),
  encoding: response.headers.get("Content-Encoding"),
  simulated: response.headers.get("X-Data-Simulated"),
  cacheControl: response.headers.get("Cache-Control"),  // CORS-safelisted: always readable
  vary: response.headers.get("Vary"),  // not exposed: must read as null
});
async function run() {
  const results = {origin: location.origin};
  const list = await fetch(`${api}/api/markets?limit=500`);
  const page = await list.json();
  results.list = {...seen(list), count: page.markets.length, total: page.total};
  const first = page.markets[0];
  const market = await fetch(`${api}/api/markets/${first.condition_id}`);
  results.market = {...seen(market), id: (await market.json()).market.condition_id, expected: first.condition_id};
  const token = first.outcomes.find((o) => o.token_id).token_id;
  const price = await fetch(`${api}/api/price/${token}?history=false`);
  results.price = {...seen(price), token: (await price.json()).token.token_id, expected: token};
  // Revalidation by hand: with an If-None-Match of its own, the 304 reaches JavaScript.
  const mine = await fetch(`${api}/api/markets?limit=500`, {headers: {"If-None-Match": results.list.etag}});
  results.revalidated = {...seen(mine), body: await mine.text()};
  const stale = await fetch(`${api}/api/markets?limit=500`, {headers: {"If-None-Match": '"0000"'}});
  results.changed = {...seen(stale), count: (await stale.json()).markets.length};
  // Revalidation by the browser's HTTP cache: it asks with the ETag it stored and serves its copy.
  const cached = await fetch(`${api}/api/markets?limit=500`, {cache: "no-cache"});
  results.noCache = {...seen(cached), count: (await cached.json()).markets.length};
  // Events, the resolver and tags: what a frontend built around events and links calls.
  const events = await fetch(`${api}/api/events?limit=5`);
  const eventPage = await events.json();
  results.events = {...seen(events), count: eventPage.events.length, id: eventPage.events[0].id};
  const again = await fetch(`${api}/api/events?limit=5`, {headers: {"If-None-Match": results.events.etag}});
  results.eventsRevalidated = {...seen(again), body: await again.text()};
  const event = await fetch(`${api}/api/events/${eventPage.events[0].slug}`);
  results.event = {...seen(event), id: (await event.json()).event.id};
  const link = `https://polymarket.com/event/${eventPage.events[0].slug}`;
  const resolved = await fetch(`${api}/api/resolve?q=${encodeURIComponent(link)}`);
  const answer = await resolved.json();
  results.resolved = {...seen(resolved), kind: answer.kind, event: answer.event && answer.event.id};
  const foreign = await fetch(`${api}/api/resolve?q=${encodeURIComponent("https://evil.example/event/x")}`);
  results.foreign = {...seen(foreign), error: (await foreign.json()).error};
  const tags = await fetch(`${api}/api/tags`);
  results.tags = {...seen(tags), count: (await tags.json()).tags.length};
  return results;
}
async function refused() {
  try {
    const response = await fetch(`${api}/api/markets?limit=5`);
    return {refused: false, status: response.status};
  } catch (error) {
    return {refused: true, error: String(error)};
  }
}
(location.pathname === "/refused" ? refused() : run()).then(show, (error) => show({error: String(error)}));
</script></body></html>
"""


# --- Chromium ------------------------------------------------------------------------------------


def _installed() -> str | None:
    found = shutil.which("chromium")
    return found or (str(CHROMIUM) if CHROMIUM.exists() else None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed with apt-get when missing (root only); skips, saying why, if it cannot be."""
    found = _installed()
    if found:
        return found
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed, and installing it (apt-get install chromium) needs root")
    if shutil.which("apt-get") is None:
        pytest.skip("chromium is not installed, and there is no apt-get to install it with")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600",
               "chromium"]
    attempts = [install, ["apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=600"], install]
    result: subprocess.CompletedProcess[str] | None = None
    for step in attempts:  # the package lists first when a plain install fails (a fresh machine has none)
        result = subprocess.run(step, env=env, capture_output=True, text=True, timeout=1500, check=False,
                                stdin=subprocess.DEVNULL)
        if step is install and result.returncode == 0:
            break
    found = _installed()
    if not found:
        detail = (result.stderr or result.stdout).strip().splitlines()[-3:] if result else []
        pytest.skip(f"chromium could not be installed with apt-get: {' / '.join(detail) or 'no output'}")
    return found


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevTools:
    """The DevTools protocol over the page target's websocket: commands, and the events between them."""

    def __init__(self, url: str) -> None:
        import websocket

        self._ws = websocket.create_connection(url, timeout=PAGE_TIMEOUT_S, suppress_origin=True)
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        ident = self._next
        self._ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self._ws.recv())
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def results(self, url: str) -> dict[str, Any]:
        """Open ``url`` and wait for its script to publish ``window.frontendResults``."""
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self.evaluate("window.frontendResults ? JSON.stringify(window.frontendResults) : null")
            if text:
                return json.loads(text)
            time.sleep(0.1)
        dom = self.evaluate("document.documentElement.outerHTML")
        raise AssertionError(f"{url}: no results within {PAGE_TIMEOUT_S:.0f} s; the page: {str(dom)[:2000]}")

    def close(self) -> None:
        self._ws.close()


@contextmanager
def browser(executable: str) -> Iterator[DevTools]:
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--disable-default-apps", "--disable-dev-shm-usage",
            "--metrics-recording-only", "--password-store=basic", "--remote-debugging-port=0",
            f"--user-data-dir={profile}", "about:blank"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    devtools: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                error = process.stderr.read().decode(errors="replace")[-2000:] if process.stderr else ""
                raise AssertionError(f"chromium did not start (exit {process.poll()}): {error}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", trust_env=False, timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        devtools = DevTools(page["webSocketDebuggerUrl"])
        for domain in ("Page", "Runtime", "Network"):
            devtools.call(f"{domain}.enable")
        yield devtools
    finally:
        if devtools is not None:
            devtools.close()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)  # chromium and its renderer, GPU and utility processes
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        if process.stderr:
            process.stderr.close()
        shutil.rmtree(profile, ignore_errors=True)


# --- the frontend's origin -------------------------------------------------------------------------


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextmanager
def page_server(ports: list[int]) -> Iterator[int]:
    """The page on the first of ``ports`` that is free (0: any), on loopback."""
    server = None
    for port in ports:
        try:
            server = ThreadingHTTPServer(("127.0.0.1", port), _Page)
            break
        except OSError:
            continue
    assert server is not None, f"none of {ports} is free"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --- the test --------------------------------------------------------------------------------------


def _wire(devtools: DevTools, url_part: str) -> list[dict[str, Any]]:
    """What went over the network for requests whose URL contains ``url_part``: status, headers, size."""
    responses: dict[str, dict[str, Any]] = {}
    for event in devtools.events:
        params = event.get("params", {})
        if event.get("method") == "Network.responseReceived" and url_part in params["response"]["url"]:
            response = params["response"]
            responses[params["requestId"]] = {
                "status": response["status"], "url": response["url"],
                "headers": {k.lower(): v for k, v in response["headers"].items()},
            }
        elif event.get("method") == "Network.loadingFinished" and params["requestId"] in responses:
            responses[params["requestId"]]["encoded_bytes"] = params["encodedDataLength"]
    return list(responses.values())


def test_a_browser_on_another_origin_uses_the_api(
    chromium: str, database_env: dict[str, str], upstream_env: Upstream, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import function_app
    from devtools.funchost import LOCAL_CORS_ORIGINS, CorsPolicy, LocalHost, LocalSettings, resolve_cors
    from shared.api.cors import EXPOSED_HEADERS

    monkeypatch.setenv("UPSTREAM_RETRY_BACKOFF_S", "0")
    monkeypatch.setenv("POLYMARKET_SIMULATED", "true")  # as `make demo`: the label must reach JavaScript too
    reset_app()
    reset_services()
    get_markets_service().refresh(min_age_s=0)
    defaults = [int(origin.rsplit(":", 1)[1]) for origin in LOCAL_CORS_ORIGINS if "127.0.0.1" in origin]
    try:
        # The page on a default origin (http://127.0.0.1:5173 or :3000) when one is free, so the
        # host's defaults are what lets it in; otherwise on any port, allowed by the one setting.
        with page_server([*defaults, 0]) as page_port, page_server([0]) as other_port, browser(chromium) as devtools:
            origin = f"http://127.0.0.1:{page_port}"
            if origin not in LOCAL_CORS_ORIGINS:
                monkeypatch.setenv("CORS_ALLOWED_ORIGINS", origin)
            spec, source = resolve_cors(None, os.environ, LocalSettings())  # as `make run` chooses
            assert source == ("the local defaults" if origin in LOCAL_CORS_ORIGINS else "CORS_ALLOWED_ORIGINS")
            monkeypatch.setenv("CORS_ALLOWED_ORIGINS", spec)  # and hands the app, as main() does
            reset_app()
            policy = CorsPolicy.parse(spec, expose_headers=EXPOSED_HEADERS)
            with caplog.at_level(logging.INFO, logger="devtools.funchost"), \
                    LocalHost(function_app.app, port=0, host_json=ROOT / "host.json", cors=policy,
                              simulated=True) as host:
                api = host.url  # http://127.0.0.1:<another port>: another origin than the page's
                assert api != origin
                version = devtools.call("Browser.getVersion")["product"]
                results = devtools.results(f"{origin}/?api={api}")
                refused = devtools.results(f"http://127.0.0.1:{other_port}/refused?api={api}")
                identity_bytes = len(httpx.get(f"{api}/api/markets", params={"limit": "500"}, trust_env=False,
                                               headers={"Accept-Encoding": "identity"}, timeout=30).content)
    finally:
        reset_services()

    assert "error" not in results, results
    assert results["origin"] == origin
    listed, market, price = results["list"], results["market"], results["price"]
    assert listed["status"] == 200 and listed["count"] == listed["total"] == len(upstream_env.open_markets())
    # ETag, Content-Encoding and X-Data-Simulated are readable from JavaScript because they are
    # exposed; Vary is not.
    assert listed["etag"] and listed["etag"].endswith('-gzip"'), listed
    assert listed["encoding"] == "gzip" and listed["simulated"] == "true"
    assert listed["cacheControl"].startswith("public, max-age=")
    assert listed["vary"] is None
    assert market["status"] == 200 and market["etag"] and market["id"] == market["expected"]
    assert price["status"] == 200 and price["etag"] and price["token"] == price["expected"]
    assert results["revalidated"]["status"] == 304 and results["revalidated"]["body"] == ""
    assert results["revalidated"]["etag"] == listed["etag"] and results["revalidated"]["simulated"] == "true"
    assert results["changed"]["status"] == 200 and results["changed"]["count"] == listed["count"]
    assert results["noCache"]["status"] == 200 and results["noCache"]["count"] == listed["count"]
    assert results["noCache"]["etag"] == listed["etag"]

    events = results["events"]
    assert events["status"] == 200 and events["count"] == 5 and events["etag"] and events["simulated"] == "true"
    assert results["eventsRevalidated"]["status"] == 304 and results["eventsRevalidated"]["body"] == ""
    assert results["event"]["status"] == 200 and results["event"]["id"] == events["id"] and results["event"]["etag"]
    assert results["resolved"]["status"] == 200 and results["resolved"]["kind"] == "event_url"
    assert results["resolved"]["event"] == events["id"]
    # An error reaches JavaScript too (CORS headers on a 400), with the parameter it names.
    assert results["foreign"]["status"] == 400 and results["foreign"]["error"]["parameter"] == "q"
    assert results["tags"]["status"] == 200 and results["tags"]["count"] > 0 and results["tags"]["etag"]

    # What Chromium's network stack saw: the page gzip-compressed, and 304s for both revalidations.
    wire = _wire(devtools, "/api/markets?limit=500")
    first = wire[0]
    assert first["status"] == 200 and first["headers"]["content-encoding"] == "gzip"
    assert first["headers"]["access-control-allow-origin"] == origin
    assert "origin" in first["headers"]["vary"].lower() and "accept-encoding" in first["headers"]["vary"].lower()
    assert first["encoded_bytes"] < identity_bytes / 2, (first, identity_bytes)
    served_304 = [r for r in caplog.records if r.getMessage().startswith("GET /api/markets 304")]
    assert len(served_304) >= 2, [r.getMessage() for r in caplog.records if "/api/markets" in r.getMessage()]
    preflights = [r for r in caplog.records if r.getMessage().startswith("OPTIONS /api/markets 204")]
    assert preflights, "the If-None-Match request was not preflighted"

    # The browser refuses the API to a page from an origin that is not allowed.
    assert refused["refused"] is True and "TypeError" in refused["error"], refused
    REPORT_LINES.append(
        f"browser: {version}, page {origin} ({source}) -> API {api}: a {listed['count']}-market page took "
        f"{first['encoded_bytes']:,} bytes on the wire gzip ({identity_bytes:,} identity); ETag read from "
        f"JavaScript, 304s served {len(served_304)}, preflights {len(preflights)}")


def _wait_for_text(devtools: DevTools, text: str) -> bool:
    deadline = time.monotonic() + PAGE_TIMEOUT_S
    probe = f"document.body ? document.body.innerText.includes({json.dumps(text)}) : false"
    while time.monotonic() < deadline:
        if devtools.evaluate(probe):
            return True
        time.sleep(0.1)
    return False


def test_swagger_ui_renders_the_document_from_the_app_alone(chromium: str) -> None:
    """/api/docs in a real browser: Swagger UI, served by the app, loads /api/openapi.json and lists
    the operations; every request the page makes goes to the app on 127.0.0.1 (no CDN, no validator)."""
    import function_app
    from devtools.funchost import LocalHost

    reset_app()
    with LocalHost(function_app.app, port=0, host_json=ROOT / "host.json") as host, browser(chromium) as devtools:
        devtools.call("Page.navigate", url=f"{host.url}/api/docs")
        rendered = _wait_for_text(devtools, "/api/markets/{condition_id}/sentiment")
        dom = devtools.evaluate("document.body.innerText") or ""
        # A last look for requests still on their way (Swagger UI loads nothing after rendering).
        time.sleep(0.5)
        devtools.evaluate("1")
    assert rendered, f"Swagger UI did not render the operations: {str(dom)[:1500]}"
    for text in ("/api/markets", "/api/price/{token_id}", "/api/health", "polymarket-api"):
        assert text in dom, text
    requested = [e["params"]["request"]["url"] for e in devtools.events
                 if e.get("method") == "Network.requestWillBeSent"]
    assert any(url.endswith("/api/openapi.json") for url in requested), requested
    outside = [url for url in requested
               if not url.startswith(("http://127.0.0.1:", "data:", "blob:", "about:"))]
    assert not outside, f"the docs page reached beyond the app: {outside}"
    seen = {r["url"].rsplit("/", 1)[-1]: r for r in _wire(devtools, "/api/docs")}
    assert seen["docs"]["headers"]["content-type"].startswith("text/html")
    assert seen["swagger-ui-bundle.js"]["headers"]["content-type"].startswith("text/javascript")
    assert seen["swagger-ui.css"]["headers"]["content-type"].startswith("text/css")
    for response in seen.values():
        assert response["status"] == 200 and response["headers"]["cache-control"].startswith("public, max-age=")
    REPORT_LINES.append(f"swagger ui: /api/docs rendered {len(requested)} requests, all to 127.0.0.1")
