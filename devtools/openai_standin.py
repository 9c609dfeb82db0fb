"""SIMULATOR: a local stand-in for the Azure OpenAI chat-completions API (development and tests).

This is not Azure OpenAI and not a model. It is an HTTP server on loopback that speaks the
wire protocol the real ``openai`` client uses, so the app's client, timeouts and retries run
unmodified against it, and it answers from a programmable queue:

    standin = OpenAIStandIn(api_key="test-key", deployment="gpt-5").start()
    standin.reply(Reply(status=429, retry_after=1), verdict("bullish", 0.4, 0.7, "..."))
    ... point AZURE_OPENAI_ENDPOINT at standin.endpoint ...
    standin.requests()  # every request: path, api-version, whether the key matched, JSON body
    standin.stop()

What it checks, as Azure does: ``POST /openai/deployments/{deployment}/chat/completions``
only (404 otherwise, ``DeploymentNotFound`` for another deployment), the ``api-version`` query
parameter (400 without), the ``api-key`` header (401 without the right key), and the GPT-5
class parameter rules (400 for ``max_tokens``, for ``temperature``/``top_p`` other than 1, for a
``json_object`` response format whose messages never say "json", for a malformed
``json_schema``). Replies have the ``chat.completion`` shape: ``choices[0].message.content``,
``finish_reason``, ``usage`` (prompt tokens estimated as characters / 4, plus reasoning tokens),
``model``. With the queue empty it answers a canned neutral verdict labelled as simulated.

For the tests of a misbehaving model: a reply's content can carry anything (``verdict(summary=
"a\u0000b")`` sends a NUL, ``Reply(raw=...)`` bytes that are not JSON), ``delay_s`` longer than
the client's timeout is a hang, ``completion`` overrides fields of the completion body (a
``model`` name or ``usage`` counts no real service sends), and ``respond`` computes the reply
from the request: a model that reads the prompt, e.g. one gullible enough to obey instructions
it finds in the market text.

Run on its own (prints the endpoint and key): ``python -m devtools.openai_standin [--port N]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("devtools.openai_standin")

DEFAULT_MODEL = "gpt-5-2025-08-07"
_PATH_PREFIX = "/openai/deployments/"
_PATH_SUFFIX = "/chat/completions"


@dataclass(frozen=True)
class Reply:
    """One programmed answer. ``content`` is the assistant message text; ``status`` other than
    200 sends an error (``body`` overrides Azure's default error body); ``delay_s`` waits before
    answering (client timeouts); ``retry_after`` adds ``retry-after`` (and ``retry-after-ms``)."""

    content: str | None = None
    status: int = 200
    delay_s: float = 0.0
    retry_after: float | None = None
    body: Any = None
    finish_reason: str = "stop"
    refusal: str | None = None
    reasoning_tokens: int = 64
    raw: bytes | None = None  # sent as is (a 200 that is not JSON, a truncated body)
    completion: Mapping[str, Any] | None = None  # fields set over the chat.completion body
    respond: Callable[[RecordedRequest], Reply] | None = None  # the reply, computed from the request


def verdict(sentiment: str = "neutral", score: float = 0.0, confidence: float = 0.5,
            summary: str = "Simulated verdict.", **extra: Any) -> Reply:
    """A reply whose content is a verdict object (any field may be out of range on purpose)."""
    return Reply(json.dumps({"sentiment": sentiment, "score": score, "confidence": confidence,
                             "summary": summary, **extra}))


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    deployment: str | None
    api_version: str | None
    key_ok: bool
    headers: dict[str, str]  # the api-key header's value is never recorded
    body: Any
    received_at: float
    status: int = 0

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages") or []) if isinstance(self.body, dict) else []

    def message(self, role: str) -> str:
        return "\n".join(str(m.get("content")) for m in self.messages if m.get("role") == role)

    @property
    def prompt_text(self) -> str:
        return "\n".join(str(m.get("content")) for m in self.messages)


def _error(status: int, code: str, message: str, param: str | None = None,
           type_: str = "invalid_request_error") -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": code, "message": message, "param": param, "type": type_}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], standin: OpenAIStandIn) -> None:
        self.standin = standin
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close the connection before the (delayed) answer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("openai stand-in: " + format, *args)

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None,
              raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("apim-request-id", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._drain()
        self._send(*_error(404, "404", "Resource not found"))

    def _drain(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_POST(self) -> None:
        raw = self._drain()
        self.server.standin.handle(self, raw)


class OpenAIStandIn:
    """The simulated Azure OpenAI resource: one deployment, one key, a reply queue, a log."""

    def __init__(self, *, api_key: str = "standin-key", deployment: str = "gpt-5",
                 model: str = DEFAULT_MODEL, host: str = "127.0.0.1", port: int = 0) -> None:
        self.api_key = api_key
        self.deployment = deployment
        self.model = model
        self._address = (host, port)
        self._lock = threading.Lock()
        self._queue: deque[Reply] = deque()
        self._log: list[RecordedRequest] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.default: Reply = verdict("neutral", 0.0, 0.3, "Simulated verdict from the local stand-in, "
                                      "not a model: no analysis was made.")

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> Self:
        self._server = _Server(self._address, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    # programming and inspection ----------------------------------------------------------------

    def reply(self, *replies: Reply) -> None:
        """Queue replies; each chat-completions request that passes the checks takes the next."""
        with self._lock:
            self._queue.extend(replies)

    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def count(self) -> int:
        return len(self.requests())

    def clear(self) -> None:
        with self._lock:
            self._queue.clear()
            self._log.clear()

    # the API ----------------------------------------------------------------------------------

    def handle(self, handler: _Handler, raw: bytes) -> None:
        parts = urlsplit(handler.path)
        query = parse_qs(parts.query)
        path = parts.path
        deployment = None
        if path.startswith(_PATH_PREFIX) and path.endswith(_PATH_SUFFIX):
            deployment = path[len(_PATH_PREFIX):-len(_PATH_SUFFIX)] or None
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        headers = {k.lower(): v for k, v in handler.headers.items() if k.lower() not in ("api-key", "authorization")}
        record = RecordedRequest(
            method="POST", path=path, deployment=deployment, api_version=(query.get("api-version") or [None])[0],
            key_ok=handler.headers.get("api-key") == self.api_key, headers=headers, body=body,
            received_at=time.time(),
        )
        status, payload, extra_headers, raw_out, delay = self._answer(record)
        with self._lock:
            self._log.append(_with_status(record, status))
        if delay and self._stopping.wait(delay):
            return
        with contextlib.suppress(OSError):  # the client gave up (timeout) before the answer
            handler._send(status, payload, extra_headers, raw_out)

    def _answer(self, req: RecordedRequest) -> tuple[int, Any, dict[str, str], bytes | None, float]:
        def fail(result: tuple[int, dict[str, Any]]) -> tuple[int, Any, dict[str, str], bytes | None, float]:
            return result[0], result[1], {}, None, 0.0

        if req.deployment is None:
            return fail(_error(404, "404", "Resource not found"))
        if not req.api_version:
            return fail(_error(400, "MissingApiVersionParameter",
                               "The api-version query parameter (?api-version=) is required for all requests."))
        if not req.key_ok:
            return fail(_error(401, "401", "Access denied due to invalid subscription key or wrong API endpoint. "
                               "Make sure to provide a valid key for an active subscription and use a correct "
                               "regional API endpoint for your resource.", type_="access_denied"))
        if req.deployment != self.deployment:
            return fail(_error(404, "DeploymentNotFound",
                               "The API deployment for this resource does not exist. If you created the "
                               "deployment within the last 5 minutes, please wait a moment and try again."))
        problem = _validate(req.body)
        if problem is not None:
            return fail(problem)
        with self._lock:
            reply = self._queue.popleft() if self._queue else self.default
        if reply.respond is not None:
            reply = reply.respond(req)
        headers: dict[str, str] = {}
        if reply.retry_after is not None:
            headers["retry-after"] = str(int(reply.retry_after)) if reply.retry_after == int(reply.retry_after) \
                else str(reply.retry_after)
            headers["retry-after-ms"] = str(int(reply.retry_after * 1000))
        if reply.raw is not None:
            return reply.status, None, headers, reply.raw, reply.delay_s
        if reply.status != 200:
            body = reply.body if reply.body is not None else _default_error(reply.status, reply.retry_after)
            return reply.status, body, headers, None, reply.delay_s
        return 200, self._completion(req, reply), headers, None, reply.delay_s

    def _completion(self, req: RecordedRequest, reply: Reply) -> dict[str, Any]:
        prompt_tokens = max(1, len(req.prompt_text) // 4)
        visible = max(1, len(reply.content or reply.refusal or "") // 4)
        completion_tokens = visible + reply.reasoning_tokens
        filtered = {"filtered": False, "severity": "safe"}
        filters = {name: filtered for name in ("hate", "self_harm", "sexual", "violence")}
        body = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "system_fingerprint": None,
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": filters}],
            "choices": [{
                "index": 0,
                "finish_reason": reply.finish_reason,
                "logprobs": None,
                "message": {"role": "assistant", "content": reply.content, "refusal": reply.refusal,
                            "annotations": []},
                "content_filter_results": filters,
            }],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": reply.reasoning_tokens, "audio_tokens": 0,
                                              "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
            },
        }
        body.update(reply.completion or {})
        return body


def _with_status(record: RecordedRequest, status: int) -> RecordedRequest:
    return RecordedRequest(record.method, record.path, record.deployment, record.api_version, record.key_ok,
                           record.headers, record.body, record.received_at, status)


def _default_error(status: int, retry_after: float | None) -> dict[str, Any]:
    if status == 429:
        wait = int(retry_after) if retry_after is not None else 1
        return {"error": {"code": "429", "message": (
            "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2025-04-01-preview "
            f"have exceeded token rate limit of your current AIServices S0 pricing tier. Please retry after "
            f"{wait} seconds.")}}
    if status >= 500:
        return {"error": {"code": "InternalServerError", "message": "The server had an error while processing "
                          "your request. Sorry about that!"}}
    return _error(status, str(status), "Request failed")[1]


def _validate(body: Any) -> tuple[int, dict[str, Any]] | None:
    """The request rules a GPT-5 class deployment enforces; None when the request is fine."""
    if not isinstance(body, dict):
        return _error(400, "invalid_request_error", "We could not parse the JSON body of your request.")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(
        isinstance(m, dict) and m.get("role") in ("system", "developer", "user", "assistant", "tool")
        for m in messages
    ):
        return _error(400, "invalid_value", "Invalid 'messages': a non-empty list of messages is required.",
                      "messages")
    if "max_tokens" in body:
        return _error(400, "unsupported_parameter", "Unsupported parameter: 'max_tokens' is not supported with "
                      "this model. Use 'max_completion_tokens' instead.", "max_tokens")
    for name in ("temperature", "top_p"):
        if name in body and body[name] not in (None, 1, 1.0):
            return _error(400, "unsupported_value", f"Unsupported value: '{name}' does not support "
                          f"{body[name]} with this model. Only the default (1) value is supported.", name)
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in ("minimal", "low", "medium", "high"):
        return _error(400, "unsupported_value", f"Unsupported value: 'reasoning_effort' does not support "
                      f"{effort!r} with this model.", "reasoning_effort")
    fmt = body.get("response_format")
    if fmt is not None:
        kind = fmt.get("type") if isinstance(fmt, dict) else None
        if kind == "json_object":
            text = " ".join(str(m.get("content")) for m in messages).lower()
            if "json" not in text:
                return _error(400, "invalid_request_error", "'messages' must contain the word 'json' in some "
                              "form, to use 'response_format' of type 'json_object'.", "messages")
        elif kind == "json_schema":
            schema = fmt.get("json_schema")
            if not isinstance(schema, dict) or not schema.get("name") or not isinstance(schema.get("schema"), dict):
                return _error(400, "invalid_value", "Invalid 'response_format.json_schema': a name and a schema "
                              "are required.", "response_format")
        elif kind != "text":
            return _error(400, "invalid_value", "Invalid 'response_format.type'.", "response_format.type")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description="SIMULATED Azure OpenAI chat completions on loopback")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--deployment", default="gpt-5")
    parser.add_argument("--api-key", default="standin-key")
    args = parser.parse_args()
    standin = OpenAIStandIn(api_key=args.api_key, deployment=args.deployment, port=args.port).start()
    print(f"SIMULATED Azure OpenAI (not a model) at {standin.endpoint}")
    print(f"  AZURE_OPENAI_ENDPOINT={standin.endpoint} AZURE_OPENAI_API_KEY={args.api_key} "
          f"GPT5_DEPLOYMENT_NAME={args.deployment}")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()


__all__ = ["OpenAIStandIn", "RecordedRequest", "Reply", "verdict"]
