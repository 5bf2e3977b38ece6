using System.Globalization;
using Microsoft.Extensions.Logging;
using Ward.Core.Crypto;
using Ward.Core.Node;

namespace Ward.Core.Storage;

/// <summary>The database engines a node can keep its records in.</summary>
internal enum StoreEngine
{
    Sqlite,
    Postgres,
}

/// <summary>
/// The record store boundary: every read and write of the node's records goes through a <see cref="StoreSession"/>
/// borrowed from here. The SQLite and PostgreSQL stores differ only in how they connect, lock, batch and recover;
/// the SQL of sessions and searches is the same for both.
/// </summary>
internal abstract partial class RecordStore : IDisposable
{
    /// <summary>How long a request keeps retrying a database that is restarting or unreachable before it answers 503.</summary>
    private static readonly TimeSpan RetryBudget = TimeSpan.FromSeconds(20);

    protected RecordStore(KeyRing keys)
    {
        Keys = keys;
        keys.Metrics = Metrics;
    }

    /// <summary>The node's measurements (meter <c>Ward</c>), recorded where the work happens; disposed with the store.</summary>
    public NodeMetrics Metrics { get; } = new();

    private long _policyGeneration;

    /// <summary>
    /// Bumped when a write that can change an access decision commits in this process (CareTeam, Encounter, Patient,
    /// PractitionerRole, Consent, a break-the-glass opening): the policy's cached facts about callers are stale then.
    /// </summary>
    public long PolicyGeneration => Interlocked.Read(ref _policyGeneration);

    internal void PolicyChanged() => Interlocked.Increment(ref _policyGeneration);

    public KeyRing Keys { get; }

    public abstract StoreEngine Engine { get; }

    /// <summary>Where the records are, for operators (a file path, or host/database; never a password).</summary>
    public abstract string Location { get; }

    /// <summary>Diagnostics only (never patient data): retries and lost connections.</summary>
    public ILogger Logger { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    /// <summary>
    /// Opens (and migrates) the node's database, SQLite or PostgreSQL as its configuration says, with the node's master key.
    /// Without <paramref name="create"/>, a database that is missing, empty, truncated, not a database, or without a Ward
    /// node's tables is refused with what is wrong (exit status 2 in the CLI), and nothing is created: only a new node makes one.
    /// </summary>
    /// <param name="create">For <c>ward init</c> (and <c>ward demo</c> on a new folder): the database is made; one that already
    /// holds a node's tables is refused, never taken over.</param>
    public static RecordStore Open(NodeConfig config, bool create = false)
    {
        var keys = KeyRing.Open(config.MasterKeyPath);
        return config.IsPostgres ? new PostgresStore(config.Database, keys, create) : new SqliteStore(config.DatabasePath, keys, create);
    }

    /// <summary>
    /// For commands that read only the node's files (<c>ward policy check --data</c>): refuses a node whose database is
    /// missing or holds no node, as <see cref="Open"/> does, without the master key and without writing anything.
    /// </summary>
    public static void CheckExists(NodeConfig config)
    {
        if (config.IsPostgres)
        {
            PostgresStore.CheckNode(config.Database);
        }
        else
        {
            SqliteFile.CheckNode(config.DatabasePath);
        }
    }

    /// <summary>A session without a transaction, for reads.</summary>
    public abstract StoreSession OpenRead();

    /// <summary>Opens a write transaction; callers must dispose the session (rollback unless committed).</summary>
    public abstract Task<StoreSession> BeginWriteAsync(CancellationToken ct);

    internal abstract void Return(StoreSession session);

    /// <summary>
    /// Called by a writer's commit, once the transaction has committed and its in-memory followers have run: completes
    /// when the commit is durable. The engine may let the next writer in before that (SQLite flushes its log outside
    /// the write lock); nothing is acknowledged before this completes.
    /// </summary>
    internal virtual Task DurableAsync(StoreSession session) => Task.CompletedTask;

    /// <summary>
    /// Completes once every commit made so far is durable: for answers that show what other writers committed without a
    /// commit of their own (a commit may be visible to readers a moment before it is flushed, see ADR 0013).
    /// </summary>
    public virtual Task SettledAsync() => Task.CompletedTask;

    /// <summary>
    /// Where large sealed versions are written once, outside the database (<see cref="BlobFiles"/>); null where every
    /// version stays in its row (PostgreSQL: a server's database is backed up and replicated as a whole, ADR 0014).
    /// </summary>
    public virtual BlobFiles? Blobs => null;

    /// <summary>
    /// The statements that take the node-wide lock in a write transaction (with <paramref name="keys"/>: and keep new data
    /// keys out until the commit), or null where the write transaction itself is exclusive.
    /// </summary>
    internal abstract string? LockSql(bool keys);

    /// <summary>Whether a failure is the database being briefly unavailable or a conflict with a concurrent writer, so that the work may run again.</summary>
    protected abstract bool IsTransient(Exception e);

    /// <summary>Whether a failure is the database refusing the work because of a concurrent writer: certainly not committed, even when raised by the commit.</summary>
    protected virtual bool IsConflict(Exception e) => false;

    /// <summary>A failure's kind for the logs (never its message, which may quote values).</summary>
    protected virtual string Describe(Exception e) => e.GetType().Name;

    /// <summary>Called after a transient failure, before the next attempt (for example to drop broken pooled connections).</summary>
    protected virtual void OnTransientFailure(Exception e)
    {
    }

    /// <summary>Runs the migrations and attaches the keys, in one write transaction (called once by each store's constructor).</summary>
    protected void Initialise(IReadOnlyList<(int Version, string Name, string Sql)> migrations, bool create = false)
    {
        using var session = BeginWriteAsync(CancellationToken.None).GetAwaiter().GetResult();
        session.LockNode();
        if (!create && !HasSchema(session))
        {
            throw NoNode(Location);
        }
        session.Execute("CREATE TABLE IF NOT EXISTS schema_migration (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied TEXT NOT NULL)");
        var current = Convert.ToInt32(session.Scalar("SELECT coalesce(max(version), 0) FROM schema_migration", []), CultureInfo.InvariantCulture);
        if (create && current > 0)
        {
            throw new NodeException($"The {Location} already holds a Ward node's records; a new node never takes over another's database. Give it an empty database.");
        }
        if (!create && current == 0)
        {
            throw NoNode(Location);
        }
        foreach (var (version, name, sql) in migrations.Where(m => m.Version > current))
        {
            session.Execute(sql);
            session.Execute("INSERT INTO schema_migration (version, name, applied) VALUES (@v, @n, @a)",
                ("@v", version), ("@n", name), ("@a", DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm:ss", CultureInfo.InvariantCulture)));
        }
        session.AttachKeys();
        if (current < Migrations.SealedAudit)
        {
            session.SealAuditLog(Migrations.AuditNoUpdate(Engine));
        }
        session.Commit();
    }

    /// <summary>Whether the database has Ward's migration table (checked before anything is created in it).</summary>
    private bool HasSchema(StoreSession session) =>
        Convert.ToBoolean(session.Scalar(Engine == StoreEngine.Postgres ? PostgresStore.HasSchemaSql : SqliteFile.HasSchemaSql, []), CultureInfo.InvariantCulture);

    /// <summary>A database without Ward's tables (empty, or another application's): refused unless a new node is being made.</summary>
    protected static NodeException NoNode(string location) => new($"The {location} holds no Ward node (none of Ward's tables): point database: in ward.yaml at the node's own database, or {SqliteFile.Restore}.");

    /// <summary>The schema version, asked once without retrying: null when the database cannot be reached now (health checks).</summary>
    public int? TryGetSchemaVersion()
    {
        try
        {
            using var session = OpenRead();
            return SchemaVersionOf(session);
        }
        catch (Exception e) when (IsTransient(e))
        {
            OnTransientFailure(e);
            return null;
        }
    }

    public int SchemaVersion => Read(SchemaVersionOf);

    private static int SchemaVersionOf(StoreSession session) =>
        Convert.ToInt32(session.Scalar("SELECT max(version) FROM schema_migration", []), CultureInfo.InvariantCulture);

    /// <summary>The id of the master key the database's data keys are wrapped under.</summary>
    public string MasterKeyId() => Read(s => (string)s.Scalar("SELECT master_kid FROM keyring", [])!);

    /// <summary>After an erasure: makes the engine drop every copy of the destroyed wrapped key it still holds.</summary>
    public abstract void PurgeErased();

    /// <summary>Runs a read, retrying it while the database is briefly unavailable (a restart, a dropped connection).</summary>
    public T Read<T>(Func<StoreSession, T> work) => ReadAsync(work, CancellationToken.None).GetAwaiter().GetResult();

    /// <inheritdoc cref="Read{T}"/>
    public async Task<T> ReadAsync<T>(Func<StoreSession, T> work, CancellationToken ct)
    {
        var retry = new Retry(this);
        while (true)
        {
            try
            {
                using var session = OpenRead();
                return work(session);
            }
            catch (Exception e) when (IsTransient(e))
            {
                await retry.WaitAsync(e, ct);
            }
        }
    }

    /// <summary>
    /// Runs <paramref name="work"/> in a write transaction and commits it. Work that fails because the database was briefly
    /// unavailable or because a concurrent writer conflicted (even at the commit) is run again from the start, in a new
    /// transaction, so it must depend on nothing but the session. A connection lost while the commit itself was under way
    /// is not retried: its outcome is unknown, so the caller gets a 503 and nothing is acknowledged.
    /// </summary>
    public async Task<T> WriteAsync<T>(Func<StoreSession, T> work, CancellationToken ct)
    {
        var (result, durable) = await WriteCommittedAsync(work, ct);
        await durable;
        return result;
    }

    /// <summary>
    /// <see cref="WriteAsync{T}"/>, returning as soon as the transaction has committed, with a task that completes once
    /// the commit is durable (or fails if it cannot be made so): a group commit goes on to its next batch while this
    /// one is flushed. Nothing that depends on the write may be acknowledged before that task completes.
    /// </summary>
    public async Task<(T Result, Task Durable)> WriteCommittedAsync<T>(Func<StoreSession, T> work, CancellationToken ct)
    {
        var retry = new Retry(this);
        while (true)
        {
            StoreSession? session = null;
            try
            {
                session = await BeginWriteAsync(ct);
                var result = work(session);
                return (result, session.CommitAsync());
            }
            catch (Exception e) when (IsTransient(e))
            {
                if (session?.CommitStarted == true && !IsConflict(e))
                {
                    LogCommitUnknown(Logger);
                    throw new StoreUnavailableException("The database connection failed while the change was being committed, so whether it was saved is unknown. "
                        + "Read the resource to check, then retry.");
                }
                session?.Dispose();
                session = null;
                await retry.WaitAsync(e, ct);
            }
            finally
            {
                session?.Dispose();
            }
        }
    }

    /// <summary>
    /// For a group commit that went on to its next batch (<see cref="WriteCommittedAsync{T}"/>): answers each waiting
    /// request of a batch once its commit is durable, or fails them all with <paramref name="failure"/> of the error.
    /// </summary>
    public static async Task AnswerWhenDurableAsync(Task durable, IEnumerable<TaskCompletionSource> waiting, Func<Exception, Exception> failure)
    {
        try
        {
            await durable;
            foreach (var w in waiting)
            {
                w.TrySetResult();
            }
        }
        catch (Exception e)
        {
            var error = failure(e);
            foreach (var w in waiting)
            {
                w.TrySetException(error);
            }
        }
    }

    /// <summary>Exponential back-off with jitter between attempts, within a time budget.</summary>
    private sealed class Retry(RecordStore store)
    {
        private readonly DateTime _deadline = DateTime.UtcNow + RetryBudget;
        private int _attempt;

        public async Task WaitAsync(Exception e, CancellationToken ct)
        {
            _attempt++;
            store.OnTransientFailure(e);
            if (DateTime.UtcNow > _deadline)
            {
                LogGaveUp(store.Logger, _attempt, store.Describe(e));
                throw new StoreUnavailableException("The database is unavailable or too busy; nothing was changed. Retry in a moment.");
            }
            LogRetry(store.Logger, _attempt, store.Describe(e));
            var delay = Math.Min(1000, 5 * (1 << Math.Min(_attempt, 8)));
            await Task.Delay(TimeSpan.FromMilliseconds(delay + Random.Shared.Next(delay)), ct);
        }
    }

    public abstract void Dispose();

    [LoggerMessage(Level = LogLevel.Information, Message = "Database attempt {Attempt} failed transiently ({Error}); retrying.")]
    private static partial void LogRetry(ILogger logger, int attempt, string error);

    [LoggerMessage(Level = LogLevel.Error, Message = "Database still unavailable after {Attempt} attempts ({Error}); the request fails with 503.")]
    private static partial void LogGaveUp(ILogger logger, int attempt, string error);

    [LoggerMessage(Level = LogLevel.Error, Message = "The database connection failed during a commit; the request fails with 503 (outcome unknown).")]
    private static partial void LogCommitUnknown(ILogger logger);
}

/// <summary>The database cannot be reached or stays too busy: the client sees 503 and may retry.</summary>
internal sealed class StoreUnavailableException(string message) : Exception(message);
