-- Deliveries held back by an open circuit breaker, by URL and then id: the recovery releases them
-- oldest first, a chunk at a time (storage::BREAKER_CHUNK), and the probe that ends a pause is
-- the URL's oldest held delivery, each found by one index descent instead of reading the URL's
-- whole backlog (measured on PostgreSQL: 0.4-1.8 s for the probe with 100,000 rows held).
DROP INDEX deliveries_held;
CREATE INDEX deliveries_held ON deliveries (workspace_id, url, id)
    WHERE status = 'pending' AND next_attempt_at >= 4000000000000000;
