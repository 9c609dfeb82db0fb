"""What the markets store says of a token (its market and outcome, and its final price once the
market is settled), and what a token upstream has no book for is: a settled market's (1 or 0), a
closed market's (its last known price) or an unknown one, remembered as unknown for the quote
TTL so it costs no further upstream call."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.core.cache import TTLCache
from shared.core.display import PRICE_RULE_LAST_KNOWN
from shared.core.errors import (
    DEFAULT_RETRY_AFTER_S,
    AppError,
    NotFound,
    ServiceUnavailable,
    retry_after_header,
)
from shared.db.database import Database
from shared.prices import store
from shared.prices.entries import CATALOGUE, RESOLVED, UNKNOWN, UNVERIFIED, Entry, closed_quote, resolved_quote
from shared.prices.quotes import Quote, quote_from_sample

log = logging.getLogger("polymarket_api.prices")

TOKEN_INFO_TTL_S = 300.0
TOKEN_LOOKUP_BACKOFF_S = 10.0


@dataclass(frozen=True)
class TokenInfo:
    condition_id: str | None = None
    outcome: str | None = None
    outcome_index: int | None = None
    known: bool = False  # in the markets store
    settled_price: float | None = None  # its market settled: 1.0 (won) or 0.0
    resolved_at: datetime | None = None


def token_info(row: Mapping[str, Any]) -> TokenInfo:
    settled = row.get("settled") and row["price"] is not None
    return TokenInfo(row["condition_id"], row["outcome"], row["outcome_index"], True,
                     float(row["price"]) if settled else None, row.get("resolved_at") if settled else None)


def resolved_entry(token: str, info: TokenInfo) -> Entry:
    assert info.settled_price is not None
    return Entry(resolved_quote(token, info.settled_price, info.resolved_at), RESOLVED)


class TokenInfos(TTLCache[TokenInfo]):
    """Token labels from the markets store, cached; a failed store is not asked again for a while."""

    def __init__(self, database: Callable[[], Database], max_entries: int) -> None:
        super().__init__(max_entries, TOKEN_INFO_TTL_S)
        self._database = database
        self._retry_at = 0.0  # monotonic

    def lookup(self, tokens: list[str]) -> dict[str, TokenInfo]:
        out: dict[str, TokenInfo] = {}
        missing = []
        for token in tokens:
            hit = self.get(token)
            if hit is None:
                missing.append(token)
            else:
                out[token] = hit[0]
        if missing and time.monotonic() < self._retry_at:
            return {**out, **dict.fromkeys(missing, TokenInfo())}  # the store just failed: not yet
        if missing:
            try:
                rows = self._database().run(lambda cur: store.known_tokens(cur, missing))
            except AppError as error:
                # Labels are optional: answer without them, and do not ask again for a while.
                self._retry_at = time.monotonic() + TOKEN_LOOKUP_BACKOFF_S
                log.warning("cannot look up tokens in the markets store (%s); retrying in %.0f s",
                            error.code, TOKEN_LOOKUP_BACKOFF_S)
                return {**out, **dict.fromkeys(missing, TokenInfo())}
            for token in missing:
                info = token_info(rows[token]) if token in rows else TokenInfo()
                self.put(token, info)
                out[token] = info
        return out


def resolve_missing(tokens: list[str], entries: TTLCache[Entry], infos: TokenInfos,
                    database: Callable[[], Database]) -> dict[str, Entry]:
    """Upstream has no book: a settled market's token (1 or 0), a closed market's (last known
    price) or an unknown one. The store is asked first (one round trip): a settled market's
    final price wins over any last quote."""
    resolved: dict[str, Entry] = {}
    for token in tokens:
        previous = entries.get(token, allow_expired=True)
        if previous is not None and previous[0].resolved:
            resolved[token] = previous[0]
    rest = [t for t in tokens if t not in resolved]
    lookup_failed = False
    samples: dict[str, dict[str, Any]] = {}
    known: dict[str, dict[str, Any]] = {}
    if rest:
        try:
            samples, known = database().run(
                lambda cur: (store.last_samples(cur, rest), store.known_tokens(cur, rest)))
        except AppError as error:
            log.warning("cannot look up stored prices (%s)", error.code)
            lookup_failed = True
    for token in rest:
        if token in known:
            info = token_info(known[token])
            infos.put(token, info)
            if info.settled_price is not None:
                resolved[token] = resolved_entry(token, info)
                continue
        previous = entries.get(token, allow_expired=True)
        last = previous[0] if previous is not None else None
        if last is not None and last.quote is not None:
            origin = "memory" if last.origin == "live" else last.origin
            resolved[token] = Entry(closed_quote(last.quote), origin)
        elif token in samples:
            resolved[token] = Entry(closed_quote(quote_from_sample(token, samples[token])), "database")
        elif token in known and known[token]["price"] is not None:
            row = known[token]
            quote = Quote(
                token_id=token, price=float(row["price"]), price_rule=PRICE_RULE_LAST_KNOWN,
                midpoint=None, best_bid=None, best_ask=None, spread=None, last_trade_price=None,
                tick_size=None, book="closed", as_of=row["updated_at"],
            )
            resolved[token] = Entry(quote, CATALOGUE)
        elif token in known:
            resolved[token] = Entry(None, CATALOGUE)  # a closed market's token: history may know
        else:
            resolved[token] = Entry(None, UNVERIFIED if lookup_failed else UNKNOWN)
    for token, entry in resolved.items():
        if not (lookup_failed and entry.quote is None):  # do not remember a guess
            entries.put(token, entry)
    return resolved


def no_such_token(token: str, entry: Entry) -> None:
    """Raise for a token upstream has no book for and nothing stored knows (or could be asked)."""
    if entry.origin == UNVERIFIED:
        raise ServiceUnavailable(
            f"Polymarket has no order book for token {token}, and whether prices are stored for it cannot "
            "be checked now (database unavailable); try again shortly",
            headers=retry_after_header(DEFAULT_RETRY_AFTER_S),
        )
    raise NotFound(f"unknown token {token}: Polymarket has no order book for it and nothing is stored for it")
