using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Ward.Core.Node;
using Ward.Core.Storage;

namespace Ward.Core.Audit;

/// <summary>The audit log cannot be written: the request fails (503) and nothing it changed is kept.</summary>
internal sealed class AuditUnavailableException(string message, Exception? inner = null) : Exception(message, inner);

/// <summary>
/// The node's tamper-evident audit log: AuditEvents appended as leaves of an RFC 9162 Merkle tree, with every complete
/// subtree hash stored (so that roots and proofs cost O(log n) reads) and C2SP checkpoints signed by the node key.
/// <para>
/// Writes append their events inside their own transaction (<see cref="Append"/>): the change and its trail commit
/// together or not at all. Reads and refusals go through <see cref="RecordAsync"/>, a group commit: concurrent requests'
/// events share one transaction, and each request waits until its events are durable before it answers.
/// </para>
/// </summary>
internal sealed partial class AuditLog : IAsyncDisposable
{
    /// <summary>Entries per group commit at most.</summary>
    private const int MaxBatch = 4096;

    private readonly RecordStore _store;
    private readonly SignedNote.Signer _signer;
    private readonly TimeProvider _clock;
    private readonly Channel<Pending> _queue = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleReader = true });
    private readonly Task _writer;
    private readonly AuditHighWater? _highWater;

    /// <summary>The committed right edge of the tree; replaced only after a commit, under the store's write lock.</summary>
    private volatile Frontier? _committed;

    /// <param name="highWater">Where each new checkpoint is kept outside the database (null for a copy of the log, such as a backup's snapshot).</param>
    public AuditLog(RecordStore store, SignedNote.Signer signer, TimeProvider clock, AuditHighWater? highWater = null)
    {
        _store = store;
        _signer = signer;
        _clock = clock;
        _highWater = highWater;
        _writer = Task.Run(WriteLoopAsync);
    }

    /// <summary>The log's origin line, <c>ward/&lt;node name&gt;</c>, also the name of the node key that signs its checkpoints.</summary>
    public string Origin => _signer.Verifier.Name;

    public SignedNote.Verifier Verifier => _signer.Verifier;

    public ILogger Logger { get; set; } = Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;

    public long NowTicks => _clock.GetUtcNow().UtcTicks;

    /// <summary>The node's audit log, with the node key (created with the node; refused if missing once checkpoints exist) and its high-water mark.</summary>
    public static AuditLog Open(NodeConfig config, RecordStore store, TimeProvider? clock = null) =>
        new(store, NodeKey.LoadOrCreate(config, store), clock ?? TimeProvider.System, AuditHighWater.Of(config));

    /// <summary>An event serialised and hashed, ready to be sequenced (done by each request, outside the log's lock).</summary>
    private readonly record struct Sealed(AuditRecord Record, byte[] Data, byte[] Leaf);

    private Sealed Seal(AuditRecord record)
    {
        var data = record.ToJson(Origin);
        return new Sealed(record, data, Merkle.LeafHash(data));
    }

    /// <summary>Appends events inside a write transaction; the in-memory tree follows only if the transaction commits.</summary>
    public void Append(StoreSession session, IReadOnlyList<AuditRecord> records) => Append(session, records.Select(Seal).ToList());

    private void Append(StoreSession session, List<Sealed> entries)
    {
        if (entries.Count == 0)
        {
            return;
        }
        var start = session.AuditReserve(entries.Count);
        var frontier = _committed is { } known && known.Size == start ? known.Clone() : Frontier.Load(session, start);
        var rows = new List<AuditRow>(entries.Count);
        var nodes = new List<(int Level, long Index, byte[] Hash)>(entries.Count);
        foreach (var (r, data, leaf) in entries)
        {
            rows.Add(new AuditRow(frontier.Size, r.RecordedTicks, r.Patient, r.Subject, r.FhirUser, r.Subtype, r.Outcome, data, leaf));
            frontier.Append(leaf, nodes);
        }
        session.AuditInsert(rows, nodes);
        session.OnCommitted(() => _committed = frontier);
    }

    /// <summary>Makes events durable (group commit) and returns when they are; fails with <see cref="AuditUnavailableException"/> otherwise.</summary>
    public Task RecordAsync(IReadOnlyList<AuditRecord> records)
    {
        if (records.Count == 0)
        {
            return Task.CompletedTask;
        }
        var pending = new Pending(records.Select(Seal).ToList(), new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), NowTicks);
        _store.Metrics.AuditQueued(pending.Entries.Count);
        if (!_queue.Writer.TryWrite(pending))
        {
            _store.Metrics.AuditQueued(-pending.Entries.Count);
            throw new AuditUnavailableException("The node is shutting down: the audit log takes no more entries, so the request is refused.");
        }
        return pending.Done.Task;
    }

    /// <param name="Queued">When the events were queued (the node's clock, UTC ticks).</param>
    private sealed record Pending(List<Sealed> Entries, TaskCompletionSource Done, long Queued);

    /// <summary>
    /// The group commit: takes every request queued while it wrote the previous batch, appends their events in one
    /// transaction, and goes on to the next batch as soon as that one has committed; each batch's requests go on once
    /// its commit is durable (the store flushes it meanwhile).
    /// </summary>
    private async Task WriteLoopAsync()
    {
        var reader = _queue.Reader;
        var entries = new List<Sealed>();
        while (await reader.WaitToReadAsync())
        {
            var batch = new List<Pending>();
            entries.Clear();
            while (entries.Count < MaxBatch && reader.TryRead(out var p))
            {
                batch.Add(p);
                entries.AddRange(p.Entries);
            }
            var started = Stopwatch.GetTimestamp();
            _store.Metrics.AuditTaken(entries.Count);
            Volatile.Write(ref _writing, NowTicks);
            try
            {
                var (_, durable) = await _store.WriteCommittedAsync(s =>
                {
                    Append(s, entries);
                    return 0;
                }, CancellationToken.None);
                _ = AnswerAsync(durable, batch, started);
            }
            catch (Exception e)
            {
                var failure = Failure(e);
                batch.ForEach(p => p.Done.SetException(failure));
            }
            finally
            {
                Volatile.Write(ref _writing, 0);
            }
        }
    }

    private async Task AnswerAsync(Task durable, List<Pending> batch, long started)
    {
        await RecordStore.AnswerWhenDurableAsync(durable, batch.Select(p => p.Done), Failure);
        if (durable.IsCompletedSuccessfully)
        {
            Volatile.Write(ref _failedAt, 0);
            _store.Metrics.AuditDurable(Stopwatch.GetElapsedTime(started));
        }
    }

    private AuditUnavailableException Failure(Exception e)
    {
        Volatile.Write(ref _failedAt, Stopwatch.GetTimestamp());
        _store.Metrics.AuditFailed();
        LogAppendFailed(Logger, e.GetType().Name, e);
        return new AuditUnavailableException("The audit log could not be written, so the request is refused (audit is never best-effort). Retry in a moment.", e);
    }

    /// <summary>How long a group commit may take, or events wait for one, before the log counts as stuck.</summary>
    private static readonly TimeSpan StuckAfter = TimeSpan.FromSeconds(30);

    /// <summary>When the latest group commit failed, if no later one has been made durable since (0 otherwise).</summary>
    private long _failedAt;

    /// <summary>When the group commit being written began (the node's clock, UTC ticks; 0 between batches).</summary>
    private long _writing;

    /// <summary>
    /// Why the log cannot take events now, for the readiness check: its latest group commit failed (and none has
    /// succeeded since), or a group commit has been writing for longer than <see cref="StuckAfter"/> (a lock held, a
    /// database that does not answer), or the oldest queued events have waited that long for one; null when it works.
    /// </summary>
    public string? Problem()
    {
        if (Volatile.Read(ref _failedAt) != 0)
        {
            return "failing: its latest write failed";
        }
        var now = NowTicks;
        var writing = Volatile.Read(ref _writing);
        return (writing != 0 && now - writing > StuckAfter.Ticks) || (_queue.Reader.TryPeek(out var oldest) && now - oldest.Queued > StuckAfter.Ticks)
            ? "stuck: a write has waited more than 30 s"
            : null;
    }

    /// <summary>
    /// Signs and stores a checkpoint of the committed log if it grew since the last one; returns the latest checkpoint note,
    /// once it is durable and kept as the node's high-water mark (<see cref="AuditHighWater"/>).
    /// </summary>
    public async Task<string> CheckpointAsync(CancellationToken ct)
    {
        var current = await _store.ReadAsync(s => s.AuditLatestCheckpoint() is { } latest && latest.Size == s.AuditSize() ? latest.Note : null, ct);
        var note = current ?? await _store.WriteAsync(Checkpoint, ct);
        if (_highWater?.Advance(_store, Verifier, note) is { } problem)
        {
            LogHighWater(Logger, problem);
        }
        return note;
    }

    private string Checkpoint(StoreSession s)
    {
        var size = s.AuditSize();
        if (s.AuditLatestCheckpoint() is { } latest && latest.Size == size)
        {
            return latest.Note;
        }
        var frontier = _committed is { } known && known.Size == size ? known : Frontier.Load(s, size);
        var note = SignedNote.Sign(new Checkpoint(Origin, size, frontier.Root()).Text, _signer);
        s.AuditInsertCheckpoint(size, NowTicks, note);
        s.OnCommitted(() => _committed = frontier);
        return note;
    }

    /// <summary>The latest stored checkpoint (made now if the log has none yet).</summary>
    public async Task<string> LatestCheckpointAsync(CancellationToken ct) =>
        await _store.ReadAsync(s => s.AuditLatestCheckpoint()?.Note, ct) ?? await CheckpointAsync(ct);

    /// <summary>A subtree reader over a session: a missing hash is damage to the log, never a silent zero.</summary>
    public static Merkle.Subtree Subtrees(StoreSession s) => (level, index) =>
        s.AuditHash(level, index) ?? throw new AuditIntegrityException($"The audit log has no stored hash for subtree {index} at level {level}: its tables were damaged.");

    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _writer;
        _signer.Dispose();
    }

    /// <summary>
    /// The right edge of a tree of <see cref="Size"/> leaves: for every set bit l of the size, the hash of the complete
    /// subtree of 2^l leaves that ends the prefix. Appending a leaf merges equal-sized subtrees as a binary counter carries.
    /// </summary>
    private sealed class Frontier
    {
        private readonly byte[]?[] _edge = new byte[]?[64];

        public long Size { get; private set; }

        public static Frontier Load(StoreSession s, long size)
        {
            var f = new Frontier { Size = size };
            var subtree = Subtrees(s);
            for (var level = 0; level < 63; level++)
            {
                if ((size >> level & 1) == 1)
                {
                    f._edge[level] = subtree(level, (size >> level) - 1);
                }
            }
            return f;
        }

        public Frontier Clone()
        {
            var f = new Frontier { Size = Size };
            Array.Copy(_edge, f._edge, _edge.Length);
            return f;
        }

        /// <summary>Adds a leaf, collecting every complete subtree of two leaves or more that it closes.</summary>
        public void Append(byte[] leafHash, List<(int Level, long Index, byte[] Hash)> closed)
        {
            // The left siblings Merkle.Completed asks for are the edge's subtrees; each merge empties the level below it.
            var top = (Level: 0, Hash: leafHash);
            foreach (var (level, index, hash) in Merkle.Completed(Size, leafHash, (level, _) => _edge[level]!))
            {
                if (level > 0)
                {
                    _edge[level - 1] = null;
                    closed.Add((level, index, hash));
                }
                top = (level, hash);
            }
            _edge[top.Level] = top.Hash;
            Size++;
        }

        public byte[] Root()
        {
            byte[]? root = null;
            for (var level = 0; level < 64; level++)
            {
                if (_edge[level] is { } h)
                {
                    root = root is null ? h : Merkle.NodeHash(h, root);
                }
            }
            return root ?? Merkle.EmptyRoot();
        }
    }

    [LoggerMessage(Level = LogLevel.Critical, Message = "The node's high-water mark was not advanced: {Problem}. Run 'ward verify'.")]
    private static partial void LogHighWater(ILogger logger, string problem);

    [LoggerMessage(Level = LogLevel.Critical, Message = "The audit log could not be written ({ExceptionType}); the requests waiting on it are refused.")]
    private static partial void LogAppendFailed(ILogger logger, string exceptionType, Exception exception);
}

/// <summary>The audit log's stored structure is damaged (a missing subtree hash): it is reported, never papered over.</summary>
internal sealed class AuditIntegrityException(string message) : Exception(message);
