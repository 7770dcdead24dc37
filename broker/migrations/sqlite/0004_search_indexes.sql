-- Search (issue 17). The dashboard and `spoolctl tasks` page through the
-- records newest (or oldest) first, by (created_at, id), under any mix of
-- filters. Each common filter gets an index that ends in (created_at, id),
-- so a first page, or any page after a cursor, is read from the index in
-- order and stops after one page, instead of sorting every match.
CREATE INDEX IF NOT EXISTS spool_jobs_status_created ON spool_jobs (status, created_at, id);
CREATE INDEX IF NOT EXISTS spool_jobs_name_created ON spool_jobs (name, created_at, id);
-- Replaces (queue, status), which also served the per-queue counts.
CREATE INDEX IF NOT EXISTS spool_jobs_queue_status_created
    ON spool_jobs (queue, status, created_at, id);
DROP INDEX IF EXISTS spool_jobs_queue_status;
-- Replaces (tenant, created_at): the id keeps pages in the index's order.
CREATE INDEX IF NOT EXISTS spool_jobs_tenant_created_id ON spool_jobs (tenant, created_at, id);
DROP INDEX IF EXISTS spool_jobs_tenant_created;

-- Each task's timeline: one row per transition of each attempt, written in
-- the same transaction as the record. A redelivered write of a transition
-- updates its row (the later time wins) instead of adding one.
CREATE TABLE IF NOT EXISTS spool_job_events (
    job_id      BLOB    NOT NULL,
    attempt     INTEGER NOT NULL,
    transition  TEXT    NOT NULL CHECK (transition IN ('queued', 'scheduled', 'requeued',
                    'running', 'retrying', 'succeeded', 'failed', 'dead', 'revoked',
                    'expired')),
    at          INTEGER NOT NULL,
    worker_host TEXT,
    worker_pid  INTEGER,
    error       TEXT,
    PRIMARY KEY (job_id, attempt, transition)
) WITHOUT ROWID;

-- A task's events go with its record (retention, or any other delete).
CREATE TRIGGER IF NOT EXISTS spool_jobs_forget_events AFTER DELETE ON spool_jobs
BEGIN
    DELETE FROM spool_job_events WHERE job_id = OLD.id;
END;
