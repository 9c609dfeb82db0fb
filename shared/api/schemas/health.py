"""Bodies of /api/health (basic and deep)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from shared.api.schemas.base import Answer, Body, Count, NonNegative, Time, optional


class Health(Answer):
    """Liveness: no I/O."""

    status: Literal["ok"]
    version: str = Field(examples=["1.0.0"])
    time: Time


class Check(Body):
    status: Literal["ok", "error"]
    latency_ms: NonNegative
    error: str = optional("Class of the failure: timeout, network, 5xx, 429, bad_body, 4xx, database_unavailable, "
                          "config_error, ...")


class Checks(Body):
    database: Check
    polymarket_clob: Check
    polymarket_gamma: Check


class UpstreamStats(Body):
    requests: Count
    failures: Count
    last_success_at: Time | None
    last_error_at: Time | None
    last_error_kind: str | None


class Stats(Body):
    clob: UpstreamStats
    gamma: UpstreamStats


class Breaker(Body):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: Count
    retry_in_s: float | None
    last_failure: str | None
    opened_count: Count


class CompactSnapshotCounts(Body):
    """This instance's loads and writes of the compact catalogue snapshot (one read for a new
    instance) since it started."""

    loaded: Count = Field(description="Loads that used the stored snapshot.")
    missing: Count = Field(description="Loads that found none stored (then loaded the rows).")
    stale: Count = Field(description="Loads whose stored snapshot was built from other rows than those stored now.")
    undecodable: Count = Field(description="Loads whose stored snapshot this code could not use (other code wrote "
                                           "it, or it is corrupt); the rows answered.")
    written: Count = Field(description="Snapshots stored (in the background, after a load from the rows).")
    too_large: Count = Field(description="Snapshots not stored: over the size cap.")
    write_failed: Count = Field(description="Snapshots not stored: the write failed (logged).")


class ResolutionLookup(Body):
    """One lookup of the markets that left the active set (Gamma `condition_ids`, `closed=true`)."""

    asked: Count = Field(description="Condition ids looked up.")
    requests: Count = Field(description="Gamma requests (at most 100 condition ids each).")
    stored: Count = Field(description="Closed rows stored (closed time, final prices, UMA statuses).")
    settled: Count = Field(description="Of `stored`: with a winner (outcome prices exactly 1 and 0).")
    not_found: Count = Field(description="Asked, and no closed row came back: kept as the app knows it (closed, "
                                         "not resolved).")
    skipped_rows: Count = Field(description="Rows not stored: invalid, not asked for, not closed, or refused by the "
                                            "database.")
    seconds: NonNegative


class ResolutionTotals(Body):
    runs: Count
    failed: Count
    requests: Count
    stored: Count
    settled: Count
    skipped_rows: Count


class ResolutionStatus(Body):
    """This instance's lookups of what became of the markets that left the active set; each runs
    after a refresh commits, and a failed one is retried at the next refresh."""

    last_run_at: Time | None
    last: ResolutionLookup | None
    last_error: str | None
    failures_in_a_row: Count
    totals: ResolutionTotals


class MarketsStatus(Body):
    loaded: bool
    as_of: Time | None
    age_seconds: NonNegative | None
    markets: Count
    refreshing: bool
    last_error: str | None
    skipped_rows: Count = Field(description="Gamma rows this instance's last refresh did not store: invalid (a value "
                                            "out of its rule), a duplicate id, or refused by the database.")
    duplicate_rows: Count = Field(description="Of `skipped_rows`: rows repeating a condition, Gamma or token id an "
                                              "earlier row had (the first row wins).")
    captures: Count = Field(description="Open markets whose prices this instance's last refresh captured into "
                                        "the price history (`shared.history`).")
    skipped_captures: Count = Field(description="Captures that refresh skipped (a price out of range or not "
                                                "finite, no price, not binary, refused by the database); the "
                                                "markets themselves are stored.")
    unloadable_rows: Count = Field(description="Stored markets the last load could not serve (left out, rewritten "
                                               "from Gamma's next row for them).")
    failures_in_a_row: Count = Field(description="Consecutive failed refreshes (or loads) of this instance.")
    retry_in_s: NonNegative | None = Field(description="Backoff after failures: no refresh (or load) that requests "
                                                       "can start before this many seconds.")
    compact_snapshot: CompactSnapshotCounts
    resolution: ResolutionStatus


class Writer(Body):
    pending: Count
    written: Count
    dropped: Count
    failures: Count
    last_error: str | None


class Rejection(Body):
    kind: str
    token_id: str | None
    reason: str
    at: Time


class Rejected(Body):
    """What Polymarket sent that failed validation and was left out, since the process started."""

    books: Count = Field(description="Books refused (a bad field of the book: only its token is affected).")
    book_levels: Count = Field(description="Book levels left out (price outside [0, 1], bad size...).")
    history_bodies: Count
    history_points: Count = Field(description="History points left out (bad time or price).")
    samples: Count = Field(description="Samples not stored because they could not be served back.")
    last: Rejection | None


class PricesStatus(Body):
    cached_quotes: Count
    cached_books: Count
    cached_histories: Count
    quote_ttl_s: Annotated[int, Field(ge=1)]
    history_writer: Writer
    rejected: Rejected


class EventsStatus(Body):
    """This instance's events catalogue (built on its first events request)."""

    loaded: bool
    events: Count
    left_out: Count = Field(description="Stored events the last build could not serve.")
    last_error: str | None = Field(description="Why the last rebuild failed (the one built before is served).")


class BackfillStatus(Body):
    """This instance's batched upstream history backfill (``backfill_price_history``)."""

    runs: Count
    tokens_asked: Count
    calls: Count
    calls_failed: Count
    points_stored: Count
    tokens_skipped: Count = Field(description="Tokens whose answer was not a list of points.")
    points_skipped: Count = Field(description="Points refused by validation.")
    last_run_at: Time | None
    last_error: str | None = Field(description="Why the last run stopped early (an error code).")
    max_tokens_per_run: Count
    batch: Count = Field(description="Tokens per `/batch-prices-history` call.")


class Datasets(Body):
    markets: MarketsStatus
    events: EventsStatus
    prices: PricesStatus
    backfill: BackfillStatus


class Pool(Body):
    in_use: Count
    max: Annotated[int, Field(ge=1)]
    min: Count


class HealthDeep(Answer):
    """`?deep=true`: every dependency checked."""

    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="`ok`: every dependency answers; `degraded`: the database answers but Polymarket does not "
                    "(stored data is served, marked stale); `unavailable`: the database does not answer (HTTP 503).")
    version: str
    time: Time
    checks: Checks
    upstream_stats: Stats
    circuit_breakers: dict[Literal["clob", "gamma"], Breaker]
    datasets: Datasets
    database_pool: Pool | None
