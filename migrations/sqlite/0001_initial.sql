-- Herald schema, version 1 (SQLite). Times are Unix milliseconds.

CREATE TABLE workspaces (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    -- How callbacks are sent: 'kianda' (GET with query parameters) or 'standard' (POST JSON).
    webhook_format     TEXT NOT NULL DEFAULT 'kianda' CHECK (webhook_format IN ('kianda', 'standard')),
    -- Standard Webhooks signing secrets (whsec_...). They must be readable to sign, so they are
    -- stored as they are; the previous one keeps signing for 24 hours after a rotation.
    signing_secret     TEXT,
    previous_secret    TEXT,
    secret_rotated_at  INTEGER
);

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    workspace_id   INTEGER NOT NULL REFERENCES workspaces(id),
    email          TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('administrator', 'developer', 'user')),
    active         INTEGER NOT NULL DEFAULT 1,
    password_hash  TEXT NOT NULL,
    created_at     INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- Web UI sessions: the cookie's SHA-256, never the cookie itself.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    csrf        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);

CREATE TABLE webhook_events (
    workspace_id  INTEGER NOT NULL REFERENCES workspaces(id),
    event_type    TEXT NOT NULL,
    enabled       INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, event_type)
);

CREATE TABLE webhook_urls (
    workspace_id  INTEGER NOT NULL REFERENCES workspaces(id),
    event_type    TEXT NOT NULL,
    position      INTEGER NOT NULL,
    url           TEXT NOT NULL,
    host          TEXT NOT NULL,
    PRIMARY KEY (workspace_id, event_type, position)
);

CREATE TABLE processes (
    id           INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    title        TEXT NOT NULL,
    next_number  INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE instances (
    id           INTEGER PRIMARY KEY,
    workspace_id INTEGER NOT NULL REFERENCES workspaces(id),
    process_id   INTEGER NOT NULL REFERENCES processes(id),
    number       INTEGER NOT NULL,
    instance_id  TEXT NOT NULL,
    unique_id    TEXT NOT NULL UNIQUE,
    data         TEXT NOT NULL,
    status       TEXT NOT NULL,
    version      INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL,
    modified_at  INTEGER NOT NULL,
    modified_by  TEXT NOT NULL,
    deleted_at   INTEGER,
    deleted_by   TEXT,
    UNIQUE (workspace_id, instance_id),
    UNIQUE (process_id, number)
);

CREATE INDEX instances_recycle_bin ON instances (workspace_id, deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE events (
    id            INTEGER PRIMARY KEY,
    workspace_id  INTEGER NOT NULL REFERENCES workspaces(id),
    event_type    TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    process_name  TEXT NOT NULL,
    occurred_at   INTEGER NOT NULL,
    instance      TEXT
);

CREATE TABLE deliveries (
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
    status            TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
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

-- The worker's queue: pending rows by due time, overall and per destination host.
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_due_by_host ON deliveries (host, next_attempt_at, id) WHERE status = 'pending';
-- Pending deliveries by destination: per-instance, per-URL ordering ("is an earlier delivery of
-- this instance to this URL still pending?") and the circuit breaker's holds and releases of one
-- URL. One index serves both, so the planner cannot pick a URL-wide scan for the ordering check.
CREATE INDEX deliveries_pending_key ON deliveries (workspace_id, url, instance_id, id) WHERE status = 'pending';
-- Attempts in flight per host (the per-host concurrency cap); leases are cleared on completion.
CREATE INDEX deliveries_leased ON deliveries (host, lease_until) WHERE lease_until IS NOT NULL;
-- The delivery log, newest first.
CREATE INDEX deliveries_log ON deliveries (workspace_id, id);
-- Retention: finished deliveries by age.
CREATE INDEX deliveries_finished ON deliveries (updated_at) WHERE status <> 'pending';

-- Health of each destination URL: the circuit breaker.
CREATE TABLE destinations (
    workspace_id          INTEGER NOT NULL REFERENCES workspaces(id),
    url                   TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('closed', 'open')),
    consecutive_failures  INTEGER NOT NULL DEFAULT 0,
    probe_interval_ms     INTEGER NOT NULL DEFAULT 0,
    paused_until          INTEGER,
    last_success_at       INTEGER,
    last_failure_at       INTEGER,
    last_error            TEXT,
    PRIMARY KEY (workspace_id, url)
);

CREATE TABLE delivery_attempts (
    id                INTEGER PRIMARY KEY,
    delivery_id       INTEGER NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    node              TEXT NOT NULL,
    started_at        INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    outcome           TEXT NOT NULL,
    status_code       INTEGER,
    error             TEXT,
    response_excerpt  TEXT
);

CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, id);
