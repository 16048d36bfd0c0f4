"""The PostgreSQL store's URL and schema (``postgresql://user@host/db``).

Everything openintent keeps lives in one PostgreSQL schema (``openintent`` unless the URL says
``?schema=name``), so a database shared with an application is not cluttered. Its ``meta`` table
says the schema is openintent's and which version it holds; :func:`prepare` creates it, migrates
an older one step by step (one transaction, under an advisory lock, so processes starting
together do not race) and refuses a newer one or a schema of the same name that is not
openintent's, with a :class:`~openintent.errors.StoreError` naming the database.

The tables mirror the SQLite journal's (:mod:`._sqlite_file`): ``runs``, ``batches`` (a
commit per row; the ``events`` view shows a row per event), ``leases`` and ``approval_inbox``;
and for workers (:mod:`openintent._worker`): ``tasks`` (an attempt at an intent handed to a
worker) and ``task_effects`` (what the workers' effects did, fenced by the task's token).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs

from ..errors import StoreError

__all__ = [
    "APPLICATION", "MIGRATIONS", "SCHEMA_VERSION", "PgUrl", "prepare", "shown_url", "where_of",
]

#: What the ``meta`` table's ``application`` row says.
APPLICATION = "openintent"

# Each step takes the schema from the version before it to its own. ``{s}`` is the schema's
# quoted name. Times are POSIX seconds (double precision), as in the SQLite journal.
MIGRATIONS: Sequence[tuple[int, Sequence[str]]] = (
    (1, (
        "CREATE TABLE {s}.runs (id text PRIMARY KEY, position bigserial UNIQUE, "
        "name text NOT NULL, parent text, status text NOT NULL DEFAULT 'running', "
        "timebase double precision NOT NULL, started double precision, "
        "ended double precision, lease_holder text, lease_pid integer, lease_host text, "
        "lease_expires double precision, lease_token bigint NOT NULL DEFAULT 0, "
        # A run started with `openintent run --detach` (or one whose coordinator gave it
        # up): any worker with its coordinator may take its lease and go on with it.
        "detached boolean NOT NULL DEFAULT false)",
        # One row per commit: its events as one JSON array of [type, time, intent_id, data]
        # (text: the events read back exactly as written).
        "CREATE TABLE {s}.batches (run_id text NOT NULL, first_seq integer NOT NULL, "
        "events text NOT NULL, PRIMARY KEY (run_id, first_seq))",
        "CREATE VIEW {s}.events AS SELECT b.run_id, b.first_seq + (e.n - 1)::integer AS seq, "
        "e.value->>0 AS type, (e.value->>1)::double precision AS time, "
        "e.value->>2 AS intent_id, NULLIF(e.value->3, 'null'::jsonb) AS data "
        "FROM {s}.batches AS b, jsonb_array_elements(b.events::jsonb) WITH ORDINALITY "
        "AS e(value, n)",
        "CREATE TABLE {s}.approval_inbox (id bigserial PRIMARY KEY, run_id text NOT NULL, "
        "intent_id text NOT NULL, approve boolean NOT NULL, decided_by text NOT NULL, "
        "note text NOT NULL DEFAULT '', submitted double precision NOT NULL, "
        "status text NOT NULL DEFAULT 'pending', reason text, settled double precision)",
        "CREATE INDEX approval_inbox_waiting ON {s}.approval_inbox (run_id, status)",
        "CREATE TABLE {s}.leases (target text NOT NULL, scope text NOT NULL, holder text, "
        "token bigint NOT NULL, expires double precision NOT NULL, "
        "PRIMARY KEY (target, scope))",
        # An attempt at an intent, handed by the run's coordinator to whichever worker has
        # its agent: status ready -> claimed (worker, token, lease_expires) -> done | failed;
        # cancelled when the run no longer wants it. A claim whose lease expired may be
        # claimed again (token + 1, claims + 1): writes with an older token are refused.
        # One task per agent of an attempt (agents voting on one intent share its attempt).
        "CREATE TABLE {s}.tasks (id bigserial PRIMARY KEY, run_id text NOT NULL, "
        "intent_id text NOT NULL, attempt integer NOT NULL, agent_id text NOT NULL, "
        "payload text NOT NULL, status text NOT NULL DEFAULT 'ready', worker text, "
        "token bigint NOT NULL DEFAULT 0, claims integer NOT NULL DEFAULT 0, "
        "lease_expires double precision, result text, created double precision NOT NULL, "
        # The claim call that took it: a claim retried after its answer was lost (the
        # connection broke as it committed) finds the tasks it took.
        "finished double precision, claim_id text, "
        "UNIQUE (run_id, intent_id, attempt, agent_id))",
        "CREATE INDEX tasks_open ON {s}.tasks (agent_id, id) "
        "WHERE status IN ('ready', 'claimed')",
        "CREATE INDEX tasks_of_run ON {s}.tasks (run_id, status)",
        # What a worker's effects did (openintent._worker): started before the function is
        # called, completed / failed after; written only under the task's current token.
        # Keyed by intent, not attempt: a later attempt (another worker) finds them.
        "CREATE TABLE {s}.task_effects (run_id text NOT NULL, intent_id text NOT NULL, "
        "name text NOT NULL, status text NOT NULL, value text, error text, "
        "seq bigserial, PRIMARY KEY (run_id, intent_id, name))",
    )),
)

#: The schema version this library writes (the last migration's).
SCHEMA_VERSION = MIGRATIONS[-1][0]

# Our own query options, taken off the URL before it is handed to libpq.
_OPTIONS = ("schema", "lease_ttl", "task_ttl", "pool_size")


@attrs.frozen
class PgUrl:
    """A ``postgresql://`` store URL: ``conninfo`` for psycopg (libpq's own options, such as
    ``?host=/socket/dir`` or ``sslmode``, kept), and openintent's own options: ``schema``,
    ``lease_ttl`` (run leases, seconds), ``task_ttl`` (worker task leases, seconds) and
    ``pool_size``."""

    url: str
    conninfo: str
    schema: str = "openintent"
    lease_ttl: float | None = None
    task_ttl: float | None = None
    pool_size: int | None = None

    @classmethod
    def parse(cls, url: str) -> PgUrl:
        """Parse a store URL (``postgresql://`` or ``postgres://``); a bad option is a
        :class:`StoreError` saying which and what it takes."""
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise StoreError(f"{url!r} is not a postgresql:// URL")
        ours: dict[str, str] = {}
        theirs: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            (ours.__setitem__(key, value) if key in _OPTIONS
             else theirs.append((key, value)))
        conninfo = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(theirs)))
        options: dict[str, Any] = {}
        schema = ours.get("schema", "openintent")
        if not schema.isidentifier() or schema.lower() != schema:
            raise StoreError(f"the store {url!r} names the schema {schema!r}; use lowercase "
                             "letters, digits and underscores (?schema=my_runs)")
        for key in ("lease_ttl", "task_ttl"):
            if key in ours:
                try:
                    options[key] = float(ours[key])
                except ValueError:
                    options[key] = -1.0
                if not options[key] > 0:
                    raise StoreError(f"the store {url!r} sets {key}={ours[key]!r}; it takes a "
                                     f"number of seconds above 0 (?{key}=30)")
        if "pool_size" in ours:
            if not ours["pool_size"].isdigit() or int(ours["pool_size"]) < 1:
                raise StoreError(f"the store {url!r} sets pool_size={ours['pool_size']!r}; "
                                 "it takes a whole number of connections, at least 1")
            options["pool_size"] = int(ours["pool_size"])
        return cls(url, conninfo, schema, **options)

    @property
    def quoted_schema(self) -> str:
        """The schema's name, quoted for SQL (checked by :meth:`parse`)."""
        return f'"{self.schema}"'


def prepare(conn: Any, url: PgUrl) -> None:
    """Create or migrate the schema on ``conn`` (a psycopg connection, autocommit off), or
    raise :class:`StoreError` if it is not openintent's or is newer than this library."""
    s = url.quoted_schema
    with conn.transaction():
        # One preparer at a time per database (two processes opening a fresh database).
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('openintent schema'))")
        exists = conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                              (url.schema,)).fetchone()
        version = 0
        if exists:
            meta = conn.execute(
                "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'meta'",
                (url.schema,)).fetchone()
            tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s",
                                  (url.schema,)).fetchone()[0]
            if meta is None and tables:
                raise StoreError(
                    f"the schema {url.schema!r} of {where_of(url)} holds tables that are not "
                    "openintent's; name another schema with ?schema=... in the store URL")
            if meta is not None:
                rows = dict(conn.execute(f"SELECT key, value FROM {s}.meta").fetchall())
                if rows.get("application") != APPLICATION:
                    raise StoreError(
                        f"the schema {url.schema!r} of {where_of(url)} is not openintent's "
                        f"(its meta table says {rows.get('application')!r}); name another "
                        "schema with ?schema=... in the store URL")
                version = int(rows.get("schema_version", "0"))
        else:
            conn.execute(f"CREATE SCHEMA {s}")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the schema {url.schema!r} of {where_of(url)} holds openintent schema version "
                f"{version}, newer than this library's {SCHEMA_VERSION}; upgrade openintent")
        if version == 0:
            conn.execute(f"CREATE TABLE IF NOT EXISTS {s}.meta "
                         "(key text PRIMARY KEY, value text NOT NULL)")
            conn.execute(f"INSERT INTO {s}.meta VALUES ('application', %s)", (APPLICATION,))
            conn.execute(f"INSERT INTO {s}.meta VALUES ('schema_version', '0')")
        for step, statements in MIGRATIONS:
            if step > version:
                for statement in statements:
                    conn.execute(statement.format(s=s))
                conn.execute(f"UPDATE {s}.meta SET value = %s WHERE key = 'schema_version'",
                             (str(step),))


def where_of(url: PgUrl) -> str:
    """The database of a URL, for messages (no password)."""
    parts = urlsplit(url.url)
    host = parts.hostname or dict(parse_qsl(parts.query)).get("host", "localhost")
    return f"the database {parts.path.lstrip('/') or '(default)'} on {host}"


def shown_url(url: str) -> str:
    """A store URL as messages show it: its password, if it has one, masked."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
