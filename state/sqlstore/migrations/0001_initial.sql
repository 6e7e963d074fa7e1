-- The first schema of mailgate's state. One file for PostgreSQL and
-- SQLite: {{id}} is an auto-numbered key, {{blob}} a column of bytes.
-- Times are microseconds since 1970-01-01 UTC (0: none), so that both
-- engines compare and return them alike. Columns ending in _key hold what
-- searches compare, in lower case; recipient and stage lists are framed by
-- newlines, one item a line, so that a LIKE pattern finds a whole item.

CREATE TABLE quarantine (
	id           TEXT PRIMARY KEY,  -- the queue ID given at MAIL FROM
	node         TEXT NOT NULL,     -- the node that quarantined it
	time         BIGINT NOT NULL,
	sender_key   TEXT NOT NULL,
	rcpts_key    TEXT NOT NULL,
	stages_key   TEXT NOT NULL,     -- stages the Stage filter finds it by
	size         BIGINT NOT NULL,
	parts        BIGINT NOT NULL,   -- rows in quarantine_parts
	releasing    TEXT NOT NULL DEFAULT '',
	released     TEXT NOT NULL DEFAULT '',
	release_node TEXT NOT NULL DEFAULT '',
	released_at  BIGINT NOT NULL DEFAULT 0,
	record       TEXT NOT NULL      -- the rest of the record, as JSON
);
CREATE INDEX quarantine_time ON quarantine (time);
CREATE INDEX quarantine_releasing ON quarantine (release_node) WHERE releasing <> '';

-- A message's bytes in parts of at most 1 MiB, so that neither a write
-- nor a read holds a whole large message in memory.
CREATE TABLE quarantine_parts (
	id   TEXT NOT NULL,
	seq  BIGINT NOT NULL,
	data {{blob}} NOT NULL,
	PRIMARY KEY (id, seq)
);

CREATE TABLE trace_events (
	seq         {{id}},
	time        BIGINT NOT NULL,
	node        TEXT NOT NULL,
	queue_id    TEXT NOT NULL,
	message_key TEXT NOT NULL,  -- the Message-ID without angle brackets
	event       TEXT NOT NULL,
	action      TEXT NOT NULL,
	sender_key  TEXT NOT NULL,
	rcpts_key   TEXT NOT NULL,
	related     TEXT NOT NULL,
	data        TEXT NOT NULL   -- the event, as JSON
);
CREATE INDEX trace_events_queue_id ON trace_events (queue_id);
CREATE INDEX trace_events_message_key ON trace_events (message_key) WHERE message_key <> '';
CREATE INDEX trace_events_time ON trace_events (time);

CREATE TABLE list_entries (
	owner    TEXT NOT NULL,
	kind     TEXT NOT NULL,
	sender   TEXT NOT NULL,
	added    BIGINT NOT NULL,
	added_by TEXT NOT NULL,
	PRIMARY KEY (owner, kind, sender)
);

CREATE TABLE dmarc_records (
	seq    {{id}},
	day    TEXT NOT NULL,  -- the UTC day, 2006-01-02
	time   BIGINT NOT NULL,
	node   TEXT NOT NULL,
	domain TEXT NOT NULL,
	data   {{blob}} NOT NULL
);
CREATE INDEX dmarc_records_day ON dmarc_records (day, seq);

-- A row is the claim of one node to send a day's reports.
CREATE TABLE dmarc_days (
	day     TEXT PRIMARY KEY,
	node    TEXT NOT NULL,
	claimed BIGINT NOT NULL
);

CREATE TABLE audit_log (
	seq    {{id}},
	time   BIGINT NOT NULL,
	node   TEXT NOT NULL,
	actor  TEXT NOT NULL,
	action TEXT NOT NULL,
	target TEXT NOT NULL,
	detail TEXT NOT NULL
);
CREATE INDEX audit_log_time ON audit_log (time);

CREATE TABLE nodes (
	name        TEXT PRIMARY KEY,
	version     TEXT NOT NULL,
	config_hash TEXT NOT NULL,
	health      TEXT NOT NULL,
	started     BIGINT NOT NULL,
	heartbeat   BIGINT NOT NULL
);
