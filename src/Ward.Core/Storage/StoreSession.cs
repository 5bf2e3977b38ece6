using System.Data.Common;
using System.Globalization;
using Ward.Core.Crypto;
using Ward.Core.Node;
using Ward.Core.Search;

namespace Ward.Core.Storage;

/// <summary>What an erasure destroyed: the key, the resources whose current version it sealed, and all versions it sealed.</summary>
internal sealed record ErasureResult(long Kid, int Resources, long Versions);

/// <summary>
/// One connection borrowed from the store: a reader, or the single writer with its open transaction.
/// Versions go in sealed (AES-256-GCM under their patient's data key) and come out opened; nothing else sees plaintext.
/// </summary>
internal sealed partial class StoreSession : IDisposable
{
    private const string VersionColumns = "r.rid, r.type, r.id, r.version, v.last_updated, v.deleted, v.method, v.data, v.kid, k.wrapped, k.master_kid, k.kind, k.owner";
    private const string CurrentFrom = "resource r JOIN version v ON v.rid = r.rid AND v.version = r.version LEFT JOIN data_key k ON k.kid = v.kid";
    // The same columns for any version (not only the current one): the version number comes from the version row.
    private const string AnyVersionColumns = "r.rid, r.type, r.id, v.version, v.last_updated, v.deleted, v.method, v.data, v.kid, k.wrapped, k.master_kid, k.kind, k.owner";
    private const string AnyVersionFrom = "version v JOIN resource r ON r.rid = v.rid LEFT JOIN data_key k ON k.kid = v.kid";
    private const string PatientKind = "patient";
    private const string SharedKind = "shared";
    private const string IndexKind = "index";
    private const string AuditKind = "audit";
    private readonly RecordStore _store;
    private DbTransaction? _tx;

    /// <summary>Writes not yet sent (PostgreSQL batches a session's writes into one round trip); null when writes go out at once.</summary>
    private readonly PendingWrites? _pending;

    internal StoreSession(RecordStore store, Lease lease, DbTransaction? tx, PendingWrites? pending = null)
    {
        _store = store;
        Lease = lease;
        _tx = tx;
        _pending = pending;
        IsWriter = tx is not null;
        HoldsWriteLock = IsWriter;
    }

    internal Lease Lease { get; }

    internal DbTransaction? Transaction => _tx;

    /// <summary>Whether the session was opened for writing (it stays so after its commit or rollback).</summary>
    public bool IsWriter { get; }

    /// <summary>Whether the session still holds the store's write lock (a writer holds it until its transaction has committed or the session ends).</summary>
    internal bool HoldsWriteLock { get; set; }

    /// <summary>Set once the commit has been sent: a failure after this point has an unknown outcome.</summary>
    public bool CommitStarted { get; private set; }

    private KeyRing Keys => _store.Keys;

    /// <summary>A command for a fixed SQL text (prepared and reused where the engine benefits); buffered writes are sent first.</summary>
    private DbCommand Cmd(string sql, params ReadOnlySpan<(string Name, object? Value)> args)
    {
        Flush();
        var cmd = Lease.Command(sql, _tx);
        var parameters = cmd.Parameters;
        if (parameters.Count != args.Length)
        {
            parameters.Clear();
            foreach (var (name, _) in args)
            {
                var p = cmd.CreateParameter();
                p.ParameterName = name;
                parameters.Add(p);
            }
        }
        for (var i = 0; i < args.Length; i++)
        {
            parameters[i].Value = args[i].Value ?? DBNull.Value;
        }
        return cmd;
    }

    /// <summary>A one-off command (generated SQL), with its values bound.</summary>
    private DbCommand AdHoc(string sql, IReadOnlyList<(string Name, object? Value)> args)
    {
        Flush();
        var cmd = Lease.Connection.CreateCommand();
        cmd.Transaction = _tx;
        cmd.CommandText = sql;
        Bind(cmd, args);
        return cmd;
    }

    /// <summary>
    /// A command for generated SQL (values bound): the connection's prepared one while it keeps that text (the same search
    /// shape comes back with other values), else a one-off command returned in <paramref name="oneOff"/> for the caller to dispose.
    /// </summary>
    private DbCommand Generated(string sql, IReadOnlyList<(string Name, object? Value)> args, out DbCommand? oneOff)
    {
        oneOff = Lease.Keeps(sql) ? null : AdHoc(sql, args);
        return oneOff ?? Cmd(sql, [.. args]);
    }

    /// <summary>Binds named values (null as SQL NULL) to a command of either engine.</summary>
    internal static void Bind(DbCommand cmd, IEnumerable<(string Name, object? Value)> args)
    {
        foreach (var (name, value) in args)
        {
            var p = cmd.CreateParameter();
            p.ParameterName = name;
            p.Value = value ?? DBNull.Value;
            cmd.Parameters.Add(p);
        }
    }

    private void Flush()
    {
        if (_pending is { IsEmpty: false })
        {
            _pending.Flush(this);
        }
    }

    internal void Execute(string sql, params ReadOnlySpan<(string Name, object? Value)> args) => Cmd(sql, args).ExecuteNonQuery();

    /// <summary>
    /// Takes the node-wide lock that migrations, key attachment and master key rotation hold, as the transaction's first
    /// statement (on SQLite the write transaction itself is exclusive). With <paramref name="keys"/>, also no new data key
    /// until the commit (see <see cref="RecordStore.LockSql"/>).
    /// </summary>
    internal void LockNode(bool keys = false)
    {
        EnsureWriter();
        if (_store.LockSql(keys) is { } sql)
        {
            Execute(sql);
        }
    }

    public CurrentInfo? GetCurrent(string type, string id)
    {
        using var reader = Cmd("SELECT rid, version, deleted, last_updated FROM resource WHERE type = @t AND id = @i", ("@t", type), ("@i", id)).ExecuteReader();
        return reader.Read() ? new CurrentInfo(reader.GetInt64(0), reader.GetInt32(1), reader.GetInt32(2) != 0, reader.GetInt64(3), reader.GetInt32(2) == 2) : null;
    }

    /// <summary>Whether the current version of a row is in a patient's compartment.</summary>
    public bool InCompartment(long rid, string patientId)
    {
        using var reader = Cmd("SELECT 1 FROM ix_compartment WHERE rid = @r AND patient_id = @p", ("@r", rid), ("@p", patientId)).ExecuteReader();
        return reader.Read();
    }

    public StoredVersion? Read(string type, string id)
    {
        using var reader = Cmd($"SELECT {VersionColumns} FROM {CurrentFrom} WHERE r.type = @t AND r.id = @i",
            ("@t", type), ("@i", id)).ExecuteReader();
        return reader.Read() ? Row(reader) : null;
    }

    public StoredVersion? ReadVersion(string type, string id, int version)
    {
        using var reader = Cmd($"SELECT {AnyVersionColumns} FROM {AnyVersionFrom} WHERE r.type = @t AND r.id = @i AND v.version = @v",
            ("@t", type), ("@i", id), ("@v", version)).ExecuteReader();
        return reader.Read() ? Row(reader) : null;
    }

    private StoredVersion Row(DbDataReader r)
    {
        var (type, id, version) = (r.GetString(1), r.GetString(2), r.GetInt32(3));
        var owner = !r.IsDBNull(11) && r.GetString(11) == PatientKind ? r.GetString(12) : null;
        return new(r.GetInt64(0), type, id, version, r.GetInt64(4), r.GetInt32(5) != 0, r.GetString(6), r.IsDBNull(7) ? null : Open(r, type, id, version), owner);
    }

    /// <summary>Opens the envelope in column 7 with the key named in column 8 (wrapped key and its binding in 9 to 12).</summary>
    private byte[] Open(DbDataReader r, string type, string id, int version)
    {
        if (r.IsDBNull(8) || r.IsDBNull(11))
        {
            throw Keys.Integrity(type, id, version);
        }
        var kid = r.GetInt64(8);
        if (r.IsDBNull(9))
        {
            throw new RecordErasedException(type, id);
        }
        var wrapped = (byte[])r.GetValue(9);
        if (!Keys.TryGetCipher(kid, wrapped, out var cipher))
        {
            try
            {
                cipher = Keys.Cipher(kid, Keys.DataKey(kid, r.IsDBNull(10) ? "" : r.GetString(10), r.GetString(11), r.GetString(12), wrapped), wrapped);
            }
            catch (KeyIntegrityException)
            {
                throw Keys.Integrity(type, id, version);
            }
        }
        var stored = (byte[])r.GetValue(7);
        if (BlobFiles.IsReference(stored))
        {
            try
            {
                stored = _store.Blobs?.Read(stored) ?? throw Keys.Integrity(type, id, version);
            }
            catch (IOException)
            {
                // The blob file is missing or cut short: the version is not what was written.
                throw Keys.Integrity(type, id, version);
            }
        }
        return Keys.OpenRecord(cipher, kid, type, id, version, stored);
    }

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
            using var cmd = AdHoc($"SELECT {VersionColumns} FROM {CurrentFrom} WHERE r.rid IN ({string.Join(',', chunk)})", []);
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
        using var cmd = AdHoc($"SELECT {VersionColumns} FROM {CurrentFrom} WHERE r.type = @t AND r.deleted = 0 ORDER BY r.rid", [("@t", type)]);
        using var reader = cmd.ExecuteReader();
        while (reader.Read())
        {
            yield return Row(reader).Data!;
        }
    }

    /// <summary>History, newest first: of one resource, of a type, or of the whole node. Erased versions are left out.</summary>
    public List<StoredVersion> History(string? type, string? id, long? sinceTicks, int count, int offset, string? filter = null, IReadOnlyList<(string, object?)>? filterArgs = null)
    {
        var (where, args) = HistoryWhere(type, id, sinceTicks, filter, filterArgs);
        args.Add(("@count", count));
        args.Add(("@offset", offset));
        var sql = $"SELECT {AnyVersionColumns} FROM {AnyVersionFrom} WHERE {where} ORDER BY v.seq DESC LIMIT @count OFFSET @offset";
        var cmd = Generated(sql, args, out var oneOff);
        using var owned = oneOff;
        using var reader = cmd.ExecuteReader();
        var list = new List<StoredVersion>();
        while (reader.Read())
        {
            list.Add(Row(reader));
        }
        return list;
    }

    public long HistoryCount(string? type, string? id, long? sinceTicks, string? filter = null, IReadOnlyList<(string, object?)>? filterArgs = null)
    {
        var (where, args) = HistoryWhere(type, id, sinceTicks, filter, filterArgs);
        var sql = $"SELECT count(*) FROM {AnyVersionFrom} WHERE {where}";
        var cmd = Generated(sql, args, out var oneOff);
        using var owned = oneOff;
        return Convert.ToInt64(cmd.ExecuteScalar(), CultureInfo.InvariantCulture);
    }

    /// <summary>The filter of a history (only the conditions that apply, so that no parameter is an untyped null).</summary>
    private static (string Where, List<(string, object?)> Args) HistoryWhere(string? type, string? id, long? sinceTicks, string? filter, IReadOnlyList<(string, object?)>? filterArgs)
    {
        var where = new List<string> { "r.deleted < 2 AND (v.kid IS NULL OR k.wrapped IS NOT NULL)" };
        var args = new List<(string, object?)>();
        if (type is not null)
        {
            where.Add("r.type = @t");
            args.Add(("@t", type));
        }
        if (id is not null)
        {
            where.Add("r.id = @i");
            args.Add(("@i", id));
        }
        if (sinceTicks is { } since)
        {
            where.Add("v.last_updated >= @s");
            args.Add(("@s", since));
        }
        if (filter is not null)
        {
            where.Add(filter);
            args.AddRange(filterArgs ?? []);
        }
        return (string.Join(" AND ", where), args);
    }

    /// <summary>
    /// Stores a new version, sealed under the data key of the patient the index names as owner (or the shared key),
    /// and, unless it is a deletion, replaces the resource's search index (already blinded by the indexer).
    /// Returns the row id and the version's digest (<see cref="VersionDigest"/>), which the audit entry of the write commits.
    /// </summary>
    public (long Rid, byte[] Digest) Put(string type, string id, CurrentInfo? current, int version, long lastUpdatedTicks, string method, byte[]? data, IndexSet? index) =>
        Store(type, id, current, version, lastUpdatedTicks, method, data is null ? null : Seal(type, id, version, lastUpdatedTicks, data, index?.Owner), index);

    /// <summary><see cref="Put(string, string, CurrentInfo?, int, long, string, byte[], IndexSet?)"/> of data sealed beforehand by <see cref="Seal"/>.</summary>
    public (long Rid, byte[] Digest) Put(string type, string id, CurrentInfo? current, int version, long lastUpdatedTicks, string method, SealedData data, IndexSet index) =>
        Store(type, id, current, version, lastUpdatedTicks, method, data, index);

    /// <summary>A version's data as stored: its envelope (or, for a large one, the reference to it in a blob file) and the data key that sealed it.</summary>
    public readonly record struct SealedData(long Kid, byte[] Stored);

    /// <summary>
    /// Seals a version's data under the data key of <paramref name="owner"/> (a patient id, or null for the shared key),
    /// appending a large envelope to a blob file, for <see cref="Put(string, string, CurrentInfo?, int, long, string, SealedData, IndexSet)"/>
    /// with the same type, id, version and owner. Sealing a batch's images first lets their flush (<see cref="StartBlobFlush"/>)
    /// run while its rows are written.
    /// </summary>
    public SealedData Seal(string type, string id, int version, long lastUpdatedTicks, byte[] data, string? owner)
    {
        EnsureWriter();
        var (kid, key, wrapped) = WriteKey(owner is null ? SharedKind : PatientKind, owner ?? "", lastUpdatedTicks);
        var envelope = KeyRing.Seal(Keys.Cipher(kid, key, wrapped), kid, type, id, version, data);
        if (envelope.Length >= BlobFiles.MinBytes && _store.Blobs is { } blobs)
        {
            envelope = blobs.Append(envelope);
            _blobsUnflushed = true;
        }
        return new(kid, envelope);
    }

    /// <summary>Starts making the blobs this transaction has appended so far durable; the commit waits for it (and flushes any appended since).</summary>
    public void StartBlobFlush()
    {
        if (_blobsUnflushed)
        {
            _blobsUnflushed = false;
            _blobsDurable = _store.Blobs!.DurableAsync();
        }
    }

    private (long Rid, byte[] Digest) Store(string type, string id, CurrentInfo? current, int version, long lastUpdatedTicks, string method, SealedData? data, IndexSet? index)
    {
        EnsureWriter();
        if (type is "CareTeam" or "Encounter" or "Patient" or "PractitionerRole" or "Consent")
        {
            PolicyChanged();
        }
        var (kid, envelope) = data is { } d ? ((long?)d.Kid, d.Stored) : (null, null);
        var deleted = index is null;
        var digest = VersionDigest.Of(type, id, version, lastUpdatedTicks, method, deleted, envelope);
        if (_pending is not null)
        {
            if (current is { } known && _pending.Touches(known.Rid))
            {
                Flush();
            }
            var newRid = current?.Rid ?? _pending.NewRid(this);
            _pending.Add(current is not null, new PendingVersion(newRid, type, id, version, lastUpdatedTicks, method, deleted, envelope, kid, index?.Compartment, index?.Labelled == true), index);
            return (newRid, digest);
        }
        long rid;
        if (current is { } cur)
        {
            rid = cur.Rid;
            Cmd("UPDATE resource SET version = @v, last_updated = @u, deleted = @d, compartment = @c, labelled = @l WHERE rid = @r",
                ("@v", version), ("@u", lastUpdatedTicks), ("@d", deleted ? 1 : 0), ("@c", index?.Compartment), ("@l", index?.Labelled == true ? 1 : 0), ("@r", rid)).ExecuteNonQuery();
            foreach (var table in IndexTables)
            {
                Cmd($"DELETE FROM {table} WHERE rid = @r", ("@r", rid)).ExecuteNonQuery();
            }
        }
        else
        {
            rid = Convert.ToInt64(Cmd("INSERT INTO resource (type, id, version, last_updated, deleted, compartment, labelled) VALUES (@t, @i, @v, @u, @d, @c, @l) RETURNING rid",
                ("@t", type), ("@i", id), ("@v", version), ("@u", lastUpdatedTicks), ("@d", deleted ? 1 : 0), ("@c", index?.Compartment), ("@l", index?.Labelled == true ? 1 : 0)).ExecuteScalar(), CultureInfo.InvariantCulture);
        }
        Cmd("INSERT INTO version (rid, version, last_updated, method, deleted, data, kid) VALUES (@r, @v, @u, @m, @d, @data, @k)",
            ("@r", rid), ("@v", version), ("@u", lastUpdatedTicks), ("@m", method), ("@d", deleted ? 1 : 0), ("@data", envelope), ("@k", kid)).ExecuteNonQuery();
        if (index is not null)
        {
            WriteIndex(rid, index);
        }
        return (rid, digest);
    }

    /// <summary>The patient whose data key seals the current version of a resource (null: shared data, or no such resource).</summary>
    public string? OwnerOf(string type, string id)
    {
        using var reader = Cmd("SELECT k.owner FROM resource r JOIN version v ON v.rid = r.rid AND v.version = r.version JOIN data_key k ON k.kid = v.kid WHERE r.type = @t AND r.id = @i AND k.kind = @k",
            ("@t", type), ("@i", id), ("@k", PatientKind)).ExecuteReader();
        return reader.Read() ? reader.GetString(0) : null;
    }

    /// <summary>The search index tables, each keyed by the resource's row id.</summary>
    internal static readonly string[] IndexTables =
        ["ix_string", "ix_token", "ix_date", "ix_number", "ix_quantity", "ix_uri", "ix_reference", "ix_composite", "ix_compartment", "ix_consent"];

    private void WriteIndex(long rid, IndexSet ix)
    {
        foreach (var e in ix.Strings)
        {
            Cmd("INSERT INTO ix_string (rid, param, value, exact) VALUES (@r, @p, @a, @b)", ("@r", rid), ("@p", e.Param), ("@a", e.Normalized), ("@b", e.Exact)).ExecuteNonQuery();
        }
        foreach (var e in ix.Tokens)
        {
            Cmd("INSERT INTO ix_token (rid, param, system, code, text) VALUES (@r, @p, @a, @b, @c)", ("@r", rid), ("@p", e.Param), ("@a", e.System), ("@b", e.Code), ("@c", e.Text)).ExecuteNonQuery();
        }
        foreach (var e in ix.Dates)
        {
            Cmd("INSERT INTO ix_date (rid, param, lo, hi) VALUES (@r, @p, @a, @b)", ("@r", rid), ("@p", e.Param), ("@a", e.Lo), ("@b", e.Hi)).ExecuteNonQuery();
        }
        foreach (var e in ix.Numbers)
        {
            Cmd("INSERT INTO ix_number (rid, param, lo, hi) VALUES (@r, @p, @a, @b)", ("@r", rid), ("@p", e.Param), ("@a", e.Lo), ("@b", e.Hi)).ExecuteNonQuery();
        }
        foreach (var e in ix.Quantities)
        {
            Cmd("INSERT INTO ix_quantity (rid, param, system, code, lo, hi) VALUES (@r, @p, @s, @c, @a, @b)", ("@r", rid), ("@p", e.Param), ("@s", e.System), ("@c", e.Code), ("@a", e.Lo), ("@b", e.Hi)).ExecuteNonQuery();
        }
        foreach (var e in ix.Uris)
        {
            Cmd("INSERT INTO ix_uri (rid, param, value) VALUES (@r, @p, @a)", ("@r", rid), ("@p", e.Param), ("@a", e.Value)).ExecuteNonQuery();
        }
        foreach (var e in ix.References)
        {
            Cmd("INSERT INTO ix_reference (rid, param, target_type, target_id, url) VALUES (@r, @p, @a, @b, @c)", ("@r", rid), ("@p", e.Param), ("@a", e.TargetType), ("@b", e.TargetId), ("@c", e.Url)).ExecuteNonQuery();
        }
        foreach (var e in ix.Composites)
        {
            Cmd("INSERT INTO ix_composite (rid, param, system1, code1, system2, code2, lo, hi) VALUES (@r, @p, @a, @b, @c, @d, @e, @f)",
                ("@r", rid), ("@p", e.Param), ("@a", e.System1), ("@b", e.Code1), ("@c", e.System2), ("@d", e.Code2), ("@e", e.Lo), ("@f", e.Hi)).ExecuteNonQuery();
        }
        foreach (var p in ix.Patients)
        {
            Cmd("INSERT INTO ix_compartment (rid, patient_id) VALUES (@r, @p)", ("@r", rid), ("@p", p)).ExecuteNonQuery();
        }
        foreach (var c in ix.Consents)
        {
            Cmd("INSERT INTO ix_consent (rid, patient_id, effect, actor, purpose, label, lo, hi) VALUES (@r, @p, @e, @a, @u, @l, @lo, @hi)",
                ("@r", rid), ("@p", c.Patient), ("@e", c.Effect), ("@a", c.Actor), ("@u", c.Purpose), ("@l", c.Label), ("@lo", c.Lo), ("@hi", c.Hi)).ExecuteNonQuery();
        }
    }

    /// <summary>Runs a generated query (SQL built by <see cref="SqlSearch"/>, values always bound) returning row ids.</summary>
    public List<long> QueryRids(string sql, IReadOnlyList<(string Name, object? Value)> args) => QueryColumn(sql, args, r => r.GetInt64(0));

    /// <summary>A single-column text query (values bound).</summary>
    public List<string> QueryStrings(string sql, IReadOnlyList<(string Name, object? Value)> args) => QueryColumn(sql, args, r => r.GetString(0));

    private List<T> QueryColumn<T>(string sql, IReadOnlyList<(string Name, object? Value)> args, Func<DbDataReader, T> value)
    {
        var cmd = Generated(sql, args, out var oneOff);
        using var owned = oneOff;
        using var reader = cmd.ExecuteReader();
        var list = new List<T>();
        while (reader.Read())
        {
            list.Add(value(reader));
        }
        return list;
    }

    public object? Scalar(string sql, IReadOnlyList<(string Name, object? Value)> args)
    {
        var cmd = Generated(sql, args, out var oneOff);
        using var owned = oneOff;
        var value = cmd.ExecuteScalar();
        return value is DBNull ? null : value;
    }

    // ------------------------------------------------------------------ keys

    /// <summary>The live data key of (kind, owner), created and wrapped under the current master key on first use.</summary>
    private (long Kid, byte[] Key, byte[] Wrapped) WriteKey(string kind, string owner, long ticks)
    {
        // Remembered for this transaction only: a bundle's resources mostly share one patient, and batched writes stay batched.
        _writeKeys ??= [];
        if (_writeKeys.TryGetValue((kind, owner), out var known))
        {
            return known;
        }
        return _writeKeys[(kind, owner)] = LoadOrCreateKey(kind, owner, ticks);
    }

    private Dictionary<(string Kind, string Owner), (long Kid, byte[] Key, byte[] Wrapped)>? _writeKeys;

    private (long Kid, byte[] Key, byte[] Wrapped) LoadOrCreateKey(string kind, string owner, long ticks)
    {
        using (var reader = Cmd("SELECT kid, master_kid, wrapped FROM data_key WHERE kind = @k AND owner = @o AND wrapped IS NOT NULL", ("@k", kind), ("@o", owner)).ExecuteReader())
        {
            if (reader.Read())
            {
                var kid = reader.GetInt64(0);
                var wrapped = (byte[])reader.GetValue(2);
                return (kid, Keys.DataKey(kid, reader.GetString(1), kind, owner, wrapped), wrapped);
            }
        }
        var key = KeyRing.NewDataKey();
        var (created, wrappedKey) = CreateKey(kind, owner, key, ticks);
        return (created, key, wrappedKey);
    }

    private (long Kid, byte[] Wrapped) CreateKey(string kind, string owner, byte[] key, long ticks)
    {
        // Read under the write lock: a rotation that committed before this transaction has already switched it.
        var masterKid = (string)Cmd("SELECT master_kid FROM keyring", []).ExecuteScalar()!;
        var kid = Convert.ToInt64(Cmd("INSERT INTO data_key (kind, owner, wrapped, master_kid, created) VALUES (@k, @o, @w, @m, @c) RETURNING kid",
            ("@k", kind), ("@o", owner), ("@w", Array.Empty<byte>()), ("@m", masterKid), ("@c", ticks)).ExecuteScalar(), CultureInfo.InvariantCulture);
        var wrapped = Keys.Wrap(masterKid, kid, kind, owner, key);
        Cmd("UPDATE data_key SET wrapped = @w WHERE kid = @i", ("@w", wrapped), ("@i", kid)).ExecuteNonQuery();
        return (kid, wrapped);
    }

    /// <summary>
    /// At open: creates the keyring of a new database, or checks that the master key file holds the database's key,
    /// finishing or undoing a rotation that was interrupted; then installs the index key.
    /// </summary>
    internal void AttachKeys()
    {
        EnsureWriter();
        var dbKid = Cmd("SELECT master_kid FROM keyring", []).ExecuteScalar() as string;
        if (dbKid is null)
        {
            if (Convert.ToInt64(Cmd("SELECT count(*) FROM version WHERE data IS NOT NULL", []).ExecuteScalar(), CultureInfo.InvariantCulture) > 0)
            {
                throw new NodeException("This database was written before encryption at rest (schema 1) and holds records in clear. "
                    + "Export it with that Ward version (ward export), then create a new node and import the export.");
            }
            Cmd("INSERT INTO keyring (id, master_kid) VALUES (1, @m)", ("@m", Keys.FileKeyId)).ExecuteNonQuery();
            var ticks = DateTime.UtcNow.Ticks;
            CreateKey(IndexKind, "", KeyRing.NewDataKey(), ticks);
            CreateKey(SharedKind, "", KeyRing.NewDataKey(), ticks);
        }
        else if (dbKid == Keys.FileKeyId)
        {
            if (Keys.PendingKeyId is not null)
            {
                // A rotation stopped before the database switched: the old key is still the key. Undo.
                File.Delete(Keys.PendingKeyPath);
                Keys.Reload();
            }
        }
        else if (dbKid == Keys.PendingKeyId)
        {
            // A rotation stopped after the database switched: finish it.
            var old = Keys.FileKeyId;
            File.Move(Keys.PendingKeyPath, Keys.MasterKeyPath, overwrite: true);
            Keys.Reload();
            Keys.Retire(old);
        }
        else
        {
            throw new NodeException($"The master key in {Keys.MasterKeyPath} (id {Keys.FileKeyId}) is not the key of this database (id {dbKid}). "
                + "Restore the node's own master key file; Ward will not start with another key.");
        }
        using (var reader = Cmd("SELECT kid, master_kid, wrapped FROM data_key WHERE kind = @k AND owner = '' AND wrapped IS NOT NULL", ("@k", IndexKind)).ExecuteReader())
        {
            if (!reader.Read())
            {
                throw new NodeException("The database has no index key: its keyring is damaged.");
            }
            Keys.UseIndexKey(Keys.Unwrap(reader.GetString(1), reader.GetInt64(0), IndexKind, "", (byte[])reader.GetValue(2)));
        }
        // The audit key: created on first open (a new node, or one from before sealed audit entries, migration 10).
        var (auditKid, auditKey, _) = LoadOrCreateKey(AuditKind, "", DateTime.UtcNow.Ticks);
        Keys.UseAuditKey(auditKid, auditKey);
    }

    /// <summary>Re-wraps every live data key under master key <paramref name="toKid"/> and makes it the database's key.</summary>
    public int Rewrap(string fromKid, string toKid)
    {
        EnsureWriter();
        var dbKid = (string)Cmd("SELECT master_kid FROM keyring", []).ExecuteScalar()!;
        if (dbKid != fromKid)
        {
            throw new NodeException($"The database's master key is {dbKid}, not {fromKid}: another rotation ran. Nothing was changed.");
        }
        var rows = new List<(long Kid, string Master, string Kind, string Owner, byte[] Wrapped)>();
        using (var reader = Cmd("SELECT kid, master_kid, kind, owner, wrapped FROM data_key WHERE wrapped IS NOT NULL", []).ExecuteReader())
        {
            while (reader.Read())
            {
                rows.Add((reader.GetInt64(0), reader.GetString(1), reader.GetString(2), reader.GetString(3), (byte[])reader.GetValue(4)));
            }
        }
        foreach (var (kid, master, kind, owner, wrapped) in rows)
        {
            var key = Keys.Unwrap(master, kid, kind, owner, wrapped);
            Cmd("UPDATE data_key SET wrapped = @w, master_kid = @m WHERE kid = @i", ("@w", Keys.Wrap(toKid, kid, kind, owner, key)), ("@m", toKid), ("@i", kid)).ExecuteNonQuery();
            System.Security.Cryptography.CryptographicOperations.ZeroMemory(key);
        }
        Cmd("UPDATE keyring SET master_kid = @m", ("@m", toKid)).ExecuteNonQuery();
        return rows.Count;
    }

    /// <summary>
    /// Crypto-shredding: destroys the patient's data key (the row stays as a tombstone), marks the resources sealed
    /// under it as erased and removes their index entries. The engine then purges the freed copies (<see cref="RecordStore.PurgeErased"/>).
    /// </summary>
    public ErasureResult Erase(string patientId, string reason, long ticks)
    {
        EnsureWriter();
        var kid = Cmd("SELECT kid FROM data_key WHERE kind = @k AND owner = @o AND wrapped IS NOT NULL", ("@k", PatientKind), ("@o", patientId)).ExecuteScalar();
        if (kid is not long k)
        {
            var erased = Cmd("SELECT count(*) FROM data_key WHERE kind = @k AND owner = @o", ("@k", PatientKind), ("@o", patientId)).ExecuteScalar();
            throw new NodeException((long)erased! > 0 ? $"Patient/{patientId} is already erased." : $"No record of Patient/{patientId} is stored on this node.");
        }
        var rids = QueryRids("SELECT r.rid FROM resource r JOIN version v ON v.rid = r.rid AND v.version = r.version WHERE v.kid = @k", [("@k", k)]);
        foreach (var chunk in rids.Chunk(500))
        {
            var list = string.Join(',', chunk);
            Scalar($"UPDATE resource SET deleted = 2, compartment = NULL, labelled = 0 WHERE rid IN ({list})", []);
            foreach (var table in IndexTables)
            {
                Scalar($"DELETE FROM {table} WHERE rid IN ({list})", []);
            }
        }
        Cmd("DELETE FROM ix_compartment WHERE patient_id = @p", ("@p", patientId)).ExecuteNonQuery();
        // Rows of other keys that named the patient: their compartments summarised again without them.
        Cmd($"UPDATE resource SET compartment = {Migrations.CompartmentOfRow} WHERE compartment = @p OR compartment = '*'", ("@p", patientId)).ExecuteNonQuery();
        Cmd("UPDATE data_key SET wrapped = NULL, master_kid = NULL, erased = @t, reason = @r WHERE kid = @k", ("@t", ticks), ("@r", reason), ("@k", k)).ExecuteNonQuery();
        var versions = Convert.ToInt64(Cmd("SELECT count(*) FROM version WHERE kid = @k", ("@k", k)).ExecuteScalar(), CultureInfo.InvariantCulture);
        Keys.Forget(k);
        return new ErasureResult(k, rids.Count, versions);
    }

    /// <summary>The patients whose data key is alive (not erased).</summary>
    public List<string> LivePatientKeyOwners()
    {
        var owners = new List<string>();
        using var reader = Cmd("SELECT owner FROM data_key WHERE kind = @k AND wrapped IS NOT NULL", ("@k", PatientKind)).ExecuteReader();
        while (reader.Read())
        {
            owners.Add(reader.GetString(0));
        }
        return owners;
    }

    /// <summary>Commits the transaction and returns once it is durable.</summary>
    public void Commit() => CommitAsync().GetAwaiter().GetResult();

    /// <summary>Commits the transaction now; the task completes once the commit is durable.</summary>
    public Task CommitAsync()
    {
        EnsureWriter();
        Flush();
        // No row may name bytes that are not on disk: the blobs this transaction wrote are flushed before it commits
        // (one flush for all of them, begun earlier if the writer started it).
        StartBlobFlush();
        if (_blobsDurable is { } blobs)
        {
            _blobsDurable = null;
            blobs.GetAwaiter().GetResult();
        }
        CommitStarted = true;
        _tx!.Commit();
        _tx.Dispose();
        _tx = null;
        _committed?.Invoke();
        return _store.DurableAsync(this);
    }

    private Action? _committed;

    /// <summary>Whether blobs were appended since the last flush this transaction asked for.</summary>
    private bool _blobsUnflushed;

    /// <summary>The flush of this transaction's blobs asked for last, until the commit has waited for it.</summary>
    private Task? _blobsDurable;

    /// <summary>
    /// Runs once the transaction has committed (never after a rollback), still under the write lock and before the
    /// commit is durable: for in-memory state that must follow the database (the next writer must see it).
    /// </summary>
    public void OnCommitted(Action action) => _committed += action;

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
            // A transaction whose connection broke, or whose commit failed, is already over (the server rolled it back).
            if (Lease.Connection.State == System.Data.ConnectionState.Open)
            {
                try
                {
                    _tx.Rollback();
                }
                catch (Exception e) when (e is DbException or InvalidOperationException)
                {
                }
            }
            _tx.Dispose();
            _tx = null;
        }
        _store.Return(this);
    }
}
