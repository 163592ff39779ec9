-- Deliveries held back by an open circuit breaker (next_attempt_at >= HELD, see storage::HELD),
-- by URL: the success that closes a breaker releases its URL's held rows without reading the rest
-- of the queue, even while other URLs of the same host stay paused with a large backlog.
CREATE INDEX deliveries_held ON deliveries (workspace_id, url)
    WHERE status = 'pending' AND next_attempt_at >= 4000000000000000;
