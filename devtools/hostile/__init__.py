"""SIMULATED, and hostile on purpose: a Polymarket that misbehaves in ways the real one might.

``devtools.standin`` is faithful to the contract. This package serves the same simulated data
(it wraps a ``PolymarketStandIn`` and calls its views in-process), but each **switch** turns on
one misbehaviour on the answers that match it: odd text in a Gamma row, out-of-range numbers,
duplicate ids, deep nesting, gzip bombs, a trickle, a 200 whose body is an error... Tests point
the app at it and check, through the HTTP API, that a bad item is skipped and counted, that
nothing crashes, hangs or grows without bound, and that nothing is stored in a form that cannot
be loaded back.

    hostile = HostileUpstream(PolymarketStandIn(markets=200)).start()
    hostile.on("row_field", host="gamma", path="/markets", field="question", value="a\\u0000b")
    ... hostile.clob_url, hostile.gamma_url ...
    hostile.clear(); hostile.stop()

Switches live in ``devtools.hostile.switches`` (``SWITCHES``, one function per misbehaviour,
each documented there). Each matches by host (``"clob"``/``"gamma"``/None), an optional path
prefix, and fires ``times`` times (None: until cleared).
"""

from __future__ import annotations

from .server import Exchange, HostileUpstream
from .switches import SWITCHES

__all__ = ["SWITCHES", "Exchange", "HostileUpstream"]
