-- Due deliveries are found host by host, through deliveries_due_by_host, by every statement of
-- the queue. The index on due time alone served none of them well, and it misled the claim's
-- generic plan: on a table emptied with stale statistics the plan found hosts and due rows
-- through it, sorting every pending row per host. Dropping it also saves an index entry on
-- every write of a delivery (insert, lease, result).
DROP INDEX IF EXISTS deliveries_due;
