"""Typed failures. Use cases raise these; ``shared.api.endpoint`` maps them to HTTP in one place.

Messages here are shown to API clients, so they never carry exception text, DSNs, keys or
upstream bodies.
"""

from __future__ import annotations

import math


class AppError(Exception):
    """Base of every failure the API layer knows how to answer."""

    status = 500
    code = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class ConfigError(AppError):
    status = 500
    code = "config_error"

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"setting {variable} {problem}")
        self.variable = variable


class BadRequest(AppError):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, parameter: str | None = None) -> None:
        super().__init__(message)
        self.parameter = parameter


class NotFound(AppError):
    status = 404
    code = "not_found"


class ServiceUnavailable(AppError):
    status = 503
    code = "unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"


class DatabaseTimeout(DatabaseUnavailable):
    """The database did not finish in time: the server cancelled a statement or a lock wait past
    its limit, or it did not answer at all and the client gave up on it. The same documented 503
    (``database_unavailable``) as any other database failure."""


class NotConfigured(ServiceUnavailable):
    """An optional feature whose settings are not set (e.g. Azure OpenAI for sentiment)."""

    code = "not_configured"


class ModelError(AppError):
    """The language model gave no usable answer: failed, timed out, or sent invalid output.

    ``kind`` is a stable class name (timeout, rate_limited, bad_output, ...) for clients, logs
    and stored state; ``detail`` is for server logs only and is never sent to clients.
    """

    status = 502
    code = "model_error"

    def __init__(self, kind: str, detail: str = "", *, retry_after_s: float | None = None) -> None:
        self.kind = kind
        self.detail = detail
        super().__init__(f"the sentiment model gave no usable answer ({kind})")
        if retry_after_s is not None:
            self.headers.update(retry_after_header(retry_after_s))


# --- Polymarket (upstream) failures -------------------------------------------------------


# A 503 caused by Polymarket with no better hint (no Retry-After of its own, no open circuit).
DEFAULT_RETRY_AFTER_S = 5
# The longest wait a Retry-After may ask for, whoever sends it: an hour. A longer one from
# upstream (``1e308``, ``1e999``, a date in 9999) is cut to this, never passed on as it came.
RETRY_AFTER_CAP_S = 3600


def bounded_retry_after(seconds: float | None) -> float | None:
    """A wait in seconds within [0, RETRY_AFTER_CAP_S] (infinity included: it is cut to the cap);
    None for no usable wait: None, NaN or negative."""
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return None
    return min(seconds, float(RETRY_AFTER_CAP_S))


def retry_after_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds, from 1 to RETRY_AFTER_CAP_S (NaN or negative: the default)."""
    bounded = bounded_retry_after(seconds)
    return {"Retry-After": str(max(1, math.ceil(DEFAULT_RETRY_AFTER_S if bounded is None else bounded)))}


class UpstreamError(AppError):
    """Polymarket did not give a usable answer. ``kind`` is a stable class name for health/logs;
    ``summary()`` adds what is known of the cause, for stale reasons and messages."""

    status = 502
    code = "upstream_error"
    kind = "error"
    transient = False

    def __init__(self, upstream: str, detail: str = "", *, status_code: int | None = None) -> None:
        self.upstream = upstream
        self.detail = detail  # for server logs only, never sent to clients
        self.status_code = status_code
        super().__init__(f"Polymarket {upstream} {self.describe()}")

    def describe(self) -> str:
        return "failed"

    def summary(self) -> str:
        """``kind``, or ``kind: cause`` (e.g. ``network: connection refused``); safe to show."""
        return self.kind

    def retry_after(self) -> dict[str, str]:
        """The ``Retry-After`` for a 503 that passes this failure on."""
        return dict(self.headers) if "Retry-After" in self.headers else retry_after_header(DEFAULT_RETRY_AFTER_S)


class UpstreamUnavailable(UpstreamError):
    """Network failure: refused, reset, DNS."""

    status = 503
    code = "upstream_unavailable"
    kind = "network"
    transient = True

    def __init__(self, upstream: str, detail: str = "", *, cause: str | None = None) -> None:
        self.cause = cause  # a short, safe description ("connection refused"), never exception text
        super().__init__(upstream, detail)

    def describe(self) -> str:
        return "is unreachable"

    def summary(self) -> str:
        return f"{self.kind}: {self.cause}" if self.cause else self.kind


class UpstreamCircuitOpen(UpstreamUnavailable):
    """Not sent: the upstream failed repeatedly and is being left alone for a cool-down.

    ``cause`` is the failure that opened it, so the reason survives the circuit opening;
    ``Retry-After`` is what is left of the cool-down."""

    code = "upstream_unavailable"
    kind = "circuit_open"
    transient = False  # retrying would only wait out the cool-down inside a request

    def __init__(self, upstream: str, detail: str = "", *, cause: str | None = None,
                 retry_after_s: float = 1.0) -> None:
        super().__init__(upstream, detail, cause=cause)
        self.headers.update(retry_after_header(retry_after_s))

    def describe(self) -> str:
        return "is failing; calls are paused for a short cool-down"

    def summary(self) -> str:
        return f"{self.kind} after {self.cause}" if self.cause else self.kind


class UpstreamTimeout(UpstreamUnavailable):
    status = 504
    code = "upstream_timeout"
    kind = "timeout"

    def describe(self) -> str:
        return "timed out"


class UpstreamServerError(UpstreamError):
    code = "upstream_error"
    kind = "5xx"
    transient = True

    def describe(self) -> str:
        return f"answered with a server error ({self.status_code})" if self.status_code else "failed"

    def summary(self) -> str:
        return f"{self.kind}: {self.status_code}" if self.status_code else self.kind


class UpstreamRateLimited(UpstreamError):
    status = 503
    code = "upstream_rate_limited"
    kind = "429"
    transient = True

    def __init__(self, upstream: str, detail: str = "", *, retry_after_s: float | None = None) -> None:
        super().__init__(upstream, detail, status_code=429)
        self.retry_after_s = bounded_retry_after(retry_after_s)
        if self.retry_after_s is not None:
            self.headers.update(retry_after_header(self.retry_after_s))

    def describe(self) -> str:
        return "is rate limiting us"

    def summary(self) -> str:
        wait = self.headers.get("Retry-After")
        return f"{self.kind}: retry after {wait} s" if wait else self.kind


class UpstreamBadResponse(UpstreamError):
    """A 200 whose body is not what the contract says (HTML, truncated JSON, wrong shape)."""

    kind = "bad_body"

    def describe(self) -> str:
        return "sent an unreadable response"


class UpstreamNotFound(UpstreamError):
    """Upstream says the thing does not exist (404 with its JSON error body). Use cases decide
    what that means. Its class is ``4xx`` like every other 4xx (health, stale reasons)."""

    status = 404
    code = "not_found"
    kind = "4xx"

    def describe(self) -> str:
        return "does not know this id"


class UpstreamRejected(UpstreamError):
    """Any other 4xx: our request was wrong, or went to the wrong place (a 404 that is not the
    API's JSON error: a wrong host or path prefix). Never retried."""

    kind = "4xx"

    def describe(self) -> str:
        return f"rejected the request ({self.status_code})"
