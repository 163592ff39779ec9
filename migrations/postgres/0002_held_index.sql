-- Deliveries held back by an open circuit breaker (next_attempt_at >= HELD, see storage::HELD),
-- by URL: the success that closes a breaker releases its URL's held rows without reading the rest
-- of the queue, even while other URLs of the same host stay paused with a large backlog.
CREATE INDEX deliveries_held ON deliveries (workspace_id, url)
    WHERE status = 'pending' AND next_attempt_at >= 4000000000000000;

-- The queue table churns (every delivery is updated two or more times): vacuum and analyse it
-- after 2% of its rows changed instead of the default 20%, so dead index entries and stale
-- statistics do not slow claims under a sustained load.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);
ALTER TABLE delivery_attempts SET (autovacuum_analyze_scale_factor = 0.02);
