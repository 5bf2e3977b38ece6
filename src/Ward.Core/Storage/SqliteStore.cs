using System.Collections.Concurrent;
using System.Data.Common;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;
using Ward.Core.Crypto;

namespace Ward.Core.Storage;

/// <param name="Owner">The patient whose data key seals the version (null for shared data and deletions).</param>
internal sealed record StoredVersion(long Rid, string Type, string Id, int Version, long LastUpdatedTicks, bool Deleted, string Method, byte[]? Data, string? Owner = null)
{
    public DateTimeOffset LastUpdated => new(LastUpdatedTicks, TimeSpan.Zero);
}

internal readonly record struct CurrentInfo(long Rid, int Version, bool Deleted, long LastUpdatedTicks, bool Erased = false);

/// <summary>
/// The record store on SQLite (WAL), the embedded default. One writer at a time (an in-process gate, plus SQLite's own
/// lock for other processes such as <c>ward import</c> beside <c>ward serve</c>); readers never wait for writers.
/// Connections are pooled here so that each keeps its prepared statements.
/// </summary>
internal sealed partial class SqliteStore : RecordStore
{
    /// <summary>How often the background checkpoint runs while there are writes (at most).</summary>
    private static readonly TimeSpan CheckpointInterval = TimeSpan.FromMilliseconds(50);

    private readonly string _connectionString;
    private readonly ConcurrentBag<Lease> _pool = [];
    private readonly SemaphoreSlim _writeGate = new(1, 1);
    private readonly CancellationTokenSource _stop = new();
    private readonly Thread _checkpointer;
    private readonly LogFlusher _flusher;
    private int _written;
    private int _disposed;

    /// <param name="create">Only for a new node (<c>ward init</c>): the file is created. Otherwise a file that does not hold a
    /// node's database is refused before anything is written (<see cref="SqliteFile"/>).</param>
    public SqliteStore(string path, KeyRing keys, bool create = false) : base(keys)
    {
        if (!create)
        {
            SqliteFile.CheckNode(path);
        }
        SqliteFile.Opened(path);
        _connectionString = new SqliteConnectionStringBuilder
        {
            DataSource = path,
            Pooling = false,
            DefaultTimeout = 60,
            Mode = create ? SqliteOpenMode.ReadWriteCreate : SqliteOpenMode.ReadWrite,
        }.ToString();
        Path = path;
        _flusher = new LogFlusher(FlushLog, "SQLite log", () => Logger, Metrics, "sqlite-log");
        BlobFolder = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!, BlobFiles.FolderName);
        _blobs = new(() => new BlobFiles(BlobFolder, () => Logger, Metrics));
        try
        {
            Connect().Dispose();
            if (!OperatingSystem.IsWindows() && File.Exists(path))
            {
                // The database holds only ciphertext and hashes, but it is the node's to read: owner only (WAL and SHM follow).
                File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            }
            Initialise(Migrations.Sqlite, create);
        }
        catch (Exception e)
        {
            while (_pool.TryTake(out var lease))
            {
                lease.Dispose();
            }
            _flusher.Dispose();
            SqliteFile.Closed(path);
            if (e is SqliteException sqlite && SqliteFile.IsDamage(sqlite))
            {
                throw SqliteFile.Damaged(path, sqlite);
            }
            throw;
        }
        // Its own thread: a thread pool kept busy by requests would otherwise delay it while writes pile up in the log.
        _checkpointer = new Thread(CheckpointLoop) { IsBackground = true, Name = "SQLite checkpointer" };
        _checkpointer.Start();
    }

    public override StoreEngine Engine => StoreEngine.Sqlite;

    public string Path { get; }

    public override string Location => Path;

    private Lease Connect()
    {
        var connection = new SqliteConnection(_connectionString);
        connection.Open();
        using var cmd = connection.CreateCommand();
        cmd.CommandText = """
            PRAGMA journal_mode = WAL;
            PRAGMA synchronous = NORMAL;
            PRAGMA busy_timeout = 60000;
            PRAGMA temp_store = MEMORY;
            PRAGMA secure_delete = ON;
            PRAGMA cache_size = -65536;
            PRAGMA foreign_keys = OFF;
            PRAGMA wal_autocheckpoint = 0;
            PRAGMA journal_size_limit = 67108864;
            """;
        cmd.ExecuteNonQuery();
        return new Lease(connection, cacheCommands: true);
    }

    private Lease Take() => _pool.TryTake(out var lease) ? lease : Connect();

    public override StoreSession OpenRead() => new(this, Take(), null);

    public override async Task<StoreSession> BeginWriteAsync(CancellationToken ct)
    {
        await _writeGate.WaitAsync(ct);
        try
        {
            var lease = Take();
            return new StoreSession(this, lease, ((SqliteConnection)lease.Connection).BeginTransaction(deferred: false));
        }
        catch
        {
            _writeGate.Release();
            throw;
        }
    }

    internal override void Return(StoreSession session)
    {
        if (_pool.Count < 32)
        {
            _pool.Add(session.Lease);
        }
        else
        {
            session.Lease.Dispose();
        }
        if (session.HoldsWriteLock)
        {
            ReleaseWriteLock(session);
        }
    }

    public override Task SettledAsync() => _flusher.Flushed();

    private readonly Lazy<BlobFiles> _blobs;

    /// <summary>The folder of the blob files, beside the database.</summary>
    public string BlobFolder { get; }

    public override BlobFiles Blobs => _blobs.Value;

    /// <summary>The write-ahead log, opened when the first commit is flushed (SQLite creates it).</summary>
    private Microsoft.Win32.SafeHandles.SafeFileHandle? _log;

    private void FlushLog() =>
        Disk.FlushData(_log ??= File.OpenHandle(Path + "-wal", FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite | FileShare.Delete));

    private void ReleaseWriteLock(StoreSession session)
    {
        session.HoldsWriteLock = false;
        Volatile.Write(ref _written, 1);
        _writeGate.Release();
    }

    /// <summary>Lets the next writer in, then waits until the commit is on disk (<see cref="LogFlusher"/>).</summary>
    internal override Task DurableAsync(StoreSession session)
    {
        var durable = _flusher.Flushed();
        ReleaseWriteLock(session);
        return durable;
    }

    /// <summary>
    /// Copies committed pages from the write-ahead log into the database in the background (a passive checkpoint, which
    /// waits for no one), instead of in the commit of whichever write crosses SQLite's threshold: a write then costs
    /// its own pages once in the log, and the copy and its flush happen outside the write lock. Commits stay durable
    /// in the log (flushed by <see cref="LogFlusher"/>; SQLite flushes the log again before each checkpoint copies
    /// from it) whatever the checkpoint's progress.
    /// <para>
    /// A passive checkpoint alone never lets the log start over while writes keep coming (each commit lands before the
    /// copy catches up), so the log would grow without end under a steady load, every commit appending to fresh disk
    /// blocks. Once the log holds <see cref="RestartFrames"/> frames, the last few frames are copied with the write gate
    /// held (a restart checkpoint, which waits briefly for readers of the old frames), and the next write starts the
    /// log over: commits then overwrite the same blocks and the file stays small.
    /// </para>
    /// </summary>
    private void CheckpointLoop()
    {
        Lease? lease = null;
        try
        {
            while (true)
            {
                if (_stop.Token.WaitHandle.WaitOne(CheckpointInterval))
                {
                    return;
                }
                if (Interlocked.Exchange(ref _written, 0) == 0)
                {
                    continue;
                }
                try
                {
                    lease ??= ConnectCheckpointer();
                    if (Checkpoint(lease, "PASSIVE") >= RestartFrames)
                    {
                        _writeGate.Wait(_stop.Token);
                        try
                        {
                            Checkpoint(lease, "RESTART");
                        }
                        finally
                        {
                            _writeGate.Release();
                        }
                    }
                }
                catch (SqliteException e)
                {
                    // Nothing is lost (the log holds every commit); the next round tries again.
                    LogCheckpointFailed(Logger, e.SqliteErrorCode);
                    lease?.Dispose();
                    lease = null;
                    Volatile.Write(ref _written, 1);
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        finally
        {
            lease?.Dispose();
        }
    }

    /// <summary>Frames in the write-ahead log (4 KiB each, so 32 MiB) past which the background checkpoint makes the log start over: rarely enough that the write gate is seldom held for the restart's flush, below <c>journal_size_limit</c> so that the file keeps its blocks.</summary>
    private const long RestartFrames = 8192;

    private Lease ConnectCheckpointer()
    {
        var lease = Connect();
        using var cmd = lease.Connection.CreateCommand();
        // A restart checkpoint holds the write gate while it waits for readers of old frames: never long.
        cmd.CommandText = "PRAGMA busy_timeout = 200";
        cmd.ExecuteNonQuery();
        return lease;
    }

    /// <summary>Runs a checkpoint of the given mode; returns the frames the log held.</summary>
    private static long Checkpoint(Lease lease, string mode)
    {
        using var cmd = lease.Connection.CreateCommand();
        cmd.CommandText = $"PRAGMA wal_checkpoint({mode})";
        using var reader = cmd.ExecuteReader();
        return reader.Read() ? reader.GetInt64(1) : 0;
    }

    [LoggerMessage(Level = LogLevel.Warning, Message = "A background checkpoint of the SQLite write-ahead log failed (SQLite error {Code}); it is retried.")]
    private static partial void LogCheckpointFailed(ILogger logger, int code);

    // The write transaction (BEGIN IMMEDIATE) already excludes every other writer, in every process.
    internal override string? LockSql(bool keys) => null;

    // SQLite waits for its lock (busy_timeout) instead of failing: nothing is worth running again.
    protected override bool IsTransient(Exception e) => false;

    /// <summary>Copies the write-ahead log into the database and truncates it, so that no copy of the destroyed wrapped key stays in it
    /// (secure_delete has already overwritten the freed pages).</summary>
    public override void PurgeErased()
    {
        using var s = OpenRead();
        s.Scalar("PRAGMA wal_checkpoint(TRUNCATE)", []);
    }

    /// <summary>
    /// A consistent copy of the database into a new file (SQLite's online backup), while the node serves: it reads one
    /// snapshot of the database; writers go on meanwhile.
    /// </summary>
    public void BackupTo(string path)
    {
        using var destination = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false, Mode = SqliteOpenMode.ReadWriteCreate }.ToString());
        destination.Open();
        using (var cmd = destination.CreateCommand())
        {
            // A scratch copy: no journal, no flush to disk (the caller reads it back at once, then deletes it).
            cmd.CommandText = "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;";
            cmd.ExecuteNonQuery();
        }
        if (!OperatingSystem.IsWindows())
        {
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite);
        }
        var lease = Take();
        try
        {
            ((SqliteConnection)lease.Connection).BackupDatabase(destination);
        }
        finally
        {
            _pool.Add(lease);
        }
    }

    public override void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }
        _stop.Cancel();
        _checkpointer.Join();
        _stop.Dispose();
        _flusher.Dispose();
        _log?.Dispose();
        if (_blobs.IsValueCreated)
        {
            _blobs.Value.Dispose();
        }
        while (_pool.TryTake(out var lease))
        {
            lease.Dispose();
        }
        _writeGate.Dispose();
        Metrics.Dispose();
        SqliteFile.Closed(Path);
    }
}

/// <summary>One database connection borrowed by a session; on SQLite it keeps its prepared commands across sessions.</summary>
internal sealed class Lease(DbConnection connection, bool cacheCommands) : IDisposable
{
    private readonly Dictionary<string, DbCommand>? _commands = cacheCommands ? new(StringComparer.Ordinal) : null;

    public DbConnection Connection { get; } = connection;

    /// <summary>How many commands a connection keeps prepared: its fixed statements and the most used shapes of generated SQL.</summary>
    private const int Kept = 512;

    /// <summary>Whether <see cref="Command"/> keeps a prepared command for this SQL (generated SQL only while there is room).</summary>
    public bool Keeps(string sql) => _commands is not null && (_commands.Count < Kept || _commands.ContainsKey(sql));

    /// <summary>A command for a fixed SQL text: the connection's prepared one when commands are cached, else a new one.</summary>
    public DbCommand Command(string sql, DbTransaction? tx)
    {
        DbCommand? cmd = null;
        if (_commands is null || !_commands.TryGetValue(sql, out cmd))
        {
            cmd = Connection.CreateCommand();
            cmd.CommandText = sql;
            _commands?.Add(sql, cmd);
        }
        cmd.Transaction = tx;
        return cmd;
    }

    public void Dispose()
    {
        foreach (var c in _commands?.Values ?? Enumerable.Empty<DbCommand>())
        {
            c.Dispose();
        }
        Connection.Dispose();
    }
}
