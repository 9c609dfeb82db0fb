"""Azure OpenAI: the lazily created client, and one chat-completion call with its failures
mapped to :class:`ModelError` kinds.

The model is optional: without ``AZURE_OPENAI_ENDPOINT`` and ``AZURE_OPENAI_API_KEY``,
:func:`get_azure_openai_client` raises :class:`NotConfigured` (a 503 on the sentiment endpoint)
and nothing else in the app is affected; nothing here runs at import time, and ``openai`` is
imported on first use only (it costs a quarter of a second of every cold start otherwise).

Retries are the openai client's own (``AZURE_OPENAI_MAX_RETRIES``: 429, 408/409, 5xx, timeouts
and connection errors, honouring ``Retry-After``); nothing wraps them in a second layer. A
``Retry-After`` longer than ``AZURE_OPENAI_RETRY_AFTER_MAX_S`` is not waited for: the call fails
at once and the caller serves its last analysis instead of holding a request open for minutes.

What is asked (the prompt) and what comes back (the verdict) are ``shared.sentiment``'s.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from shared.core.config import OpenAISettings, Settings, get_settings
from shared.core.errors import ModelError, NotConfigured

if TYPE_CHECKING:  # openai is imported where it is used, on first use
    import httpx
    import openai
    from openai import AzureOpenAI

log = logging.getLogger("polymarket_api.azure_openai")

CONNECT_TIMEOUT_S = 5.0


def _retry_after_s(headers: Mapping[str, str]) -> float | None:
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds):
            return seconds
    return None


def _limit_retry_after(limit_s: float) -> Callable[[httpx.Response], None]:
    """A response hook: a ``Retry-After`` longer than ``limit_s`` tells the client not to retry.

    The openai client otherwise waits up to two minutes per retry, inside a user's request.
    """

    def hook(response: httpx.Response) -> None:
        wait = _retry_after_s(response.headers)
        if wait is not None and wait > limit_s:
            response.headers["x-should-retry"] = "false"

    return hook


def _timeout(settings: OpenAISettings) -> openai.Timeout:
    import openai

    return openai.Timeout(settings.timeout_s, connect=min(CONNECT_TIMEOUT_S, settings.timeout_s))


def check_configured(settings: OpenAISettings) -> OpenAISettings:
    """``settings``, or NotConfigured (a 503 naming the settings to set, never values)."""
    if not settings.configured:
        raise NotConfigured(
            "sentiment analysis is not configured on this deployment "
            "(set AZURE_OPENAI_ENDPOINT and AZURE_OPENAI_API_KEY to enable it)"
        )
    return settings


def require_configured(all_settings: Settings | None = None) -> OpenAISettings:
    """The OpenAI settings, or NotConfigured (a 503 naming the settings to set, never values)."""
    return check_configured((all_settings or get_settings()).openai)


def new_client(all_settings: Settings) -> AzureOpenAI:
    import openai

    settings = require_configured(all_settings)
    assert settings.endpoint is not None  # configured: endpoint and key are set
    timeout = _timeout(settings)
    http_client = openai.DefaultHttpx2Client(
        timeout=timeout,
        event_hooks={"response": [_limit_retry_after(settings.retry_after_max_s)]},
    )
    return openai.AzureOpenAI(
        azure_endpoint=settings.endpoint,
        api_key=settings.api_key,
        api_version=settings.api_version,
        timeout=timeout,
        max_retries=settings.max_retries,
        http_client=http_client,
    )


def get_azure_openai_client() -> AzureOpenAI:
    """The process-wide client (built by ``shared.container``); NotConfigured without endpoint and key."""
    from shared.container import get_container

    return get_container().model


def _model_error(error: openai.OpenAIError) -> ModelError:
    """The client's exceptions as a ModelError with a stable kind; details go to logs only."""
    import openai

    detail = type(error).__name__
    if isinstance(error, openai.APITimeoutError):
        return ModelError("timeout", detail)
    if isinstance(error, openai.APIConnectionError):
        return ModelError("unreachable", detail)
    if isinstance(error, openai.RateLimitError):
        return ModelError("rate_limited", detail, retry_after_s=_retry_after_s(error.response.headers))
    if isinstance(error, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return ModelError("auth", f"{detail} {error.status_code}")
    if isinstance(error, openai.NotFoundError):
        return ModelError("deployment_not_found", f"{detail} {error.status_code}")
    if isinstance(error, openai.APIStatusError):
        kind = "server_error" if error.status_code >= 500 else "rejected"
        return ModelError(kind, f"{detail} {error.status_code} {getattr(error, 'code', None)}")
    if isinstance(error, openai.APIResponseValidationError):
        return ModelError("bad_output", detail)
    return ModelError("error", detail)


def complete(
    client: AzureOpenAI, settings: OpenAISettings, messages: Sequence[Mapping[str, str]],
    response_format: Mapping[str, Any],
) -> bytes:
    """One chat completion on the configured deployment: the raw response body, unparsed (the
    caller validates it rather than trusting the client's models). ModelError for any failure."""
    import openai

    extra: dict[str, Any] = {}
    if settings.reasoning_effort is not None:
        extra["reasoning_effort"] = settings.reasoning_effort
    try:
        # No temperature/top_p/max_tokens: GPT-5 class models reject them. The messages and the
        # format are plain JSON-shaped data, not the client's TypedDicts: no overload matches them.
        raw = client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
            model=settings.deployment,
            messages=messages,
            response_format=response_format,
            max_completion_tokens=settings.max_completion_tokens,
            timeout=_timeout(settings),
            **extra,
        )
        return raw.content
    except openai.OpenAIError as error:
        failure = _model_error(error)
        log.warning("sentiment model call failed: %s (%s)", failure.kind, failure.detail)
        raise failure from None
