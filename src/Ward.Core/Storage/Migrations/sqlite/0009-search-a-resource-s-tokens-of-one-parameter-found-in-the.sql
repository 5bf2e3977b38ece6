-- migration: search: a resource's tokens of one parameter found in the index
CREATE INDEX ix_token_rid_param ON ix_token (rid, param, code);
DROP INDEX ix_token_rid;
