-- Work done once for the cluster (state.Claims, state.DMARCRecords.Key).

-- A row is the claim of one node to do what key names (a recipient's
-- digest of a day, a day's DMARC reports): the primary key lets one in.
CREATE TABLE claims (
	claim_key TEXT PRIMARY KEY,
	node      TEXT NOT NULL,
	claimed   BIGINT NOT NULL
);
CREATE INDEX claims_claimed ON claims (claimed);

-- A DMARC record sent again by a node (the gateway collecting its
-- stage's records, after a crash) is stored once: its key among the
-- node's records. Records without a key are not compared.
ALTER TABLE dmarc_records ADD COLUMN record_key TEXT NOT NULL DEFAULT '';
CREATE UNIQUE INDEX dmarc_records_key ON dmarc_records (node, record_key) WHERE record_key <> '';

-- A day's DMARC reports are claimed as any other work (claims): the
-- table of their claims alone goes.
DROP TABLE dmarc_days;
