"""Order books from the CLOB: ``GET /book`` for one token, ``POST /books`` for several, a
refused batch split until each token's answer is its own."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from shared.core.errors import UpstreamBadResponse, UpstreamError, UpstreamNotFound, UpstreamRejected
from shared.prices.quotes import Book, book_token, parse_book
from shared.prices.rejections import Rejections
from shared.upstream.polymarket import CLOB, ClobApi


class BookReader:
    def __init__(self, clob: Callable[[], ClobApi], rejections: Rejections) -> None:
        self._clob = clob
        self.rejections = rejections

    def fetch(self, tokens: list[str]) -> dict[str, Book | UpstreamError | None]:
        """One round trip: ``GET /book`` for one token, ``POST /books`` for several.

        None for a token upstream has no book for (404, or left out of the batch answer). A batch
        refused as a whole with a 4xx (a 404 because one token has no book, or a 400 such as a
        batch cap) is split in two and each half asked again, down to ``GET /book`` for single
        tokens, so one unknown token cannot hide the books of the others (see ``_split``
        for the bound on calls). Raises UpstreamError when the call for all ``tokens`` failed;
        a half that failed otherwise carries its error per token.

        A book that fails validation is an UpstreamBadResponse for its own token only (so is a
        200 whose body is an error: the contract's "no book" is a 404). A ``/books`` answer
        holding a book that does not say readably whose it is cannot tell "left out" from
        "unreadable": the tokens missing from it are bad_body too, not "no book".
        """
        clob = self._clob()
        # ``fetched_at`` is taken when the answer is in: a book that changed while the request
        # was on its way carries a later timestamp than the request's start, and would be
        # keyed on the fetch time instead (see ``Quote.sample_time``), then stored a second
        # time under its own timestamp by the next read of the same state.
        if len(tokens) == 1:
            token = tokens[0]
            try:
                raw = clob.call(clob.client.get_order_book, token, expect=dict, about_id=True)
            except UpstreamNotFound:
                return {token: None}
            return {token: self._parse(raw, datetime.now(UTC), token)}
        from py_clob_client_v2.clob_types import BookParams  # loaded with the client

        try:
            raw_list = clob.call(clob.client.get_order_books, [BookParams(token_id=t) for t in tokens],
                                 expect=list, about_id=True)
        except (UpstreamNotFound, UpstreamRejected) as error:
            if isinstance(error, UpstreamRejected) and error.status_code == 404:
                raise  # no such route (wrong host or path): splitting cannot help
            return self._split(tokens)
        fetched_at = datetime.now(UTC)
        wanted = set(tokens)
        found: dict[str, Book | UpstreamError] = {}
        unreadable = 0
        for item in raw_list:
            whose = book_token(item)  # response order is not guaranteed: join on asset_id
            if whose is None:
                unreadable += 1
                self.rejections.add("books", 1, None, "a /books answer held a book without a readable asset_id")
            elif whose in wanted and not isinstance(found.get(whose), Book):
                try:
                    found[whose] = self._parse(item, fetched_at, whose)
                except UpstreamBadResponse as error:
                    found[whose] = error
        missing: Book | UpstreamError | None = None
        if unreadable:
            missing = UpstreamBadResponse(CLOB, f"{unreadable} unreadable book(s) in a /books answer")
        return {token: found.get(token, missing) for token in tokens}

    def _parse(self, raw: Any, fetched_at: datetime, token: str) -> Book:
        """``parse_book``, counting the levels it left out, or the book it refused (raised)."""
        try:
            book = parse_book(raw, fetched_at, token)
        except UpstreamBadResponse as error:
            self.rejections.add("books", 1, token, error.detail)
            raise
        self.rejections.add("book_levels", book.rejected_levels, token, book.rejection)
        return book

    def _split(self, tokens: list[str]) -> dict[str, Book | UpstreamError | None]:
        """The two halves of a refused batch, each fetched (and split again if refused).

        Bound: every call either answers its tokens or is split in two, so the calls form a
        binary tree with at most n leaves: at most 2n - 1 upstream calls for a batch of n, and
        at most 1 + 2k * ceil(log2 n) when k tokens are to blame (15 for one unknown token in a
        batch of 100), each retried on transient failures only, as every call is.
        """
        middle = len(tokens) // 2
        out: dict[str, Book | UpstreamError | None] = {}
        for half in (tokens[:middle], tokens[middle:]):
            try:
                out.update(self.fetch(half))
            except UpstreamError as error:
                out.update(dict.fromkeys(half, error))
        return out
