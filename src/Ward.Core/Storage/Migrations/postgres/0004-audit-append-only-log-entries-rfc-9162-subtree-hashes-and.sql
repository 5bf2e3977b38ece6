-- migration: audit: append-only log entries, RFC 9162 subtree hashes and signed checkpoints
CREATE TABLE audit_head (id integer PRIMARY KEY CHECK (id = 1), size bigint NOT NULL);
INSERT INTO audit_head (id, size) VALUES (1, 0);
CREATE TABLE audit_entry (
    idx       bigint PRIMARY KEY,
    recorded  bigint NOT NULL,
    patient   text COLLATE "C",
    agent     text COLLATE "C",
    agent_ref text COLLATE "C",
    subtype   text COLLATE "C" NOT NULL,
    outcome   text COLLATE "C" NOT NULL,
    data      bytea NOT NULL,
    leaf      bytea NOT NULL
);
-- Entries are stored as they are hashed (no compression: nothing to gain on hashes and identifiers, and cheaper to serve).
ALTER TABLE audit_entry ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE INDEX audit_entry_patient ON audit_entry (patient, idx);
CREATE INDEX audit_entry_agent ON audit_entry (agent, idx);
CREATE INDEX audit_entry_agent_ref ON audit_entry (agent_ref, idx);
CREATE INDEX audit_entry_recorded ON audit_entry (recorded);
-- Complete subtrees of two leaves or more (a leaf's own hash is in its entry row).
CREATE TABLE audit_tree (level integer NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx));
CREATE TABLE audit_checkpoint (size bigint PRIMARY KEY, recorded bigint NOT NULL, note text NOT NULL);
CREATE FUNCTION ward_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry FOR EACH ROW EXECUTE FUNCTION ward_append_only();
CREATE TRIGGER audit_tree_append_only BEFORE UPDATE OR DELETE ON audit_tree FOR EACH ROW EXECUTE FUNCTION ward_append_only();
CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint FOR EACH ROW EXECUTE FUNCTION ward_append_only();
CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON audit_entry FOR EACH STATEMENT EXECUTE FUNCTION ward_append_only();
CREATE TRIGGER audit_tree_no_truncate BEFORE TRUNCATE ON audit_tree FOR EACH STATEMENT EXECUTE FUNCTION ward_append_only();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint FOR EACH STATEMENT EXECUTE FUNCTION ward_append_only();
