-- migration: access policy: Consent rules in the index, break-the-glass openings
-- Enforceable provisions of active Consents, replaced with the Consent's other index rows.
CREATE TABLE ix_consent (rid INTEGER NOT NULL, patient_id TEXT NOT NULL, effect TEXT NOT NULL, actor TEXT, purpose TEXT, label TEXT, lo INTEGER NOT NULL, hi INTEGER NOT NULL);
CREATE INDEX ix_consent_rid ON ix_consent (rid);
CREATE INDEX ix_consent_actor ON ix_consent (actor, purpose);
-- One row per break-the-glass opening (user, patient), until the security officer reviews it.
CREATE TABLE break_glass (
    id            INTEGER PRIMARY KEY,
    subject       TEXT    NOT NULL,
    role          TEXT,
    fhir_user     TEXT,
    patient_id    TEXT    NOT NULL,
    opened        INTEGER NOT NULL,
    expires       INTEGER NOT NULL,
    justification TEXT    NOT NULL,
    uses          INTEGER NOT NULL,
    reviewed      INTEGER,
    reviewer      TEXT,
    review_note   TEXT
);
CREATE INDEX break_glass_open ON break_glass (subject, expires);
