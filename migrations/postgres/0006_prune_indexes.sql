-- Pruning the log without scans. The events prune looks for events older than the retention
-- with no delivery left: without an index on `events.occurred_at` it read the whole events
-- table every pass, and without one on `deliveries.event_id` it had to read the whole deliveries
-- table to find which events are still needed (SQLite took 287 s for 50,000 events and 100,000
-- deliveries). Both indexes take their new entries at the right edge (times and ids only grow).
-- Building them on a large existing table blocks writes while they are built: upgrade at a
-- quiet moment, or build them beforehand with CREATE INDEX CONCURRENTLY under these names.
CREATE INDEX IF NOT EXISTS events_by_time ON events (occurred_at);
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (event_id);
