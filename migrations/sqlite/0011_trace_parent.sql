-- OpenTelemetry (issue 20): the W3C `traceparent` of the request that queued a delivery, so its
-- callback attempts' spans link back to that request, across nodes and restarts. NULL when
-- tracing is off.
ALTER TABLE deliveries ADD COLUMN trace_parent TEXT;
