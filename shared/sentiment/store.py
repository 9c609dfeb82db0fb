"""SQL for market sentiment: analyses (kept as history) and the per-market analysis state.

Functions take a cursor so the caller decides the transaction. Ages are computed by the
database (``now() - created_at``), so TTLs, throttles and leases agree across instances
whatever their clocks say. The lease is a row, not a session lock: it survives PgBouncer's
transaction pooling, and a holder that dies simply lets it expire.
"""

from __future__ import annotations

from typing import Any

from shared.db.database import Cursor
from shared.sentiment.verdict import Verdict

_AGE = "extract(epoch FROM now() - created_at)::float8 AS age_s"


def latest(cur: Cursor, condition_id: str) -> dict[str, Any] | None:
    cur.execute(
        f"SELECT *, {_AGE} FROM market_sentiment WHERE condition_id = %s ORDER BY created_at DESC, id DESC LIMIT 1",
        (condition_id,),
    )
    row = cur.fetchone()
    return dict(row) if row else None


def history(cur: Cursor, condition_id: str, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` analyses of a market, newest first."""
    cur.execute(
        f"SELECT *, {_AGE} FROM market_sentiment WHERE condition_id = %s "
        "ORDER BY created_at DESC, id DESC LIMIT %s",
        (condition_id, limit),
    )
    return [dict(row) for row in cur.fetchall()]


def read_state(cur: Cursor, condition_id: str) -> dict[str, Any]:
    """Ages in seconds (None when never), the last error, and whether a lease is live."""
    cur.execute(
        """
        SELECT extract(epoch FROM now() - last_attempt_at)::float8 AS attempt_age_s,
               last_error,
               extract(epoch FROM now() - last_error_at)::float8 AS error_age_s,
               lease_holder,
               COALESCE(lease_until > now(), false) AS leased,
               extract(epoch FROM lease_until - now())::float8 AS lease_left_s
          FROM sentiment_state WHERE condition_id = %s
        """,
        (condition_id,),
    )
    row = cur.fetchone()
    if row is None:
        return {"attempt_age_s": None, "last_error": None, "error_age_s": None, "lease_holder": None,
                "leased": False, "lease_left_s": None}
    return dict(row)


def claim(cur: Cursor, condition_id: str, holder: str, lease_s: float) -> bool:
    """Take the market's analysis lease unless another holder's is live; records the attempt.

    A lease already held by ``holder`` is taken back: the caller runs one analysis per market
    at a time in-process, so its own lease is one a failed release left behind, and waiting
    for it to expire would only hang the next request for that market.
    """
    cur.execute(
        """
        INSERT INTO sentiment_state (condition_id, last_attempt_at, lease_holder, lease_until)
        VALUES (%(id)s, now(), %(holder)s, now() + make_interval(secs => %(lease)s))
        ON CONFLICT (condition_id) DO UPDATE
           SET last_attempt_at = now(), lease_holder = EXCLUDED.lease_holder, lease_until = EXCLUDED.lease_until
         WHERE sentiment_state.lease_until IS NULL OR sentiment_state.lease_until <= now()
            OR sentiment_state.lease_holder = EXCLUDED.lease_holder
        RETURNING condition_id
        """,
        {"id": condition_id, "holder": holder, "lease": lease_s},
    )
    return cur.fetchone() is not None


def _release(cur: Cursor, condition_id: str, holder: str, error: str | None) -> None:
    cur.execute(
        """
        UPDATE sentiment_state
           SET lease_holder = NULL, lease_until = NULL,
               last_error = %(error)s, last_error_at = CASE WHEN %(error)s IS NULL THEN NULL ELSE now() END
         WHERE condition_id = %(id)s AND lease_holder = %(holder)s
        """,
        {"id": condition_id, "holder": holder, "error": error},
    )


def record_failure(cur: Cursor, condition_id: str, holder: str, kind: str) -> None:
    """Release the lease and remember the failure's kind (a stable class name, never text)."""
    _release(cur, condition_id, holder, kind)


def release(cur: Cursor, condition_id: str, holder: str) -> None:
    """Give the lease back after a failure that is not the model's (nothing is recorded)."""
    cur.execute(
        "UPDATE sentiment_state SET lease_holder = NULL, lease_until = NULL "
        "WHERE condition_id = %s AND lease_holder = %s",
        (condition_id, holder),
    )


def record_success(cur: Cursor, condition_id: str, holder: str, verdict: Verdict,
                   inputs_note: str | None) -> dict[str, Any]:
    """Store the analysis, clear the last error and release the lease, in one transaction.

    Every text field of ``verdict`` is already plain and capped (``azure_clients``): what is
    stored here loads back."""
    cur.execute(
        f"""
        INSERT INTO market_sentiment (
            condition_id, sentiment, score, confidence, summary, model, deployment, prompt_version,
            outcome, token_id, display_price, price_as_of, price_source,
            prompt_tokens, completion_tokens, total_tokens, latency_ms, inputs_note,
            flags, price_change, price_change_window)
        VALUES (%(condition_id)s, %(sentiment)s, %(score)s, %(confidence)s, %(summary)s, %(model)s,
                %(deployment)s, %(prompt_version)s, %(outcome)s, %(token_id)s, %(display_price)s,
                %(price_as_of)s, %(price_source)s, %(prompt_tokens)s, %(completion_tokens)s,
                %(total_tokens)s, %(latency_ms)s, %(inputs_note)s,
                %(flags)s, %(price_change)s, %(price_change_window)s)
        RETURNING *, {_AGE}
        """,
        {
            "condition_id": condition_id,
            "sentiment": verdict.sentiment,
            "score": verdict.score,
            "confidence": verdict.confidence,
            "summary": verdict.summary,
            "model": verdict.model,
            "deployment": verdict.deployment,
            "prompt_version": verdict.prompt_version,
            "outcome": verdict.outcome,
            "token_id": verdict.token_id,
            "display_price": verdict.display_price,
            "price_as_of": verdict.price_as_of,
            "price_source": verdict.price_source,
            "prompt_tokens": verdict.usage.prompt_tokens,
            "completion_tokens": verdict.usage.completion_tokens,
            "total_tokens": verdict.usage.total_tokens,
            "latency_ms": round(verdict.latency_ms),
            "inputs_note": inputs_note,
            "flags": list(verdict.flags),
            "price_change": verdict.price_trend.change if verdict.price_trend else None,
            "price_change_window": verdict.price_trend.window if verdict.price_trend else None,
        },
    )
    inserted = cur.fetchone()
    assert inserted is not None  # INSERT ... RETURNING always gives its row
    row = dict(inserted)
    _release(cur, condition_id, holder, None)
    return row
