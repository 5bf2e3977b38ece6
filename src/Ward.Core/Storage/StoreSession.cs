using Microsoft.Data.Sqlite;
using Ward.Core.Search;

namespace Ward.Core.Storage;

/// <summary>One connection borrowed from the store: a reader, or the single writer with its open transaction.</summary>
internal sealed class StoreSession : IDisposable
{
    private const string CurrentColumns = "r.rid, r.type, r.id, r.version, v.last_updated, v.deleted, v.method, v.data";
    private readonly SqliteStore _store;
    private readonly PooledConnection _pooled;
    private SqliteTransaction? _tx;
    private readonly bool _writer;

    internal StoreSession(SqliteStore store, PooledConnection pooled, SqliteTransaction? tx)
    {
        _store = store;
        _pooled = pooled;
        _tx = tx;
        _writer = tx is not null;
    }

    internal SqliteConnection Connection => _pooled.Connection;

    private SqliteCommand Cmd(string sql, params ReadOnlySpan<(string Name, object? Value)> args)
    {
        var cmd = _pooled.Prepared(sql, _tx);
        var parameters = cmd.Parameters;
        if (parameters.Count != args.Length)
        {
            parameters.Clear();
            foreach (var (name, _) in args)
            {
                parameters.Add(new SqliteParameter { ParameterName = name });
            }
        }
        for (var i = 0; i < args.Length; i++)
        {
            parameters[i].Value = args[i].Value ?? DBNull.Value;
        }
        return cmd;
    }

    public CurrentInfo? GetCurrent(string type, string id)
    {
        using var reader = Cmd("SELECT rid, version, deleted, last_updated FROM resource WHERE type = $t AND id = $i", ("$t", type), ("$i", id)).ExecuteReader();
        return reader.Read() ? new CurrentInfo(reader.GetInt64(0), reader.GetInt32(1), reader.GetInt32(2) != 0, reader.GetInt64(3)) : null;
    }

    public StoredVersion? Read(string type, string id)
    {
        using var reader = Cmd($"SELECT {CurrentColumns} FROM resource r JOIN version v ON v.rid = r.rid AND v.version = r.version WHERE r.type = $t AND r.id = $i",
            ("$t", type), ("$i", id)).ExecuteReader();
        return reader.Read() ? Row(reader) : null;
    }

    public StoredVersion? ReadVersion(string type, string id, int version)
    {
        using var reader = Cmd($"SELECT {CurrentColumns} FROM resource r JOIN version v ON v.rid = r.rid WHERE r.type = $t AND r.id = $i AND v.version = $v",
            ("$t", type), ("$i", id), ("$v", version)).ExecuteReader();
        return reader.Read() ? Row(reader) : null;
    }

    private static StoredVersion Row(SqliteDataReader r) => new(
        r.GetInt64(0), r.GetString(1), r.GetString(2), r.GetInt32(3), r.GetInt64(4), r.GetInt32(5) != 0, r.GetString(6),
        r.IsDBNull(7) ? null : (byte[])r.GetValue(7));

    /// <summary>Loads the current versions of the given rows, in the order given.</summary>
    public List<StoredVersion> LoadCurrent(IReadOnlyList<long> rids)
    {
        var result = new List<StoredVersion>(rids.Count);
        if (rids.Count == 0)
        {
            return result;
        }
        var byRid = new Dictionary<long, StoredVersion>(rids.Count);
        foreach (var chunk in rids.Chunk(500))
        {
            using var cmd = Connection.CreateCommand();
            cmd.Transaction = _tx;
            cmd.CommandText = $"SELECT {CurrentColumns} FROM resource r JOIN version v ON v.rid = r.rid AND v.version = r.version WHERE r.rid IN ({string.Join(',', chunk)})";
            using var reader = cmd.ExecuteReader();
            while (reader.Read())
            {
                var row = Row(reader);
                byRid[row.Rid] = row;
            }
        }
        foreach (var rid in rids)
        {
            if (byRid.TryGetValue(rid, out var row))
            {
                result.Add(row);
            }
        }
        return result;
    }

    /// <summary>The stored bytes of every current, non-deleted resource of a type, in insertion order.</summary>
    public IEnumerable<byte[]> CurrentData(string type)
    {
        using var cmd = Connection.CreateCommand();
        cmd.Transaction = _tx;
        cmd.CommandText = "SELECT v.data FROM resource r JOIN version v ON v.rid = r.rid AND v.version = r.version WHERE r.type = $t AND r.deleted = 0 ORDER BY r.rid";
        cmd.Parameters.AddWithValue("$t", type);
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
        {
            yield return (byte[])reader.GetValue(0);
        }
    }

    /// <summary>History, newest first: of one resource, of a type, or of the whole node.</summary>
    public List<StoredVersion> History(string? type, string? id, long? sinceTicks, int count, int offset)
    {
        var where = new List<string>();
        var args = new List<(string, object?)>();
        if (type is not null)
        {
            where.Add("r.type = $t");
            args.Add(("$t", type));
        }
        if (id is not null)
        {
            where.Add("r.id = $i");
            args.Add(("$i", id));
        }
        if (sinceTicks is { } since)
        {
            where.Add("v.last_updated >= $s");
            args.Add(("$s", since));
        }
        var sql = $"SELECT {CurrentColumns.Replace("r.version", "v.version")} FROM version v JOIN resource r ON r.rid = v.rid"
            + (where.Count > 0 ? " WHERE " + string.Join(" AND ", where) : "")
            + " ORDER BY v.seq DESC LIMIT $count OFFSET $offset";
        args.Add(("$count", count));
        args.Add(("$offset", offset));
        using var reader = Cmd(sql, [.. args]).ExecuteReader();
        var list = new List<StoredVersion>();
        while (reader.Read())
        {
            list.Add(Row(reader));
        }
        return list;
    }

    public long HistoryCount(string? type, string? id, long? sinceTicks)
    {
        var sql = "SELECT count(*) FROM version v JOIN resource r ON r.rid = v.rid WHERE ($t IS NULL OR r.type = $t) AND ($i IS NULL OR r.id = $i) AND ($s IS NULL OR v.last_updated >= $s)";
        return (long)Cmd(sql, ("$t", type), ("$i", id), ("$s", sinceTicks)).ExecuteScalar()!;
    }

    /// <summary>Stores a new version and, unless it is a deletion, replaces the resource's search index.</summary>
    public long Put(string type, string id, CurrentInfo? current, int version, long lastUpdatedTicks, string method, byte[]? data, IndexSet? index)
    {
        EnsureWriter();
        long rid;
        var deleted = index is null;
        if (current is { } cur)
        {
            rid = cur.Rid;
            Cmd("UPDATE resource SET version = $v, last_updated = $u, deleted = $d WHERE rid = $r",
                ("$v", version), ("$u", lastUpdatedTicks), ("$d", deleted ? 1 : 0), ("$r", rid)).ExecuteNonQuery();
            foreach (var table in IndexTables)
            {
                Cmd($"DELETE FROM {table} WHERE rid = $r", ("$r", rid)).ExecuteNonQuery();
            }
        }
        else
        {
            rid = (long)Cmd("INSERT INTO resource (type, id, version, last_updated, deleted) VALUES ($t, $i, $v, $u, $d) RETURNING rid",
                ("$t", type), ("$i", id), ("$v", version), ("$u", lastUpdatedTicks), ("$d", deleted ? 1 : 0)).ExecuteScalar()!;
        }
        Cmd("INSERT INTO version (rid, version, last_updated, method, deleted, data) VALUES ($r, $v, $u, $m, $d, $data)",
            ("$r", rid), ("$v", version), ("$u", lastUpdatedTicks), ("$m", method), ("$d", deleted ? 1 : 0), ("$data", data)).ExecuteNonQuery();
        if (index is not null)
        {
            WriteIndex(rid, index);
        }
        return rid;
    }

    private static readonly string[] IndexTables =
        ["ix_string", "ix_token", "ix_date", "ix_number", "ix_quantity", "ix_uri", "ix_reference", "ix_composite", "ix_compartment"];

    private void WriteIndex(long rid, IndexSet ix)
    {
        foreach (var e in ix.Strings)
        {
            Cmd("INSERT INTO ix_string (rid, param, value, exact) VALUES ($r, $p, $a, $b)", ("$r", rid), ("$p", e.Param), ("$a", e.Normalized), ("$b", e.Exact)).ExecuteNonQuery();
        }
        foreach (var e in ix.Tokens)
        {
            Cmd("INSERT INTO ix_token (rid, param, system, code, text) VALUES ($r, $p, $a, $b, $c)", ("$r", rid), ("$p", e.Param), ("$a", e.System), ("$b", e.Code), ("$c", e.Text)).ExecuteNonQuery();
        }
        foreach (var e in ix.Dates)
        {
            Cmd("INSERT INTO ix_date (rid, param, lo, hi) VALUES ($r, $p, $a, $b)", ("$r", rid), ("$p", e.Param), ("$a", e.Lo), ("$b", e.Hi)).ExecuteNonQuery();
        }
        foreach (var e in ix.Numbers)
        {
            Cmd("INSERT INTO ix_number (rid, param, lo, hi) VALUES ($r, $p, $a, $b)", ("$r", rid), ("$p", e.Param), ("$a", e.Lo), ("$b", e.Hi)).ExecuteNonQuery();
        }
        foreach (var e in ix.Quantities)
        {
            Cmd("INSERT INTO ix_quantity (rid, param, system, code, lo, hi) VALUES ($r, $p, $s, $c, $a, $b)", ("$r", rid), ("$p", e.Param), ("$s", e.System), ("$c", e.Code), ("$a", e.Lo), ("$b", e.Hi)).ExecuteNonQuery();
        }
        foreach (var e in ix.Uris)
        {
            Cmd("INSERT INTO ix_uri (rid, param, value) VALUES ($r, $p, $a)", ("$r", rid), ("$p", e.Param), ("$a", e.Value)).ExecuteNonQuery();
        }
        foreach (var e in ix.References)
        {
            Cmd("INSERT INTO ix_reference (rid, param, target_type, target_id, url) VALUES ($r, $p, $a, $b, $c)", ("$r", rid), ("$p", e.Param), ("$a", e.TargetType), ("$b", e.TargetId), ("$c", e.Url)).ExecuteNonQuery();
        }
        foreach (var e in ix.Composites)
        {
            Cmd("INSERT INTO ix_composite (rid, param, system1, code1, system2, code2, lo, hi) VALUES ($r, $p, $a, $b, $c, $d, $e, $f)",
                ("$r", rid), ("$p", e.Param), ("$a", e.System1), ("$b", e.Code1), ("$c", e.System2), ("$d", e.Code2), ("$e", e.Lo), ("$f", e.Hi)).ExecuteNonQuery();
        }
        foreach (var p in ix.Patients)
        {
            Cmd("INSERT INTO ix_compartment (rid, patient_id) VALUES ($r, $p)", ("$r", rid), ("$p", p)).ExecuteNonQuery();
        }
    }

    /// <summary>Runs a generated query (SQL built by <see cref="SqlSearch"/>, values always bound) returning row ids.</summary>
    public List<long> QueryRids(string sql, IReadOnlyList<(string Name, object? Value)> args)
    {
        using var cmd = Connection.CreateCommand();
        cmd.Transaction = _tx;
        cmd.CommandText = sql;
        foreach (var (name, value) in args)
        {
            cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }
        using var reader = cmd.ExecuteReader();
        var list = new List<long>();
        while (reader.Read())
        {
            list.Add(reader.GetInt64(0));
        }
        return list;
    }

    public object? Scalar(string sql, IReadOnlyList<(string Name, object? Value)> args)
    {
        using var cmd = Connection.CreateCommand();
        cmd.Transaction = _tx;
        cmd.CommandText = sql;
        foreach (var (name, value) in args)
        {
            cmd.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }
        return cmd.ExecuteScalar();
    }

    public void Commit()
    {
        EnsureWriter();
        _tx!.Commit();
        _tx.Dispose();
        _tx = null;
    }

    private void EnsureWriter()
    {
        if (_tx is null)
        {
            throw new InvalidOperationException("This session holds no write transaction.");
        }
    }

    public void Dispose()
    {
        if (_tx is not null)
        {
            _tx.Rollback();
            _tx.Dispose();
            _tx = null;
        }
        _store.Return(_pooled, _writer);
    }
}
