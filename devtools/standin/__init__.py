"""SIMULATED Polymarket: a stand-in for the CLOB and Gamma read APIs, for tests and offline demos.

Not Polymarket and not connected to it. It serves, over two loopback HTTP ports, a deterministic
catalogue of made-up markets with the routes, value types, error bodies, ordering and paging
quirks described in ``docs/polymarket-api.md`` (the contract; its samples in ``tests/contract/samples/``
are the reference), prices that move with time, fault injection and request counting. Events group
markets; about a third of neg-risk groups of named candidates carry an "Other" placeholder
(``negRiskOther``).

    from devtools.standin import PolymarketStandIn

    with PolymarketStandIn(markets=2000, closed_fraction=0.1, seed=7) as pm:
        pm.clob_url, pm.gamma_url          # http://127.0.0.1:<port>
        pm.catalogue                       # markets in creation order (condition_id, gamma_id, slug, tokens, closed)
        pm.inject("status", host="clob", path="/book", times=2, status=503)
        pm.count(host="clob", path="/book")
        pm.close_market(condition_id, winner=1)   # settled; settled=False: closed, UMA "proposed"
        pm.add_markets(1, closed=True)            # a market settled long ago, new to any crawl

Run one in the foreground with ``python -m devtools.standin --markets 5000``. The HTTP control
API (``/_standin/...`` on both ports) is listed in ``control``; fault kinds in ``faults``.
Modules: ``catalogue`` (markets), ``market_data`` (prices, books, history), ``clob``/``gamma``
(wire formats), ``faults`` (faults and counts), ``server`` (HTTP and ``PolymarketStandIn``).
"""

from .catalogue import Catalogue, Event, Market, Tag, Token
from .faults import FAULT_KINDS, Fault, RequestRecord
from .market_data import book_hash
from .server import PolymarketStandIn

__all__ = [
    "FAULT_KINDS", "Catalogue", "Event", "Fault", "Market", "PolymarketStandIn", "RequestRecord", "Tag", "Token",
    "book_hash",
]
