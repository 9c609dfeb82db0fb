"""Polymarket clients: the CLOB through py-clob-client-v2, Gamma (and CLOB routes the client
lacks) through httpx. Lazy singletons, explicit timeouts, one retry policy.

Every failure leaves here as a typed ``UpstreamError`` (see ``shared.core.errors``); callers never
see ``PolyApiException``, httpx exceptions, or upstream bodies.
"""

from __future__ import annotations

import codecs
import contextlib
import email.utils
import logging
import random
import re
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import httpcore
import httpx
import tenacity

from shared import __version__
from shared.core import deadline
from shared.core.config import PolymarketSettings
from shared.core.errors import (
    RETRY_AFTER_CAP_S,
    UpstreamBadResponse,
    UpstreamCircuitOpen,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamServerError,
    UpstreamTimeout,
    UpstreamUnavailable,
    bounded_retry_after,
)
from shared.core.json_depth import deeper_than
from shared.core.observability import count_upstream_call

if TYPE_CHECKING:  # imported on first use (_clob_library): it costs ~0.45 s at import
    from py_clob_client_v2 import ClobClient
    from py_clob_client_v2.exceptions import PolyApiException

# py_ecc, which py-clob-client-v2 imports for order signing (never done here: reads need no
# key), raises the recursion limit of the whole process to 100,000 when it is imported
# (py_ecc/__init__.py). Deep recursion then overflows the C stack, a segfault, long before any
# RecursionError: the limit goes back to what it was, or to CPython's default when py_ecc was
# imported before this module (by ``shared.prices.service``'s import of py_clob_client_v2.clob_types).
_CPYTHON_RECURSION_LIMIT = 1000
_recursion_limit = _CPYTHON_RECURSION_LIMIT if "py_ecc" in sys.modules else sys.getrecursionlimit()
sys.setrecursionlimit(_recursion_limit)

log = logging.getLogger("polymarket_api.polymarket")
# The client logs every non-200 with its body at ERROR; we log our own typed summary instead.
logging.getLogger("py_clob_client_v2").setLevel(logging.CRITICAL)
# httpx logs every request at INFO: too much for production logs (and Application Insights cost).
logging.getLogger("httpx").setLevel(logging.WARNING)

CLOB = "clob"
GAMMA = "gamma"
POLYGON_CHAIN_ID = 137
T = TypeVar("T")


# --- what happened on the wire ---------------------------------------------------------------


class _Observed(threading.local):
    """Per-thread record of the last transport outcome.

    py-clob-client-v2 turns every transport error into ``PolyApiException("Request exception!")``
    and keeps no response headers, so a timeout and a refused connection look alike and
    ``Retry-After`` is lost. The transport below notes all three before the client sees them.
    """

    error: str | None = None
    cause: str | None = None  # what the network failure was: "connection refused", ...
    retry_after: str | None = None

    def reset(self) -> None:
        self.error = None
        self.cause = None
        self.retry_after = None


_observed = _Observed()


def _network_cause(error: BaseException) -> str:
    """A short, safe description of a network failure (never the exception text: it can name
    hosts and addresses)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, ConnectionResetError):
            return "connection reset"
        if isinstance(current, socket.gaierror):
            return "name resolution failed"
        if isinstance(current, ssl.SSLError):
            return "TLS handshake failed"
        current = current.__cause__ or current.__context__
    if isinstance(error, httpx.RemoteProtocolError):
        return "connection closed by the server"
    if isinstance(error, httpx.ConnectError):
        return "connection failed"
    return "connection lost"


# --- bounded bodies ----------------------------------------------------------------------------

# Real payloads nest at most 7 deep (tests/contract/samples); Python's JSON parser recurses once
# per level, so a body that could nest deeper than this is refused before any parser sees it.
MAX_JSON_DEPTH = 64
_JSON_CONTAINER = re.compile(rb"(?:\xef\xbb\xbf)?[ \t\n\r]*[\[{]")  # what json.loads accepts first


class _BadBody(Exception):
    """A body refused while it was read: too large, badly compressed, or nested too deep.

    Not an httpx error on purpose: py-clob-client-v2 turns those into a bare "Request
    exception!", which would read as a network failure; this one reaches ``ClobApi.call``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _check_json(body: bytes) -> None:
    # json.loads takes UTF-16 and UTF-32 too (a NUL in the first bytes, or their BOM), where the
    # scan below would misread escapes; Polymarket sends UTF-8 only.
    if b"\x00" in body[:4] or body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _BadBody("body is not UTF-8")
    if not _JSON_CONTAINER.match(body):
        return  # not a JSON array or object: the parser stops at once
    if deeper_than(body, MAX_JSON_DEPTH):
        raise _BadBody(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")


@contextlib.contextmanager
def _noting_failures() -> Iterator[None]:
    """Note a timeout or network failure in ``_observed`` before it propagates."""
    try:
        yield
    except httpx.TimeoutException:
        _observed.error = "timeout"
        raise
    except httpx.TransportError as error:
        _observed.error = "network"
        _observed.cause = _network_cause(error)
        raise


class _ObservingTransport(httpx.BaseTransport):
    """Notes the outcome of each request (see ``_Observed``) and bounds what is read: every body,
    as sent and decompressed, ends at ``max_body_bytes`` and is checked for nesting before it
    is handed on (``_BoundedBody``)."""

    def __init__(self, inner: httpx.BaseTransport, max_body_bytes: int) -> None:
        self._inner = inner
        self._max_body_bytes = max_body_bytes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if deadline.remaining(1.0) == 0.0:
            _observed.error = "timeout"
            raise httpx.ConnectTimeout("deadline passed before the request was sent", request=request)
        # The one content coding asked for, decoded in _BoundedBody under the cap: httpx would
        # decode whatever came, all of it, before anything could see its size.
        request.headers["Accept-Encoding"] = "gzip"
        with _noting_failures():
            response = self._inner.handle_request(request)
        _observed.retry_after = response.headers.get("Retry-After")
        try:
            response.stream = _BoundedBody(response, self._max_body_bytes)
        except _BadBody:
            response.close()  # unread: the connection is dropped, not pooled
            raise
        return response

    def close(self) -> None:
        self._inner.close()


class _BoundedBody(httpx.SyncByteStream):
    """A response's body, read whole here (the clients read every body whole anyway) within the
    cap, gzip decoded incrementally with a running cap (a bomb is never inflated past it), then
    checked for nesting; network failures while reading are noted in ``_observed``."""

    def __init__(self, response: httpx.Response, max_bytes: int) -> None:
        inner = response.stream
        assert isinstance(inner, httpx.SyncByteStream), "a sync transport answers with a sync stream"
        self._inner = inner
        self._max_bytes = max_bytes
        declared = response.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise _BadBody(f"body of {declared} bytes, over the {max_bytes}-byte cap")
        codings = [c.strip().lower() for c in response.headers.get("Content-Encoding", "").split(",")]
        codings = [c for c in codings if c not in ("", "identity")]
        self._decoder: Any = None
        self._inflated = 0
        if codings in (["gzip"], ["x-gzip"]):
            self._decoder = zlib.decompressobj(wbits=31)  # gzip framing only
            # Handed on decoded: httpx must not decode it again, and the length was the wire's.
            del response.headers["Content-Encoding"]
            response.headers.pop("Content-Length", None)
        elif codings:
            raise _BadBody(f"unsupported Content-Encoding {','.join(codings)[:40]!r}")

    def __iter__(self) -> Iterator[bytes]:
        with _noting_failures():  # the body is read after handle_request returned
            body = b"".join(self._read())
            _check_json(body)
        yield body

    def _read(self) -> Iterator[bytes]:
        wire = 0
        for chunk in self._inner:
            wire += len(chunk)
            if wire > self._max_bytes:
                raise _BadBody(f"body over the {self._max_bytes}-byte cap")
            if self._decoder is None:
                yield chunk
            else:
                yield from self._inflate(chunk)
        if self._decoder is not None and wire and not self._decoder.eof:
            raise _BadBody("gzip body cut short")

    def _inflate(self, data: bytes) -> Iterator[bytes]:
        decoder = self._decoder
        while data:
            if decoder.eof:
                raise _BadBody("data after the end of the gzip body")
            try:
                # At most one byte past the cap: that byte is enough to know it is over.
                out = decoder.decompress(data, self._max_bytes - self._inflated + 1)
            except zlib.error:
                raise _BadBody("corrupt gzip body") from None
            self._inflated += len(out)
            if self._inflated > self._max_bytes:
                raise _BadBody(f"body over the {self._max_bytes}-byte cap once decompressed")
            yield out
            data = decoder.unconsumed_tail or decoder.unused_data

    def close(self) -> None:
        self._inner.close()


def _bounded(timeout: float | None) -> float | None:
    """A socket operation's timeout, cut to what is left of the current deadline."""
    left = deadline.remaining()
    if left is None:
        return timeout
    if left <= 0:
        raise httpcore.ReadTimeout("deadline passed")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write ends by the deadline of the call using it.

    httpx's timeouts are per socket operation: a server trickling one byte a second never
    trips them. Bounding each operation by the call's absolute deadline bounds the whole
    response, headers and body alike.
    """

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        stream = self._inner.connect_tcp(host, port, _bounded(timeout), local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.connect_unix_socket(path, _bounded(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def _deadline_transport() -> httpx.HTTPTransport:
    transport = httpx.HTTPTransport(retries=0)
    # httpx has no parameter for httpcore's network backend; its pool keeps it here (pinned
    # httpx 0.28; tests/test_polymarket_client.py fails if this stops bounding a trickle).
    pool = transport._pool
    pool._network_backend = _DeadlineBackend(pool._network_backend)
    return transport


def _http_client(settings: PolymarketSettings, base_url: str = "") -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        # HTTP/1.1: a deadline that cuts one request short must not tear down a multiplexed
        # HTTP/2 connection that other requests are using.
        http2=False,
        timeout=httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s),
        limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        transport=_ObservingTransport(_deadline_transport(), settings.max_body_bytes),
        headers={"User-Agent": f"polymarket-api/{__version__}"},
        follow_redirects=False,
    )


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date), at most
    ``RETRY_AFTER_CAP_S``: a number too large (``1e308``, or ``1e999``, which is infinity) or a
    date far ahead is cut to it. None when it says nothing usable: a negative number, NaN, text.
    A date already past is 0."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return bounded_retry_after(seconds)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now if now is not None else time.time()
    return min(max(0.0, when.timestamp() - current), float(RETRY_AFTER_CAP_S))


def _error_for_status(upstream: str, status: int, detail: str, retry_after: str | None,
                      api_error: bool = True) -> UpstreamError:
    """``api_error``: the body is the API's own JSON error object (``{"error": ...}``). A 404
    without one is the router's "404 page not found" (a wrong host or path prefix), not the
    API saying an id does not exist."""
    if status == 429:
        return UpstreamRateLimited(upstream, detail, retry_after_s=parse_retry_after(retry_after))
    if status >= 500:
        return UpstreamServerError(upstream, detail, status_code=status)
    if status == 404 and api_error:
        return UpstreamNotFound(upstream, detail, status_code=status)
    return UpstreamRejected(upstream, detail, status_code=status)


def _is_api_error(body: Any) -> bool:
    return isinstance(body, dict) and "error" in body


def _error_for_transport(upstream: str, kind: str | None, detail: str) -> UpstreamError:
    if kind == "timeout":
        return UpstreamTimeout(upstream, detail)
    return UpstreamUnavailable(upstream, detail, cause=_observed.cause)


# --- health bookkeeping ----------------------------------------------------------------------


@dataclass
class UpstreamStats:
    requests: int = 0
    failures: int = 0
    last_success_at: datetime | None = None
    last_error_at: datetime | None = None
    last_error_kind: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, error: UpstreamError | None, *, about_id: bool = False) -> None:
        """``about_id``: the call asks about one id (a token, a market), so a 404 is a healthy
        upstream answering that the id is unknown. Anywhere else (a ping, a listing) a 404 means
        a wrong host or route, and counts as a failure like any other 4xx."""
        now = datetime.now(UTC)
        with self._lock:
            self.requests += 1
            if error is None or (about_id and isinstance(error, UpstreamNotFound)):
                self.last_success_at = now
            else:
                self.failures += 1
                self.last_error_at = now
                self.last_error_kind = error.kind

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "failures": self.failures,
                "last_success_at": self.last_success_at,
                "last_error_at": self.last_error_at,
                "last_error_kind": self.last_error_kind,
            }


def breaker_for(upstream: str, settings: PolymarketSettings) -> CircuitBreaker:
    return CircuitBreaker(upstream, settings.breaker_failures, settings.breaker_cooldown_s)


# --- circuit breaker ---------------------------------------------------------------------------


class CircuitBreaker:
    """Per upstream: after ``failures`` transient failures in a row, stop calling for
    ``cooldown_s`` (callers fail at once and serve stored data), then let one probe through;
    its success closes the circuit, its failure opens it for another cool-down.
    """

    def __init__(self, upstream: str, failures: int, cooldown_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.upstream = upstream
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._last_failure: str | None = None  # what opened it: kept in every circuit_open error
        self._last_error: UpstreamError | None = None
        self.opened_count = 0

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    def before_call(self) -> None:
        with self._lock:
            state = self._state()
            if state == "closed":
                return
            if state == "half_open" and not self._probing:
                self._probing = True  # this caller is the probe
                return
            retry_in = self._retry_in() if state == "open" else 1.0
            cause = self._last_failure
        raise UpstreamCircuitOpen(self.upstream, "circuit open", cause=cause, retry_after_s=retry_in)

    def failing(self) -> UpstreamError | None:
        """The last failure while the latest attempt failed (the circuit need not be open yet):
        a request with stored data then answers it at once instead of trying again."""
        with self._lock:
            if self._state() == "open":
                return UpstreamCircuitOpen(self.upstream, "circuit open", cause=self._last_failure,
                                           retry_after_s=self._retry_in())
            return self._last_error if self._failures else None

    def _retry_in(self) -> float:
        assert self._opened_at is not None
        return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def record(self, error: UpstreamError | None) -> None:
        with self._lock:
            self._probing = False
            if error is None or not error.transient:
                self._failures = 0
                self._opened_at = None
                return
            self._failures += 1
            if not isinstance(error, UpstreamCircuitOpen):
                self._last_failure = error.summary()
                self._last_error = error
            if self._opened_at is not None or self._failures >= self.threshold:
                if self._opened_at is None or self._clock() - self._opened_at >= self.cooldown_s:
                    self.opened_count += 1
                self._opened_at = self._clock()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            state = self._state()
            return {
                "state": state,
                "consecutive_failures": self._failures,
                "retry_in_s": round(self._retry_in(), 1) if state == "open" else None,
                "last_failure": self._last_failure,
                "opened_count": self.opened_count,
            }


# --- retry policy ----------------------------------------------------------------------------


class RetryPolicy:
    """The one retry layer for upstream calls.

    ``attempts`` tries; waits of ``backoff_s`` x 1, 2, 4... plus up to 25 % jitter; only
    transient failures (network, timeout, 5xx, 429). A 429's ``Retry-After`` is honoured when
    it is no longer than ``retry_after_max_s``; a longer one fails at once, since a request
    should not hang that long. Under ``deadline.fail_fast`` there is one attempt and no wait,
    and no retry starts whose wait would end past the current deadline.
    """

    def __init__(
        self,
        attempts: int,
        backoff_s: float,
        retry_after_max_s: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.retry_after_max_s = retry_after_max_s
        self.sleep = sleep

    def should_retry(self, error: BaseException) -> bool:
        if not isinstance(error, UpstreamError) or not error.transient:
            return False
        if isinstance(error, UpstreamRateLimited) and error.retry_after_s is not None:
            return error.retry_after_s <= self.retry_after_max_s
        return True

    def wait_s(self, attempt: int, error: BaseException | None) -> float:
        base = self.backoff_s * 2 ** (attempt - 1)
        wait = base + random.uniform(0, base * 0.25)
        if isinstance(error, UpstreamRateLimited) and error.retry_after_s is not None:
            wait = max(wait, error.retry_after_s)
        return wait

    def _stop(self, state: tenacity.RetryCallState) -> bool:
        if deadline.is_fail_fast() or state.attempt_number >= self.attempts:
            return True
        return not deadline.allows(state.upcoming_sleep)

    def call(self, fn: Callable[[], T]) -> T:
        retrying = tenacity.Retrying(
            stop=self._stop,
            retry=tenacity.retry_if_exception(self.should_retry),
            wait=lambda state: self.wait_s(
                state.attempt_number, state.outcome.exception() if state.outcome else None
            ),
            sleep=self.sleep,
            reraise=True,
        )
        return retrying(fn)


def retry_policy(settings: PolymarketSettings) -> RetryPolicy:
    return RetryPolicy(settings.retry_attempts, settings.retry_backoff_s, settings.retry_after_max_s)


def guarded_call(stats: UpstreamStats, breaker: CircuitBreaker, retry: RetryPolicy, once: Callable[[], T],
                 response_deadline_s: float | None = None, about_id: bool = False) -> T:
    """The one path of every upstream call: the circuit breaker, one attempt bounded by its
    whole-response deadline, the health bookkeeping, and the retry policy around it all.
    ``about_id``: see ``UpstreamStats.record``."""

    def attempt() -> T:
        try:
            breaker.before_call()
        except UpstreamCircuitOpen as error:
            deadline.attempt_failed(error)
            raise
        try:
            with deadline.within(response_deadline_s):
                result = once()
        except UpstreamError as error:
            stats.record(error, about_id=about_id)
            breaker.record(error)
            deadline.attempt_failed(error)
            raise
        stats.record(None)
        breaker.record(None)
        deadline.attempt_answered()
        return result

    return retry.call(attempt)


class _ClobHttp(Protocol):
    """``py_clob_client_v2.http_helpers.helpers``: the module whose one client sends every request."""

    _http_client: httpx.Client


class _ClobLibrary:
    """py-clob-client-v2, imported when the first CLOB client is built, with the recursion
    limit put back as above."""

    def __init__(self) -> None:
        import py_clob_client_v2
        import py_clob_client_v2.exceptions
        from py_clob_client_v2.http_helpers import helpers

        sys.setrecursionlimit(_recursion_limit)
        self.client_class: type[ClobClient] = py_clob_client_v2.ClobClient
        self.api_exception: type[PolyApiException] = py_clob_client_v2.exceptions.PolyApiException
        self.http: _ClobHttp = helpers


_clob_library_lock = threading.Lock()
_clob_library_loaded: _ClobLibrary | None = None


def _clob_library() -> _ClobLibrary:
    global _clob_library_loaded
    with _clob_library_lock:
        if _clob_library_loaded is None:
            _clob_library_loaded = _ClobLibrary()
        return _clob_library_loaded


# --- plain JSON over httpx (Gamma, and CLOB routes py-clob-client lacks) ----------------------


class JsonApi:
    def __init__(self, upstream: str, base_url: str, settings: PolymarketSettings, retry: RetryPolicy,
                 breaker: CircuitBreaker, stats: UpstreamStats | None = None) -> None:
        self.upstream = upstream
        self.base_url = base_url
        self.retry = retry
        self.breaker = breaker
        self.stats = stats or UpstreamStats()  # what deep health reports of this upstream
        self._health_timeout = settings.health_timeout_s
        self._response_deadline_s = settings.response_deadline_s
        self._http = _http_client(settings, base_url)

    def _once(self, method: str, path: str, params: Any, body: Any, timeout: float | None) -> Any:
        _observed.reset()
        count_upstream_call()
        extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        try:
            response = self._http.request(method, path, params=params, json=body, **extra)
        except _BadBody as error:
            raise UpstreamBadResponse(self.upstream, f"{error.reason} on {path}") from None
        except httpx.HTTPError as error:
            raise _error_for_transport(self.upstream, _observed.error, type(error).__name__) from None
        if response.status_code != 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise _error_for_status(
                self.upstream, response.status_code, response.text[:200], response.headers.get("Retry-After"),
                _is_api_error(body),
            )
        try:
            return response.json()
        except ValueError:
            raise UpstreamBadResponse(self.upstream, f"non-JSON body on {path}") from None

    def request(self, method: str, path: str, *, params: Any = None, body: Any = None,
                about_id: bool = False) -> Any:
        return guarded_call(
            self.stats, self.breaker, self.retry, lambda: self._once(method, path, params, body, None),
            self._response_deadline_s, about_id,
        )

    def get(self, path: str, params: Any = None, *, about_id: bool = False) -> Any:
        return self.request("GET", path, params=params, about_id=about_id)

    def post(self, path: str, body: Any, *, about_id: bool = False) -> Any:
        return self.request("POST", path, body=body, about_id=about_id)

    def ping(self, path: str) -> None:
        """One attempt with the short health timeout; raises UpstreamError. Counted in the
        upstream's stats, where any failure (a 404 included) is a failure."""
        try:
            with deadline.within(self._health_timeout):
                self._once("GET", path, None, None, self._health_timeout)
        except UpstreamError as error:
            self.stats.record(error)
            raise
        self.stats.record(None)

    def close(self) -> None:
        self._http.close()


class GammaApi(JsonApi):
    def __init__(self, settings: PolymarketSettings) -> None:
        super().__init__(GAMMA, settings.gamma_host, settings, retry_policy(settings), breaker_for(GAMMA, settings))

    def ping(self, path: str = "/markets?limit=1") -> None:
        super().ping(path)


class ClobApi:
    """The CLOB through py-clob-client-v2, with our timeouts, retries and error types."""

    def __init__(self, settings: PolymarketSettings) -> None:
        self.retry = retry_policy(settings)
        # The client sends every request through one module-level httpx client created without
        # a timeout; swapping in ours gives it explicit timeouts and the observing transport.
        self._http = _http_client(settings)
        self._library = library = _clob_library()
        library.http._http_client = self._http
        # Reads need no key: never pass POLYMARKET_PRIVATE_KEY to a read-only client.
        self.client = library.client_class(settings.clob_host, chain_id=POLYGON_CHAIN_ID)
        self.breaker = breaker_for(CLOB, settings)
        self.stats = UpstreamStats()  # shared with ``direct``: one upstream, one record
        self.direct = JsonApi(CLOB, settings.clob_host, settings, self.retry, self.breaker, self.stats)
        self._response_deadline_s = settings.response_deadline_s

    def call(self, method: Callable[..., Any], *args: Any, expect: type | tuple[type, ...] = dict,
             about_id: bool = False) -> Any:
        """Call a ClobClient method with retries; ``expect`` is the JSON type a 200 must carry;
        ``about_id``: the call asks about ids, so a 404 is an answer (see ``UpstreamStats.record``)."""
        name = getattr(method, "__name__", "call")
        poly_api_exception = self._library.api_exception

        def once() -> Any:
            _observed.reset()
            count_upstream_call()
            try:
                result = method(*args)
            except _BadBody as error:
                raise UpstreamBadResponse(CLOB, f"{name}: {error.reason}") from None
            except poly_api_exception as error:
                if error.status_code is None:
                    raise _error_for_transport(CLOB, _observed.error, name) from None
                raise _error_for_status(
                    CLOB, error.status_code, f"{name}: {str(error.error_msg)[:200]}", _observed.retry_after,
                    _is_api_error(error.error_msg),
                ) from None
            if not isinstance(result, expect):
                # A 200 that is not JSON comes back from the client as plain text.
                raise UpstreamBadResponse(CLOB, f"{name}: unexpected {type(result).__name__} body")
            return result

        return guarded_call(self.stats, self.breaker, self.retry, once, self._response_deadline_s, about_id)

    def ping(self) -> None:
        self.direct.ping("/ok")

    def close(self) -> None:
        self.direct.close()
        self._http.close()


def get_clob() -> ClobApi:
    from shared.container import get_container

    return get_container().clob


def get_gamma() -> GammaApi:
    from shared.container import get_container

    return get_container().gamma
