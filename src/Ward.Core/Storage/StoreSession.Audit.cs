using System.Data.Common;
using System.Globalization;
using Ward.Core.Crypto;

namespace Ward.Core.Storage;

/// <summary>
/// One audit log entry: its index, the columns AuditEvent searches use, the entry's bytes (the leaf's plaintext) and its
/// leaf hash. Given to <see cref="StoreSession.AuditInsert"/> in clear; stored sealed and blinded (<see cref="StoreSession.AuditStored"/>).
/// </summary>
internal sealed record AuditRow(long Index, long Recorded, string? Patient, string? Agent, string? AgentRef, string Subtype, string Outcome, byte[] Data, byte[] Leaf);

/// <summary>
/// The audit log's tables (see <see cref="Audit.AuditLog"/>): the head (size), entries, subtree hashes and checkpoints.
/// Entries are stored sealed under the audit key (<see cref="AuditSeal"/>, bound to their index) and come out opened;
/// the columns that name a patient or a person (<c>patient</c>, <c>agent</c>, <c>agent_ref</c>) hold their blind-index
/// hashes, which the searches compare with the hash of the value asked for. Leaf hashes, times, subtypes and outcomes stay in clear.
/// </summary>
internal sealed partial class StoreSession
{
    /// <summary>The stored form of a patient id in <c>audit_entry.patient</c>.</summary>
    public string AuditPatientKey(string patientId) => Keys.Blind.Hash(Blinder.Audit, "patient", patientId);

    /// <summary>The stored form of a subject or a FHIR identity in <c>audit_entry.agent</c> and <c>agent_ref</c> (one domain, so that one value is asked of both).</summary>
    public string AuditAgentKey(string agent) => Keys.Blind.Hash(Blinder.Audit, "agent", agent);

    /// <summary>An entry as it is stored: its bytes sealed to its index, its patient and people blinded.</summary>
    internal AuditRow AuditStored(AuditRow r) => r with
    {
        Patient = r.Patient is null ? null : AuditPatientKey(r.Patient),
        Agent = r.Agent is null ? null : AuditAgentKey(r.Agent),
        AgentRef = r.AgentRef is null ? null : AuditAgentKey(r.AgentRef),
        Data = Keys.Audit.Seal(r.Index, r.Data),
    };

    /// <summary>A stored entry opened; an entry that does not open (altered, moved to another index) is never served.</summary>
    private byte[] AuditOpen(long index, object stored) =>
        Keys.Audit.Open(index, Bytes(stored)) ?? throw Keys.Integrity("AuditEvent", index.ToString(CultureInfo.InvariantCulture), 1);

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

    /// <summary>
    /// Migration 10 (<see cref="Migrations.SealedAudit"/>), with the keys attached: seals every entry stored in clear and
    /// blinds its patient and people columns, blinds the URL of every reference index row, then restores the audit log's
    /// ban on updates (<paramref name="noUpdateSql"/>). Entries are converted a chunk at a time; leaves and the tree are untouched.
    /// </summary>
    internal void SealAuditLog(string noUpdateSql)
    {
        EnsureWriter();
        const int Chunk = 5_000;
        for (long from = 0; ;)
        {
            var chunk = new List<AuditRow>(Chunk);
            using (var reader = Cmd("SELECT idx, patient, agent, agent_ref, data FROM audit_entry WHERE idx >= @f ORDER BY idx LIMIT @c", ("@f", from), ("@c", Chunk)).ExecuteReader())
            {
                while (reader.Read())
                {
                    chunk.Add(new AuditRow(reader.GetInt64(0), 0, reader.IsDBNull(1) ? null : reader.GetString(1), reader.IsDBNull(2) ? null : reader.GetString(2),
                        reader.IsDBNull(3) ? null : reader.GetString(3), "", "", Bytes(reader.GetValue(4)), []));
                }
            }
            foreach (var r in chunk.Select(AuditStored))
            {
                Cmd("UPDATE audit_entry SET patient = @p, agent = @a, agent_ref = @f, data = @d WHERE idx = @i",
                    ("@p", r.Patient), ("@a", r.Agent), ("@f", r.AgentRef), ("@d", r.Data), ("@i", r.Index)).ExecuteNonQuery();
            }
            if (chunk.Count < Chunk)
            {
                break;
            }
            from = chunk[^1].Index + 1;
        }
        var urls = new List<(string Param, string Url)>();
        using (var reader = Cmd("SELECT DISTINCT param, url FROM ix_reference WHERE url IS NOT NULL").ExecuteReader())
        {
            while (reader.Read())
            {
                urls.Add((reader.GetString(0), reader.GetString(1)));
            }
        }
        foreach (var (param, url) in urls)
        {
            Cmd("UPDATE ix_reference SET url = @h WHERE param = @p AND url = @u", ("@h", Search.Indexer.BlindUrl(Keys.Blind, param, url)), ("@p", param), ("@u", url)).ExecuteNonQuery();
        }
        Execute(noUpdateSql);
    }

    /// <summary>The committed size of the log.</summary>
    public long AuditSize() => Convert.ToInt64(Cmd("SELECT size FROM audit_head WHERE id = 1").ExecuteScalar(), CultureInfo.InvariantCulture);

    public void AuditInsert(IReadOnlyList<AuditRow> rows, IReadOnlyList<(int Level, long Index, byte[] Hash)> nodes)
    {
        EnsureWriter();
        rows = rows.Select(AuditStored).ToList();
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

    /// <summary>The bytes of entry <paramref name="index"/> (the leaf's plaintext), or null when there is no such entry.</summary>
    public byte[]? AuditEntry(long index)
    {
        using var reader = Cmd("SELECT data FROM audit_entry WHERE idx = @i", ("@i", index)).ExecuteReader();
        return reader.Read() ? AuditOpen(index, reader.GetValue(0)) : null;
    }

    /// <summary>Entries in index order from <paramref name="from"/> (for verification): each entry's bytes, or null for an entry that does not open.</summary>
    public IEnumerable<(long Index, byte[]? Data)> AuditEntries(long from, int count)
    {
        using var cmd = AdHoc("SELECT idx, data FROM audit_entry WHERE idx >= @f ORDER BY idx LIMIT @c", [("@f", from), ("@c", count)]);
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
        {
            var index = reader.GetInt64(0);
            yield return (index, Keys.Audit.Open(index, Bytes(reader.GetValue(1))));
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

    /// <summary>Entries matching a generated filter (values bound: blinded ones as <see cref="AuditPatientKey"/> and <see cref="AuditAgentKey"/> make them), newest first, opened.</summary>
    public List<(long Index, byte[] Data)> AuditQuery(string where, IReadOnlyList<(string Name, object? Value)> args, int count, int offset)
    {
        using var cmd = AdHoc($"SELECT idx, data FROM audit_entry WHERE {where} ORDER BY idx DESC LIMIT {count} OFFSET {offset}", args);
        using var reader = cmd.ExecuteReader();
        var list = new List<(long, byte[])>();
        while (reader.Read())
        {
            var index = reader.GetInt64(0);
            list.Add((index, AuditOpen(index, reader.GetValue(1))));
        }
        return list;
    }

    public long AuditCount(string where, IReadOnlyList<(string Name, object? Value)> args) =>
        Convert.ToInt64(Scalar($"SELECT count(*) FROM audit_entry WHERE {where}", args), CultureInfo.InvariantCulture);
}
