-- migration: access policy: each row's compartments and labels summarised on the row
ALTER TABLE resource ADD COLUMN compartment TEXT;
ALTER TABLE resource ADD COLUMN labelled INTEGER NOT NULL DEFAULT 0;
UPDATE resource SET
    compartment = (SELECT CASE count(*) WHEN 0 THEN NULL WHEN 1 THEN max(c.patient_id) ELSE '*' END FROM ix_compartment c WHERE c.rid = resource.rid),
    labelled = CASE WHEN EXISTS (SELECT 1 FROM ix_token t WHERE t.rid = resource.rid AND t.param = '_security') THEN 1 ELSE 0 END;
