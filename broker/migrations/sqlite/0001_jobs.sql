-- Spool's job store, SQLite flavour. One row per task id, written
-- idempotently: `revision` (attempt * 4 + stage rank) only grows, so a stale
-- write from an older attempt never overwrites a newer outcome.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE IF NOT EXISTS spool_jobs (
    id               BLOB    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    queue            TEXT    NOT NULL,
    priority         INTEGER NOT NULL DEFAULT 1,
    tenant           TEXT,
    status           TEXT    NOT NULL CHECK (status IN ('queued', 'scheduled', 'running',
                         'retrying', 'succeeded', 'failed', 'dead', 'revoked', 'expired')),
    attempts         INTEGER NOT NULL DEFAULT 0,
    revision         INTEGER NOT NULL DEFAULT 0,
    worker_host      TEXT,
    worker_pid       INTEGER,
    progress_percent REAL,
    progress_stage   TEXT,
    progress_message TEXT,
    progress_fps     REAL,
    progress_eta_s   REAL,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    result           BLOB,
    error            TEXT
);

-- Status filters, and retention's scan for old finished rows.
CREATE INDEX IF NOT EXISTS spool_jobs_status ON spool_jobs (status, finished_at);
CREATE INDEX IF NOT EXISTS spool_jobs_queue_status ON spool_jobs (queue, status);
CREATE INDEX IF NOT EXISTS spool_jobs_tenant_created ON spool_jobs (tenant, created_at);
-- Time windows and keyset pagination (newest or oldest first).
CREATE INDEX IF NOT EXISTS spool_jobs_created ON spool_jobs (created_at, id);
