using System.Data.Common;
using System.Globalization;

namespace Ward.Core.Storage;

/// <summary>One audit log entry as stored: its index, the columns AuditEvent searches use, and the exact leaf bytes.</summary>
internal sealed record AuditRow(long Index, long Recorded, string? Patient, string? Agent, string? AgentRef, string Subtype, string Outcome, byte[] Data, byte[] Leaf);

/// <summary>The audit log's tables (see <see cref="Audit.AuditLog"/>): the head (size), entries, subtree hashes and checkpoints.</summary>
internal sealed partial class StoreSession
{
    /// <summary>A command for a fixed query of the verifier (the caller disposes it).</summary>
    internal DbCommand Command(string sql) => AdHoc(sql, []);

    /// <summary>Reserves <paramref name="count"/> entries at the end of the log and returns the first index (the size before).
    /// The head row's update is the log's lock: a concurrent appender (another process) waits for this transaction.</summary>
    public long AuditReserve(int count)
    {
        EnsureWriter();
        var size = Convert.ToInt64(Cmd("UPDATE audit_head SET size = size + @n WHERE id = 1 RETURNING size", ("@n", (long)count)).ExecuteScalar(), CultureInfo.InvariantCulture);
        return size - count;
    }

    /// <summary>The committed size of the log.</summary>
    public long AuditSize() => Convert.ToInt64(Cmd("SELECT size FROM audit_head WHERE id = 1").ExecuteScalar(), CultureInfo.InvariantCulture);

    public void AuditInsert(IReadOnlyList<AuditRow> rows, IReadOnlyList<(int Level, long Index, byte[] Hash)> nodes)
    {
        EnsureWriter();
        if (_pending is not null)
        {
            _pending.AddAudit(rows, nodes);
            return;
        }
        foreach (var r in rows)
        {
            Cmd("INSERT INTO audit_entry (idx, recorded, patient, agent, agent_ref, subtype, outcome, data, leaf) VALUES (@i, @r, @p, @a, @f, @s, @o, @d, @h)",
                ("@i", r.Index), ("@r", r.Recorded), ("@p", r.Patient), ("@a", r.Agent), ("@f", r.AgentRef), ("@s", r.Subtype), ("@o", r.Outcome), ("@d", r.Data), ("@h", r.Leaf)).ExecuteNonQuery();
        }
        foreach (var (level, index, hash) in nodes)
        {
            Cmd("INSERT INTO audit_tree (level, idx, hash) VALUES (@l, @i, @h)", ("@l", level), ("@i", index), ("@h", hash)).ExecuteNonQuery();
        }
    }

    /// <summary>The stored hash of a complete subtree (a leaf's from its entry), or null when the log has none.</summary>
    public byte[]? AuditHash(int level, long index) => level == 0
        ? Cmd("SELECT leaf FROM audit_entry WHERE idx = @i", ("@i", index)).ExecuteScalar() as byte[]
        : Cmd("SELECT hash FROM audit_tree WHERE level = @l AND idx = @i", ("@l", level), ("@i", index)).ExecuteScalar() as byte[];

    /// <summary>The stored bytes of entry <paramref name="index"/> and the patient it is about, or null when there is no such entry.</summary>
    public (byte[] Data, string? Patient)? AuditEntry(long index)
    {
        using var reader = Cmd("SELECT data, patient FROM audit_entry WHERE idx = @i", ("@i", index)).ExecuteReader();
        return reader.Read() ? (Bytes(reader.GetValue(0)), reader.IsDBNull(1) ? null : reader.GetString(1)) : null;
    }

    /// <summary>Entries in index order from <paramref name="from"/> (for verification and exports).</summary>
    public IEnumerable<(long Index, byte[] Data)> AuditEntries(long from, int count)
    {
        using var cmd = AdHoc("SELECT idx, data FROM audit_entry WHERE idx >= @f ORDER BY idx LIMIT @c", [("@f", from), ("@c", count)]);
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
        {
            yield return (reader.GetInt64(0), Bytes(reader.GetValue(1)));
        }
    }

    /// <summary>A stored blob as bytes, even where someone wrote text into the column behind the node (SQLite is not typed).</summary>
    internal static byte[] Bytes(object value) => value as byte[] ?? System.Text.Encoding.UTF8.GetBytes(Convert.ToString(value, CultureInfo.InvariantCulture) ?? "");

    /// <summary>Stored subtree hashes of one level (0: the leaf hashes kept with the entries) in index order from <paramref name="from"/>.</summary>
    public IEnumerable<(long Index, byte[] Hash)> AuditLevel(int level, long from, int count)
    {
        using var cmd = level == 0
            ? AdHoc("SELECT idx, leaf FROM audit_entry WHERE idx >= @f ORDER BY idx LIMIT @c", [("@f", from), ("@c", count)])
            : AdHoc("SELECT idx, hash FROM audit_tree WHERE level = @l AND idx >= @f ORDER BY idx LIMIT @c", [("@l", level), ("@f", from), ("@c", count)]);
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
        {
            yield return (reader.GetInt64(0), Bytes(reader.GetValue(1)));
        }
    }

    public void AuditInsertCheckpoint(long size, long recorded, string note)
    {
        EnsureWriter();
        Execute("INSERT INTO audit_checkpoint (size, recorded, note) VALUES (@s, @r, @n)", ("@s", size), ("@r", recorded), ("@n", note));
    }

    /// <summary>The checkpoint of the largest size, or null before the first.</summary>
    public (long Size, string Note)? AuditLatestCheckpoint()
    {
        using var reader = Cmd("SELECT size, note FROM audit_checkpoint ORDER BY size DESC LIMIT 1").ExecuteReader();
        return reader.Read() ? (reader.GetInt64(0), reader.GetString(1)) : null;
    }

    /// <summary>Every checkpoint, by size.</summary>
    public List<(long Size, long Recorded, string Note)> AuditCheckpoints()
    {
        using var reader = Cmd("SELECT size, recorded, note FROM audit_checkpoint ORDER BY size").ExecuteReader();
        var list = new List<(long, long, string)>();
        while (reader.Read())
        {
            list.Add((reader.GetInt64(0), reader.GetInt64(1), reader.GetString(2)));
        }
        return list;
    }

    /// <summary>Entries matching a generated filter (values bound), newest first.</summary>
    public List<(long Index, byte[] Data)> AuditQuery(string where, IReadOnlyList<(string Name, object? Value)> args, int count, int offset)
    {
        using var cmd = AdHoc($"SELECT idx, data FROM audit_entry WHERE {where} ORDER BY idx DESC LIMIT {count} OFFSET {offset}", args);
        using var reader = cmd.ExecuteReader();
        var list = new List<(long, byte[])>();
        while (reader.Read())
        {
            list.Add((reader.GetInt64(0), (byte[])reader.GetValue(1)));
        }
        return list;
    }

    public long AuditCount(string where, IReadOnlyList<(string Name, object? Value)> args) =>
        Convert.ToInt64(Scalar($"SELECT count(*) FROM audit_entry WHERE {where}", args), CultureInfo.InvariantCulture);
}
