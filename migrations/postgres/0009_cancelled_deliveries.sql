-- A delivery can be cancelled (status 'cancelled'). Every existing row already satisfies the new
-- check, so it is added without reading them (NOT VALID).
ALTER TABLE deliveries DROP CONSTRAINT deliveries_status_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'cancelled')) NOT VALID;
