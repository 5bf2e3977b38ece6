-- migration: access policy: Consent rules in the index, break-the-glass openings
CREATE TABLE ix_consent (rid bigint NOT NULL, patient_id text COLLATE "C" NOT NULL, effect text COLLATE "C" NOT NULL, actor text COLLATE "C", purpose text COLLATE "C", label text COLLATE "C", lo bigint NOT NULL, hi bigint NOT NULL);
CREATE INDEX ix_consent_rid ON ix_consent (rid);
CREATE INDEX ix_consent_actor ON ix_consent (actor, purpose);
CREATE TABLE break_glass (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    subject       text COLLATE "C" NOT NULL,
    role          text COLLATE "C",
    fhir_user     text COLLATE "C",
    patient_id    text COLLATE "C" NOT NULL,
    opened        bigint NOT NULL,
    expires       bigint NOT NULL,
    justification text NOT NULL,
    uses          integer NOT NULL,
    reviewed      bigint,
    reviewer      text,
    review_note   text
);
CREATE INDEX break_glass_open ON break_glass (subject, expires);
