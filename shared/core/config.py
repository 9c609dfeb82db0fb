"""All settings, read from the environment lazily and validated in one place.

Nothing here runs at import time: Azure indexes the functions by importing ``function_app``,
and a setting that fails to parse must not make it index zero functions. Each section is
parsed the first time it is used, so a bad OpenAI setting never breaks the markets API.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from urllib.parse import urlsplit

from shared.core.errors import ConfigError

KEY_VAULT_PREFIX = "@Microsoft.KeyVault("
PGBOUNCER_PORT = 6432
# host.json's functionTimeout is 5 min: a refresh must end (and roll back) well within it.
MAX_REFRESH_DEADLINE_S = 280
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SSLMODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
OPENAI_API_VERSION = "2025-04-01-preview"
# The largest body read from Polymarket, as sent and once decompressed (UPSTREAM_MAX_BODY_BYTES).
# Sized from the largest pages the app asks for: a Gamma keyset page of 100 markets with
# include_tag, ~0.7 MB (the rows in tests/contract/samples are 4.7-7 KB; the stand-in's page is
# 0.53 MB); POST /books for the batch cap of 100 tokens, ~0.3 MB at the 86 levels of the live
# sample book (3.1 KB compact, as the CLOB sends), 3.6 MB in theory (100 books of 999 levels, a
# 0.001 tick); prices-history at interval=max, ~0.13 MB (4,464 points: 31 days at fidelity 10;
# 0.12 MB from the stand-in). 8 MiB is twice the theoretical /books and over ten times any real page.
DEFAULT_MAX_BODY_BYTES = 8 * 2**20
# "omit": send no reasoning_effort (a deployment of a model that is not a reasoning model).
_REASONING_EFFORTS = {"omit", "none", "minimal", "low", "medium", "high"}


def _none_if_omitted(value: str) -> str | None:
    return None if value == "omit" else value


def parse_cors_origins(value: str | None) -> tuple[str, ...]:
    """``CORS_ALLOWED_ORIGINS``: comma-separated origins, ``*``, or ``none`` (or nothing) for no CORS.

    Origins are compared case-insensitively and without a trailing slash, as the local host does
    (``devtools.funchost.CorsPolicy``), so the two always agree on what is allowed.
    """
    origins = tuple(o.strip().rstrip("/").lower() for o in (value or "").split(",") if o.strip())
    if origins == ("none",):
        return ()
    for origin in origins:
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:  # e.g. an unclosed IPv6 bracket
            netloc = ""
        if origin != "*" and not netloc:
            raise ConfigError("CORS_ALLOWED_ORIGINS", "must list origins like https://app.example, or * or none")
    return origins


def read_simulated(environ: Mapping[str, str] | None = None) -> bool:
    """``POLYMARKET_SIMULATED`` alone: the local host labels its own answers with it, as the app does."""
    return _Env(os.environ if environ is None else environ).bool("POLYMARKET_SIMULATED", False)


class _Env:
    """Typed readers over an environment mapping. Every error names the variable and what it
    expects, never the value: a misplaced secret (a password pasted into the wrong setting) must
    not reach a log line or an HTTP 500 body."""
    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if value.startswith(KEY_VAULT_PREFIX):
            # App Service leaves the literal reference in place when it cannot resolve it.
            raise ConfigError(
                name,
                "is an unresolved Key Vault reference; check the Function App's managed "
                "identity and its access to the vault",
            )
        return value

    def str(self, name: str, default: str | None = None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    # From here on ``str`` in an annotation would name the method above (class scope), so the
    # type is spelled ``builtins.str``.
    def secret(self, name: builtins.str) -> builtins.str | None:
        # Same as str(), but kept apart so secrets are easy to audit; values never appear in errors.
        return self.raw(name)

    def int(self, name: builtins.str, default: int, *, minimum: int, maximum: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = int(value)
        except ValueError:
            raise ConfigError(name, f"must be an integer between {minimum} and {maximum}") from None
        if not minimum <= parsed <= maximum:
            raise ConfigError(name, f"must be between {minimum} and {maximum}")
        return parsed

    def float(self, name: builtins.str, default: float, *, minimum: float, maximum: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            parsed = float(value)
        except ValueError:
            raise ConfigError(name, f"must be a number between {minimum:g} and {maximum:g}") from None
        if not minimum <= parsed <= maximum:
            raise ConfigError(name, f"must be between {minimum:g} and {maximum:g}")
        return parsed

    def bool(self, name: builtins.str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        lowered = value.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(name, "must be true or false")

    def url(self, name: builtins.str, default: builtins.str) -> builtins.str:
        value = self.str(name, default) or default
        try:
            parts = urlsplit(value)
        except ValueError:  # e.g. an unclosed IPv6 bracket
            raise ConfigError(name, "must be an http(s) URL") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(name, "must be an http(s) URL")
        return value.rstrip("/")

    def choice(self, name: builtins.str, default: builtins.str, choices: set[builtins.str]) -> builtins.str:
        value = (self.str(name, default) or default).lower()
        if value not in choices:
            raise ConfigError(name, f"must be one of {', '.join(sorted(choices))}")
        return value


@dataclass(frozen=True)
class DatabaseSettings:
    host: str | None
    port: int
    database: str
    user: str
    password: str | None
    sslmode: str
    pool_min: int
    pool_max: int
    pool_timeout_s: float
    connect_timeout_s: int
    # Set per transaction (SET LOCAL), so they hold through PgBouncer's transaction pooling.
    statement_timeout_s: float = 10.0
    lock_timeout_s: float = 5.0
    idle_in_transaction_timeout_s: float = 10.0

    @property
    def configured(self) -> bool:
        return self.host is not None

    @property
    def behind_pgbouncer(self) -> bool:
        # Transaction pooling: nothing session-scoped may be relied on (see database.py).
        return self.port == PGBOUNCER_PORT

    def __repr__(self) -> str:  # keep the password out of logs and tracebacks
        return (
            f"DatabaseSettings(host={self.host!r}, port={self.port}, database={self.database!r}, "
            f"user={self.user!r}, sslmode={self.sslmode!r}, pool={self.pool_min}..{self.pool_max})"
        )


@dataclass(frozen=True)
class PolymarketSettings:
    clob_host: str
    gamma_host: str
    private_key: str | None
    connect_timeout_s: float
    read_timeout_s: float
    retry_attempts: int
    retry_backoff_s: float
    retry_after_max_s: float
    health_timeout_s: float
    simulated: bool
    breaker_failures: int = 5
    breaker_cooldown_s: float = 30.0
    response_deadline_s: float = 10.0
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES

    def __repr__(self) -> str:
        return (
            f"PolymarketSettings(clob_host={self.clob_host!r}, gamma_host={self.gamma_host!r}, "
            f"private_key={'set' if self.private_key else 'unset'}, simulated={self.simulated})"
        )


@dataclass(frozen=True)
class OpenAISettings:
    endpoint: str | None
    api_key: str | None
    deployment: str
    api_version: str
    timeout_s: float
    max_retries: int = 2
    retry_after_max_s: float = 10.0
    max_completion_tokens: int = 4000
    reasoning_effort: str | None = "low"  # None: not sent (deployments of non-reasoning models)

    @property
    def configured(self) -> bool:
        return bool(self.endpoint and self.api_key)

    def __repr__(self) -> str:
        return (
            f"OpenAISettings(endpoint={self.endpoint!r}, api_key={'set' if self.api_key else 'unset'}, "
            f"deployment={self.deployment!r}, api_version={self.api_version!r}, "
            f"timeout_s={self.timeout_s}, max_retries={self.max_retries})"
        )


@dataclass(frozen=True)
class CacheSettings:
    markets_ttl_s: int
    markets_refresh_min_interval_s: int
    price_ttl_s: int
    book_ttl_s: int
    sentiment_ttl_s: int
    sentiment_refresh_min_interval_s: int
    price_history_retention_days: int
    price_cache_max_tokens: int
    price_refresh_min_interval_s: int
    price_history_ttl_s: int
    stale_if_error_wait_s: float = 1.0
    markets_refresh_deadline_s: float = 240.0


@dataclass(frozen=True)
class AppSettings:
    log_level: str
    cors_origins: tuple[str, ...]
    request_deadline_s: float = 5.0


class Settings:
    """One object for every setting; each section is parsed on first access."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._env = _Env(os.environ if environ is None else environ)

    @cached_property
    def database(self) -> DatabaseSettings:
        env = self._env
        pool_min = env.int("POSTGRES_POOL_MIN", 5, minimum=0, maximum=100)
        pool_max = env.int("POSTGRES_POOL_MAX", 20, minimum=1, maximum=500)
        if pool_max < pool_min:
            raise ConfigError("POSTGRES_POOL_MAX", "must be at least POSTGRES_POOL_MIN")
        return DatabaseSettings(
            host=env.str("POSTGRES_HOST"),
            port=env.int("POSTGRES_PORT", 5432, minimum=1, maximum=65535),
            database=env.str("POSTGRES_DATABASE", "postgres") or "postgres",
            user=env.str("POSTGRES_USER", "postgres") or "postgres",
            password=env.secret("POSTGRES_PASSWORD"),
            sslmode=env.choice("POSTGRES_SSLMODE", "prefer", _SSLMODES),
            pool_min=pool_min,
            pool_max=pool_max,
            pool_timeout_s=env.float("POSTGRES_POOL_TIMEOUT_S", 5.0, minimum=0.1, maximum=60),
            connect_timeout_s=env.int("POSTGRES_CONNECT_TIMEOUT_S", 5, minimum=1, maximum=60),
            # A statement running longer is cancelled by the server (503 database_unavailable);
            # a server that cannot even answer is cut off by the client 2 s later (database.py).
            statement_timeout_s=env.float("POSTGRES_STATEMENT_TIMEOUT_S", 10.0, minimum=0.1, maximum=600),
            lock_timeout_s=env.float("POSTGRES_LOCK_TIMEOUT_S", 5.0, minimum=0.1, maximum=600),
            # A process that stalls inside a transaction cannot keep its locks longer than this.
            idle_in_transaction_timeout_s=env.float(
                "POSTGRES_IDLE_IN_TRANSACTION_TIMEOUT_S", 10.0, minimum=1, maximum=3600
            ),
        )

    @cached_property
    def polymarket(self) -> PolymarketSettings:
        env = self._env
        return PolymarketSettings(
            clob_host=env.url("POLYMARKET_HOST", "https://clob.polymarket.com"),
            gamma_host=env.url("POLYMARKET_GAMMA_HOST", "https://gamma-api.polymarket.com"),
            private_key=env.secret("POLYMARKET_PRIVATE_KEY"),
            connect_timeout_s=env.float("UPSTREAM_CONNECT_TIMEOUT_S", 3.0, minimum=0.1, maximum=30),
            read_timeout_s=env.float("UPSTREAM_READ_TIMEOUT_S", 5.0, minimum=0.1, maximum=60),
            retry_attempts=env.int("UPSTREAM_RETRY_ATTEMPTS", 3, minimum=1, maximum=10),
            retry_backoff_s=env.float("UPSTREAM_RETRY_BACKOFF_S", 1.0, minimum=0.0, maximum=30),
            retry_after_max_s=env.float("UPSTREAM_RETRY_AFTER_MAX_S", 10.0, minimum=0.0, maximum=120),
            health_timeout_s=env.float("HEALTH_CHECK_TIMEOUT_S", 2.0, minimum=0.1, maximum=30),
            breaker_failures=env.int("UPSTREAM_BREAKER_FAILURES", 5, minimum=1, maximum=1000),
            breaker_cooldown_s=env.float("UPSTREAM_BREAKER_COOLDOWN_S", 30.0, minimum=0.1, maximum=3600),
            # The whole response, not one socket read: a trickling server cannot hold a call.
            response_deadline_s=env.float("UPSTREAM_RESPONSE_DEADLINE_S", 10.0, minimum=0.1, maximum=300),
            # Compressed and decompressed alike: a body over it is a bad body, never read whole.
            max_body_bytes=env.int("UPSTREAM_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES, minimum=2**16,
                                   maximum=2**28),
            simulated=env.bool("POLYMARKET_SIMULATED", False),
        )

    @cached_property
    def openai(self) -> OpenAISettings:
        env = self._env
        endpoint = env.str("AZURE_OPENAI_ENDPOINT")
        if endpoint is not None:
            endpoint = env.url("AZURE_OPENAI_ENDPOINT", endpoint)
        return OpenAISettings(
            endpoint=endpoint,
            api_key=env.secret("AZURE_OPENAI_API_KEY"),
            deployment=env.str("GPT5_DEPLOYMENT_NAME", "gpt-5") or "gpt-5",
            # GPT-5 class (reasoning) models need 2025-04-01-preview or later on chat completions.
            api_version=env.str("AZURE_OPENAI_API_VERSION", OPENAI_API_VERSION) or OPENAI_API_VERSION,
            timeout_s=env.float("AZURE_OPENAI_TIMEOUT_S", 30.0, minimum=1, maximum=300),
            # The openai client's own retries (429, 5xx, timeouts, connection errors); nothing else retries.
            max_retries=env.int("AZURE_OPENAI_MAX_RETRIES", 2, minimum=0, maximum=5),
            retry_after_max_s=env.float("AZURE_OPENAI_RETRY_AFTER_MAX_S", 10.0, minimum=0, maximum=120),
            max_completion_tokens=env.int(
                "AZURE_OPENAI_MAX_COMPLETION_TOKENS", 4000, minimum=200, maximum=100_000
            ),
            reasoning_effort=_none_if_omitted(
                env.choice("AZURE_OPENAI_REASONING_EFFORT", "low", _REASONING_EFFORTS)
            ),
        )

    @cached_property
    def cache(self) -> CacheSettings:
        env = self._env
        return CacheSettings(
            markets_ttl_s=env.int("MARKETS_CACHE_TTL_S", 300, minimum=1, maximum=86400),
            markets_refresh_min_interval_s=env.int(
                "MARKETS_REFRESH_MIN_INTERVAL_S", 30, minimum=0, maximum=3600
            ),
            price_ttl_s=env.int("PRICE_CACHE_TTL_S", 5, minimum=1, maximum=3600),
            book_ttl_s=env.int("BOOK_CACHE_TTL_S", 2, minimum=1, maximum=3600),
            sentiment_ttl_s=env.int("SENTIMENT_TTL_S", 3600, minimum=1, maximum=7 * 86400),
            sentiment_refresh_min_interval_s=env.int(
                "SENTIMENT_REFRESH_MIN_INTERVAL_S", 300, minimum=0, maximum=86400
            ),
            price_history_retention_days=env.int(
                "PRICE_HISTORY_RETENTION_DAYS", 90, minimum=1, maximum=3650
            ),
            # Bounds the in-process quote, book and token caches: arbitrary ids cannot grow memory.
            price_cache_max_tokens=env.int("PRICE_CACHE_MAX_TOKENS", 10_000, minimum=1, maximum=1_000_000),
            price_refresh_min_interval_s=env.int(
                "PRICE_REFRESH_MIN_INTERVAL_S", 5, minimum=0, maximum=3600
            ),
            price_history_ttl_s=env.int("PRICE_HISTORY_CACHE_TTL_S", 60, minimum=1, maximum=86400),
            # With stored data to answer from, the longest a request waits on Polymarket (one
            # attempt, no retries) before answering stale.
            stale_if_error_wait_s=env.float("STALE_IF_ERROR_WAIT_S", 1.0, minimum=0.1, maximum=30),
            # The longest one catalogue refresh may hold its transaction (and the refresh lock):
            # a full 50,000-market crawl takes about 45 s. Below host.json's 5 min functionTimeout,
            # with room for the rollback, so the timer's refresh ends by itself.
            markets_refresh_deadline_s=env.float(
                "MARKETS_REFRESH_DEADLINE_S", 240.0, minimum=1, maximum=MAX_REFRESH_DEADLINE_S
            ),
        )

    @cached_property
    def app(self) -> AppSettings:
        level = self._env.choice("LOG_LEVEL", "info", {"debug", "info", "warning", "error"})
        origins = parse_cors_origins(self._env.str("CORS_ALLOWED_ORIGINS"))
        deadline_s = self._env.float("REQUEST_DEADLINE_S", 5.0, minimum=0.5, maximum=120)
        return AppSettings(log_level=level.upper(), cors_origins=origins, request_deadline_s=deadline_s)

    def validate(self) -> None:
        """Parse every section now (start-up checks and tests); raises ConfigError."""
        for section in (self.database, self.polymarket, self.openai, self.cache, self.app):
            _ = section


# Settings that triggers reference as %NAME%: Azure needs them set, so deploys and the local
# host fill in these defaults when they are missing.
TRIGGER_SETTING_DEFAULTS = {
    "MARKETS_REFRESH_SCHEDULE": "0 */5 * * * *",
    # Hourly, off the markets refresh's minutes.
    "PRICE_HISTORY_PRUNE_SCHEDULE": "0 17 * * * *",
    # Hourly too, apart from the prune: packs the hour's captures (shared.history.downsample).
    "PRICE_HISTORY_COMPACT_SCHEDULE": "0 41 * * * *",
}


def get_settings() -> Settings:
    """The process's settings, held by the composition root (``shared.container``)."""
    from shared.container import get_container

    return get_container().settings
