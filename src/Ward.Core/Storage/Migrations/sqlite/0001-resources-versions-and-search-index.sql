-- migration: resources, versions and search index
CREATE TABLE resource (
    rid          INTEGER PRIMARY KEY,
    type         TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    deleted      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (type, id)
);
CREATE INDEX resource_type_updated ON resource (type, last_updated);

-- Every version as the exact bytes that are served (the next layer encrypts them).
CREATE TABLE version (
    seq          INTEGER PRIMARY KEY,
    rid          INTEGER NOT NULL REFERENCES resource (rid),
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    method       TEXT    NOT NULL,
    deleted      INTEGER NOT NULL,
    data         BLOB,
    UNIQUE (rid, version)
);
CREATE INDEX version_updated ON version (last_updated);

-- Search index of current versions, one table per parameter type.
CREATE TABLE ix_string    (rid INTEGER NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL, exact TEXT NOT NULL);
CREATE TABLE ix_token     (rid INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT, text TEXT);
CREATE TABLE ix_date      (rid INTEGER NOT NULL, param TEXT NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL);
CREATE TABLE ix_number    (rid INTEGER NOT NULL, param TEXT NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL);
CREATE TABLE ix_quantity  (rid INTEGER NOT NULL, param TEXT NOT NULL, system TEXT, code TEXT, lo REAL NOT NULL, hi REAL NOT NULL);
CREATE TABLE ix_uri       (rid INTEGER NOT NULL, param TEXT NOT NULL, value TEXT NOT NULL);
CREATE TABLE ix_reference (rid INTEGER NOT NULL, param TEXT NOT NULL, target_type TEXT, target_id TEXT, url TEXT);
CREATE TABLE ix_composite (rid INTEGER NOT NULL, param TEXT NOT NULL, system1 TEXT, code1 TEXT, system2 TEXT, code2 TEXT, lo REAL, hi REAL);
CREATE TABLE ix_compartment (rid INTEGER NOT NULL, patient_id TEXT NOT NULL);

CREATE INDEX ix_string_value    ON ix_string (param, value);
CREATE INDEX ix_string_rid      ON ix_string (rid);
CREATE INDEX ix_token_code      ON ix_token (param, code, system);
CREATE INDEX ix_token_rid       ON ix_token (rid);
CREATE INDEX ix_date_lo         ON ix_date (param, lo);
CREATE INDEX ix_date_rid        ON ix_date (rid);
CREATE INDEX ix_number_lo       ON ix_number (param, lo);
CREATE INDEX ix_number_rid      ON ix_number (rid);
CREATE INDEX ix_quantity_lo     ON ix_quantity (param, code, lo);
CREATE INDEX ix_quantity_rid    ON ix_quantity (rid);
CREATE INDEX ix_uri_value       ON ix_uri (param, value);
CREATE INDEX ix_uri_rid         ON ix_uri (rid);
CREATE INDEX ix_reference_target ON ix_reference (target_id, target_type, param);
CREATE INDEX ix_reference_url   ON ix_reference (url, param);
CREATE INDEX ix_reference_rid   ON ix_reference (rid, param);
CREATE INDEX ix_composite_code  ON ix_composite (param, code1, code2);
CREATE INDEX ix_composite_rid   ON ix_composite (rid);
CREATE INDEX ix_compartment_patient ON ix_compartment (patient_id);
CREATE INDEX ix_compartment_rid ON ix_compartment (rid);
