"""The simulated market catalogue: events, markets and tokens, generated deterministically from a seed.

Only the static facts live here (ids, texts, dates, sizes, volumes, price-walk parameters). Prices,
books and history are functions of time computed in ``market_data``; the HTTP views in ``clob`` and
``gamma`` render both. Dates are offsets from an ``anchor`` (default: today, 00:00 UTC), so the same
seed gives the same ids and questions on any run and the dates stay plausible relative to now.
"""

from __future__ import annotations

import gc
import itertools
import math
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from . import wordlists as w

DAY = 86_400
_SLUG_RE = re.compile(r"[^a-z0-9]+")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass(frozen=True, slots=True)
class Tag:
    id: int
    label: str
    slug: str


@dataclass(frozen=True, slots=True)
class Token:
    token_id: str
    outcome: str
    index: int  # position in the market's tokens / Gamma clobTokenIds


@dataclass(slots=True, eq=False)
class Event:
    id: int
    ticker: str
    slug: str
    title: str
    category: str
    tags: tuple[Tag, ...]
    neg_risk: bool
    neg_risk_market_id: str
    created_at: float
    start_at: float
    end_at: float
    image: str
    comment_count: int
    markets: list[Market] = field(default_factory=list)

    @property
    def closed(self) -> bool:
        return all(m.closed for m in self.markets)


@dataclass(slots=True, eq=False)
class Market:
    """One binary market. ``tokens[0]`` is the first outcome (Yes / Up / first name)."""

    index: int  # creation order: CLOB /markets position
    gamma_id: int
    condition_id: str
    question_id: str
    question: str
    slug: str
    tokens: tuple[Token, ...]
    event: Event
    group_item_title: str
    category: str
    tick_denom: int  # 100 -> tick 0.01, 1000 -> tick 0.001
    min_order_size: int
    neg_risk: bool
    neg_risk_market_id: str
    neg_risk_request_id: str
    created_at: float
    start_at: float
    end_at: float
    game_start_at: float | None
    seconds_delay: int
    volume: float
    liquidity: float
    volume_24hr: float
    volume_1wk: float
    volume_1mo: float
    volume_1yr: float
    competitive: float
    rewards_rate: float | None  # None: not in the liquidity-rewards ("sampling") programme
    rewards_min_size: int
    rewards_max_spread: float
    maker_base_fee: int
    fee_type: str | None
    seed: int  # drives this market's price walk and books
    base_price: float  # fair value of tokens[0] the walk wanders around
    volatility: float
    activity: float  # chance per time step that the book changes
    spread_ticks: int
    closed: bool = False
    closed_at: float | None = None
    winner: int | None = None  # token index that won; None while open or closed but not settled
    neg_risk_other: bool = False  # the "Other" placeholder candidate of a neg-risk group

    @property
    def settled(self) -> bool:
        """Closed with a winner (Gamma outcomePrices exactly 1/0); closed but unsettled is UMA "proposed"."""
        return self.closed and self.winner is not None

    @property
    def outcomes(self) -> tuple[str, ...]:
        return tuple(t.outcome for t in self.tokens)

    @property
    def token_ids(self) -> tuple[str, ...]:
        return tuple(t.token_id for t in self.tokens)

    @property
    def tick_size(self) -> float:
        return 1 / self.tick_denom

    @property
    def sampling(self) -> bool:
        return self.rewards_rate is not None and not self.closed

    @property
    def image(self) -> str:
        return self.event.image

    @property
    def description(self) -> str:
        # Built on demand: 50,000 stored descriptions would dominate the catalogue's memory.
        end = long_date(self.end_at)
        if self.outcomes == ("Yes", "No"):
            return (f'This market asks: "{self.question}" It will resolve to "Yes" if that happens by {end}, '
                    f'11:59 PM ET. Otherwise, this market will resolve to "No".\n\n'
                    f"The primary resolution source for this market will be official information from "
                    f"{_SOURCES[self.seed % len(_SOURCES)]}; a consensus of credible reporting may also be used.")
        a, b = self.outcomes
        return (f"This market refers to {self.question}, scheduled for {long_date(self.game_start_at or self.end_at)}."
                f"\n\nThis market will resolve to '{a}' if {a} wins. This market will resolve to '{b}' if {b} "
                f"wins.\n\nIf the event is canceled or delayed beyond {end} without a winner, this market will "
                f"resolve to 50-50.")


_SOURCES = ("the relevant government", "the organising body", "the exchange's official listing page",
            "major news outlets", "the official league website")


def slugify(text: str) -> str:
    return _SLUG_RE.sub("-", text.lower()).strip("-")[:120]


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def iso_ms(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def iso_us(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1_000_000) % 1_000_000:06d}Z"


def ymd(ts: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def pg_time(ts: float) -> str:
    """Gamma's non-ISO ``closedTime`` form: ``2026-06-12 20:41:49+00``."""
    return time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(ts))


def midnight(ts: float) -> float:
    return ts - ts % DAY


def long_date(ts: float) -> str:
    g = time.gmtime(ts)
    return f"{_MONTHS[g.tm_mon - 1]} {g.tm_mday}, {g.tm_year}"


def _hex256(rng: random.Random) -> str:
    return f"0x{rng.getrandbits(256):064x}"


_E76 = 10**76


def _token_id(rng: random.Random) -> str:
    # uint256 in decimal with 77 or 78 digits, as most real token ids are.
    x = rng.getrandbits(256)
    return str(x if x >= _E76 else x + _E76)


def _ri(rng: random.Random, lo: int, hi: int) -> int:
    """randint without its overhead (it dominated generation time)."""
    return lo + int(rng.random() * (hi - lo + 1))


class _Slots(dict[str, str]):
    """Template values drawn lazily, so a template only pays for the placeholders it uses."""

    def __init__(self, rng: random.Random, end_at: float, fixed: dict[str, str]) -> None:
        super().__init__(fixed)
        self.rng = rng
        self.end_at = end_at

    def __missing__(self, key: str) -> str:
        rng = self.rng
        g = time.gmtime(self.end_at)
        coin = self.get("_coin")
        value: str
        if key == "date":
            value = long_date(self.end_at)
        elif key == "month":
            value = _MONTHS[g.tm_mon - 1]
        elif key == "year":
            value = str(g.tm_year)
        elif key in ("person", "person2", "player"):
            value = f"{rng.choice(w.FIRST_NAMES)} {rng.choice(w.LAST_NAMES)}"
        elif key in ("country", "country2"):
            value = rng.choice(w.COUNTRIES)
        elif key == "office":
            value = rng.choice(w.OFFICES)
        elif key == "kind":
            value = rng.choice(w.ELECTION_KINDS)
        elif key == "party":
            value = rng.choice(w.PARTIES)
        elif key == "city":
            value = rng.choice(w.CITIES)
        elif key in ("coin", "coin2"):
            name, _, _ = rng.choice(w.COINS)
            value = name
        elif key == "price" and coin is not None:
            value = _money(float(coin) * rng.choice((0.5, 0.75, 0.9, 1.1, 1.25, 1.5, 2)))
        elif key == "price":
            value = str(rng.randrange(20, 900, 5))
        elif key == "league":
            value = rng.choice(tuple(w.LEAGUES))
        elif key == "team":
            value = rng.choice(w.LEAGUES[self.get("league") or rng.choice(tuple(w.LEAGUES))])
        elif key == "company":
            value = rng.choice(w.COMPANIES)
        elif key == "product":
            value = rng.choice(w.PRODUCTS)
        elif key == "cap":
            value = str(rng.choice((1, 2, 3, 4, 5, 6)))
        elif key == "pct":
            value = f"{rng.choice((0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 6))}"
        elif key == "pct0":
            value = str(rng.randrange(30, 95, 5))
        elif key == "index":
            value = f"{rng.randrange(5000, 8000, 100):,}"
        elif key == "gold":
            value = f"{rng.randrange(2500, 5000, 100):,}"
        elif key == "oil":
            value = str(rng.randrange(50, 130, 5))
        elif key == "q":
            value = str(rng.randint(1, 4))
        elif key == "action":
            value = rng.choice(w.FED_ACTIONS)
        elif key == "movie":
            value = rng.choice(w.MOVIES)
        elif key == "artist":
            value = rng.choice(w.ARTISTS)
        elif key == "gross":
            value = str(rng.randrange(40, 300, 10))
        elif key == "mag":
            value = f"{rng.choice((6.0, 6.5, 7.0, 7.5, 8.0))}"
        elif key == "snow":
            value = str(rng.randrange(2, 40))
        elif key == "temp":
            value = str(rng.randrange(40, 105))
        else:
            raise KeyError(key)
        self[key] = value
        return value


def _money(x: float) -> str:
    if x >= 1000:
        return f"{round(x, -3):,.0f}"
    if x >= 1:
        return f"{x:,.2f}".rstrip("0").rstrip(".")
    return f"{x:.6f}".rstrip("0")


@dataclass(slots=True)
class _Spec:
    """A market about to be created: texts and outcomes, before ids and numbers are drawn."""

    question: str
    outcomes: tuple[str, str] = ("Yes", "No")
    group_item_title: str = ""
    base_price: float | None = None
    game_start_at: float | None = None
    neg_risk_other: bool = False
    volatility: float | None = None  # None: drawn per market


_TOPICS: tuple[tuple[str, float, tuple[str, ...], tuple[str, ...]], ...] = (
    # (category, weight, templates, tag names)
    ("Politics", 0.20, w.POLITICS, ("Politics", "Elections")),
    ("World", 0.10, w.WORLD, ("World", "Geopolitics")),
    ("Crypto", 0.16, (), ("Crypto", "Crypto Prices")),
    ("Sports", 0.22, (), ("Sports", "Games")),
    ("Economy", 0.09, w.ECON, ("Economy", "Fed Rates")),
    ("Tech", 0.09, w.TECH, ("Tech", "AI", "Business")),
    ("Pop Culture", 0.08, w.CULTURE, ("Pop Culture", "Movies", "Music")),
    ("Science", 0.06, w.SCIENCE, ("Science", "Weather")),
)
_TOPIC_CUM = tuple(itertools.accumulate(t[1] for t in _TOPICS))
# Group kinds of named candidates, which can have an "Other" placeholder, and its wording.
_OTHER_ITEM = {"person": "another candidate", "team": "another team", "artist": "another artist"}


class Catalogue(Sequence[Market]):
    """All markets in creation order (the CLOB ``/markets`` order), with lookups and mutations.

    Mutations bump ``version``; views cache filtered lists per version. Readers take the list
    reference without the lock (appends are atomic under the GIL; lookups are dict reads).
    """

    def __init__(self, markets: int = 2000, closed_fraction: float = 0.1, seed: int = 7,
                 anchor: float | None = None) -> None:
        if markets < 0 or not 0 <= closed_fraction < 1:
            raise ValueError("markets must be >= 0 and 0 <= closed_fraction < 1")
        self.seed = seed
        self.anchor = midnight(time.time()) if anchor is None else anchor
        self.lock = threading.RLock()
        self.version = 0
        self.markets: list[Market] = []
        self.events: list[Event] = []
        self._rng = random.Random(seed)
        self._used_slugs: set[str] = set()
        self._used_event_slugs: set[str] = set()
        self._next_gamma_id = 500_000 + self._rng.randrange(1000)
        self._next_event_id = 16_000 + self._rng.randrange(1000)
        self.by_condition_id: dict[str, Market] = {}
        self.by_token_id: dict[str, tuple[Market, Token]] = {}
        self.by_gamma_id: dict[int, Market] = {}
        self.by_slug: dict[str, Market] = {}
        self.events_by_id: dict[int, Event] = {}
        self.events_by_slug: dict[str, Event] = {}
        n_closed = round(markets * closed_fraction / (1 - closed_fraction))
        self._generate(markets, n_closed, self.anchor, initial=True)

    def _generate(self, n_open: int, n_closed: int, now: float, *, initial: bool) -> list[Market]:
        # The cyclic GC rescans the growing heap over and over while we allocate ~10 objects per
        # market; nothing here forms cycles worth collecting, so pausing it cuts the time by a third.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return self._generate_unpaused(n_open, n_closed, now, initial=initial)
        finally:
            if was_enabled:
                gc.enable()

    # --- Sequence -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.markets)

    @overload
    def __getitem__(self, i: int) -> Market: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[Market]: ...
    def __getitem__(self, i: int | slice) -> Market | Sequence[Market]:
        return self.markets[i]

    def __iter__(self) -> Iterator[Market]:
        return iter(self.markets)

    # --- queries ------------------------------------------------------------------------------

    def open_markets(self) -> list[Market]:
        return [m for m in self.markets if not m.closed]

    def closed_markets(self) -> list[Market]:
        return [m for m in self.markets if m.closed]

    def market(self, key: str | int) -> Market:
        """By condition id, token id, Gamma id or slug; KeyError if unknown."""
        if isinstance(key, int) or (isinstance(key, str) and key.isdigit() and len(key) < 20):
            return self.by_gamma_id[int(key)]
        if key in self.by_condition_id:
            return self.by_condition_id[key]
        if key in self.by_token_id:
            return self.by_token_id[key][0]
        return self.by_slug[key]

    # --- mutations ----------------------------------------------------------------------------

    def close(self, market: Market, winner: int | None, at: float) -> None:
        """Close now; ``winner=None`` closes without settling. Settling an already closed market
        keeps its close time, as a UMA resolution after the market stopped trading does."""
        with self.lock:
            if not market.closed:
                market.closed_at = at
            market.closed, market.winner = True, winner
            self.version += 1

    def reopen(self, market: Market) -> None:
        with self.lock:
            market.closed, market.closed_at, market.winner = False, None, None
            self.version += 1

    def add_markets(self, count: int, at: float, *, closed: bool = False) -> list[Market]:
        """``count`` new open markets created at ``at``; ``closed=True``: markets that were created,
        ended and settled long before ``at`` (like the initial closed ones), appended with new ids."""
        with self.lock:
            created = self._generate(0, count, at, initial=True) if closed else \
                self._generate(count, 0, at, initial=False)
            self.version += 1
            return created

    # --- generation ---------------------------------------------------------------------------

    def _generate_unpaused(self, n_open: int, n_closed: int, now: float, *, initial: bool) -> list[Market]:
        rng = self._rng
        pending: list[tuple[Event, list[_Spec], bool]] = []
        left_open, left_closed = n_open, n_closed
        while left_open + left_closed > 0:
            closed = rng.random() * (left_open + left_closed) < left_closed
            cap = left_closed if closed else left_open
            event, specs = self._draw_event(rng, now, closed, initial, cap)
            pending.append((event, specs, closed))
            if closed:
                left_closed -= len(specs)
            else:
                left_open -= len(specs)
        # Creation order is by time; ids grow with it, as on Polymarket.
        pending.sort(key=lambda p: p[0].created_at)
        created: list[Market] = []
        for event, specs, closed in pending:
            event.id = self._next_event_id
            self._next_event_id += _ri(rng, 1, 12)
            self.events.append(event)
            self.events_by_id[event.id] = event
            self.events_by_slug[event.slug] = event
            members = [self._make_market(rng, event, spec, i, closed, now) for i, spec in enumerate(specs)]
            if closed and event.neg_risk:
                # One winner among a settled group's candidates, drawn by their fair prices.
                won = rng.choices(range(len(members)), weights=[m.base_price for m in members])[0]
                for i, m in enumerate(members):
                    m.winner = 0 if i == won else 1
            created.extend(members)
        for m in created:
            m.index = len(self.markets)
            self.markets.append(m)
            self.by_condition_id[m.condition_id] = m
            self.by_gamma_id[m.gamma_id] = m
            self.by_slug[m.slug] = m
            for t in m.tokens:
                self.by_token_id[t.token_id] = (m, t)
        return created

    def _draw_event(self, rng: random.Random, now: float, closed: bool, initial: bool,
                    cap: int) -> tuple[Event, list[_Spec]]:
        category, _, templates, tag_names = rng.choices(_TOPICS, cum_weights=_TOPIC_CUM)[0]
        if not initial:
            created = now
        elif closed:
            created = now - rng.uniform(20, 500) * DAY
        else:
            created = now - DAY * 400 * rng.random() ** 2 - rng.uniform(600, DAY)
        if closed:
            end_at = midnight(created + rng.uniform(3, 150) * DAY)
        elif rng.random() < 0.04:
            end_at = midnight(now - rng.uniform(1, 60) * DAY)  # past its end date, not yet resolved
        else:
            end_at = midnight(now + DAY * (1 + 600 * rng.random() ** 2))
        end_at = max(end_at, midnight(created) + DAY)
        group = rng.random() < 0.07 and cap >= 3
        specs: list[_Spec]
        if group:
            category, title, specs = self._group(rng, end_at, cap)
            tag_names = _tags_for(category)
        else:
            spec = self._single(rng, category, templates, end_at)
            specs = [spec]
            title = spec.question
        neg_risk = group
        tags = tuple(Tag(*w.TAGS[n]) for n in tag_names[: _ri(rng, 1, len(tag_names))])
        slug = self._unique(slugify(title), self._used_event_slugs, rng)
        event = Event(
            id=0, ticker=slug, slug=slug, title=title, category=category, tags=tags, neg_risk=neg_risk,
            neg_risk_market_id=(f"0x{rng.getrandbits(248):062x}00" if neg_risk else ""),
            created_at=created, start_at=min(created + rng.uniform(60, 3600), now), end_at=end_at,
            image=f"https://polymarket-upload.s3.us-east-2.amazonaws.com/{slug[:60]}-{rng.getrandbits(40):010x}.png",
            comment_count=int(rng.paretovariate(1.2)) - 1,
        )
        return event, specs

    def _single(self, rng: random.Random, category: str, templates: tuple[str, ...], end_at: float) -> _Spec:
        if category == "Sports":
            r = rng.random()
            league = rng.choice(tuple(w.LEAGUES))
            if r < 0.55:
                a, b = rng.sample(w.LEAGUES[league], 2)
                game = end_at - 7 * DAY + rng.choice((17, 19, 23)) * 3600
                return _Spec(f"{league}: {a} vs. {b}", (a, b), game_start_at=game, base_price=rng.uniform(0.2, 0.8))
            if r < 0.7:
                a, b = (f"{rng.choice(w.FIRST_NAMES)} {rng.choice(w.LAST_NAMES)}" for _ in range(2))
                game = end_at - 7 * DAY + 14 * 3600
                return _Spec(f"{rng.choice(w.TOURNAMENTS)}: {a} vs {b}", (a, b), game_start_at=game,
                             base_price=rng.uniform(0.15, 0.85))
            slots = _Slots(rng, end_at, {"league": league})
            return _Spec(rng.choice(w.SPORT_PROPS).format_map(slots))
        if category == "Crypto":
            name, _sym, price = rng.choice(w.COINS)
            slots = _Slots(rng, end_at, {"coin": name, "_coin": str(price)})
            r = rng.random()
            if r < 0.3:
                return _Spec(f"{name} Up or Down on {long_date(end_at)}?", ("Up", "Down"),
                             base_price=rng.uniform(0.3, 0.7))
            if r < 0.75:
                verb = rng.choice(("reach", "dip to", "be above", "hit"))
                return _Spec(f"Will {name} {verb} ${slots['price']} by {slots['date']}?")
            return _Spec(rng.choice(w.CRYPTO_EVENTS).format_map(slots))
        return _Spec(rng.choice(templates).format_map(_Slots(rng, end_at, {})))

    def _group(self, rng: random.Random, end_at: float, cap: int) -> tuple[str, str, list[_Spec]]:
        category, title_t, member_t, kind = rng.choice(w.GROUP_EVENTS)
        fixed: dict[str, str] = {}
        if kind == "range" or "{coin}" in title_t:
            name, _sym, price = rng.choice(w.COINS)
            fixed = {"coin": name, "_coin": str(price)}
        slots = _Slots(rng, end_at, fixed)
        title = title_t.format_map(slots)
        n = min(cap, rng.randint(3, 8))
        items: list[str]
        if kind == "person":
            items = list(dict.fromkeys(f"{rng.choice(w.FIRST_NAMES)} {rng.choice(w.LAST_NAMES)}"
                                       for _ in range(n)))
        elif kind == "fed":
            items = list(w.FED_OUTCOMES[: min(n, 4)])
        elif kind == "team":
            items = rng.sample(w.LEAGUES[slots["league"]], n)
        elif kind == "artist":
            items = rng.sample(w.ARTISTS, n)
        elif kind == "temp":
            lo = rng.randrange(40, 95)
            items = [f"{lo + 2 * i}-{lo + 2 * i + 1}°F" for i in range(n)]
        else:
            centre = float(fixed["_coin"])
            edges = [centre * (0.85 + 0.3 * i / n) for i in range(n + 1)]
            items = [f"between ${_money(a)} and ${_money(b)}" for a, b in itertools.pairwise(edges)]
        weights = [rng.gammavariate(0.6, 1.0) + 1e-3 for _ in items]
        # Groups of named candidates sometimes carry Gamma's "Other" placeholder (negRiskOther), priced
        # low; the named candidates share the rest, so the group still sums to about 1.
        other = kind in _OTHER_ITEM and len(items) < cap and rng.random() < 0.55
        other_price = rng.uniform(0.01, 0.05) if other else 0.0
        total = sum(weights) / (1 - other_price)
        names = {k: v for k, v in slots.items() if not k.startswith("_")}
        specs = [
            _Spec(member_t.format_map(_Slots(rng, end_at, {**fixed, "item": item, **names})),
                  group_item_title=item, base_price=min(0.97, max(0.003, wt / total)))
            for item, wt in zip(items, weights, strict=True)
        ]
        if other:
            question = member_t.format_map(_Slots(rng, end_at, {**fixed, "item": _OTHER_ITEM[kind], **names}))
            specs.append(_Spec(question, group_item_title="Other", base_price=other_price, neg_risk_other=True,
                               volatility=0.3))  # a quiet walk keeps it near its 1-5% base
        return category, title, specs

    def _make_market(self, rng: random.Random, event: Event, spec: _Spec, i: int, closed: bool,
                     now: float) -> Market:
        base = spec.base_price if spec.base_price is not None else min(0.985, max(0.015, rng.betavariate(0.6, 0.6)))
        fine = base < 0.05 or base > 0.95 or rng.random() < 0.35
        denom = 1000 if fine else 100
        spread = (rng.choice((1, 1, 2, 3, 5, 8, 12)) if fine else rng.choice((1, 1, 1, 1, 2, 3)))
        # Volumes span six orders of magnitude with a heavy tail, like the live catalogue.
        volume = min(10 ** rng.uniform(1.5, 5.5) * rng.paretovariate(1.1), 4e8)
        liquidity = 0.0 if closed else min(volume * rng.uniform(0.002, 0.3), rng.uniform(5e5, 3e6))
        v1yr = volume * rng.uniform(0.9, 1.0)
        v1mo = v1yr * rng.uniform(0.05, 0.9)
        v1wk = v1mo * rng.uniform(0.05, 0.6)
        v24 = 0.0 if closed else v1wk * rng.uniform(0.0, 0.4)
        sampling = not closed and rng.random() < 0.35
        created = min(event.created_at + rng.uniform(0, 600), now)  # markets added at runtime exist now
        if event.neg_risk:
            question_id = event.neg_risk_market_id[:-2] + f"{i + 1:02x}"
            request_id = _hex256(rng)
        else:
            question_id, request_id = _hex256(rng), ""
        market = Market(
            index=-1, gamma_id=0, condition_id=_hex256(rng), question_id=question_id,
            question=spec.question, slug=self._unique(slugify(spec.question), self._used_slugs, rng),
            tokens=(), event=event, group_item_title=spec.group_item_title, category=event.category,
            tick_denom=denom, min_order_size=5 if rng.random() < 0.9 else 15, neg_risk=event.neg_risk,
            neg_risk_market_id=event.neg_risk_market_id, neg_risk_request_id=request_id,
            created_at=created, start_at=event.start_at, end_at=event.end_at, game_start_at=spec.game_start_at,
            seconds_delay=1 if spec.game_start_at and rng.random() < 0.5 else 0,
            volume=volume, liquidity=liquidity, volume_24hr=v24, volume_1wk=v1wk, volume_1mo=v1mo,
            volume_1yr=v1yr, competitive=rng.uniform(0.5, 1.0),
            rewards_rate=rng.choice((1, 5, 10, 25, 50, 0.001)) if sampling else None,
            rewards_min_size=rng.choice((20, 50, 100, 200)) if sampling else 0,
            rewards_max_spread=rng.choice((3.5, 4.5, 5.5)) if sampling else 0,
            maker_base_fee=0 if rng.random() < 0.05 else 1000,
            fee_type=rng.choice((None, None, "general_fees", "sports_fees", "tech_fees")),
            seed=rng.getrandbits(64), base_price=base, volatility=rng.uniform(0.3, 1.8),
            activity=rng.uniform(0.05, 0.6), spread_ticks=spread, neg_risk_other=spec.neg_risk_other,
        )
        if spec.volatility is not None:
            market.volatility = spec.volatility
        market.tokens = tuple(Token(_token_id(rng), outcome, k) for k, outcome in enumerate(spec.outcomes))
        if closed:
            market.closed = True
            market.closed_at = min(event.end_at + rng.uniform(0, 3) * DAY, now - rng.uniform(3600, 2 * DAY))
            market.winner = 0 if rng.random() < base else 1
        # Gamma ids: assigned here, in creation order, with gaps (ids of markets on other venues).
        market.gamma_id = self._next_gamma_id
        self._next_gamma_id += _ri(rng, 1, 25)
        event.markets.append(market)
        return market

    @staticmethod
    def _unique(slug: str, used: set[str], rng: random.Random) -> str:
        slug = slug or "market"
        if slug in used:
            base = slug
            while slug in used:
                slug = f"{base}-{_ri(rng, 100, 999)}-{_ri(rng, 100, 999)}"
        used.add(slug)
        return slug


def _tags_for(category: str) -> tuple[str, ...]:
    for cat, _w, _t, tags in _TOPICS:
        if cat == category:
            return tags
    return ("Politics",)


def market_summary(m: Market) -> dict[str, Any]:
    """Compact description for ``/_standin/catalogue`` and debugging."""
    return {
        "condition_id": m.condition_id, "gamma_id": str(m.gamma_id), "slug": m.slug, "question": m.question,
        "closed": m.closed, "neg_risk": m.neg_risk, "tick_size": m.tick_size, "event_id": str(m.event.id),
        "event_slug": m.event.slug, "group_item_title": m.group_item_title, "neg_risk_other": m.neg_risk_other,
        "closed_at": m.closed_at, "settled": m.settled, "winner": m.winner,
        "tokens": [{"token_id": t.token_id, "outcome": t.outcome} for t in m.tokens],
    }


def logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))
