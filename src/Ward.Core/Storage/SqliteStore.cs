using System.Collections.Concurrent;
using Microsoft.Data.Sqlite;
using Ward.Core.Crypto;
using Ward.Core.Node;

namespace Ward.Core.Storage;

internal sealed record StoredVersion(long Rid, string Type, string Id, int Version, long LastUpdatedTicks, bool Deleted, string Method, byte[]? Data)
{
    public DateTimeOffset LastUpdated => new(LastUpdatedTicks, TimeSpan.Zero);
}

internal readonly record struct CurrentInfo(long Rid, int Version, bool Deleted, long LastUpdatedTicks, bool Erased = false);

/// <summary>
/// The record store on SQLite (WAL). One writer at a time (an in-process gate, plus SQLite's own lock for other
/// processes such as <c>ward import</c> beside <c>ward serve</c>); readers never wait for writers.
/// Connections are pooled here so that each keeps its prepared statements.
/// </summary>
internal sealed class SqliteStore : IDisposable
{
    private readonly string _connectionString;
    private readonly ConcurrentBag<PooledConnection> _pool = [];
    private readonly SemaphoreSlim _writeGate = new(1, 1);

    /// <summary>Opens (creating or migrating) the node's database with the node's master key.</summary>
    public static SqliteStore Open(NodeConfig config) => new(config.DatabasePath, KeyRing.Open(config.MasterKeyPath));

    public SqliteStore(string path, KeyRing keys)
    {
        Keys = keys;
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Pooling = false,
            DefaultTimeout = 60,
            Mode = SqliteOpenMode.ReadWriteCreate,
        }.ToString();
        var c = Open();
        if (!OperatingSystem.IsWindows() && File.Exists(path))
        {
            // The database holds only ciphertext and hashes, but it is the node's to read: owner only (WAL and SHM follow).
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        Migrate(c.Connection);
        using var session = new StoreSession(this, c, c.Connection.BeginTransaction(deferred: false), gated: false);
        session.AttachKeys();
        session.Commit();
    }

    public KeyRing Keys { get; }

    public string Path => new SqliteConnectionStringBuilder(_connectionString).DataSource;

    private PooledConnection Open()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();
        using var cmd = connection.CreateCommand();
        cmd.CommandText = """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = FULL;
            PRAGMA busy_timeout = 60000;
            PRAGMA temp_store = MEMORY;
            PRAGMA secure_delete = ON;
            PRAGMA cache_size = -65536;
            PRAGMA foreign_keys = OFF;
            """;
        cmd.ExecuteNonQuery();
        return new PooledConnection(connection);
    }

    private static void Migrate(SqliteConnection connection)
    {
        using (var create = connection.CreateCommand())
        {
            create.CommandText = "CREATE TABLE IF NOT EXISTS schema_migration (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)";
            create.ExecuteNonQuery();
        }
        using var tx = connection.BeginTransaction(deferred: false);
        long current;
        using (var q = connection.CreateCommand())
        {
            q.Transaction = tx;
            q.CommandText = "SELECT coalesce(max(version), 0) FROM schema_migration";
            current = (long)q.ExecuteScalar()!;
        }
        foreach (var (version, name, sql) in Migrations.All.Where(m => m.Version > current))
        {
            using var cmd = connection.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = sql + "; INSERT INTO schema_migration (version, name, applied) VALUES ($v, $n, datetime('now'));";
            cmd.Parameters.AddWithValue("$v", version);
            cmd.Parameters.AddWithValue("$n", name);
            cmd.ExecuteNonQuery();
        }
        tx.Commit();
    }

    public int SchemaVersion
    {
        get
        {
            using var s = OpenRead();
            return Convert.ToInt32(s.Scalar("SELECT max(version) FROM schema_migration", []));
        }
    }

    /// <summary>The id of the master key the database's data keys are wrapped under.</summary>
    public string MasterKeyId()
    {
        using var s = OpenRead();
        return (string)s.Scalar("SELECT master_kid FROM keyring", [])!;
    }

    /// <summary>Copies the write-ahead log into the database and truncates it (waits for readers up to the busy timeout).</summary>
    public void Checkpoint()
    {
        using var s = OpenRead();
        s.Scalar("PRAGMA wal_checkpoint(TRUNCATE)", []);
    }

    public StoreSession OpenRead() => new(this, _pool.TryTake(out var c) ? c : Open(), null, gated: false);

    /// <summary>Opens the single write transaction; callers must dispose the session (rollback unless committed).</summary>
    public async Task<StoreSession> BeginWriteAsync(CancellationToken ct)
    {
        await _writeGate.WaitAsync(ct);
        try
        {
            var c = _pool.TryTake(out var pooled) ? pooled : Open();
            var tx = c.Connection.BeginTransaction(deferred: false);
            return new StoreSession(this, c, tx, gated: true);
        }
        catch
        {
            _writeGate.Release();
            throw;
        }
    }

    internal void Return(PooledConnection connection, bool wasWriter)
    {
        if (_pool.Count < 32)
        {
            _pool.Add(connection);
        }
        else
        {
            connection.Dispose();
        }
        if (wasWriter)
        {
            _writeGate.Release();
        }
    }

    public void Dispose()
    {
        while (_pool.TryTake(out var c))
        {
            c.Dispose();
        }
        _writeGate.Dispose();
    }
}

internal sealed class PooledConnection(SqliteConnection connection) : IDisposable
{
    private readonly Dictionary<string, SqliteCommand> _commands = new(StringComparer.Ordinal);

    public SqliteConnection Connection { get; } = connection;

    /// <summary>A prepared command for a fixed SQL text, reused across sessions on this connection.</summary>
    public SqliteCommand Prepared(string sql, SqliteTransaction? tx)
    {
        if (!_commands.TryGetValue(sql, out var cmd))
        {
            cmd = Connection.CreateCommand();
            cmd.CommandText = sql;
            _commands[sql] = cmd;
        }
        cmd.Transaction = tx;
        return cmd;
    }

    public void Dispose()
    {
        foreach (var c in _commands.Values)
        {
            c.Dispose();
        }
        Connection.Dispose();
    }
}
