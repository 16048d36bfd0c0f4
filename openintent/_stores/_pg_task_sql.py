"""The statements of the PostgreSQL task queue (:mod:`._pg_tasks`), one round trip each.

Each takes arrays (``unnest``), so one statement text serves a batch of any size (psycopg
prepares it after a few runs). The arrays of JSON texts (payloads, results) go in binary
format (``%b``): the text format would escape every quote in them, in Python, which cost
more than the rest of a submission. Notifications go out in the statement that makes them true
(``pg_notify`` in the same transaction: sent when it commits, never for a rolled-back write),
one per agent or run of the batch. Writes by a worker are *fenced*: they apply only while the
task is claimed under the worker's token (a later claim raised it; how an effect ended is
also kept once the task was cancelled, since the effect did run); an effect row is written
under a share lock on the task's row, so a claim cannot slip between the check and the write.
Times are POSIX seconds, passed in by the queue.
"""

from __future__ import annotations

__all__ = ["Statements"]


class Statements:
    """The queue's SQL for one schema (``s``: its quoted name)."""

    def __init__(self, s: str) -> None:
        # A batch of submissions: a resubmitted (run, intent, attempt, agent) returns its task
        # (the no-op update makes ON CONFLICT return the row), and its status (it may have
        # ended already). One notice per agent.
        self.submit = (
            "WITH v AS (SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::text[], "
            "%b::text[]) AS v(run_id, intent_id, attempt, agent_id, payload)), "
            f"ins AS (INSERT INTO {s}.tasks AS t "
            "(run_id, intent_id, attempt, agent_id, payload, created) "
            "SELECT run_id, intent_id, attempt, agent_id, payload, %s FROM v "
            "ON CONFLICT (run_id, intent_id, attempt, agent_id) DO UPDATE "
            "SET attempt = t.attempt "
            "RETURNING t.id, t.run_id, t.intent_id, t.attempt, t.agent_id, t.status) "
            "SELECT id, run_id, intent_id, attempt, agent_id, status, "
            "(SELECT count(pg_notify('openintent_tasks', d.agent_id)) "
            "FROM (SELECT DISTINCT agent_id FROM ins) AS d) FROM ins")
        # Oldest first; a claimed task whose lease expired is claimed again. Per agent, the
        # oldest open tasks in the order of the (agent_id, id) index (one index range each,
        # never the finished rows), then the oldest of those; the ids given to the UPDATE as
        # one array (an index lookup each, whatever the planner thinks of the table's size).
        self.claim = (
            f"UPDATE {s}.tasks AS t SET status = 'claimed', worker = %s, token = t.token + 1, "
            "claims = t.claims + 1, lease_expires = %s, claim_id = %s WHERE t.id = ANY(ARRAY("
            "SELECT c.id FROM unnest(%s::text[]) AS a(agent_id) CROSS JOIN LATERAL ("
            f"SELECT id FROM {s}.tasks WHERE agent_id = a.agent_id "
            "AND status IN ('ready', 'claimed') AND (status = 'ready' OR lease_expires < %s) "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) AS c ORDER BY c.id LIMIT %s)) "
            "RETURNING t.id, t.run_id, t.intent_id, t.attempt, t.agent_id, t.payload, t.token, "
            "t.claims")
        # What an earlier try of the same claim call took (its answer was lost).
        self.claimed_before = (
            "SELECT id, run_id, intent_id, attempt, agent_id, payload, token, claims "
            f"FROM {s}.tasks WHERE claim_id = %s AND worker = %s AND status = 'claimed'")
        # A batch of finishes under their tokens. A task already finished with the same token
        # and status counts as written: the same finish, retried after a broken connection.
        self.finish = (
            "WITH v AS (SELECT * FROM unnest(%s::bigint[], %s::bigint[], %s::text[], "
            "%b::text[]) AS v(id, token, status, result)), "
            f"f AS (UPDATE {s}.tasks AS t SET status = v.status, result = v.result, "
            "finished = %s, lease_expires = NULL FROM v WHERE t.id = v.id "
            "AND t.token = v.token AND (t.status = 'claimed' OR t.status = v.status) "
            "RETURNING t.id, t.run_id) "
            "SELECT id, (SELECT count(pg_notify('openintent_done', d.run_id)) "
            "FROM (SELECT DISTINCT run_id FROM f) AS d) FROM f")
        self.renew = (
            f"UPDATE {s}.tasks AS t SET lease_expires = %s "
            "FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, token) "
            "WHERE t.id = v.id AND t.token = v.token AND t.status = 'claimed' RETURNING t.id")
        self.cancel = (
            f"WITH c AS (UPDATE {s}.tasks SET status = 'cancelled', finished = %s, "
            "lease_expires = NULL WHERE id = %s AND status IN ('ready', 'claimed') "
            "RETURNING run_id, worker, claims) "
            "SELECT worker, claims, pg_notify('openintent_done', run_id)::text FROM c")
        # Every open task of a run (a resumed run's earlier sitting's): one notice.
        self.cancel_run = (
            f"WITH c AS (UPDATE {s}.tasks SET status = 'cancelled', finished = %s, "
            "lease_expires = NULL WHERE run_id = %s AND status IN ('ready', 'claimed') "
            "RETURNING id) SELECT count(*), CASE WHEN count(*) > 0 "
            "THEN pg_notify('openintent_done', %s) END FROM c")
        # A worker's earlier process: its claims expire now (POSIX time 0 is long past).
        self.forget = (
            f"WITH f AS (UPDATE {s}.tasks SET lease_expires = 0 WHERE worker = %s "
            "AND status = 'claimed' RETURNING agent_id) "
            "SELECT count(*), (SELECT count(pg_notify('openintent_tasks', d.agent_id)) "
            "FROM (SELECT DISTINCT agent_id FROM f) AS d) FROM f")
        self.effects = (
            f"SELECT name, status, value, error FROM {s}.task_effects "
            "WHERE run_id = %s AND intent_id = %s ORDER BY seq")
        # An effect row, under the task's token: ``started`` while it is claimed; how it
        # ended also once the task was cancelled meanwhile (the effect ran: that is the truth
        # the next attempt needs), never once another claim took over. Answers whether the
        # task is still claimed.
        self.effect = (
            f"WITH t AS (SELECT run_id, intent_id, status FROM {s}.tasks WHERE id = %s "
            "AND token = %s AND (status = 'claimed' OR (status = 'cancelled' AND %s)) "
            f"FOR SHARE), e AS (INSERT INTO {s}.task_effects "
            "(run_id, intent_id, name, status, value, error) "
            "SELECT run_id, intent_id, %s, %s, %s, %s FROM t "
            "ON CONFLICT (run_id, intent_id, name) DO UPDATE SET status = excluded.status, "
            "value = excluded.value, error = excluded.error RETURNING 1) "
            "SELECT t.status = 'claimed' FROM t, e")
        # The waiting tasks that ended, and the runs of those not seen before.
        self.outcomes = (
            f"SELECT id, run_id, status, result, worker, claims FROM {s}.tasks "
            "WHERE id = ANY(%s) AND (status IN ('done', 'failed', 'cancelled') OR id = ANY(%s))")

