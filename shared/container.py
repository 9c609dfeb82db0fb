"""The composition root: the one place that builds settings, the database pool, the upstream
clients and the services, and wires them together by constructor.

Everything is built on first use (importing this module does no I/O and imports no client
library), once per process, thread-safe. Tests and the local host forget it all with
:func:`reset_container` (or one part with ``get_container().reset("prices")``: "a new instance"
that keeps the rest); health asks the container what exists instead of reading module globals.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar, cast

if TYPE_CHECKING:  # the real imports happen in the builders, on first use
    from openai import AzureOpenAI

    from shared.core.config import Settings
    from shared.db.database import Database
    from shared.events.service import EventsService
    from shared.markets.lookup import Lookup
    from shared.markets.service import MarketsService
    from shared.markets.tags import Tags
    from shared.prices.backfill import Backfill
    from shared.prices.candles import CandleService
    from shared.prices.service import PricesService
    from shared.sentiment.service import SentimentService
    from shared.upstream.polymarket import ClobApi, GammaApi

T = TypeVar("T")

DATABASE_RECONNECT_BACKOFF_S = 2.0  # an unreachable server is not asked again on every request


class Container:
    # Built parts close in the reverse of this order (services before what they use).
    ORDER = ("settings", "database", "clob", "gamma", "model", "markets", "events", "lookup", "tags", "prices",
             "candles", "sentiment", "backfill")

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {}
        self._database_failed_at = 0.0

    def _part(self, name: str, build: Callable[[], T]) -> T:
        part = self._parts.get(name)
        if part is None:
            with self._lock:
                part = self._parts.get(name)
                if part is None:
                    part = build()
                    self._parts[name] = part
        return cast(T, part)

    def peek(self, name: str) -> Any | None:
        """The part if it has been built, without building it (health, shutdown)."""
        return self._parts.get(name)

    # --- the parts -----------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        from shared.core.config import Settings

        return self._part("settings", Settings)

    @property
    def database(self) -> Database:
        from shared.core.errors import DatabaseUnavailable, ServiceUnavailable
        from shared.db.database import Database

        def build() -> Database:
            if time.monotonic() - self._database_failed_at < DATABASE_RECONNECT_BACKOFF_S:
                raise DatabaseUnavailable("database is unreachable")
            try:
                return Database(self.settings.database)
            except ServiceUnavailable:
                self._database_failed_at = time.monotonic()
                raise

        return self._part("database", build)

    @property
    def clob(self) -> ClobApi:
        from shared.upstream.polymarket import ClobApi

        return self._part("clob", lambda: ClobApi(self.settings.polymarket))

    @property
    def gamma(self) -> GammaApi:
        from shared.upstream.polymarket import GammaApi

        return self._part("gamma", lambda: GammaApi(self.settings.polymarket))

    @property
    def model(self) -> AzureOpenAI:
        """The Azure OpenAI client; NotConfigured (a 503) without endpoint and key."""
        from shared.upstream.azure_openai import new_client, require_configured

        require_configured(self.settings)  # also when a client exists: settings may have changed
        return self._part("model", lambda: new_client(self.settings))

    @property
    def markets(self) -> MarketsService:
        from shared.markets.service import MarketsService

        # The pool is asked for on each use: a database down at start is answered, not fatal here.
        return self._part(
            "markets", lambda: MarketsService(self.settings.cache, lambda: self.database, lambda: self.gamma))

    @property
    def events(self) -> EventsService:
        from shared.events.service import EventsService

        return self._part("events", lambda: EventsService(self.settings.cache, lambda: self.database,
                                                          lambda: self.lookup, lambda: self.markets))

    @property
    def lookup(self) -> Lookup:
        """Any id -> stored markets, fetched from Gamma (and stored) when only Gamma has them."""
        from shared.markets.lookup import Lookup

        return self._part("lookup", lambda: Lookup(self.settings.cache, lambda: self.database, lambda: self.gamma))

    @property
    def tags(self) -> Tags:
        from shared.markets.tags import Tags

        return self._part("tags", lambda: Tags(lambda: self.markets))

    @property
    def prices(self) -> PricesService:
        from shared.prices.service import PricesService

        # Providers, not parts: the pool may be unreachable now, and is rebuilt after a failure.
        return self._part("prices", lambda: PricesService(self.settings.cache, lambda: self.database,
                                                          lambda: self.clob))

    @property
    def candles(self) -> CandleService:
        from shared.prices.candles import CandleService

        return self._part("candles", lambda: CandleService(self.settings.cache, lambda: self.database,
                                                           lambda: self.prices))

    @property
    def backfill(self) -> Backfill:
        """Upstream price history for tokens nobody asked about (a timer's job, off the request path)."""
        from shared.prices.backfill import Backfill

        return self._part("backfill", lambda: Backfill(lambda: self.database, lambda: self.clob))

    @property
    def sentiment(self) -> SentimentService:
        from shared.sentiment.service import SentimentService

        def build() -> SentimentService:
            settings = self.settings
            return SentimentService(
                cache=settings.cache,
                model_settings=settings.openai,
                database=lambda: self.database,
                markets=lambda: self.markets,
                prices=lambda: self.prices,
                model=lambda: self.model,
            )

        return self._part("sentiment", build)

    # --- lifetime ------------------------------------------------------------------------

    def reset(self, *names: str) -> None:
        """Close and forget the named parts (all of them when none is named); the next use
        builds them again from the current environment."""
        with self._lock:
            chosen = [n for n in reversed(self.ORDER) if not names or n in names]
            parts = [(n, self._parts.pop(n)) for n in chosen if n in self._parts]
            if not names or "database" in names:
                self._database_failed_at = 0.0
            if not names:
                from shared.core.cache import clear_derived

                clear_derived()
        for _, part in parts:
            close = getattr(part, "close", None)
            if callable(close):
                close()


_container = Container()


def get_container() -> Container:
    return _container


def reset_container() -> None:
    """Forget everything built (tests, the local host on a settings change)."""
    _container.reset()
