"""Crawling Gamma's catalogue: keyset pages, each validated, its rows parsed one by one.

A bad row is skipped, counted and named in the log; of rows sharing a condition, Gamma or token
id the first wins. A bad page, or a cursor that loops, is a ``BadCatalogue`` that fails the crawl.
Pages are fetched on a helper thread, ahead of the writer.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.core.errors import UpstreamBadResponse
from shared.core.ids import is_condition_id
from shared.markets.rows import BadMarketRow, MarketRecord, parse_market, row_label
from shared.markets.snapshot import MAX_ROW_WARNINGS

if TYPE_CHECKING:  # the client (and httpx) is imported with the first refresh
    from shared.upstream.polymarket import GammaApi

log = logging.getLogger("polymarket_api.markets")
T = TypeVar("T")

PAGE_SIZE = 100  # Gamma keyset's documented maximum
MAX_PAGES = 5_000  # 500,000 markets: far beyond the real catalogue; stops a cursor loop
# A crawl whose pages bring no market it has not seen for this many pages in a row is going in
# circles (a cursor that changes but leads back): it fails rather than deactivate what it missed.
MAX_STALE_PAGES = 3
MAX_PAGE_ROWS = 1_000  # we ask for 100; one source documents 1,000 as Gamma's maximum
MAX_CURSOR_CHARS = 2_048


class BadCatalogue(UpstreamBadResponse):
    """Gamma answered 200 with something that is not a catalogue page (or not a catalogue).
    ``cause`` is ours, never upstream text, so it is safe in stale reasons and health."""

    def __init__(self, cause: str) -> None:
        self.cause = cause
        super().__init__("gamma", cause)

    def summary(self) -> str:
        return f"{self.kind}: {self.cause}"


class _KeysetPage(BaseModel):
    """A keyset page's shape; its rows are validated one by one, so one bad row is one skip."""

    model_config = ConfigDict(extra="ignore")

    markets: Annotated[list[Any], Field(max_length=MAX_PAGE_ROWS)]
    next_cursor: Annotated[str, Field(max_length=MAX_CURSOR_CHARS)] | None = None


@dataclass
class Crawl:
    """What a refresh has seen. The id rule: the first row seen with a condition id, Gamma id
    or token id wins; a later row repeating one is a duplicate, skipped and counted."""

    seen: dict[str, None] = field(default_factory=dict)  # condition ids stored, in upstream order
    skipped: int = 0
    duplicates: int = 0
    ids: set[str] = field(default_factory=set)  # every well-formed condition id, stored or not
    # Condition ids whose row was skipped: their stored version stays as it was (not deactivated).
    kept: set[str] = field(default_factory=set)
    gamma_ids: set[str] = field(default_factory=set)
    token_ids: set[str] = field(default_factory=set)
    refused: list[str] = field(default_factory=list)  # condition ids the database refused

    def skip(self, row: Any, problem: str, *, duplicate: bool = False) -> None:
        self.skipped += 1
        self.duplicates += duplicate
        condition_id = condition_id_of(row)
        if condition_id is not None and condition_id not in self.seen:
            self.kept.add(condition_id)
        if self.skipped <= MAX_ROW_WARNINGS:
            log.warning("Gamma row skipped (%s): %s", row_label(row), problem)

    def add(self, record: MarketRecord) -> bool:
        """Take ``record`` unless it repeats an id an earlier row had."""
        if record.condition_id in self.seen:
            return False
        if (record.gamma_id is not None and record.gamma_id in self.gamma_ids) or any(
            token in self.token_ids for token in record.token_ids()
        ):
            return False
        self.seen[record.condition_id] = None
        if record.gamma_id is not None:
            self.gamma_ids.add(record.gamma_id)
        self.token_ids.update(record.token_ids())
        return True

    def stored(self) -> list[str]:
        refused = set(self.refused)
        return [c for c in self.seen if c not in refused]

    def finish(self) -> None:
        self.skipped += len(self.refused)
        self.kept.update(self.refused)
        if self.skipped > MAX_ROW_WARNINGS:
            log.warning("%d more Gamma rows skipped", self.skipped - MAX_ROW_WARNINGS)


def condition_id_of(row: Any) -> str | None:
    value = row.get("conditionId") if isinstance(row, dict) else None
    if not isinstance(value, str):
        return None
    value = value.strip().lower()
    return value if is_condition_id(value) else None


def _page(raw: Any, number: int) -> _KeysetPage:
    try:
        return _KeysetPage.model_validate(raw)
    except ValidationError as error:
        first = error.errors(include_url=False, include_input=False, include_context=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "page"
        raise BadCatalogue(f"keyset page {number}: {where}: {first['msg']}") from None


def catalogue_pages(gamma: GammaApi, crawl: Crawl) -> Iterator[list[MarketRecord]]:
    """Gamma's keyset pages of open markets, parsed; bad rows are counted and skipped."""
    cursor: str | None = None
    cursors: set[str] = set()
    stale_pages = 0
    for number in range(1, MAX_PAGES + 1):
        params: dict[str, Any] = {"closed": "false", "limit": PAGE_SIZE, "include_tag": "true"}
        if cursor:
            params["after_cursor"] = cursor
        page = _page(gamma.get("/markets/keyset", params), number)
        records = []
        known = len(crawl.ids)
        for row in page.markets:
            if (condition_id := condition_id_of(row)) is not None:
                crawl.ids.add(condition_id)
            try:
                record = parse_market(row)
            except BadMarketRow as error:
                crawl.skip(row, str(error))
                continue
            if crawl.add(record):
                records.append(record)
            else:
                crawl.skip(row, "an id an earlier row had (the first row wins)", duplicate=True)
        yield records
        cursor = page.next_cursor
        if not cursor or not page.markets:
            return
        stale_pages = stale_pages + 1 if len(crawl.ids) == known else 0
        if stale_pages >= MAX_STALE_PAGES:
            raise BadCatalogue(f"keyset cursor loops: no new market in {MAX_STALE_PAGES} pages in a row")
        if cursor in cursors:
            raise BadCatalogue("keyset cursor repeated")
        cursors.add(cursor)
    raise BadCatalogue(f"more than {MAX_PAGES} keyset pages")


_END = object()


def prefetched(pages: Iterator[T], depth: int = 4) -> Iterator[T]:
    """Iterate ``pages`` on a helper thread, so fetching page n+1 overlaps writing page n."""
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    abandoned = threading.Event()

    def put(item: Any) -> None:
        while not abandoned.is_set():
            try:
                slots.put(item, timeout=0.5)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for page in pages:
                put(page)
                if abandoned.is_set():
                    return
        except BaseException as error:
            put(_Raised(error))
            return
        put(_END)

    # The request's context travels with the work, so its log line counts these upstream calls.
    context = contextvars.copy_context()
    threading.Thread(target=context.run, args=(produce,), name="catalogue-fetch", daemon=True).start()
    try:
        while True:
            item = slots.get()
            if item is _END:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        abandoned.set()


@dataclass(frozen=True)
class _Raised:
    error: BaseException

