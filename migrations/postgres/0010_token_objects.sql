-- API tokens as objects a user holds (issue 20): a name to tell them apart, the first
-- characters of a generated token (never enough to use it), a scope narrowing what the
-- holder's role allows, an optional expiry and when each was last used. Existing tokens keep
-- working as they did: scope `all`, no expiry.
ALTER TABLE api_tokens ADD COLUMN name TEXT NOT NULL DEFAULT 'first token';
ALTER TABLE api_tokens ADD COLUMN prefix TEXT NOT NULL DEFAULT '';
ALTER TABLE api_tokens ADD COLUMN scope TEXT NOT NULL DEFAULT 'all';
ALTER TABLE api_tokens ADD COLUMN expires_at BIGINT;
ALTER TABLE api_tokens ADD COLUMN last_used_at BIGINT;
CREATE INDEX api_tokens_of_user ON api_tokens (user_id);
