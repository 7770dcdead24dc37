-- Workflow history: one row per workflow and one per node, written by the
-- producer at submit and by the workers as nodes move. Redis holds the live
-- state; these rows are the queryable record. Node writes are idempotent:
-- a write applies only for the node's current task id and when its
-- `revision` (attempts * 4 + stage: waiting 0, queued 1, running 2, settled
-- 3) is at least the stored one. Times are milliseconds since the epoch.
CREATE TABLE IF NOT EXISTS spool_workflows (
    id          UUID    NOT NULL PRIMARY KEY,
    status      TEXT    NOT NULL CHECK (status IN ('running', 'succeeded', 'failed',
                    'cancelled')),
    node_count  INTEGER NOT NULL DEFAULT 0,
    failed_node TEXT,
    error       TEXT,
    runs        INTEGER NOT NULL DEFAULT 1,
    created_at  BIGINT  NOT NULL,
    finished_at BIGINT,
    deadline    BIGINT
);

-- Listing newest first, with or without a status filter.
CREATE INDEX IF NOT EXISTS spool_workflows_created ON spool_workflows (created_at, id);
CREATE INDEX IF NOT EXISTS spool_workflows_status_created
    ON spool_workflows (status, created_at);

CREATE TABLE IF NOT EXISTS spool_workflow_nodes (
    workflow_id    UUID    NOT NULL,
    name           TEXT    NOT NULL,
    position       INTEGER NOT NULL,
    task_id        UUID    NOT NULL,
    task           TEXT    NOT NULL,
    queue          TEXT    NOT NULL,
    -- The parents as `name:policy` words separated by spaces.
    parents        TEXT    NOT NULL DEFAULT '',
    state          TEXT    NOT NULL CHECK (state IN ('waiting', 'queued', 'running',
                       'succeeded', 'failed', 'dead_lettered', 'revoked', 'expired',
                       'cancelled')),
    attempts       INTEGER NOT NULL DEFAULT 0,
    revision       BIGINT  NOT NULL DEFAULT 0,
    queued_at      BIGINT,
    started_at     BIGINT,
    finished_at    BIGINT,
    output_bytes   BIGINT,
    output_summary TEXT,
    error          TEXT,
    PRIMARY KEY (workflow_id, name)
);

-- A task record's way back to its node.
CREATE INDEX IF NOT EXISTS spool_workflow_nodes_task ON spool_workflow_nodes (task_id);
