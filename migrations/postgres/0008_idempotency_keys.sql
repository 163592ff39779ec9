-- Idempotency-Key: the first answer to a write, per API token and key, so that a client's retry
-- after a timeout returns that answer instead of doing the write again (issue 19, item 17).
-- `status` is NULL while the first request runs. Kept 24 hours.
CREATE TABLE idempotency_keys (
    token_hash    TEXT NOT NULL,
    key           TEXT NOT NULL,
    request_hash  TEXT NOT NULL,
    status        BIGINT,
    headers       TEXT,
    body          BYTEA,
    created_at    BIGINT NOT NULL,
    PRIMARY KEY (token_hash, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
