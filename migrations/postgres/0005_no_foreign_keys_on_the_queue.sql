-- No foreign keys on the tables every event writes to. Each was checked by a trigger running a
-- query per inserted row (`perf` on PostgreSQL at 1,000 events/s: the checks took 10% of the
-- server's CPU, six per event). Herald itself guarantees what they guarded: instances, events,
-- deliveries and attempts are only inserted by statements that take their parents' keys from
-- the parent rows in the same transaction, and workspaces and processes are never deleted.
-- Pruning deletes a delivery's attempts with it (the cascade did that before). SQLite keeps
-- its foreign keys: there a check is one lookup by row id, not a query.
ALTER TABLE instances DROP CONSTRAINT IF EXISTS instances_workspace_id_fkey,
                      DROP CONSTRAINT IF EXISTS instances_process_id_fkey;
ALTER TABLE events DROP CONSTRAINT IF EXISTS events_workspace_id_fkey;
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_workspace_id_fkey,
                       DROP CONSTRAINT IF EXISTS deliveries_event_id_fkey;
ALTER TABLE delivery_attempts DROP CONSTRAINT IF EXISTS delivery_attempts_delivery_id_fkey;
