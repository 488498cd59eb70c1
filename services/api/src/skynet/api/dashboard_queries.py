"""The SQL behind the dashboard's own endpoints (each a function of a psycopg2 cursor).

Throughput is aggregated in Postgres from the done events of the last minutes: a range scan of
the partial index ``events_done_idx`` (``created_at`` of done events only), grouped per minute,
with empty minutes filled in by ``generate_series`` so the chart has no gaps.
"""

from __future__ import annotations

from typing import Any

from skynet.api.dashboard_models import ThroughputBucket

THROUGHPUT_SQL = """
WITH done AS (
    SELECT date_trunc('minute', created_at) AS at, count(*) AS files, COALESCE(sum(size), 0) AS bytes
    FROM events
    WHERE state = 'done'
      AND created_at >= date_trunc('minute', now()) - make_interval(mins => %(n)s - 1)
      AND (%(source)s::text IS NULL OR source = %(source)s)
    GROUP BY 1
)
SELECT m.at, COALESCE(d.files, 0)::bigint, COALESCE(d.bytes, 0)::bigint
FROM generate_series(
    date_trunc('minute', now()) - make_interval(mins => %(n)s - 1), date_trunc('minute', now()), interval '1 minute'
) AS m(at)
LEFT JOIN done d ON d.at = m.at
ORDER BY m.at
"""


def throughput(cur: Any, *, minutes: int = 60, source: str | None = None) -> list[ThroughputBucket]:
    """Files and bytes done per minute over the last ``minutes`` minutes (the current one included)."""
    cur.execute(THROUGHPUT_SQL, {"n": minutes, "source": source})
    return [ThroughputBucket(at=at, files=int(files), bytes=int(nbytes)) for at, files, nbytes in cur.fetchall()]
