"""Versioned schema migrations, applied in order by ``database.migrate``.

Never edit a migration that has shipped; add a new one. Ids are kept apart on purpose:
a market is keyed by its condition id (0x + 64 hex), each outcome by its token id (decimal,
up to 78 digits); the CHECK constraints make mixing them up an error, not a silent miss.
"""

from __future__ import annotations

from dataclasses import dataclass

# Arbitrary constant: the key every instance locks before migrating.
MIGRATION_LOCK_KEY = 7_336_104_211


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "markets, outcome tokens, price samples, dataset state",
        """
        CREATE TABLE markets (
            condition_id         text PRIMARY KEY CHECK (condition_id ~ '^0x[0-9a-f]{64}$'),
            gamma_id             text UNIQUE,
            slug                 text,
            question             text NOT NULL,
            description          text,
            category             text,
            tags                 text[] NOT NULL DEFAULT '{}',
            event_id             text,
            event_slug           text,
            event_title          text,
            end_date             timestamptz,
            closed               boolean NOT NULL DEFAULT false,
            accepting_orders     boolean,
            enable_order_book    boolean,
            neg_risk             boolean,
            volume               numeric,
            volume_24h           numeric,
            liquidity            numeric,
            best_bid             numeric,
            best_ask             numeric,
            last_trade_price     numeric,
            spread               numeric,
            one_day_price_change numeric,
            tick_size            numeric,
            -- Whether the last catalogue refresh still saw it in the active set.
            in_active_set        boolean NOT NULL DEFAULT true,
            -- Hash of the upstream fields, so an unchanged market is not rewritten.
            content_hash         text NOT NULL,
            first_seen_at        timestamptz NOT NULL DEFAULT now(),
            updated_at           timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX markets_active_volume_idx ON markets (in_active_set, volume DESC);
        CREATE INDEX markets_slug_idx ON markets (slug);

        -- Markets without an order book have outcomes but no token ids.
        CREATE TABLE outcome_tokens (
            condition_id  text NOT NULL REFERENCES markets (condition_id) ON DELETE CASCADE,
            outcome_index smallint NOT NULL CHECK (outcome_index >= 0),
            token_id      text UNIQUE CHECK (token_id ~ '^[0-9]{1,78}$'),
            outcome       text NOT NULL,
            price         numeric,
            PRIMARY KEY (condition_id, outcome_index)
        );

        -- No foreign key to outcome_tokens: a sample is kept even for a token the
        -- markets table has never seen, and survives the market being closed.
        CREATE TABLE price_samples (
            token_id         text NOT NULL CHECK (token_id ~ '^[0-9]{1,78}$'),
            ts               timestamptz NOT NULL,
            price            numeric NOT NULL,
            midpoint         numeric,
            best_bid         numeric,
            best_ask         numeric,
            spread           numeric,
            last_trade_price numeric,
            source           text NOT NULL CHECK (source IN ('quote', 'upstream_history')),
            PRIMARY KEY (token_id, ts)
        );
        CREATE INDEX price_samples_ts_idx ON price_samples (ts);

        -- Freshness of shared datasets (the markets catalogue), visible to every instance.
        CREATE TABLE dataset_state (
            name              text PRIMARY KEY,
            refreshed_at      timestamptz,
            last_attempt_at   timestamptz,
            last_error        text,
            last_error_at     timestamptz,
            refresh_holder    text,
            refresh_until     timestamptz
        );
        """,
    ),
    Migration(
        2,
        "market sentiment analyses and per-market analysis state",
        """
        -- Every analysis is kept (history); the newest within SENTIMENT_TTL_S is the cache.
        -- No foreign key to markets: analyses outlive catalogue changes, like price samples.
        CREATE TABLE market_sentiment (
            id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            condition_id      text NOT NULL CHECK (condition_id ~ '^0x[0-9a-f]{64}$'),
            created_at        timestamptz NOT NULL DEFAULT now(),
            sentiment         text NOT NULL CHECK (sentiment IN ('bullish', 'bearish', 'neutral')),
            score             double precision NOT NULL CHECK (score BETWEEN -1 AND 1),
            confidence        double precision NOT NULL CHECK (confidence BETWEEN 0 AND 1),
            summary           text NOT NULL,
            model             text NOT NULL,
            deployment        text NOT NULL,
            prompt_version    text NOT NULL,
            outcome           text,
            token_id          text CHECK (token_id ~ '^[0-9]{1,78}$'),
            display_price     numeric,
            price_as_of       timestamptz,
            price_source      text NOT NULL CHECK (price_source IN ('quote', 'catalogue', 'none')),
            prompt_tokens     integer,
            completion_tokens integer,
            total_tokens      integer,
            latency_ms        integer,
            inputs_note       text
        );
        CREATE INDEX market_sentiment_market_time_idx ON market_sentiment (condition_id, created_at DESC);

        -- Shared by every instance: one analysis in flight per market (a lease, so a crashed
        -- holder's claim expires), the refresh throttle, and the last failure (for backoff).
        CREATE TABLE sentiment_state (
            condition_id    text PRIMARY KEY CHECK (condition_id ~ '^0x[0-9a-f]{64}$'),
            last_attempt_at timestamptz,
            last_error      text,
            last_error_at   timestamptz,
            lease_holder    text,
            lease_until     timestamptz
        );
        """,
    ),
    Migration(
        3,
        "sentiment consistency: the price move a verdict was checked against, and its flags",
        """
        -- A verdict that contradicts the prices it was given is kept, flagged (see
        -- shared.upstream.azure_openai.consistency_flags); analyses from before this have no flags.
        ALTER TABLE market_sentiment
            ADD COLUMN flags text[] NOT NULL DEFAULT '{}',
            ADD COLUMN price_change double precision CHECK (price_change BETWEEN -1 AND 1),
            ADD COLUMN price_change_window text CHECK (price_change_window IN ('1w', '1d'));
        """,
    ),
    Migration(
        4,
        "a compact copy of the in-memory catalogue, for new instances",
        """
        -- One row: what an instance's catalogue snapshot holds, encoded by
        -- shared.markets.compact, tagged with the fingerprint of the rows it was built from
        -- (shared.markets.store.read_stored). A new instance loads it in one read when
        -- the fingerprint still matches, and from the markets rows otherwise.
        CREATE TABLE market_snapshot (
            id          smallint PRIMARY KEY CHECK (id = 1),
            fingerprint text NOT NULL,
            built_at    timestamptz NOT NULL DEFAULT now(),
            payload     bytea NOT NULL
        );
        """,
    ),
    Migration(
        5,
        "events, and what the market lifecycle needs: candidates, images, closing and resolution",
        """
        ALTER TABLE markets
            ADD COLUMN group_item_title      text,
            ADD COLUMN neg_risk_other        boolean,
            ADD COLUMN image                 text,
            ADD COLUMN icon                  text,
            ADD COLUMN closed_time           timestamptz,
            ADD COLUMN uma_statuses          text[] NOT NULL DEFAULT '{}',
            -- Upstream's casing, one per entry of tags (slugs).
            ADD COLUMN tag_labels            text[] NOT NULL DEFAULT '{}',
            -- When Gamma was last asked about this market after it left the open set.
            ADD COLUMN resolution_checked_at timestamptz;
        CREATE INDEX markets_event_idx ON markets (event_id);
        CREATE INDEX markets_event_slug_idx ON markets (event_slug);  -- links and slugs resolve by it
        CREATE INDEX markets_unchecked_idx ON markets (updated_at) WHERE NOT in_active_set;

        -- An event as its markets' rows carry it (Gamma's own aggregates: numbers on events).
        CREATE TABLE events (
            event_id      text PRIMARY KEY CHECK (event_id ~ '^[0-9]{1,20}$'),
            slug          text,
            title         text,
            description   text,
            image         text,
            icon          text,
            start_date    timestamptz,
            end_date      timestamptz,
            volume        numeric,
            volume_24h    numeric,
            liquidity     numeric,
            open_interest numeric,
            competitive   numeric,
            neg_risk      boolean,
            closed        boolean NOT NULL DEFAULT false,
            tags          text[] NOT NULL DEFAULT '{}',
            tag_labels    text[] NOT NULL DEFAULT '{}',
            content_hash  text NOT NULL,
            first_seen_at timestamptz NOT NULL DEFAULT now(),
            updated_at    timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX events_slug_idx ON events (slug);
        """,
    ),
    Migration(
        6,
        "price history captured by every catalogue refresh, packed and downsampled (shared.history)",
        """
        -- One series per market: its first outcome (a binary market's second is the complement).
        -- The last values written, so a refresh stores only what changed; fillfactor leaves
        -- room for those updates in place (no index covers them).
        CREATE TABLE history_series (
            series_id     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            condition_id  text NOT NULL UNIQUE CHECK (condition_id ~ '^0x[0-9a-f]{64}$'),
            token_0       text CHECK (token_0 ~ '^[0-9]{1,78}$'),
            token_1       text CHECK (token_1 ~ '^[0-9]{1,78}$'),
            first_at      timestamptz,
            last_at       timestamptz,
            last_price    smallint,
            last_bid      smallint,
            last_ask      smallint,
            last_trade    smallint,
            last_volume   bigint,
            settled_at    timestamptz
        ) WITH (fillfactor = 70);
        CREATE INDEX history_series_token_0_idx ON history_series (token_0);
        CREATE INDEX history_series_token_1_idx ON history_series (token_1);

        -- Recent captures, one row per market whose values changed (prices in ticks of
        -- 1/10,000, -1 unknown; cumulative volume in whole USDC); packed into chunks within the hour.
        CREATE TABLE history_raw (
            series_id integer NOT NULL,
            ts        timestamptz NOT NULL,
            price     smallint NOT NULL CHECK (price BETWEEN 0 AND 10000),
            bid       smallint NOT NULL CHECK (bid BETWEEN -1 AND 10000),
            ask       smallint NOT NULL CHECK (ask BETWEEN -1 AND 10000),
            last      smallint NOT NULL CHECK (last BETWEEN -1 AND 10000),
            volume    bigint NOT NULL CHECK (volume >= -1)
        );
        CREATE INDEX history_raw_series_ts_idx ON history_raw (series_id, ts);

        -- Packed points (shared.history.points): one market, one period (5 min, 1 h, 1 d), the
        -- days from start_day (days since 1970-01-01). Already compressed: kept in the row.
        CREATE TABLE history_chunks (
            series_id integer NOT NULL,
            period_s  integer NOT NULL CHECK (period_s IN (300, 3600, 86400)),
            start_day integer NOT NULL,
            points    bytea NOT NULL,
            PRIMARY KEY (series_id, period_s, start_day)
        );
        ALTER TABLE history_chunks ALTER COLUMN points SET STORAGE MAIN;

        CREATE TABLE history_state (
            id              smallint PRIMARY KEY CHECK (id = 1),
            last_capture_at timestamptz NOT NULL
        );
        """,
    ),
    Migration(
        7,
        "which tokens the price history backfill asked upstream about (shared.prices.backfill)",
        """
        -- points NULL: claimed by a run that has not recorded its answer yet.
        CREATE TABLE price_backfill (
            token_id  text PRIMARY KEY CHECK (token_id ~ '^[0-9]{1,78}$'),
            asked_at  timestamptz NOT NULL DEFAULT now(),
            points    integer
        );
        """,
    ),
)
