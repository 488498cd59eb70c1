"""Versioned SQL migrations, applied at start under a Postgres advisory lock.

Migrations are the ``NNNN_name.sql`` files shipped in this package's ``migrations`` folder.
Each one runs in its own transaction together with its row in ``schema_migrations``, so a crash
half-way leaves the schema at the previous version. Several notifiers starting at once
serialise on the advisory lock; the later ones find nothing left to do.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

log = logging.getLogger(__name__)

ADVISORY_LOCK_ID = 0x736B796E6574  # "skynet"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    found = []
    for entry in resources.files("skynet.notifier").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


def latest_version() -> int:
    return max(m.version for m in migrations())


def migrate(conn: Any) -> list[int]:
    """Apply pending migrations on a psycopg2 connection; return the versions applied.

    psycopg2 errors propagate: the caller (the store adapter) translates them.
    """
    applied: list[int] = []
    conn.autocommit = False
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_ID,))
        conn.commit()
        try:
            cur.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.commit()
            cur.execute("SELECT version FROM schema_migrations")
            done = {row[0] for row in cur.fetchall()}
            conn.commit()
            for m in migrations():
                if m.version in done:
                    continue
                log.info("applying migration %04d_%s", m.version, m.name)
                cur.execute(m.sql)
                cur.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (m.version, m.name))
                conn.commit()
                applied.append(m.version)
        except BaseException:
            conn.rollback()
            raise
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_ID,))
            conn.commit()
    return applied
