using Npgsql;
using Ward.Core.Search;

namespace Ward.Core.Storage;

internal readonly record struct PendingVersion(long Rid, string Type, string Id, int Version, long LastUpdatedTicks, string Method, bool Deleted, byte[]? Envelope, long? Kid,
    string? Compartment, bool Labelled);

/// <summary>
/// The writes of one PostgreSQL write session not yet sent. They go out when the session next talks to the database
/// (a read sees them) or commits: one batch of set-based statements (<c>INSERT ... SELECT FROM unnest(arrays)</c>),
/// a single round trip whatever the number of resources and index rows.
/// </summary>
internal sealed class PendingWrites(PostgresStore store)
{
    private readonly List<(PendingVersion Version, bool Exists)> _versions = [];
    private readonly List<(long Rid, IndexSet Index)> _indexes = [];
    private readonly HashSet<long> _rids = [];
    private readonly List<AuditRow> _auditRows = [];
    private readonly List<(int Level, long Index, byte[] Hash)> _auditNodes = [];

    public bool IsEmpty => _rids.Count == 0 && _auditRows.Count == 0;

    /// <summary>Audit entries and subtree hashes, sent with the session's other writes.</summary>
    public void AddAudit(IReadOnlyList<AuditRow> rows, IReadOnlyList<(int Level, long Index, byte[] Hash)> nodes)
    {
        _auditRows.AddRange(rows);
        _auditNodes.AddRange(nodes);
    }

    /// <summary>Whether a row of this resource is waiting (a second write of it must follow the first).</summary>
    public bool Touches(long rid) => _rids.Contains(rid);

    public long NewRid(StoreSession session) => store.NextRid(session);

    public void Add(bool exists, PendingVersion version, IndexSet? index)
    {
        _versions.Add((version, exists));
        _rids.Add(version.Rid);
        if (index is not null)
        {
            _indexes.Add((version.Rid, index));
        }
    }

    public void Flush(StoreSession session)
    {
        var connection = (NpgsqlConnection)session.Lease.Connection;
        using var batch = new NpgsqlBatch(connection, (NpgsqlTransaction?)session.Transaction);
        var updated = _versions.Where(v => v.Exists).Select(v => v.Version).ToList();
        var inserted = _versions.Where(v => !v.Exists).Select(v => v.Version).ToList();
        // Versions in the order they were written, so that the history sequence follows it.
        var versions = _versions.Select(v => v.Version).ToList();
        if (updated.Count > 0)
        {
            Add(batch, """
                UPDATE resource r SET version = u.version, last_updated = u.last_updated, deleted = u.deleted, compartment = u.compartment, labelled = u.labelled
                FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::integer[], $5::text[], $6::integer[]) AS u(rid, version, last_updated, deleted, compartment, labelled)
                WHERE r.rid = u.rid
                """,
                updated.Select(v => v.Rid).ToArray(), updated.Select(v => v.Version).ToArray(),
                updated.Select(v => v.LastUpdatedTicks).ToArray(), updated.Select(v => v.Deleted ? 1 : 0).ToArray(),
                updated.Select(v => v.Compartment).ToArray(), updated.Select(v => v.Labelled ? 1 : 0).ToArray());
            var rids = updated.Select(v => v.Rid).ToArray();
            foreach (var table in StoreSession.IndexTables)
            {
                Add(batch, $"DELETE FROM {table} WHERE rid = ANY($1)", rids);
            }
        }
        if (inserted.Count > 0)
        {
            Add(batch, "INSERT INTO resource (rid, type, id, version, last_updated, deleted, compartment, labelled) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::integer[], $7::text[], $8::integer[])",
                inserted.Select(v => v.Rid).ToArray(), inserted.Select(v => v.Type).ToArray(), inserted.Select(v => v.Id).ToArray(),
                inserted.Select(v => v.Version).ToArray(), inserted.Select(v => v.LastUpdatedTicks).ToArray(), inserted.Select(v => v.Deleted ? 1 : 0).ToArray(),
                inserted.Select(v => v.Compartment).ToArray(), inserted.Select(v => v.Labelled ? 1 : 0).ToArray());
        }
        Add(batch, "INSERT INTO version (rid, version, last_updated, method, deleted, data, kid) SELECT * FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $4::text[], $5::integer[], $6::bytea[], $7::bigint[])",
            versions.Select(v => v.Rid).ToArray(), versions.Select(v => v.Version).ToArray(), versions.Select(v => v.LastUpdatedTicks).ToArray(),
            versions.Select(v => v.Method).ToArray(), versions.Select(v => v.Deleted ? 1 : 0).ToArray(), versions.Select(v => v.Envelope).ToArray(), versions.Select(v => v.Kid).ToArray());
        AddIndexes(batch);
        if (_auditRows.Count > 0)
        {
            Add(batch, """
                INSERT INTO audit_entry (idx, recorded, patient, agent, agent_ref, subtype, outcome, data, leaf)
                SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::bytea[])
                """,
                _auditRows.Select(r => r.Index).ToArray(), _auditRows.Select(r => r.Recorded).ToArray(), _auditRows.Select(r => r.Patient).ToArray(),
                _auditRows.Select(r => r.Agent).ToArray(), _auditRows.Select(r => r.AgentRef).ToArray(), _auditRows.Select(r => r.Subtype).ToArray(),
                _auditRows.Select(r => r.Outcome).ToArray(), _auditRows.Select(r => r.Data).ToArray(), _auditRows.Select(r => r.Leaf).ToArray());
            Add(batch, "INSERT INTO audit_tree (level, idx, hash) SELECT * FROM unnest($1::integer[], $2::bigint[], $3::bytea[])",
                _auditNodes.Select(n => n.Level).ToArray(), _auditNodes.Select(n => n.Index).ToArray(), _auditNodes.Select(n => n.Hash).ToArray());
        }
        batch.ExecuteNonQuery();
        store.Wrote(_versions.Count);
        _auditRows.Clear();
        _auditNodes.Clear();
        _versions.Clear();
        _indexes.Clear();
        _rids.Clear();
    }

    private void AddIndexes(NpgsqlBatch batch)
    {
        Rows(batch, "ix_string (rid, param, value, exact)", "$1::bigint[], $2::text[], $3::text[], $4::text[]", ix => ix.Strings,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.Normalized), Col(rows, e => e.Exact)]);
        Rows(batch, "ix_token (rid, param, system, code, text)", "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]", ix => ix.Tokens,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.System), Col(rows, e => e.Code), Col(rows, e => e.Text)]);
        Rows(batch, "ix_date (rid, param, lo, hi)", "$1::bigint[], $2::text[], $3::bigint[], $4::bigint[]", ix => ix.Dates,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.Lo), Col(rows, e => e.Hi)]);
        Rows(batch, "ix_number (rid, param, lo, hi)", "$1::bigint[], $2::text[], $3::float8[], $4::float8[]", ix => ix.Numbers,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.Lo), Col(rows, e => e.Hi)]);
        Rows(batch, "ix_quantity (rid, param, system, code, lo, hi)", "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::float8[]", ix => ix.Quantities,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.System), Col(rows, e => e.Code), Col(rows, e => e.Lo), Col(rows, e => e.Hi)]);
        Rows(batch, "ix_uri (rid, param, value)", "$1::bigint[], $2::text[], $3::text[]", ix => ix.Uris,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.Value)]);
        Rows(batch, "ix_reference (rid, param, target_type, target_id, url)", "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]", ix => ix.References,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.TargetType), Col(rows, e => e.TargetId), Col(rows, e => e.Url)]);
        Rows(batch, "ix_composite (rid, param, system1, code1, system2, code2, lo, hi)",
            "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[], $8::float8[]", ix => ix.Composites,
            rows => [Rids(rows), Col(rows, e => e.Param), Col(rows, e => e.System1), Col(rows, e => e.Code1), Col(rows, e => e.System2), Col(rows, e => e.Code2),
                Col(rows, e => e.Lo), Col(rows, e => e.Hi)]);
        Rows(batch, "ix_compartment (rid, patient_id)", "$1::bigint[], $2::text[]", ix => ix.Patients,
            rows => [Rids(rows), Col(rows, e => e)]);
        Rows(batch, "ix_consent (rid, patient_id, effect, actor, purpose, label, lo, hi)",
            "$1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[]", ix => ix.Consents,
            rows => [Rids(rows), Col(rows, e => e.Patient), Col(rows, e => e.Effect), Col(rows, e => e.Actor), Col(rows, e => e.Purpose), Col(rows, e => e.Label),
                Col(rows, e => e.Lo), Col(rows, e => e.Hi)]);
    }

    private void Rows<T>(NpgsqlBatch batch, string target, string arrays, Func<IndexSet, IEnumerable<T>> entries, Func<List<(long Rid, T Entry)>, object[]> columns)
    {
        var rows = _indexes.SelectMany(x => entries(x.Index).Select(e => (x.Rid, e))).ToList();
        if (rows.Count > 0)
        {
            Add(batch, $"INSERT INTO {target} SELECT * FROM unnest({arrays})", columns(rows));
        }
    }

    private static long[] Rids<T>(List<(long Rid, T Entry)> rows) => rows.Select(r => r.Rid).ToArray();

    private static TValue[] Col<T, TValue>(List<(long Rid, T Entry)> rows, Func<T, TValue> value) => rows.Select(r => value(r.Entry)).ToArray();

    private static void Add(NpgsqlBatch batch, string sql, params object[] arrays)
    {
        var command = new NpgsqlBatchCommand(sql);
        foreach (var array in arrays)
        {
            command.Parameters.Add(new NpgsqlParameter { Value = array });
        }
        batch.BatchCommands.Add(command);
    }
}
