-- PostgreSQL's migration 5 drops the foreign keys of the tables every event writes to, whose
-- checks there are a query per row. SQLite keeps them: a check is one lookup by row id. Nothing
-- changes here; the version stays in step with PostgreSQL's.
SELECT 1;
