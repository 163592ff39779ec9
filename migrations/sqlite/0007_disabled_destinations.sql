-- A receiver that answers 410 Gone is disabled (Standard Webhooks): its pending deliveries fail
-- as `gone`, and new events queue nothing for it until an administrator or developer enables it
-- again (by saving the settings with it, or explicitly). The columns stay NULL for every other
-- URL, so nodes of the previous version, which do not read them, keep working beside this one.
ALTER TABLE destinations ADD COLUMN disabled_at INTEGER;
ALTER TABLE destinations ADD COLUMN disabled_reason TEXT;
