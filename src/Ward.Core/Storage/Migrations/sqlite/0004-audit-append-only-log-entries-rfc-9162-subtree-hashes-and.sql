-- migration: audit: append-only log entries, RFC 9162 subtree hashes and signed checkpoints
CREATE TABLE audit_head (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL);
INSERT INTO audit_head (id, size) VALUES (1, 0);
CREATE TABLE audit_entry (
    idx       INTEGER PRIMARY KEY,
    recorded  INTEGER NOT NULL,
    patient   TEXT,
    agent     TEXT,
    agent_ref TEXT,
    subtype   TEXT NOT NULL,
    outcome   TEXT NOT NULL,
    data      BLOB NOT NULL,
    leaf      BLOB NOT NULL
);
CREATE INDEX audit_entry_patient ON audit_entry (patient, idx);
CREATE INDEX audit_entry_agent ON audit_entry (agent, idx);
CREATE INDEX audit_entry_agent_ref ON audit_entry (agent_ref, idx);
CREATE INDEX audit_entry_recorded ON audit_entry (recorded);
-- Complete subtrees of two leaves or more (a leaf's own hash is in its entry row).
CREATE TABLE audit_tree (level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE audit_checkpoint (size INTEGER PRIMARY KEY, recorded INTEGER NOT NULL, note TEXT NOT NULL);
CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_entry_no_delete BEFORE DELETE ON audit_entry BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_tree_no_update BEFORE UPDATE ON audit_tree BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_tree_no_delete BEFORE DELETE ON audit_tree BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_update BEFORE UPDATE ON audit_checkpoint BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER audit_checkpoint_no_delete BEFORE DELETE ON audit_checkpoint BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
