-- Due deliveries are found host by host, through deliveries_due_by_host, by every statement of
-- the queue (claims skip through it with INDEXED BY). The index on due time alone served none of
-- them; dropping it saves an index entry on every write of a delivery (insert, lease, result).
DROP INDEX IF EXISTS deliveries_due;
