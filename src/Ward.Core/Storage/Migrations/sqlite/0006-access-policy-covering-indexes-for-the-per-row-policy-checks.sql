-- migration: access policy: covering indexes for the per-row policy checks
-- The policy checks of a search ask, row by row, for the row's patients and its security labels.
CREATE INDEX ix_compartment_rid_patient ON ix_compartment (rid, patient_id);
DROP INDEX ix_compartment_rid;
CREATE INDEX ix_token_security ON ix_token (rid, system, code) WHERE param = '_security';
