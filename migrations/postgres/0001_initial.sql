-- Herald schema, version 1 (PostgreSQL). Times are Unix milliseconds.

CREATE TABLE workspaces (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    -- How callbacks are sent: 'kianda' (GET with query parameters) or 'standard' (POST JSON).
    webhook_format     TEXT NOT NULL DEFAULT 'kianda' CHECK (webhook_format IN ('kianda', 'standard')),
    -- Standard Webhooks signing secrets (whsec_...). They must be readable to sign, so they are
    -- stored as they are; the previous one keeps signing for 24 hours after a rotation.
    signing_secret     TEXT,
    previous_secret    TEXT,
    secret_rotated_at  BIGINT
);

CREATE TABLE users (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id   BIGINT NOT NULL REFERENCES workspaces(id),
    email          TEXT NOT NULL UNIQUE,
    display_name   TEXT NOT NULL,
    role           TEXT NOT NULL CHECK (role IN ('administrator', 'developer', 'user')),
    active         BOOLEAN NOT NULL DEFAULT TRUE,
    password_hash  TEXT NOT NULL,
    created_at     BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    token_hash  TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- Web UI sessions: the cookie's SHA-256, never the cookie itself.
CREATE TABLE sessions (
    token_hash  TEXT PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    csrf        TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

CREATE TABLE webhook_events (
    workspace_id  BIGINT NOT NULL REFERENCES workspaces(id),
    event_type    TEXT NOT NULL,
    enabled       BOOLEAN NOT NULL,
    PRIMARY KEY (workspace_id, event_type)
);

CREATE TABLE webhook_urls (
    workspace_id  BIGINT NOT NULL REFERENCES workspaces(id),
    event_type    TEXT NOT NULL,
    position      BIGINT NOT NULL,
    url           TEXT NOT NULL,
    host          TEXT NOT NULL,
    PRIMARY KEY (workspace_id, event_type, position)
);

CREATE TABLE processes (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    name         TEXT NOT NULL,
    title        TEXT NOT NULL,
    next_number  BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    UNIQUE (workspace_id, name)
);

CREATE TABLE instances (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id BIGINT NOT NULL REFERENCES workspaces(id),
    process_id   BIGINT NOT NULL REFERENCES processes(id),
    number       BIGINT NOT NULL,
    instance_id  TEXT NOT NULL,
    unique_id    TEXT NOT NULL UNIQUE,
    data         TEXT NOT NULL,
    status       TEXT NOT NULL,
    version      BIGINT NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   TEXT NOT NULL,
    modified_at  BIGINT NOT NULL,
    modified_by  TEXT NOT NULL,
    deleted_at   BIGINT,
    deleted_by   TEXT,
    UNIQUE (workspace_id, instance_id),
    UNIQUE (process_id, number)
);

CREATE INDEX instances_recycle_bin ON instances (workspace_id, deleted_at) WHERE deleted_at IS NOT NULL;

CREATE TABLE events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    workspace_id  BIGINT NOT NULL REFERENCES workspaces(id),
    event_type    TEXT NOT NULL,
    instance_id   TEXT NOT NULL,
    process_name  TEXT NOT NULL,
    occurred_at   BIGINT NOT NULL,
    instance      TEXT
);

CREATE TABLE deliveries (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id        TEXT NOT NULL UNIQUE,
    workspace_id      BIGINT NOT NULL REFERENCES workspaces(id),
    event_id          BIGINT NOT NULL REFERENCES events(id),
    event_type        TEXT NOT NULL,
    instance_id       TEXT NOT NULL,
    process_name      TEXT NOT NULL,
    url               TEXT NOT NULL,
    host              TEXT NOT NULL,
    test              BOOLEAN NOT NULL DEFAULT FALSE,
    format            TEXT NOT NULL DEFAULT 'kianda',
    status            TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts          BIGINT NOT NULL DEFAULT 0,
    next_attempt_at   BIGINT,
    lease_until       BIGINT,
    leased_by         TEXT,
    last_attempt_at   BIGINT,
    last_status_code  BIGINT,
    last_error        TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL
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
    workspace_id          BIGINT NOT NULL REFERENCES workspaces(id),
    url                   TEXT NOT NULL,
    state                 TEXT NOT NULL CHECK (state IN ('closed', 'open')),
    consecutive_failures  BIGINT NOT NULL DEFAULT 0,
    probe_interval_ms     BIGINT NOT NULL DEFAULT 0,
    paused_until          BIGINT,
    last_success_at       BIGINT,
    last_failure_at       BIGINT,
    last_error            TEXT,
    PRIMARY KEY (workspace_id, url)
);

CREATE TABLE delivery_attempts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id       BIGINT NOT NULL REFERENCES deliveries(id) ON DELETE CASCADE,
    node              TEXT NOT NULL,
    started_at        BIGINT NOT NULL,
    duration_ms       BIGINT NOT NULL,
    outcome           TEXT NOT NULL,
    status_code       BIGINT,
    error             TEXT,
    response_excerpt  TEXT
);

CREATE INDEX delivery_attempts_by_delivery ON delivery_attempts (delivery_id, id);
