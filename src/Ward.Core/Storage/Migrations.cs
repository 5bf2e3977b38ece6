namespace Ward.Core.Storage;

/// <summary>
/// Numbered schema migrations, one list per engine with the same numbers and names: a feature adds its migration to both.
/// Never edit a published one: add the next number.
/// </summary>
internal static class Migrations
{
    public static readonly IReadOnlyList<(int Version, string Name, string Sql)> Sqlite =
    [
        (1, "resources, versions and search index", """
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
            """),
        (2, "encryption at rest: wrapped data keys, key id per version", """
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
            """),
    ];

    // PostgreSQL: the same tables and columns. Text compares byte-wise (COLLATE "C"), as in SQLite, so that prefix ranges
    // and sort orders are the same on both engines whatever the database's locale. The identifiers of new resources are
    // reserved from resource_rid_seq by the writer (batched writes need them before the rows are sent).
    public static readonly IReadOnlyList<(int Version, string Name, string Sql)> Postgres =
    [
        (1, "resources, versions and search index", """
            CREATE SEQUENCE resource_rid_seq;
            CREATE TABLE resource (
                rid          bigint  PRIMARY KEY DEFAULT nextval('resource_rid_seq'),
                type         text    COLLATE "C" NOT NULL,
                id           text    COLLATE "C" NOT NULL,
                version      integer NOT NULL,
                last_updated bigint  NOT NULL,
                deleted      integer NOT NULL DEFAULT 0,
                UNIQUE (type, id)
            );
            ALTER SEQUENCE resource_rid_seq OWNED BY resource.rid;
            CREATE INDEX resource_type_updated ON resource (type, last_updated);

            CREATE TABLE version (
                seq          bigint  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                rid          bigint  NOT NULL REFERENCES resource (rid),
                version      integer NOT NULL,
                last_updated bigint  NOT NULL,
                method       text    NOT NULL,
                deleted      integer NOT NULL,
                data         bytea,
                UNIQUE (rid, version)
            );
            CREATE INDEX version_updated ON version (last_updated);

            CREATE TABLE ix_string    (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, value text COLLATE "C" NOT NULL, exact text COLLATE "C" NOT NULL);
            CREATE TABLE ix_token     (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, system text COLLATE "C", code text COLLATE "C", text text COLLATE "C");
            CREATE TABLE ix_date      (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, lo bigint NOT NULL, hi bigint NOT NULL);
            CREATE TABLE ix_number    (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, lo double precision NOT NULL, hi double precision NOT NULL);
            CREATE TABLE ix_quantity  (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, system text COLLATE "C", code text COLLATE "C", lo double precision NOT NULL, hi double precision NOT NULL);
            CREATE TABLE ix_uri       (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, value text COLLATE "C" NOT NULL);
            CREATE TABLE ix_reference (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, target_type text COLLATE "C", target_id text COLLATE "C", url text COLLATE "C");
            CREATE TABLE ix_composite (rid bigint NOT NULL, param text COLLATE "C" NOT NULL, system1 text COLLATE "C", code1 text COLLATE "C", system2 text COLLATE "C", code2 text COLLATE "C", lo double precision, hi double precision);
            CREATE TABLE ix_compartment (rid bigint NOT NULL, patient_id text COLLATE "C" NOT NULL);

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
            """),
        (2, "encryption at rest: wrapped data keys, key id per version", """
            CREATE TABLE keyring (
                id           integer PRIMARY KEY CHECK (id = 1),
                master_kid   text    NOT NULL
            );

            CREATE TABLE data_key (
                kid          bigint  GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
                kind         text    COLLATE "C" NOT NULL,
                owner        text    COLLATE "C" NOT NULL,
                wrapped      bytea,
                master_kid   text,
                created      bigint  NOT NULL,
                erased       bigint,
                reason       text
            );
            CREATE UNIQUE INDEX data_key_live ON data_key (kind, owner) WHERE wrapped IS NOT NULL;
            CREATE INDEX data_key_owner ON data_key (owner);

            ALTER TABLE version ADD COLUMN kid bigint;
            CREATE INDEX version_kid ON version (kid);
            """),
    ];
}
