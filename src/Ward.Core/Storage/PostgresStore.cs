using System.Collections.Concurrent;
using System.Data;
using System.Globalization;
using Microsoft.Extensions.Logging;
using Npgsql;
using Ward.Core.Crypto;
using Ward.Core.Node;

namespace Ward.Core.Storage;

/// <summary>
/// The record store on PostgreSQL, for establishments that outgrow one embedded file. Every write transaction is
/// SERIALIZABLE, so concurrent writers (other processes, and this one's single writer) always get the outcome of some
/// one-at-a-time order: PostgreSQL detects the rest and the work runs again (<see cref="RecordStore.WriteAsync{T}"/>).
/// Readers never wait. A session's writes are buffered and sent in one round trip of set-based inserts
/// (<see cref="PendingWrites"/>). Connections come from Npgsql's pool; a restarted server is survived by dropping the
/// broken connections and running the work again.
/// </summary>
internal sealed partial class PostgresStore : RecordStore
{
    // The node-wide advisory lock taken by migrations, key attachment and master key rotation ("WARD" + 1).
    private const long NodeLockKey = 0x5741_5244_0000_0001;
    private readonly NpgsqlDataSource _source;
    private readonly ConcurrentQueue<long> _reservedRids = new();
    private readonly Lock _reserveLock = new();

    /// <summary>
    /// One write transaction at a time per process (ADR 0005): the node's writers all insert into the same index pages, so
    /// concurrent serializable writers of one process mostly conflict and run again (measured: 2 writers ingest 23 % slower
    /// than 1, with a retry for most transactions). Planning stays parallel; writers of other processes (ward import, a
    /// second node process) run concurrently with this one, kept correct by PostgreSQL's serializable isolation.
    /// </summary>
    private readonly SemaphoreSlim _writeGate = new(1, 1);

    public PostgresStore(string connectionString, KeyRing keys, bool create = false) : base(keys)
    {
        var builder = new NpgsqlConnectionStringBuilder(Check(connectionString))
        {
            // Statements that recur are prepared server-side on each pooled connection, and stay prepared: sessions change
            // no connection state (advisory locks are transaction-scoped), so a pooled connection needs no reset.
            MaxAutoPrepare = 128,
            AutoPrepareMinUsages = 2,
            NoResetOnClose = true,
        };
        Location = LocationOf(builder);
        _source = NpgsqlDataSource.Create(builder);
        try
        {
            Initialise(Migrations.Postgres, create);
        }
        catch (Exception e)
        {
            _source.Dispose();
            if (Refusal(Location, e) is { } refused)
            {
                throw refused;
            }
            throw;
        }
    }

    private static string LocationOf(NpgsqlConnectionStringBuilder builder) => $"PostgreSQL database '{builder.Database}' on {builder.Host}:{builder.Port} as {builder.Username}";

    /// <summary>The server cannot be reached or refuses the node's role: what the operator is told, or null for any other failure.</summary>
    private static NodeException? Refusal(string location, Exception e) => e switch
    {
        NpgsqlException and not PostgresException => new NodeException($"Cannot reach the {location}: {e.Message}"),
        PostgresException p when p.SqlState is PostgresErrorCodes.InvalidPassword or PostgresErrorCodes.InvalidAuthorizationSpecification
            or PostgresErrorCodes.InvalidCatalogName or PostgresErrorCodes.InsufficientPrivilege =>
            new NodeException($"The {location} refused the node: {p.MessageText} "
                + "(the password comes from PGPASSWORD or a password file: Passfile=... in the connection string, PGPASSFILE or ~/.pgpass)."),
        _ => null,
    };

    /// <summary>Whether the database has Ward's migration table (asked before anything is created in it).</summary>
    public const string HasSchemaSql = "SELECT to_regclass('schema_migration') IS NOT NULL";

    /// <summary>Refuses a database that holds no Ward node, over one connection and without writing (<see cref="RecordStore.CheckExists"/>).</summary>
    public static void CheckNode(string connectionString)
    {
        var builder = new NpgsqlConnectionStringBuilder(Check(connectionString));
        var location = LocationOf(builder);
        bool hasSchema;
        try
        {
            using var connection = new NpgsqlConnection(builder.ConnectionString);
            connection.Open();
            using var cmd = new NpgsqlCommand(HasSchemaSql, connection);
            hasSchema = (bool)cmd.ExecuteScalar()!;
        }
        catch (Exception e) when (Refusal(location, e) is { } refused)
        {
            throw refused;
        }
        if (!hasSchema)
        {
            throw NoNode(location);
        }
    }

    /// <summary>Refuses a connection string that carries a password: it would sit in ward.yaml and in shell histories.</summary>
    public static string Check(string connectionString)
    {
        NpgsqlConnectionStringBuilder builder;
        try
        {
            builder = new NpgsqlConnectionStringBuilder(connectionString);
        }
        catch (ArgumentException e)
        {
            throw new NodeException($"The database connection string is not valid: {e.Message}");
        }
        if (!string.IsNullOrEmpty(builder.Password))
        {
            throw new NodeException("The database connection string holds a password. Remove it: give the password in the PGPASSWORD environment variable "
                + "or in a password file (Passfile=... in the connection string, PGPASSFILE, or ~/.pgpass), never on the command line or in ward.yaml.");
        }
        if (string.IsNullOrEmpty(builder.Host))
        {
            throw new NodeException("The database connection string names no Host.");
        }
        return connectionString;
    }

    public override StoreEngine Engine => StoreEngine.Postgres;

    public override string Location { get; }

    public override StoreSession OpenRead() => new(this, new Lease(_source.OpenConnection(), cacheCommands: false), null);

    public override async Task<StoreSession> BeginWriteAsync(CancellationToken ct)
    {
        await _writeGate.WaitAsync(ct);
        NpgsqlConnection? connection = null;
        try
        {
            connection = await _source.OpenConnectionAsync(ct);
            var tx = await connection.BeginTransactionAsync(IsolationLevel.Serializable, ct);
            return new StoreSession(this, new Lease(connection, cacheCommands: false), tx, new PendingWrites(this));
        }
        catch
        {
            if (connection is not null)
            {
                await connection.DisposeAsync();
            }
            _writeGate.Release();
            throw;
        }
    }


    internal override void Return(StoreSession session)
    {
        session.Lease.Dispose();
        if (session.IsWriter)
        {
            _writeGate.Release();
        }
    }

    /// <remarks>
    /// For a master key rotation (<paramref name="keys"/>), the key tables are locked against writes first, before the
    /// transaction takes its snapshot: the rotation then sees every key committed before it, and a writer that read the
    /// old master key id waits, then fails serialization and runs again under the new one.
    /// </remarks>
    internal override string LockSql(bool keys) => string.Create(CultureInfo.InvariantCulture,
        $"{(keys ? "LOCK TABLE keyring, data_key IN EXCLUSIVE MODE; " : "")}SELECT pg_advisory_xact_lock({NodeLockKey})");

    /// <summary>Row ids for new resources, reserved from the sequence a block at a time (gaps are harmless).</summary>
    internal long NextRid(StoreSession session)
    {
        if (_reservedRids.TryDequeue(out var rid))
        {
            return rid;
        }
        lock (_reserveLock)
        {
            if (_reservedRids.IsEmpty)
            {
                foreach (var reserved in session.QueryRids("SELECT nextval('resource_rid_seq') FROM generate_series(1, 256)", []).Order())
                {
                    _reservedRids.Enqueue(reserved);
                }
            }
        }
        return _reservedRids.TryDequeue(out rid) ? rid : NextRid(session);
    }

    protected override bool IsTransient(Exception e) => e switch
    {
        PostgresException p => p.IsTransient || p.SqlState == PostgresErrorCodes.UniqueViolation,
        NpgsqlException n => n.IsTransient || n.InnerException is IOException or System.Net.Sockets.SocketException or EndOfStreamException,
        InvalidOperationException when e.InnerException is not null => IsTransient(e.InnerException),
        _ => false,
    };

    protected override string Describe(Exception e) => e is PostgresException p ? $"{p.SqlState} {p.ConstraintName ?? p.TableName}" : base.Describe(e);

    protected override bool IsConflict(Exception e) =>
        e is PostgresException { SqlState: PostgresErrorCodes.SerializationFailure or PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.UniqueViolation };

    protected override void OnTransientFailure(Exception e)
    {
        if (!IsConflict(e))
        {
            // The server went away: every idle pooled connection is as dead as this one.
            _source.Clear();
        }
    }

    /// <summary>
    /// PostgreSQL keeps the old row version holding the destroyed wrapped key until its table is vacuumed:
    /// rewrite the (small) key table now. Copies in the write-ahead log and in base backups remain until they are
    /// recycled; they are wrapped under the master key, so a master key rotation makes them useless (docs/SECURITY.md).
    /// </summary>
    public override void PurgeErased()
    {
        using var connection = _source.OpenConnection();
        using var cmd = new NpgsqlCommand("VACUUM (FULL) data_key", connection);
        cmd.ExecuteNonQuery();
    }

    /// <summary>Versions written before the planner's statistics are first refreshed, and the least between two refreshes.</summary>
    private const long AnalyzeAfterVersions = 1_000;

    /// <summary>Versions written since the last refresh began, and how many the node held then.</summary>
    private long _sinceAnalyze;
    private long _analyzedVersions;
    private bool _analyzing;
    private Task _analyze = Task.CompletedTask;
    private readonly Lock _analyzeLock = new();

    /// <summary>
    /// Counts versions sent to the server, and refreshes the planner's statistics of Ward's tables in the background once
    /// they have grown by a quarter since the last refresh (at least <see cref="AnalyzeAfterVersions"/>). Autovacuum does
    /// the same, but up to a minute late: a search planned on the statistics of the node's first few resources, right
    /// after a bulk import, can choose a plan that takes tens of seconds instead of milliseconds.
    /// </summary>
    internal void Wrote(int versions)
    {
        Interlocked.Add(ref _sinceAnalyze, versions);
        lock (_analyzeLock)
        {
            if (!_analyzing && AnalyzeDue())
            {
                _analyzing = true;
                _analyze = Task.Run(Analyze);
            }
        }
    }

    private bool AnalyzeDue() =>
        Interlocked.Read(ref _sinceAnalyze) >= Math.Max(AnalyzeAfterVersions, Interlocked.Read(ref _analyzedVersions) / 4);

    /// <summary>Refreshes the statistics until they are no longer due (writes go on meanwhile); a failure waits for the next write.</summary>
    private void Analyze()
    {
        var failed = false;
        while (true)
        {
            var written = Interlocked.Exchange(ref _sinceAnalyze, 0);
            try
            {
                using var connection = _source.OpenConnection();
                using (var analyze = new NpgsqlCommand($"ANALYZE resource, version, {string.Join(", ", StoreSession.IndexTables)}", connection) { CommandTimeout = 0 })
                {
                    analyze.ExecuteNonQuery();
                }
                using var count = new NpgsqlCommand("SELECT reltuples::bigint FROM pg_class WHERE oid = 'version'::regclass", connection);
                Interlocked.Exchange(ref _analyzedVersions, Math.Max(0, Convert.ToInt64(count.ExecuteScalar(), CultureInfo.InvariantCulture)));
            }
            catch (Exception e) when (e is NpgsqlException or InvalidOperationException or ObjectDisposedException)
            {
                // Autovacuum still refreshes them.
                Interlocked.Add(ref _sinceAnalyze, written);
                LogAnalyzeFailed(Logger, Describe(e));
                failed = true;
            }
            lock (_analyzeLock)
            {
                if (failed || !AnalyzeDue())
                {
                    _analyzing = false;
                    return;
                }
            }
        }
    }

    public override void Dispose()
    {
        Task analyze;
        lock (_analyzeLock)
        {
            analyze = _analyze;
        }
        analyze.Wait();
        _source.Dispose();
        Metrics.Dispose();
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "Refreshing the planner's statistics failed ({Error}); autovacuum will refresh them.")]
    private static partial void LogAnalyzeFailed(ILogger logger, string error);
}
