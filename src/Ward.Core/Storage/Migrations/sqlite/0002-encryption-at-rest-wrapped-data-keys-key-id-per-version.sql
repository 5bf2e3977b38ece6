-- migration: encryption at rest: wrapped data keys, key id per version
-- The master key's id (never the key); one row.
CREATE TABLE keyring (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    master_kid   TEXT    NOT NULL
);

-- Data keys wrapped by the master key: one per patient, one shared, one for the blind index.
-- Erasure sets wrapped to NULL and keeps the row as a tombstone (kid, time, reason).
CREATE TABLE data_key (
    kid          INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    owner        TEXT    NOT NULL,
    wrapped      BLOB,
    master_kid   TEXT,
    created      INTEGER NOT NULL,
    erased       INTEGER,
    reason       TEXT
);
CREATE UNIQUE INDEX data_key_live ON data_key (kind, owner) WHERE wrapped IS NOT NULL;
CREATE INDEX data_key_owner ON data_key (owner);

-- Every version's envelope names the key it is sealed with; resource.deleted = 2 marks an erased resource.
ALTER TABLE version ADD COLUMN kid INTEGER;
CREATE INDEX version_kid ON version (kid);
