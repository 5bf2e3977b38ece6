namespace Ward.Core.Storage;

/// <summary>
/// Numbered schema migrations, one list per engine with the same numbers and names: a feature adds its migration to both.
/// Never edit a published one: add the next number.
/// </summary>
internal static class Migrations
{
    /// <summary>Migration 6, the same SQL on both engines.</summary>
    private const string PolicyIndexes = """
            -- The policy checks of a search ask, row by row, for the row's patients and its security labels.
            CREATE INDEX ix_compartment_rid_patient ON ix_compartment (rid, patient_id);
            DROP INDEX ix_compartment_rid;
            CREATE INDEX ix_token_security ON ix_token (rid, system, code) WHERE param = '_security';
            """;

    /// <summary>
    /// Migration 8, the same SQL on both engines: a search's policy checks read the row's compartments and whether it
    /// has security labels from the row itself (<see cref="Search.IndexSet.Compartment"/>, <see cref="Search.IndexSet.Labelled"/>)
    /// and probe the index tables only for the few rows in several compartments or with labels.
    /// </summary>
    private const string PolicySummary = $"""
            ALTER TABLE resource ADD COLUMN compartment TEXT;
            ALTER TABLE resource ADD COLUMN labelled INTEGER NOT NULL DEFAULT 0;
            UPDATE resource SET
                compartment = {CompartmentOfRow},
                labelled = CASE WHEN EXISTS (SELECT 1 FROM ix_token t WHERE t.rid = resource.rid AND t.param = '_security') THEN 1 ELSE 0 END;
            """;

    /// <summary>A <c>resource</c> row's compartments summarised from <c>ix_compartment</c> (migration 8, and erasure after it removes a patient).</summary>
    internal const string CompartmentOfRow =
        "(SELECT CASE count(*) WHEN 0 THEN NULL WHEN 1 THEN max(c.patient_id) ELSE '*' END FROM ix_compartment c WHERE c.rid = resource.rid)";

    /// <summary>
    /// Migration 9, the same SQL on both engines: a resource's own tokens of one parameter found in its index entry alone
    /// (an instance's study, series and modality for QIDO-RS and WADO-RS; the per-row token checks of searches), where the
    /// index on the row id alone made the engine read every token row of the resource to test its parameter.
    /// </summary>
    private const string TokenByResource = """
            CREATE INDEX ix_token_rid_param ON ix_token (rid, param, code);
            DROP INDEX ix_token_rid;
            """;

    /// <summary>
    /// Migration 10: audit entries sealed under the audit key, the audit columns that name patients and people blinded,
    /// and reference URLs (unresolved conditional references among them) blinded. The SQL only lifts the audit log's
    /// ban on updates; the node then converts what is stored with its keys and restores the ban
    /// (<see cref="StoreSession.SealAuditLog"/>), in the same transaction.
    /// </summary>
    public const int SealedAudit = 10;

    private const string SealedAuditName = "audit: entries sealed, patient and people columns blinded; reference URLs blinded";

    /// <summary>The audit log's ban on updates that migration 10 lifts, as <see cref="StoreSession.SealAuditLog"/> restores it.</summary>
    public static string AuditNoUpdate(StoreEngine engine) => engine == StoreEngine.Sqlite
        ? "CREATE TRIGGER audit_entry_no_update BEFORE UPDATE ON audit_entry BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;"
        : "CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry FOR EACH ROW EXECUTE FUNCTION ward_append_only();";

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
        (3, "identity: users, clients, grants and tokens (ASP.NET Core Identity and OpenIddict, generated by EF from IdentityDb)", """
            CREATE TABLE "AspNetRoles" (
                "Id" TEXT NOT NULL CONSTRAINT "PK_AspNetRoles" PRIMARY KEY,
                "Name" TEXT NULL,
                "NormalizedName" TEXT NULL,
                "ConcurrencyStamp" TEXT NULL
            );


            CREATE TABLE "AspNetUsers" (
                "Id" TEXT NOT NULL CONSTRAINT "PK_AspNetUsers" PRIMARY KEY,
                "Role" TEXT NOT NULL,
                "FhirUser" TEXT NULL,
                "Disabled" INTEGER NOT NULL,
                "UserName" TEXT NULL,
                "NormalizedUserName" TEXT NULL,
                "Email" TEXT NULL,
                "NormalizedEmail" TEXT NULL,
                "EmailConfirmed" INTEGER NOT NULL,
                "PasswordHash" TEXT NULL,
                "SecurityStamp" TEXT NULL,
                "ConcurrencyStamp" TEXT NULL,
                "PhoneNumber" TEXT NULL,
                "PhoneNumberConfirmed" INTEGER NOT NULL,
                "TwoFactorEnabled" INTEGER NOT NULL,
                "LockoutEnd" TEXT NULL,
                "LockoutEnabled" INTEGER NOT NULL,
                "AccessFailedCount" INTEGER NOT NULL
            );


            CREATE TABLE "OpenIddictApplications" (
                "Id" TEXT NOT NULL CONSTRAINT "PK_OpenIddictApplications" PRIMARY KEY,
                "ApplicationType" TEXT NULL,
                "ClientId" TEXT NULL,
                "ClientSecret" TEXT NULL,
                "ClientType" TEXT NULL,
                "ConcurrencyToken" TEXT NULL,
                "ConsentType" TEXT NULL,
                "DisplayName" TEXT NULL,
                "DisplayNames" TEXT NULL,
                "JsonWebKeySet" TEXT NULL,
                "Permissions" TEXT NULL,
                "PostLogoutRedirectUris" TEXT NULL,
                "Properties" TEXT NULL,
                "RedirectUris" TEXT NULL,
                "Requirements" TEXT NULL,
                "Settings" TEXT NULL
            );


            CREATE TABLE "OpenIddictScopes" (
                "Id" TEXT NOT NULL CONSTRAINT "PK_OpenIddictScopes" PRIMARY KEY,
                "ConcurrencyToken" TEXT NULL,
                "Description" TEXT NULL,
                "Descriptions" TEXT NULL,
                "DisplayName" TEXT NULL,
                "DisplayNames" TEXT NULL,
                "Name" TEXT NULL,
                "Properties" TEXT NULL,
                "Resources" TEXT NULL
            );


            CREATE TABLE "WardUsedAssertions" (
                "Id" TEXT NOT NULL CONSTRAINT "PK_WardUsedAssertions" PRIMARY KEY,
                "ExpiresUtc" TEXT NOT NULL
            );


            CREATE TABLE "AspNetRoleClaims" (
                "Id" INTEGER NOT NULL CONSTRAINT "PK_AspNetRoleClaims" PRIMARY KEY AUTOINCREMENT,
                "RoleId" TEXT NOT NULL,
                "ClaimType" TEXT NULL,
                "ClaimValue" TEXT NULL,
                CONSTRAINT "FK_AspNetRoleClaims_AspNetRoles_RoleId" FOREIGN KEY ("RoleId") REFERENCES "AspNetRoles" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserClaims" (
                "Id" INTEGER NOT NULL CONSTRAINT "PK_AspNetUserClaims" PRIMARY KEY AUTOINCREMENT,
                "UserId" TEXT NOT NULL,
                "ClaimType" TEXT NULL,
                "ClaimValue" TEXT NULL,
                CONSTRAINT "FK_AspNetUserClaims_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserLogins" (
                "LoginProvider" TEXT NOT NULL,
                "ProviderKey" TEXT NOT NULL,
                "ProviderDisplayName" TEXT NULL,
                "UserId" TEXT NOT NULL,
                CONSTRAINT "PK_AspNetUserLogins" PRIMARY KEY ("LoginProvider", "ProviderKey"),
                CONSTRAINT "FK_AspNetUserLogins_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserRoles" (
                "UserId" TEXT NOT NULL,
                "RoleId" TEXT NOT NULL,
                CONSTRAINT "PK_AspNetUserRoles" PRIMARY KEY ("UserId", "RoleId"),
                CONSTRAINT "FK_AspNetUserRoles_AspNetRoles_RoleId" FOREIGN KEY ("RoleId") REFERENCES "AspNetRoles" ("Id") ON DELETE CASCADE,
                CONSTRAINT "FK_AspNetUserRoles_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserTokens" (
                "UserId" TEXT NOT NULL,
                "LoginProvider" TEXT NOT NULL,
                "Name" TEXT NOT NULL,
                "Value" TEXT NULL,
                CONSTRAINT "PK_AspNetUserTokens" PRIMARY KEY ("UserId", "LoginProvider", "Name"),
                CONSTRAINT "FK_AspNetUserTokens_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "OpenIddictAuthorizations" (
                "Id" TEXT NOT NULL CONSTRAINT "PK_OpenIddictAuthorizations" PRIMARY KEY,
                "ApplicationId" TEXT NULL,
                "ConcurrencyToken" TEXT NULL,
                "CreationDate" TEXT NULL,
                "Properties" TEXT NULL,
                "Scopes" TEXT NULL,
                "Status" TEXT NULL,
                "Subject" TEXT NULL,
                "Type" TEXT NULL,
                CONSTRAINT "FK_OpenIddictAuthorizations_OpenIddictApplications_ApplicationId" FOREIGN KEY ("ApplicationId") REFERENCES "OpenIddictApplications" ("Id")
            );


            CREATE TABLE "OpenIddictTokens" (
                "Id" TEXT NOT NULL CONSTRAINT "PK_OpenIddictTokens" PRIMARY KEY,
                "ApplicationId" TEXT NULL,
                "AuthorizationId" TEXT NULL,
                "ConcurrencyToken" TEXT NULL,
                "CreationDate" TEXT NULL,
                "ExpirationDate" TEXT NULL,
                "Payload" TEXT NULL,
                "Properties" TEXT NULL,
                "RedemptionDate" TEXT NULL,
                "ReferenceId" TEXT NULL,
                "Status" TEXT NULL,
                "Subject" TEXT NULL,
                "Type" TEXT NULL,
                CONSTRAINT "FK_OpenIddictTokens_OpenIddictApplications_ApplicationId" FOREIGN KEY ("ApplicationId") REFERENCES "OpenIddictApplications" ("Id"),
                CONSTRAINT "FK_OpenIddictTokens_OpenIddictAuthorizations_AuthorizationId" FOREIGN KEY ("AuthorizationId") REFERENCES "OpenIddictAuthorizations" ("Id")
            );


            CREATE INDEX "IX_AspNetRoleClaims_RoleId" ON "AspNetRoleClaims" ("RoleId");


            CREATE UNIQUE INDEX "RoleNameIndex" ON "AspNetRoles" ("NormalizedName");


            CREATE INDEX "IX_AspNetUserClaims_UserId" ON "AspNetUserClaims" ("UserId");


            CREATE INDEX "IX_AspNetUserLogins_UserId" ON "AspNetUserLogins" ("UserId");


            CREATE INDEX "IX_AspNetUserRoles_RoleId" ON "AspNetUserRoles" ("RoleId");


            CREATE INDEX "EmailIndex" ON "AspNetUsers" ("NormalizedEmail");


            CREATE UNIQUE INDEX "UserNameIndex" ON "AspNetUsers" ("NormalizedUserName");


            CREATE UNIQUE INDEX "IX_OpenIddictApplications_ClientId" ON "OpenIddictApplications" ("ClientId");


            CREATE INDEX "IX_OpenIddictAuthorizations_ApplicationId_Status_Subject_Type" ON "OpenIddictAuthorizations" ("ApplicationId", "Status", "Subject", "Type");


            CREATE UNIQUE INDEX "IX_OpenIddictScopes_Name" ON "OpenIddictScopes" ("Name");


            CREATE INDEX "IX_OpenIddictTokens_ApplicationId_Status_Subject_Type" ON "OpenIddictTokens" ("ApplicationId", "Status", "Subject", "Type");


            CREATE INDEX "IX_OpenIddictTokens_AuthorizationId" ON "OpenIddictTokens" ("AuthorizationId");


            CREATE UNIQUE INDEX "IX_OpenIddictTokens_ReferenceId" ON "OpenIddictTokens" ("ReferenceId");


            CREATE INDEX "IX_WardUsedAssertions_ExpiresUtc" ON "WardUsedAssertions" ("ExpiresUtc");
            """),
        (4, "audit: append-only log entries, RFC 9162 subtree hashes and signed checkpoints", """
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
            """),
        (5, "access policy: Consent rules in the index, break-the-glass openings", """
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
            """),
        (6, "access policy: covering indexes for the per-row policy checks", PolicyIndexes),
        (7, "research: each researcher's differential-privacy budget and what was spent of it", """
            CREATE TABLE research_budget (researcher TEXT PRIMARY KEY, name TEXT NOT NULL, epsilon REAL NOT NULL, granted INTEGER NOT NULL, granted_by TEXT NOT NULL);
            CREATE TABLE research_spend (id INTEGER PRIMARY KEY, researcher TEXT NOT NULL, at INTEGER NOT NULL, epsilon REAL NOT NULL, query TEXT NOT NULL);
            CREATE INDEX research_spend_researcher ON research_spend (researcher);
            """),
        (8, "access policy: each row's compartments and labels summarised on the row", PolicySummary),
        (9, "search: a resource's tokens of one parameter found in the index", TokenByResource),
        (SealedAudit, SealedAuditName, "DROP TRIGGER audit_entry_no_update;"),
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
        (3, "identity: users, clients, grants and tokens (ASP.NET Core Identity and OpenIddict, generated by EF from IdentityDb)", """
            CREATE TABLE "AspNetRoles" (
                "Id" text NOT NULL,
                "Name" character varying(256),
                "NormalizedName" character varying(256),
                "ConcurrencyStamp" text,
                CONSTRAINT "PK_AspNetRoles" PRIMARY KEY ("Id")
            );


            CREATE TABLE "AspNetUsers" (
                "Id" text NOT NULL,
                "Role" text NOT NULL,
                "FhirUser" text,
                "Disabled" boolean NOT NULL,
                "UserName" character varying(256),
                "NormalizedUserName" character varying(256),
                "Email" character varying(256),
                "NormalizedEmail" character varying(256),
                "EmailConfirmed" boolean NOT NULL,
                "PasswordHash" text,
                "SecurityStamp" text,
                "ConcurrencyStamp" text,
                "PhoneNumber" text,
                "PhoneNumberConfirmed" boolean NOT NULL,
                "TwoFactorEnabled" boolean NOT NULL,
                "LockoutEnd" timestamp with time zone,
                "LockoutEnabled" boolean NOT NULL,
                "AccessFailedCount" integer NOT NULL,
                CONSTRAINT "PK_AspNetUsers" PRIMARY KEY ("Id")
            );


            CREATE TABLE "OpenIddictApplications" (
                "Id" text NOT NULL,
                "ApplicationType" character varying(50),
                "ClientId" character varying(100),
                "ClientSecret" text,
                "ClientType" character varying(50),
                "ConcurrencyToken" character varying(50),
                "ConsentType" character varying(50),
                "DisplayName" text,
                "DisplayNames" text,
                "JsonWebKeySet" text,
                "Permissions" text,
                "PostLogoutRedirectUris" text,
                "Properties" text,
                "RedirectUris" text,
                "Requirements" text,
                "Settings" text,
                CONSTRAINT "PK_OpenIddictApplications" PRIMARY KEY ("Id")
            );


            CREATE TABLE "OpenIddictScopes" (
                "Id" text NOT NULL,
                "ConcurrencyToken" character varying(50),
                "Description" text,
                "Descriptions" text,
                "DisplayName" text,
                "DisplayNames" text,
                "Name" character varying(200),
                "Properties" text,
                "Resources" text,
                CONSTRAINT "PK_OpenIddictScopes" PRIMARY KEY ("Id")
            );


            CREATE TABLE "WardUsedAssertions" (
                "Id" character varying(64) NOT NULL,
                "ExpiresUtc" timestamp with time zone NOT NULL,
                CONSTRAINT "PK_WardUsedAssertions" PRIMARY KEY ("Id")
            );


            CREATE TABLE "AspNetRoleClaims" (
                "Id" integer GENERATED BY DEFAULT AS IDENTITY,
                "RoleId" text NOT NULL,
                "ClaimType" text,
                "ClaimValue" text,
                CONSTRAINT "PK_AspNetRoleClaims" PRIMARY KEY ("Id"),
                CONSTRAINT "FK_AspNetRoleClaims_AspNetRoles_RoleId" FOREIGN KEY ("RoleId") REFERENCES "AspNetRoles" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserClaims" (
                "Id" integer GENERATED BY DEFAULT AS IDENTITY,
                "UserId" text NOT NULL,
                "ClaimType" text,
                "ClaimValue" text,
                CONSTRAINT "PK_AspNetUserClaims" PRIMARY KEY ("Id"),
                CONSTRAINT "FK_AspNetUserClaims_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserLogins" (
                "LoginProvider" text NOT NULL,
                "ProviderKey" text NOT NULL,
                "ProviderDisplayName" text,
                "UserId" text NOT NULL,
                CONSTRAINT "PK_AspNetUserLogins" PRIMARY KEY ("LoginProvider", "ProviderKey"),
                CONSTRAINT "FK_AspNetUserLogins_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserRoles" (
                "UserId" text NOT NULL,
                "RoleId" text NOT NULL,
                CONSTRAINT "PK_AspNetUserRoles" PRIMARY KEY ("UserId", "RoleId"),
                CONSTRAINT "FK_AspNetUserRoles_AspNetRoles_RoleId" FOREIGN KEY ("RoleId") REFERENCES "AspNetRoles" ("Id") ON DELETE CASCADE,
                CONSTRAINT "FK_AspNetUserRoles_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "AspNetUserTokens" (
                "UserId" text NOT NULL,
                "LoginProvider" text NOT NULL,
                "Name" text NOT NULL,
                "Value" text,
                CONSTRAINT "PK_AspNetUserTokens" PRIMARY KEY ("UserId", "LoginProvider", "Name"),
                CONSTRAINT "FK_AspNetUserTokens_AspNetUsers_UserId" FOREIGN KEY ("UserId") REFERENCES "AspNetUsers" ("Id") ON DELETE CASCADE
            );


            CREATE TABLE "OpenIddictAuthorizations" (
                "Id" text NOT NULL,
                "ApplicationId" text,
                "ConcurrencyToken" character varying(50),
                "CreationDate" timestamp with time zone,
                "Properties" text,
                "Scopes" text,
                "Status" character varying(50),
                "Subject" character varying(400),
                "Type" character varying(50),
                CONSTRAINT "PK_OpenIddictAuthorizations" PRIMARY KEY ("Id"),
                CONSTRAINT "FK_OpenIddictAuthorizations_OpenIddictApplications_Application~" FOREIGN KEY ("ApplicationId") REFERENCES "OpenIddictApplications" ("Id")
            );


            CREATE TABLE "OpenIddictTokens" (
                "Id" text NOT NULL,
                "ApplicationId" text,
                "AuthorizationId" text,
                "ConcurrencyToken" character varying(50),
                "CreationDate" timestamp with time zone,
                "ExpirationDate" timestamp with time zone,
                "Payload" text,
                "Properties" text,
                "RedemptionDate" timestamp with time zone,
                "ReferenceId" character varying(100),
                "Status" character varying(50),
                "Subject" character varying(400),
                "Type" character varying(150),
                CONSTRAINT "PK_OpenIddictTokens" PRIMARY KEY ("Id"),
                CONSTRAINT "FK_OpenIddictTokens_OpenIddictApplications_ApplicationId" FOREIGN KEY ("ApplicationId") REFERENCES "OpenIddictApplications" ("Id"),
                CONSTRAINT "FK_OpenIddictTokens_OpenIddictAuthorizations_AuthorizationId" FOREIGN KEY ("AuthorizationId") REFERENCES "OpenIddictAuthorizations" ("Id")
            );


            CREATE INDEX "IX_AspNetRoleClaims_RoleId" ON "AspNetRoleClaims" ("RoleId");


            CREATE UNIQUE INDEX "RoleNameIndex" ON "AspNetRoles" ("NormalizedName");


            CREATE INDEX "IX_AspNetUserClaims_UserId" ON "AspNetUserClaims" ("UserId");


            CREATE INDEX "IX_AspNetUserLogins_UserId" ON "AspNetUserLogins" ("UserId");


            CREATE INDEX "IX_AspNetUserRoles_RoleId" ON "AspNetUserRoles" ("RoleId");


            CREATE INDEX "EmailIndex" ON "AspNetUsers" ("NormalizedEmail");


            CREATE UNIQUE INDEX "UserNameIndex" ON "AspNetUsers" ("NormalizedUserName");


            CREATE UNIQUE INDEX "IX_OpenIddictApplications_ClientId" ON "OpenIddictApplications" ("ClientId");


            CREATE INDEX "IX_OpenIddictAuthorizations_ApplicationId_Status_Subject_Type" ON "OpenIddictAuthorizations" ("ApplicationId", "Status", "Subject", "Type");


            CREATE UNIQUE INDEX "IX_OpenIddictScopes_Name" ON "OpenIddictScopes" ("Name");


            CREATE INDEX "IX_OpenIddictTokens_ApplicationId_Status_Subject_Type" ON "OpenIddictTokens" ("ApplicationId", "Status", "Subject", "Type");


            CREATE INDEX "IX_OpenIddictTokens_AuthorizationId" ON "OpenIddictTokens" ("AuthorizationId");


            CREATE UNIQUE INDEX "IX_OpenIddictTokens_ReferenceId" ON "OpenIddictTokens" ("ReferenceId");


            CREATE INDEX "IX_WardUsedAssertions_ExpiresUtc" ON "WardUsedAssertions" ("ExpiresUtc");
            """),
        (4, "audit: append-only log entries, RFC 9162 subtree hashes and signed checkpoints", """
            CREATE TABLE audit_head (id integer PRIMARY KEY CHECK (id = 1), size bigint NOT NULL);
            INSERT INTO audit_head (id, size) VALUES (1, 0);
            CREATE TABLE audit_entry (
                idx       bigint PRIMARY KEY,
                recorded  bigint NOT NULL,
                patient   text COLLATE "C",
                agent     text COLLATE "C",
                agent_ref text COLLATE "C",
                subtype   text COLLATE "C" NOT NULL,
                outcome   text COLLATE "C" NOT NULL,
                data      bytea NOT NULL,
                leaf      bytea NOT NULL
            );
            -- Entries are stored as they are hashed (no compression: nothing to gain on hashes and identifiers, and cheaper to serve).
            ALTER TABLE audit_entry ALTER COLUMN data SET STORAGE EXTERNAL;
            CREATE INDEX audit_entry_patient ON audit_entry (patient, idx);
            CREATE INDEX audit_entry_agent ON audit_entry (agent, idx);
            CREATE INDEX audit_entry_agent_ref ON audit_entry (agent_ref, idx);
            CREATE INDEX audit_entry_recorded ON audit_entry (recorded);
            -- Complete subtrees of two leaves or more (a leaf's own hash is in its entry row).
            CREATE TABLE audit_tree (level integer NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx));
            CREATE TABLE audit_checkpoint (size bigint PRIMARY KEY, recorded bigint NOT NULL, note text NOT NULL);
            CREATE FUNCTION ward_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $$;
            CREATE TRIGGER audit_entry_append_only BEFORE UPDATE OR DELETE ON audit_entry FOR EACH ROW EXECUTE FUNCTION ward_append_only();
            CREATE TRIGGER audit_tree_append_only BEFORE UPDATE OR DELETE ON audit_tree FOR EACH ROW EXECUTE FUNCTION ward_append_only();
            CREATE TRIGGER audit_checkpoint_append_only BEFORE UPDATE OR DELETE ON audit_checkpoint FOR EACH ROW EXECUTE FUNCTION ward_append_only();
            CREATE TRIGGER audit_entry_no_truncate BEFORE TRUNCATE ON audit_entry FOR EACH STATEMENT EXECUTE FUNCTION ward_append_only();
            CREATE TRIGGER audit_tree_no_truncate BEFORE TRUNCATE ON audit_tree FOR EACH STATEMENT EXECUTE FUNCTION ward_append_only();
            CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_checkpoint FOR EACH STATEMENT EXECUTE FUNCTION ward_append_only();
            """),
        (5, "access policy: Consent rules in the index, break-the-glass openings", """
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
            """),
        (6, "access policy: covering indexes for the per-row policy checks", PolicyIndexes),
        (7, "research: each researcher's differential-privacy budget and what was spent of it", """
            CREATE TABLE research_budget (researcher text COLLATE "C" PRIMARY KEY, name text NOT NULL, epsilon double precision NOT NULL, granted bigint NOT NULL, granted_by text NOT NULL);
            CREATE TABLE research_spend (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, researcher text COLLATE "C" NOT NULL, at bigint NOT NULL, epsilon double precision NOT NULL, query text NOT NULL);
            CREATE INDEX research_spend_researcher ON research_spend (researcher);
            """),
        (8, "access policy: each row's compartments and labels summarised on the row", PolicySummary),
        (9, "search: a resource's tokens of one parameter found in the index", TokenByResource),
        (SealedAudit, SealedAuditName, "DROP TRIGGER audit_entry_append_only ON audit_entry;"),
    ];
}
