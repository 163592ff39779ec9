-- Pruning the log without scans. The events prune looked for events older than the retention
-- with no delivery left: with no index on `events.occurred_at` it read the whole events table,
-- and with none on `deliveries.event_id` each old event's check (and, here, each event delete's
-- foreign-key check) read the whole deliveries table: measured, one pass over 50,000 events and
-- 100,000 deliveries took 287 s, holding the write lock. Both indexes take their new entries at
-- the right edge (times and ids only grow), so a write costs one more small index entry each.
CREATE INDEX IF NOT EXISTS events_by_time ON events (occurred_at);
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (event_id);
