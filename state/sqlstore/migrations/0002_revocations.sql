-- The web console's credentials ended before their time (state.Revocations).

-- Sessions logged out before their expiry; a row is deleted after it.
CREATE TABLE revoked_sessions (
	id      TEXT PRIMARY KEY,  -- the session's random ID, as its cookie carries it
	expires BIGINT NOT NULL
);
CREATE INDEX revoked_sessions_expires ON revoked_sessions (expires);

-- The generation of each end user's links: a link made in an older one
-- is refused. No row: generation 0.
CREATE TABLE link_generations (
	rcpt       TEXT PRIMARY KEY,  -- the address in canonical form, lower case
	generation BIGINT NOT NULL
);
