-- no-transaction
-- A delivery can be cancelled (status 'cancelled'). SQLite cannot change a CHECK constraint in
-- place, so the table is rebuilt as SQLite's documentation describes: foreign keys off (they
-- cannot be switched inside a transaction, hence no-transaction), then in one transaction a new
-- table, every row copied, the old one dropped, the new one renamed, its indexes made again.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;
CREATE TABLE deliveries_rebuilt (
    id                INTEGER PRIMARY KEY,
    webhook_id        TEXT NOT NULL UNIQUE,
    workspace_id      INTEGER NOT NULL REFERENCES workspaces(id),
    event_id          INTEGER NOT NULL REFERENCES events(id),
    event_type        TEXT NOT NULL,
    instance_id       TEXT NOT NULL,
    process_name      TEXT NOT NULL,
    url               TEXT NOT NULL,
    host              TEXT NOT NULL,
    test              INTEGER NOT NULL DEFAULT 0,
    format            TEXT NOT NULL DEFAULT 'kianda',
    status            TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    next_attempt_at   INTEGER,
    lease_until       INTEGER,
    leased_by         TEXT,
    last_attempt_at   INTEGER,
    last_status_code  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
INSERT INTO deliveries_rebuilt (id, webhook_id, workspace_id, event_id, event_type, instance_id,
    process_name, url, host, test, format, status, attempts, next_attempt_at, lease_until,
    leased_by, last_attempt_at, last_status_code, last_error, created_at, updated_at)
SELECT id, webhook_id, workspace_id, event_id, event_type, instance_id,
    process_name, url, host, test, format, status, attempts, next_attempt_at, lease_until,
    leased_by, last_attempt_at, last_status_code, last_error, created_at, updated_at
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_rebuilt RENAME TO deliveries;
CREATE INDEX deliveries_due_by_host ON deliveries (host, next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_pending_key ON deliveries (workspace_id, url, instance_id, id) WHERE status = 'pending';
CREATE INDEX deliveries_leased ON deliveries (host, lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX deliveries_log ON deliveries (workspace_id, id);
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE status <> 'pending';
CREATE INDEX deliveries_held ON deliveries (workspace_id, url, id)
    WHERE status = 'pending' AND next_attempt_at >= 4000000000000000;
CREATE INDEX deliveries_by_event ON deliveries (event_id);
COMMIT;
PRAGMA foreign_keys = ON;
